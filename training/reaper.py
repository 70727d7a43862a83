"""The reaper: runs whose worker went silent are failed, and the files they left removed.

A running run writes ``heartbeat_at`` every ``TRAINING_HEARTBEAT_SECONDS``. A run silent for
``TRAINING_HEARTBEAT_TIMEOUT`` is marked failed and its checkpoint or temp file removed. Reaping is
never a side effect of reading: it runs on its own schedule (``start_reaper``) in every process that
executes or queues runs, and on demand (``manage.py reap_runs``).
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from classifier.checkpoints import checkpoint_discard
from mnistsite.periodic import PeriodicThread

from . import events
from .models import TrainingRun
from .reporting import append_log

log = logging.getLogger(__name__)

RUN_CHECKPOINTS = "checkpoints/runs"


def _discard_run_files(run_id: int) -> None:
    """Remove checkpoint files (finished or temp) a dead run left behind, unless a version uses them."""
    prefixes = (f"run-{run_id}-", f".run-{run_id}-")
    try:
        _, files = default_storage.listdir(RUN_CHECKPOINTS)
    except (FileNotFoundError, NotImplementedError, OSError):
        return
    for file in files:
        if file.startswith(prefixes):
            checkpoint_discard(f"{RUN_CHECKPOINTS}/{file}")


def training_runs_reap(*, now=None) -> list[int]:
    """Mark running runs whose heartbeat is older than ``TRAINING_HEARTBEAT_TIMEOUT`` as failed."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT)
    stale = (
        TrainingRun.objects.running()
        .filter(Q(heartbeat_at__lt=limit) | Q(heartbeat_at__isnull=True, started_at__lt=limit))
        .values_list("pk", "heartbeat_at", "worker")
    )
    reaped = []
    for pk, beat, worker in stale:
        last = f"{beat:%Y-%m-%d %H:%M:%S} UTC" if beat else "never"
        error = (
            f"The worker running this run ({worker or 'unknown'}) stopped sending heartbeats (last: {last}; "
            f"limit {settings.TRAINING_HEARTBEAT_TIMEOUT:g} s) and is presumed dead. The run was marked failed; "
            f"no model version was registered."
        )
        updated = TrainingRun.objects.filter(pk=pk, status=TrainingRun.Status.RUNNING, heartbeat_at=beat).update(
            status=TrainingRun.Status.FAILED, error=error, finished_at=now, log=append_log(error)
        )
        if updated:
            log.warning("run %s: %s", pk, error)
            _discard_run_files(pk)
            events.publish_lifecycle(pk, {"status": TrainingRun.Status.FAILED, "error": error})
            reaped.append(pk)
    return reaped


def start_reaper(interval: float | None = None) -> bool:
    """Start (once per process) a daemon thread that reaps now and then every ``TRAINING_REAP_SECONDS``.

    Started by the thread executor, by the process that queues Celery runs and by every Celery
    worker; 0 turns it off. Returns whether a thread was started.
    """
    return _reaper.start(settings.TRAINING_REAP_SECONDS if interval is None else interval)


def stop_reaper(timeout: float = 5.0) -> None:
    """Stop this process's reaper thread (tests; a process that exits needs nothing)."""
    _reaper.stop(timeout)


def reap_once() -> list[int]:
    """One scheduled pass: reap, log what was reaped, never raise, release the connection."""
    try:
        reaped = training_runs_reap()
        if reaped:
            log.warning("marked runs %s failed: their workers stopped sending heartbeats", reaped)
        return reaped
    except Exception:
        log.warning("reaping training runs failed", exc_info=True)
        return []
    finally:
        connection.close()


_reaper = PeriodicThread(reap_once, name="training-reaper")
