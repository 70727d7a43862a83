"""Shadow evaluation: a candidate answers live drawings in the background, beside the active version.

Staff (or an automatic policy) put a candidate *in shadow* (``shadow_start``) and take it out
(``shadow_stop``); both are in the audit log. While it is in shadow, the drawings the active version
answered (``POST /api/predict/``, its batch form, the drawing page) are answered by the candidate too,
in one of two places (``SHADOW_WORKER``):

``process`` (the default when a broker is configured: the production layout): a process of its own,
``python manage.py shadow`` (``ShadowPoller``), reads the predictions stored since its last look
(their 28x28 inputs are in the rows) about every ``SHADOW_POLL_SECONDS``, at most ``SHADOW_BATCH_MAX``
of the newest at a time, and runs at the kernel's idle priority (``SCHED_IDLE``): it gets a CPU only
when no web process wants it. The request path does nothing at all for the shadow; under heavy
traffic the shadow answers a sample (the newest drawings of each look), and when the CPUs are busy,
fewer.

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
(``SHADOW_NICE``). Either way each answer is stored as a ``ShadowPrediction`` beside the prediction,
and a candidate answers only drawings made since it entered shadow.

``shadow_report`` compares a candidate with the version that answered the users: how often they
agree, and on the drawings labelled since (the effective label, ``classifier.labels``, when trusted
enough to be evidence: ``LABELS_EVIDENCE_TRUST``, by default a trusted source's) both accuracies
with the discordant counts of the paired test. A candidate is trained before it enters shadow, so
these drawings are new to it. ``shadow_evidence`` is the same comparison as an evidence set for the
promotion gate, and ``shadow_gate`` runs the gate on a registered candidate with it: when
``PROMOTION_SHADOW_MIN_LABELLED`` is set, a candidate in shadow is refused until its shadow answers
cover that many labelled drawings with no loss on them.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import Count, F, Min, Q
from django.utils import timezone

from engine.checkpoint import CheckpointError
from mnistsite import metrics
from mnistsite.errors import ApplicationError

from .checkpoints import version_model
from .inference import ServingModel, registry
from .lifecycle import model_version_activate
from .models import LifecycleEvent, ModelVersion, ModelVersionQuerySet, Prediction, ShadowPrediction
from .promotion import Evidence, GateDecision, Requirement, mcnemar_p, promotion_gate

log = logging.getLogger(__name__)

SHADOW_EVIDENCE = "shadow"  # the gate's name for the evidence set
SHADOW_TITLE = "shadow traffic"

User = AbstractBaseUser | AnonymousUser


# ----------------------------------------------------------------------------- in and out of shadow


def _record(action: str, *, version: ModelVersion, by: User | None, actor: str, reason: str) -> LifecycleEvent:
    return LifecycleEvent.objects.create(
        action=action, to_version=version, by=by if by is not None and by.is_authenticated else None,
        actor=actor[:20], reason=reason,
    )


def shadow_start(*, version: ModelVersion, by: User | None = None, actor: str = "", reason: str = "") -> ModelVersion:
    """Put a candidate in shadow: from now on it answers live drawings in the background."""
    try:
        version_model(version)
    except CheckpointError as exc:
        raise ApplicationError("checkpoint_unusable", f"{version.label} cannot be served: "
                               f"{getattr(exc, 'public', None) or 'its checkpoint cannot be read'}",
                               detail={"model": version.pk}, status=409) from None
    with transaction.atomic():
        target = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if target.status != ModelVersion.Status.CANDIDATE:
            raise ApplicationError("not_a_candidate", f"{target.label} is {target.status}: only a candidate can "
                                   "be put in shadow.", detail={"model": target.pk, "status": target.status}, status=409)
        if target.in_shadow:
            raise ApplicationError("already_in_shadow", f"{target.label} is already in shadow.",
                                   detail={"model": target.pk}, status=409)
        target.shadow_since = version.shadow_since = timezone.now()
        target.save(update_fields=["shadow_since"])
        _record(LifecycleEvent.Action.SHADOW, version=target, by=by, actor=actor, reason=reason)
    _ids.expire()
    log.info("%s entered shadow (by %s%s): %s", target.label, getattr(by, "username", None),
             f", {actor}" if actor else "", reason)
    return target


def shadow_stop(*, version: ModelVersion, by: User | None = None, actor: str = "", reason: str = "") -> ModelVersion:
    """Take a candidate out of shadow; its shadow answers stay (``shadow_report`` still reads them)."""
    with transaction.atomic():
        target = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if not target.in_shadow:
            raise ApplicationError("not_in_shadow", f"{target.label} is not in shadow.",
                                   detail={"model": target.pk}, status=409)
        target.shadow_since = version.shadow_since = None
        target.save(update_fields=["shadow_since"])
        _record(LifecycleEvent.Action.UNSHADOW, version=target, by=by, actor=actor, reason=reason)
    _ids.expire()
    log.info("%s left shadow (by %s%s): %s", target.label, getattr(by, "username", None),
             f", {actor}" if actor else "", reason)
    return target


def shadow_versions() -> ModelVersionQuerySet:
    """The candidates in shadow now, the longest in shadow first."""
    return ModelVersion.objects.in_shadow().order_by("shadow_since", "id")


class _ShadowIds:
    """Which versions are in shadow, as this process last read it (at most every MODEL_REFRESH_SECONDS):
    the request path asks this, so it costs one small query per process per refresh, not per request."""

    def __init__(self) -> None:
        self._ids: tuple[int, ...] = ()
        self._checked = float("-inf")

    def get(self) -> tuple[int, ...]:
        now = time.monotonic()
        if now - self._checked >= settings.MODEL_REFRESH_SECONDS:
            self._ids = tuple(shadow_versions().values_list("id", flat=True))
            self._checked = now
        return self._ids

    def expire(self) -> None:
        self._checked = float("-inf")


_ids = _ShadowIds()


# ----------------------------------------------------------------------------- the background worker

Item = tuple[int, torch.Tensor]  # (prediction id, the [1,28,28] input the active version saw)


@dataclass(frozen=True)
class Shadowed:
    """A candidate in shadow, loaded: its version id, when its shadow began, its model."""

    version_id: int
    since: Any  # datetime
    model: ServingModel


class _ShadowAnswers:
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


class ShadowWorker(_ShadowAnswers):
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
    if settings.SHADOW_WORKER != "thread" or not items or not _ids.get():
        return
    transaction.on_commit(lambda: shadow_worker().submit(items))


def shadow_reset() -> None:
    """Forget this process's shadow state (a fresh worker, re-read the versions): tests start clean."""
    global _worker
    with _worker_lock:
        _worker = None
    _ids.expire()


# ----------------------------------------------------------------------------- the shadow in a process of its own

HEARTBEAT_KEY = "mnistsite:shadow:heartbeat"


class ShadowPoller(_ShadowAnswers):
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
    Reads /proc/stat (Linux); elsewhere it always answers None (unknown)."""

    def __init__(self, stat: Path = Path("/proc/stat")) -> None:
        self.stat = stat
        self._last: tuple[float, float, float] | None = None  # (busy, total) jiffies in seconds, own CPU
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _read(self) -> tuple[float, float] | None:
        try:
            fields = [int(v) for v in self.stat.read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
        return (total - idle) / self.tick, total / self.tick

    def busy(self) -> float | None:
        """The share (0..1) of all CPUs' time since the previous call that others kept busy; None the
        first time or when it cannot be read."""
        now, own = self._read(), time.process_time()
        if now is None:
            return None
        last, self._last = self._last, (now[0], now[1], own)
        if last is None or now[1] <= last[1]:
            return None
        others = (now[0] - last[0]) - (own - last[2])
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


# ----------------------------------------------------------------------------- what the shadow shows


@dataclass(frozen=True)
class ShadowReport:
    """A candidate's shadow answers against the answers users got (from the version that served them)."""

    version_id: int
    in_shadow: bool
    since: Any  # datetime the current shadow began, or None
    first_answer_at: Any
    answers: int  # drawings it answered in shadow
    agreed: int  # ... with the same digit as the version that answered the user
    labelled: int  # of those, drawings with an effective digit label
    candidate_correct: int
    active_correct: int
    only_candidate: int  # labelled drawings only the candidate got right
    only_active: int  # ... only the version that answered the user got right

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.answers if self.answers else None

    @property
    def candidate_accuracy(self) -> float | None:
        return self.candidate_correct / self.labelled if self.labelled else None

    @property
    def active_accuracy(self) -> float | None:
        return self.active_correct / self.labelled if self.labelled else None

    @property
    def p_value(self) -> float | None:
        return mcnemar_p(self.only_candidate, self.only_active) if self.labelled else None

    def display(self) -> dict[str, Any]:
        """For pages: the counts, the rates as percentages and the p-value as text."""
        def pct(value: float | None) -> str:
            return "–" if value is None else f"{100 * value:.2f}%"
        p = self.p_value
        return {
            **asdict(self), "agreement": pct(self.agreement), "candidate_accuracy": pct(self.candidate_accuracy),
            "active_accuracy": pct(self.active_accuracy),
            "p_value": None if p is None else ("< 0.0001" if p < 1e-4 else f"{p:.2g}"),
        }

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("since", "first_answer_at"):
            data[name] = data[name].isoformat() if data[name] else None
        data.update(agreement=self.agreement, candidate_accuracy=self.candidate_accuracy,
                    active_accuracy=self.active_accuracy, p_value=self.p_value,
                    required_labelled=settings.PROMOTION_SHADOW_MIN_LABELLED)
        return data


def _evidence_labelled() -> Q:
    """Shadow answers to drawings whose label is trusted enough to judge a version (``LABELS_EVIDENCE_TRUST``)."""
    return Q(prediction__label__isnull=False,
             prediction__label_trust__in=Prediction.Trust.at_least(settings.LABELS_EVIDENCE_TRUST))


def shadow_report(version: ModelVersion) -> ShadowReport:
    """The numbers the version page and the stats page show, in one query. "Labelled" counts only the
    drawings whose label is evidence (``LABELS_EVIDENCE_TRUST``): what the gate reads."""
    labelled = _evidence_labelled()
    cand_right = labelled & Q(digit=F("prediction__label"))
    active_right = labelled & Q(prediction__digit=F("prediction__label"))
    figures = ShadowPrediction.objects.filter(version=version).aggregate(
        answers=Count("id"),
        agreed=Count("id", filter=Q(digit=F("prediction__digit"))),
        labelled=Count("id", filter=labelled),
        candidate_correct=Count("id", filter=cand_right),
        active_correct=Count("id", filter=active_right),
        both=Count("id", filter=cand_right & Q(prediction__digit=F("prediction__label"))),
        first_answer_at=Min("created_at"),
    )
    both = figures.pop("both")
    return ShadowReport(
        version_id=version.pk, in_shadow=version.in_shadow, since=version.shadow_since if version.in_shadow else None,
        **figures, only_candidate=figures["candidate_correct"] - both, only_active=figures["active_correct"] - both,
    )


def shadow_reports() -> list[tuple[ModelVersion, ShadowReport]]:
    """Every candidate in shadow with its report, for the stats page."""
    return [(version, shadow_report(version)) for version in shadow_versions()]


def shadow_evidence(version: ModelVersion) -> Evidence | None:
    """The labelled drawings the candidate answered in shadow as a paired evidence set for the gate
    (None when there are none): the candidate against the version that answered each user."""
    rows = list(ShadowPrediction.objects.filter(_evidence_labelled(), version=version)
                .values_list("digit", "prediction__digit", "prediction__label"))
    if not rows:
        return None
    answers = torch.tensor(rows, dtype=torch.int64)
    return Evidence.paired(name=SHADOW_EVIDENCE, title=SHADOW_TITLE, for_users=True,
                           margin=settings.PROMOTION_MARGIN_FIELD,
                           candidate=answers[:, 0] == answers[:, 2], active=answers[:, 1] == answers[:, 2])


# ----------------------------------------------------------------------------- the gate for a candidate in shadow


def shadow_gate(*, version: ModelVersion) -> GateDecision:
    """The promotion gate for a registered candidate: MNIST test, the field set, and its shadow traffic.

    With ``PROMOTION_SHADOW_MIN_LABELLED`` > 0 and the candidate in shadow, the shadow traffic is
    required: at least that many labelled drawings, and no loss on them.
    """
    if version.status != ModelVersion.Status.CANDIDATE:
        raise ApplicationError("not_a_candidate", f"{version.label} is {version.status}: only a candidate goes "
                               "through the gate.", detail={"model": version.pk, "status": version.status}, status=409)
    try:
        model = version_model(version)
    except CheckpointError as exc:
        raise ApplicationError("checkpoint_unusable", f"{version.label} cannot be served: "
                               f"{getattr(exc, 'public', None) or 'its checkpoint cannot be read'}",
                               detail={"model": version.pk}, status=409) from None
    evidence = shadow_evidence(version)
    required = settings.PROMOTION_SHADOW_MIN_LABELLED
    requirements = [Requirement(SHADOW_EVIDENCE, SHADOW_TITLE, required)] if required > 0 and version.in_shadow else []
    return promotion_gate(
        candidate_metrics={**(version.metrics or {}), "test_accuracy": version.test_accuracy},
        candidate_model=model, active=ModelVersion.objects.active().first(),
        extra_evidence=[evidence] if evidence is not None else [], requirements=requirements,
    )


def shadow_promote(*, version: ModelVersion, by: User | None = None, reason: str = "") -> GateDecision:
    """Run ``shadow_gate`` and, when it says so, make the candidate the active version ("promote")."""
    decision = shadow_gate(version=version)
    if decision.promote:
        with transaction.atomic():
            current = ModelVersion.objects.select_for_update().active().first()
            if (current.pk if current else None) != decision.active:
                raise ApplicationError("conflict", "The active version changed while the gate was comparing; "
                                       "try again.", status=409)
            model_version_activate(version=version, by=by, action="promote", check=False,
                                   reason=f"{reason}: {decision.reason}" if reason else decision.reason)
        _ids.expire()
    return decision
