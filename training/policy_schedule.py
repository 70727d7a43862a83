"""When the retraining policy is checked: Celery beat's task, or a thread of the serving process.

``RETRAIN_POLICY_SCHEDULER`` picks one place per layout, so checks come from one schedule:

- ``beat`` (the default where runs go to Celery workers): ``celery -A mnistsite beat`` (``make beat``,
  one per deployment) sends ``training.policy_check`` every ``RETRAIN_POLICY_INTERVAL_SECONDS`` to the
  training queue, where a worker runs it (the schedule is ``CELERY_BEAT_SCHEDULE`` in the settings).
- ``thread`` (the default without a broker, the one-process ``make run``): every serving process keeps
  a daemon thread that checks at start and then every interval (``start_policy_scheduler``, called
  next to ``start_reaper`` in ``mnistsite/asgi.py`` and ``wsgi.py``).
- ``off``: nothing checks by itself.

Either way a check that overlaps another waits for the policy's row lock: no two runs are queued.
"""
from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from mnistsite.periodic import PeriodicThread

from .policy import policy_check_once

log = logging.getLogger(__name__)


@shared_task(name="training.policy_check", ignore_result=True)
def check_retrain_policy() -> None:
    """Beat's periodic check (thin: the policy's service does the work)."""
    policy_check_once()


def start_policy_scheduler(interval: float | None = None) -> bool:
    """Start (once per process) the thread that checks the policy, when this layout checks in-process.

    Only with ``RETRAIN_POLICY_SCHEDULER=thread`` and ``RETRAIN_POLICY_ENABLED``; returns whether a
    thread was started.
    """
    every = settings.RETRAIN_POLICY_INTERVAL_SECONDS if interval is None else interval
    if settings.RETRAIN_POLICY_SCHEDULER != "thread" or not settings.RETRAIN_POLICY_ENABLED:
        return False
    return _scheduler.start(every)


def stop_policy_scheduler(timeout: float = 10.0) -> None:
    """Stop this process's scheduler thread (tests; a process that exits needs nothing)."""
    _scheduler.stop(timeout)


_scheduler = PeriodicThread(policy_check_once, name="retrain-policy")
