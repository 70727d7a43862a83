"""The policy's beat entry is seeded after migrate, and also when a database is flushed (post_migrate without
historical apps, as between transactional tests)."""
from __future__ import annotations

import pytest
from django.core.management.sql import emit_post_migrate_signal


@pytest.mark.django_db
def test_post_migrate_without_historical_apps_seeds_the_policy_entry():
    from django_celery_beat.models import PeriodicTask

    from mnistsite.celery import POLICY_ENTRY

    PeriodicTask.objects.filter(name=POLICY_ENTRY).delete()
    emit_post_migrate_signal(0, False, "default")  # what `flush` sends: no `apps`
    assert PeriodicTask.objects.filter(name=POLICY_ENTRY).count() == 1
    emit_post_migrate_signal(0, False, "default")
    assert PeriodicTask.objects.filter(name=POLICY_ENTRY).count() == 1
