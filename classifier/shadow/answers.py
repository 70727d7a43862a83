"""Answering for the shadow: what both places it runs in share (``ShadowAnswers``), and the in-process
worker (``SHADOW_WORKER=thread``).

``thread`` (the default run, one process and no other service): every default prediction is handed
to this process's shadow worker once it is stored (``shadow_submit``, after the transaction commits).
The reply never waits for it and never changes: the worker is one daemon thread per server process
with a bounded queue (``SHADOW_QUEUE_SIZE``); when the queue is full the drawing is dropped for the
shadow and counted, never waited for. The worker waits ``SHADOW_LINGER_SECONDS`` after the first drawing arrives,
takes what is queued by then (up to ``SHADOW_BATCH_MAX``), and after each batch rests long enough
to use at most ``SHADOW_CPU_SHARE`` of one core (its own thread's CPU time): under heavy traffic the
shadow answers a sample of the drawings rather than take the requests' CPU. It runs every
candidate in shadow on the very 28x28 inputs the active version saw, in one batch each, with the
same torch thread count as requests (``INFERENCE_THREADS``) and a lower CPU priority
(``SHADOW_NICE``).
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction

from mnistsite import metrics
from mnistsite.errors import ApplicationError

from ..inference import ServingModel, registry
from ..models import Prediction, ShadowPrediction
from .versions import shadow_ids, shadow_versions

__all__ = ["Item", "ShadowAnswers", "ShadowWorker", "Shadowed", "shadow_reset", "shadow_submit", "shadow_worker"]

log = logging.getLogger(__name__)

Item = tuple[int, torch.Tensor]  # (prediction id, the [1,28,28] input the active version saw)


@dataclass(frozen=True)
class Shadowed:
    """A candidate in shadow, loaded: its version id, when its shadow began, its model."""

    version_id: int
    since: Any  # datetime
    model: ServingModel


class ShadowAnswers:
    """What both places the shadow runs in share: the candidates in shadow, loaded (re-read at most every
    MODEL_REFRESH_SECONDS), their answers stored, and the counts (``stats``)."""

    def __init__(self, *, batch_max: int) -> None:
        self.batch_max = max(1, batch_max)
        self._models: list[Shadowed] = []  # the candidates in shadow, loaded
        self._unloadable = 0  # candidates in shadow whose checkpoint cannot be loaded
        self._models_checked = float("-inf")
        self._lock = threading.Lock()
        self.counts: dict[str, float] = {"submitted": 0, "dropped": 0, "answered": 0, "failed": 0, "batches": 0,
                                         "cpu_ms": 0.0}

    def _count(self, name: str, n: float = 1) -> None:
        with self._lock:
            self.counts[name] += n
        metrics.shadow(name, n)

    @contextmanager
    def _cpu_counted(self) -> Iterator[None]:
        """Count the calling thread's CPU time inside the block in ``cpu_ms``."""
        started = time.thread_time()
        try:
            yield
        finally:
            self._count("cpu_ms", (time.thread_time() - started) * 1000)

    def _loaded(self) -> list[Shadowed]:
        """The candidates in shadow and their models, re-read at most every MODEL_REFRESH_SECONDS."""
        now = time.monotonic()
        if now - self._models_checked >= settings.MODEL_REFRESH_SECONDS:
            models, unloadable = [], 0
            for version in shadow_versions():
                try:
                    models.append(Shadowed(version.pk, version.shadow_since, registry.for_version(version)))
                except ApplicationError as exc:
                    unloadable += 1
                    log.warning("shadow: %s cannot be loaded: %s", version.label, exc.message)
            self._models, self._unloadable, self._models_checked = models, unloadable, now
        return self._models

    def answer(self, work: Sequence[tuple[Shadowed, Sequence[Item]]]) -> int:
        """Each candidate answers its drawings (one forward pass each); the answers are stored together."""
        rows: list[ShadowPrediction] = []
        for shadowed, items in work:
            if not items:
                continue
            x = torch.stack([tensor.reshape(1, 28, 28).float() for _, tensor in items])
            for (pk, _), probs in zip(items, shadowed.model.probabilities(x).tolist()):
                probabilities = [round(p, 6) for p in probs]
                digit = max(range(10), key=probabilities.__getitem__)
                rows.append(ShadowPrediction(prediction_id=pk, version_id=shadowed.version_id, digit=digit,
                                             confidence=probabilities[digit], probabilities=probabilities))
        if not rows:
            return 0
        stored = _insert(rows)
        self._count("answered", stored)
        self._count("batches")
        return stored

    def stats(self) -> dict[str, float]:
        with self._lock:
            return dict(self.counts)


class ShadowWorker(ShadowAnswers):
    """One daemon thread and a bounded queue: ``submit`` never blocks; what does not fit is dropped."""

    def __init__(self, *, queue_size: int, batch_max: int, nice: int = 0, linger: float = 0.0,
                 cpu_share: float = 1.0, switch_interval: float = 0.0) -> None:
        super().__init__(batch_max=batch_max)
        self.queue: queue.Queue[Item] = queue.Queue(maxsize=max(1, queue_size))
        self.nice = nice
        self.linger = max(0.0, linger)
        self.cpu_share = min(1.0, max(0.001, cpu_share))
        self.switch_interval = max(0.0, switch_interval)
        self._thread: threading.Thread | None = None

    def submit(self, items: Sequence[Item]) -> int:
        """Queue drawings for the shadow; returns how many were taken (the rest are dropped and counted)."""
        self.start()
        taken = 0
        for item in items:
            try:
                self.queue.put_nowait(item)
                taken += 1
            except queue.Full:
                break
        dropped = len(items) - taken
        with self._lock:
            self.counts["submitted"] += taken
            self.counts["dropped"] += dropped
            total = self.counts["dropped"]
        if dropped and (total == dropped or total // 100 != (total - dropped) // 100):
            log.warning("shadow queue full (SHADOW_QUEUE_SIZE=%s): %s drawings dropped so far in this process",
                        self.queue.maxsize, total)
        return taken

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                if self.switch_interval and sys.getswitchinterval() > self.switch_interval:
                    # The worker's Python steps (reading and storing rows) hold the GIL; a request that
                    # needs it meanwhile waits until the holder is asked to let go, after this long
                    # (Python's default is 5 ms, all of it added to that request's latency).
                    sys.setswitchinterval(self.switch_interval)
                self._thread = threading.Thread(target=self._run, name="shadow-worker", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        if self.nice:
            try:  # on Linux a thread has its own niceness: requests come first on a busy CPU
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError):
                pass
        while True:
            batch = [self.queue.get()]
            if self.linger:  # under load, more drawings arrive meanwhile: fewer, larger batches
                time.sleep(self.linger)
            while len(batch) < self.batch_max:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            started = time.thread_time()
            try:
                close_old_connections()
                self.process(batch)
            except Exception:
                self._count("failed", len(batch))
                log.exception("shadow evaluation of %s drawings failed", len(batch))
            finally:
                for _ in batch:
                    self.queue.task_done()
            # The budget: this thread uses at most SHADOW_CPU_SHARE of one core; meanwhile drawings queue
            # up (the next batch is larger), and when the queue is full they are dropped.
            used = time.thread_time() - started
            if self.cpu_share < 1.0 and used > 0:
                time.sleep(used * (1.0 / self.cpu_share - 1.0))

    def process(self, batch: Sequence[Item]) -> int:
        """Every candidate in shadow answers ``batch`` (one forward pass each); returns the answers stored.
        Its CPU time (this thread's) is counted in ``cpu_ms``."""
        with self._cpu_counted():
            models = self._loaded()
            if self._unloadable:
                self._count("failed", len(batch) * self._unloadable)
            if not models or not batch:
                return 0
            alive = set(Prediction.objects.filter(pk__in=[pk for pk, _ in batch]).values_list("pk", flat=True))
            items = [(pk, tensor) for pk, tensor in batch if pk in alive]  # a replaced drawing is gone already
            return self.answer([(shadowed, items) for shadowed in models])

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is processed (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "queued": self.queue.qsize(), "queue_size": self.queue.maxsize}


def _insert(rows: list[ShadowPrediction]) -> int:
    """Store the answers; a prediction removed meanwhile (a replaced drawing) loses its answers, no more."""
    for attempt in range(2):
        if not rows:
            return 0
        try:
            with transaction.atomic():
                ShadowPrediction.objects.bulk_create(rows, ignore_conflicts=True)
            return len(rows)
        except IntegrityError:
            if attempt:
                raise
            alive = set(Prediction.objects.filter(pk__in={r.prediction_id for r in rows}).values_list("pk", flat=True))
            rows = [r for r in rows if r.prediction_id in alive]
    return 0


_worker: ShadowWorker | None = None
_worker_lock = threading.Lock()


def shadow_worker() -> ShadowWorker:
    """This process's worker, made on first use (its thread starts on the first drawing)."""
    global _worker
    if _worker is None:
        with _worker_lock:
            if _worker is None:
                _worker = ShadowWorker(queue_size=settings.SHADOW_QUEUE_SIZE, batch_max=settings.SHADOW_BATCH_MAX,
                                       nice=settings.SHADOW_NICE, linger=settings.SHADOW_LINGER_SECONDS,
                                       cpu_share=settings.SHADOW_CPU_SHARE,
                                       switch_interval=settings.SHADOW_SWITCH_INTERVAL)
    return _worker


def shadow_submit(items: Sequence[Item]) -> None:
    """Hand stored predictions (id, input tensor) to this process's shadow worker once the transaction
    commits (``SHADOW_WORKER=thread``). Costs the request nothing when no version is in shadow (or the
    shadow runs in a process of its own), and a queue put when one is."""
    if settings.SHADOW_WORKER != "thread" or not items or not shadow_ids.get():
        return
    transaction.on_commit(lambda: shadow_worker().submit(items))


def shadow_reset() -> None:
    """Forget this process's shadow state (a fresh worker, re-read the versions): tests start clean."""
    global _worker
    with _worker_lock:
        _worker = None
    shadow_ids.expire()
