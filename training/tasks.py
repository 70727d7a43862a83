"""Celery tasks: thin wrappers over the training services."""
from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.conf import settings

log = logging.getLogger(__name__)


@shared_task(name="training.run", ignore_result=True)
def run_training(run_id: int) -> None:
    """Execute one training run (its progress and result are written to its row)."""
    from .services import training_run_execute

    training_run_execute(run_id=run_id)


def _set_torch_threads() -> None:
    if settings.TRAINING_TORCH_THREADS > 0:
        import torch

        torch.set_num_threads(settings.TRAINING_TORCH_THREADS)


@worker_process_init.connect
def _on_worker_process_init(**kwargs: Any) -> None:
    _set_torch_threads()


@worker_ready.connect
def _on_worker_ready(**kwargs: Any) -> None:
    """A starting worker fails the runs of workers that died, then keeps reaping in the background."""
    from django.db import connection

    from .executor import start_reaper
    from .services import training_runs_reap

    _set_torch_threads()
    try:
        reaped = training_runs_reap()
        if reaped:
            log.warning("marked runs %s failed: their workers stopped sending heartbeats", reaped)
    except Exception:
        log.warning("reaping training runs at worker start failed", exc_info=True)
    finally:
        connection.close()
    start_reaper()
