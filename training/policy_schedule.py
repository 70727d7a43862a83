"""When the retraining policy is checked: Celery beat's task, or a thread of the serving process.

``RETRAIN_POLICY_SCHEDULER`` picks one place per layout, so checks come from one schedule:

- ``beat`` (the default where runs go to Celery workers): ``celery -A mnistsite beat`` (``make beat``,
  one per deployment) sends ``training.policy_check`` to the training queue, where a worker runs it. The
  schedule is the ``retrain-policy`` periodic task in the database (django-celery-beat; staff change its
  interval in the admin), seeded from ``RETRAIN_POLICY_INTERVAL_SECONDS`` by ``migrate``
  (``mnistsite.celery.seed_beat_schedule``). A second beat by mistake is harmless: the scheduler sends
  one message per interval (``mnistsite.beat``), and a check that finds another ran within this
  interval does nothing (``check_retrain_policy``).
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
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from mnistsite import metrics
from mnistsite.beat import claim
from mnistsite.celery import POLICY_ENTRY, POLICY_TASK
from mnistsite.periodic import PeriodicThread

from .policy import policy_check_once

log = logging.getLogger(__name__)


@shared_task(name="training.policy_check", ignore_result=True)
def check_retrain_policy() -> None:
    """Beat's periodic check (thin: the policy's service does the work), at most one per interval."""
    if not claim("policy-check", policy_interval()):
        log.info("retraining policy: another check ran in this interval; this one does nothing")
        metrics.policy_action("skipped")
        return
    policy_check_once()


def policy_interval() -> float:
    """Seconds between beat's checks: the ``retrain-policy`` periodic task's interval (staff may have
    changed it in the admin), else the setting."""
    task = PeriodicTask.objects.filter(name=POLICY_ENTRY, enabled=True).select_related("interval").first()
    if task is not None and task.interval is not None:
        return task.interval.schedule.run_every.total_seconds()
    return settings.RETRAIN_POLICY_INTERVAL_SECONDS


def policy_interval_set(*, seconds: int) -> PeriodicTask:
    """Set beat's interval between checks (what staff do in the admin's Periodic tasks), seeding the entry
    if ``migrate`` has not; beat picks the change up within a few seconds."""
    every, _ = IntervalSchedule.objects.get_or_create(every=max(1, int(seconds)), period=IntervalSchedule.SECONDS)
    task, _ = PeriodicTask.objects.update_or_create(
        name=POLICY_ENTRY, defaults={"task": POLICY_TASK, "interval": every, "queue": settings.TRAINING_QUEUE,
                                     "expire_seconds": max(1, int(seconds))})
    return task


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
