"""Celery tasks: thin wrappers over the training services, and the worker's start-up hooks."""
from __future__ import annotations

import logging
from typing import Any

import torch
from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.conf import settings

from .execution import training_run_execute
from .reaper import reap_once, start_reaper

log = logging.getLogger(__name__)


@shared_task(name="training.run", ignore_result=True)
def run_training(run_id: int) -> None:
    """Execute one training run (its progress and result are written to its row)."""
    training_run_execute(run_id=run_id)


def _set_torch_threads() -> None:
    if settings.TRAINING_TORCH_THREADS > 0:
        torch.set_num_threads(settings.TRAINING_TORCH_THREADS)


@worker_process_init.connect
def _on_worker_process_init(**kwargs: Any) -> None:
    _set_torch_threads()


@worker_ready.connect
def _on_worker_ready(**kwargs: Any) -> None:
    """A starting worker fails the runs of workers that died, then keeps reaping in the background."""
    _set_torch_threads()
    if not start_reaper():  # the reaper thread reaps at once, then on its schedule
        reap_once()
