"""Celery tasks: thin wrappers over the training services, and the worker's start-up hooks."""
from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from .execution import training_run_execute
from .reaper import reap_once, start_reaper

log = logging.getLogger(__name__)


@shared_task(name="training.run", ignore_result=True)
def run_training(run_id: int) -> None:
    """Execute one training run (its progress and result are written to its row)."""
    training_run_execute(run_id=run_id)


@worker_ready.connect
def _on_worker_ready(**kwargs: Any) -> None:
    """A starting worker fails the runs of workers that died, then keeps reaping in the background.

    (Each run sets its own torch threads, ``TRAINING_TORCH_THREADS``, in the thread that trains it.)
    """
    if not start_reaper():  # the reaper thread reaps at once, then on its schedule
        reap_once()
