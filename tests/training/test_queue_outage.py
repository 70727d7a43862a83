"""A run that cannot be queued is a clear 503, with the run recorded as failed."""
from __future__ import annotations

import pytest

from tests.support.registry import assert_error
from training.models import TrainingRun

from .conftest import QUICK_RUN


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_retrain_answers_503_when_the_broker_is_unreachable(staff_client, settings):
    settings.TRAINING_EXECUTOR = "celery"
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 0}
    error = assert_error(staff_client.post("/api/retrain/", QUICK_RUN, format="json"), 503, "queue_unavailable")
    run = TrainingRun.objects.get(pk=error["detail"]["run"])
    assert run.status == "failed" and run.error.startswith("The run could not be queued (celery)")
    assert "could not be queued" in error["message"]
