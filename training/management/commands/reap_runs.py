"""``python manage.py reap_runs``: mark runs whose worker stopped sending heartbeats as failed."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from training.reaper import training_runs_reap


class Command(BaseCommand):
    help = (
        "Mark running training runs whose heartbeat is older than TRAINING_HEARTBEAT_TIMEOUT as failed and remove "
        "the checkpoint files they left. Every worker and web process also does this on its own schedule (TRAINING_REAP_SECONDS)."
    )

    def handle(self, *args: Any, **opts: Any) -> None:
        reaped = training_runs_reap()
        if reaped:
            self.stdout.write(f"marked {len(reaped)} run(s) failed: {', '.join(map(str, reaped))}")
        else:
            self.stdout.write(f"no stale runs (heartbeat limit {settings.TRAINING_HEARTBEAT_TIMEOUT:g} s)")
