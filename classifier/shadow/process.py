"""The shadow in a process of its own (``SHADOW_WORKER=process``, the default when a broker is configured:
the production layout): ``python manage.py shadow`` runs a ``ShadowPoller``, which reads the predictions
stored since its last look (their 28x28 inputs are in the rows) about every ``SHADOW_POLL_SECONDS``, at
most ``SHADOW_BATCH_MAX`` of the newest at a time, at the kernel's idle priority (``SCHED_IDLE``): it gets
a CPU only when no web process wants it. The request path does nothing at all for the shadow; under heavy
traffic the shadow answers a sample (the newest drawings of each look), and when the CPUs are busy
(``CpuGauge``), fewer. The process tells the web processes it is looking through the shared cache.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import psutil
import torch
from django.conf import settings
from django.core.cache import cache

from ..models import ModelVersion, Prediction
from .answers import ShadowAnswers
from .versions import shadow_versions

__all__ = ["HEARTBEAT_KEY", "CpuGauge", "ShadowPoller", "shadow_process_missing", "shadow_process_seen"]

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "mnistsite:shadow:heartbeat"


class ShadowPoller(ShadowAnswers):
    """``SHADOW_WORKER=process``: reads the stored predictions the active version answered and has the
    candidates in shadow answer them, in the process that calls ``poll`` (``manage.py shadow``).

    Each look takes the newest drawings stored since the last one, at most ``batch_max``; drawings that
    arrived in between beyond those are left out (under heavy traffic the shadow answers a sample). A
    candidate answers only drawings made since it entered shadow; drawings imported from a dataset,
    and those a client asked another version for, are not live traffic of the active version.
    """

    def __init__(self, *, batch_max: int) -> None:
        super().__init__(batch_max=batch_max)
        self.cursor: int | None = None  # the newest prediction id looked at
        self.looks = 0

    def poll(self) -> int:
        """One look: returns the answers stored. Its CPU time is counted in ``cpu_ms``."""
        try:
            with self._cpu_counted():
                return self._poll()
        finally:
            self.looks += 1

    def _poll(self) -> int:
        models = self._loaded()
        if not models:
            self.cursor = None  # the next shadow starts from its own first drawings
            return 0
        active = ModelVersion.objects.active().values_list("pk", flat=True).first()
        if active is None:
            return 0
        fresh = Prediction.objects.filter(
            model_version_id=active, created_at__gte=min(m.since for m in models),
            source__in=[Prediction.Source.SITE, Prediction.Source.API])
        if self.cursor is not None:
            fresh = fresh.filter(pk__gt=self.cursor)
        rows = list(fresh.order_by("-pk").values_list("pk", "created_at", "input_pixels")[:self.batch_max])
        if not rows:
            return 0
        self.cursor = max(self.cursor or 0, rows[0][0])
        items = [(pk, at, _pixels_tensor(pixels)) for pk, at, pixels in rows if pixels and len(pixels) == 784]
        self._count("submitted", len(items))
        if self._unloadable:
            self._count("failed", len(items) * self._unloadable)
        return self.answer([(m, [(pk, x) for pk, at, x in items if at >= m.since]) for m in models])

    def heartbeat(self, **extra: Any) -> None:
        """Tell the web processes (through the shared cache) that a shadow process is looking."""
        try:
            cache.set(HEARTBEAT_KEY, {"at": time.time(), "pid": os.getpid(), "looks": self.looks,
                                      **self.stats(), **extra},
                      timeout=max(60, int(settings.SHADOW_POLL_SECONDS * 10)))
        except Exception as exc:  # the cache being down must not stop the shadow
            log.debug("shadow heartbeat not stored: %s", exc)


class CpuGauge:
    """How busy this machine's CPUs were since the last reading, not counting this process's own work:
    the shadow process skips a look when the web processes (or anything else) keep the CPUs busy.
    Reads the machine's CPU times (``psutil.cpu_times()``, all CPUs together) and this process's own
    (``psutil.Process().cpu_times()``); where they cannot be read it answers None (unknown).
    ``machine`` and ``own`` replace those two readings (tests)."""

    def __init__(self, *, machine: Callable[[], Any] | None = None, own: Callable[[], Any] | None = None) -> None:
        self._machine = machine if machine is not None else psutil.cpu_times
        self._own = own if own is not None else psutil.Process().cpu_times
        self._last: tuple[float, float, float] | None = None  # (busy, total, own) CPU seconds

    def _read(self) -> tuple[float, float, float] | None:
        """(busy, total) seconds of all CPUs since boot, and this process's own CPU seconds."""
        try:
            times, own = self._machine()._asdict(), self._own()
        except (psutil.Error, OSError, NotImplementedError):
            return None
        # Linux counts guest time inside user (and guest_nice inside nice): count it once.
        total = sum(times.values()) - times.get("guest", 0.0) - times.get("guest_nice", 0.0)
        idle = times.get("idle", 0.0) + times.get("iowait", 0.0)
        return total - idle, total, own.user + own.system

    def busy(self) -> float | None:
        """The share (0..1) of all CPUs' time since the previous call that others kept busy; None the
        first time or when it cannot be read."""
        now = self._read()
        if now is None:
            return None
        last, self._last = self._last, now
        if last is None or now[1] <= last[1]:
            return None
        others = (now[0] - last[0]) - (now[2] - last[2])
        return min(1.0, max(0.0, others / (now[1] - last[1])))


def _pixels_tensor(pixels: bytes | memoryview) -> torch.Tensor:
    return torch.frombuffer(bytearray(pixels), dtype=torch.uint8).reshape(1, 28, 28).float().div_(255)


def shadow_process_seen() -> float | None:
    """Seconds since a shadow process last looked (None: none has, or the cache is not shared or not
    reachable). Only meaningful with ``SHADOW_WORKER=process`` and a shared cache (Redis)."""
    try:
        beat = cache.get(HEARTBEAT_KEY)
    except Exception:
        return None
    return max(0.0, time.time() - beat["at"]) if beat else None


def shadow_process_missing() -> bool:
    """True when the shadow runs in a process of its own, a candidate is in shadow, and no shadow process
    has looked recently (as far as a shared cache can tell): the pages warn staff."""
    if settings.SHADOW_WORKER != "process" or "locmem" in settings.CACHES["default"]["BACKEND"].lower():
        return False
    seen = shadow_process_seen()
    return (seen is None or seen > max(30.0, 5 * settings.SHADOW_POLL_SECONDS)) and shadow_versions().exists()
