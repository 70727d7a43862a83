"""Celery beat with its schedule in the database, harmless if started twice.

``PolicyBeatScheduler`` is django-celery-beat's ``DatabaseScheduler`` (the schedule is the
``PeriodicTask`` rows staff edit in the admin) that sends an interval entry only after claiming it for
most of one interval in Redis (``claim``): a second beat, on this machine or another, finds the claim
taken and sends nothing, so the workers get one message per interval however many beats run. The
settings make it beat's default scheduler (``CELERY_BEAT_SCHEDULER``).

The task side does the same (``training.policy_schedule``), so even beats started with the stock
scheduler (``-S django_celery_beat.schedulers:DatabaseScheduler``) cause one check per interval.
"""
from __future__ import annotations

import logging
import os
import uuid

import redis
from celery.schedules import schedule as interval_schedule
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

log = logging.getLogger(__name__)

# A claim lasts this share of the interval: a little less than one, so a beat whose tick comes a few
# milliseconds early is not refused its own next send.
CLAIM_SHARE = 0.8


def claim(name: str, interval: float) -> bool:
    """Whether this caller may act on ``name`` now: the first in each ``CLAIM_SHARE`` of ``interval`` may.

    One Redis ``SET NX PX`` on the broker; without a Redis broker (one process) or when Redis cannot be
    reached, it says yes: a duplicate is better than a missed check.
    """
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")) or interval <= 0:
        return True
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            taken = client.set(f"mnistsite:claim:{name}", f"{os.getpid()}:{uuid.uuid4().hex[:8]}", nx=True,
                               px=max(1, int(interval * CLAIM_SHARE * 1000)))
        finally:
            client.close()
    except redis.RedisError as exc:
        log.warning("could not claim %s in Redis (%s): going ahead", name, type(exc).__name__)
        return True
    return bool(taken)


def interval_of(entry_schedule: object) -> float | None:
    """Seconds between sends of an interval schedule; None for crontab and other kinds."""
    if isinstance(entry_schedule, interval_schedule):
        return entry_schedule.run_every.total_seconds()
    return None


class PolicyBeatScheduler(DatabaseScheduler):
    """``DatabaseScheduler`` whose interval entries are sent by one beat per interval."""

    def apply_async(self, entry, producer=None, advance=True, **kwargs):  # noqa: ANN001, ANN201 (Celery's signature)
        interval = interval_of(entry.schedule)
        if interval is not None and not claim(f"beat:{entry.name}", interval):
            log.info("beat: %s was sent by another beat in this interval; not sending it again", entry.name)
            if advance:
                self.reserve(entry)
            return None
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
