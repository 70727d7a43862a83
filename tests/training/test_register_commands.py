"""Operator commands: `train --register`, `worker`, `reap_runs` (the last is in test_runs)."""
from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from classifier.models import ModelVersion
from classifier.models import LifecycleEvent

pytestmark = pytest.mark.django_db


@pytest.mark.slow
def test_train_can_register_its_result_as_a_candidate(mnist_settings, tmp_path, labelled_drawings):
    labelled_drawings(40)
    out = io.StringIO()
    call_command("train", "--arch", "logreg", "--epochs", "1", "--val-size", "1000", "--out", str(tmp_path / "l.pt"),
                 "--register", "--name", "logreg-cli", stdout=out, stderr=io.StringIO())
    match = re.search(r"registered logreg-cli v1 \(id (\d+)\) as a candidate; field set accuracy [\d.]+% \(n=\d+\)",
                      out.getvalue())
    assert match, out.getvalue()
    version = ModelVersion.objects.get(pk=int(match[1]))
    assert version.status == "candidate" and version.arch == "logreg" and version.test_accuracy > 0.85
    assert version.checkpoint.name.startswith("checkpoints/cli/logreg-cli-")
    assert version.parent == ModelVersion.objects.active().get()  # lineage: the active version at the time
    assert version.metrics["field_n"] > 0 and LifecycleEvent.objects.get(to_version=version).action == "register"


def test_worker_needs_a_broker(settings):
    settings.CELERY_BROKER_URL = ""
    with pytest.raises(CommandError, match="No broker configured"):
        call_command("worker")
