"""What a running run tells the world: its row (at a bounded rate), typed events, a heartbeat, cancel.

The engine calls ``RunReporter`` with plain event dicts after every batch and epoch and checks
``CancelFlag`` after every batch; both must be cheap, so database writes and reads are rate-limited
here. ``Heartbeat`` is a small thread that keeps ``heartbeat_at`` fresh even while no batches run
(loading data, evaluating), so only a dead or hung-up worker goes silent.

A worker outlives its database connections: a database restart or a terminated backend must not end a
run that is training fine. Every write and read here goes through ``reconnecting``: on a lost connection
it closes it and tries once more on a new one (never inside a transaction, whose work is lost with it).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.models import F, TextField, Value
from django.db.models.functions import Concat
from django.utils import timezone

from . import events
from .models import TrainingRun

log = logging.getLogger(__name__)

MAX_BATCH_POINTS = 1000  # the sampled loss curve kept on the row; thinned by half when full

T = TypeVar("T")


def reconnecting(query: Callable[[], T]) -> T:
    """Run ``query`` (one statement, or a few that may be repeated); if the database connection was lost,
    close it and run ``query`` once more on a new one. Inside a transaction the error is raised as it is:
    the transaction's earlier statements went with the connection, so repeating the last one would lie."""
    try:
        return query()
    except (OperationalError, InterfaceError) as exc:
        if connection.in_atomic_block:
            raise
        log.warning("database connection lost (%s); reconnecting and trying again", str(exc).strip() or type(exc).__name__)
        connection.close()
        return query()


def log_line(text: str) -> str:
    return f"{timezone.now():%Y-%m-%d %H:%M:%S} {text}\n"


def append_log(text: str) -> Concat:
    """An expression appending one timestamped line to ``TrainingRun.log`` in the UPDATE itself."""
    return Concat(F("log"), Value(log_line(text)), output_field=TextField())


def append_lines(lines: list[str]) -> Concat:
    """Like ``append_log`` for lines already made by ``log_line``."""
    return Concat(F("log"), Value("".join(lines)), output_field=TextField())


def _round(value: Any, digits: int = 6) -> Any:
    return round(value, digits) if isinstance(value, float) else value


class RunReporter:
    """The engine's progress callback for one run."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.write_every = settings.TRAINING_PROGRESS_WRITE_SECONDS
        self.event_every = settings.TRAINING_PROGRESS_EVENT_SECONDS
        self.sample_every = self.event_every
        self.batches: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.fields: dict[str, Any] = {}
        self.pending_log: list[str] = []
        self.lost = False  # the row is no longer "running": reaped, cancelled before start, deleted
        self.writes = 0
        self._last_write = self._last_event = self._last_sample = float("-inf")

    # ------------------------------------------------------------------ engine events
    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        now = monotonic()
        if kind == "start":
            self.fields.update(total_epochs=event["epochs"], total_steps=event["total_steps"], device=event["device"][:20])
            self.log(
                f"training {event['arch']} ({event['num_parameters']:,} parameters) on {event['device']} "
                f"({event['precision']}): {event['train_size']:,} training / {event['val_size']:,} validation images, "
                f"{event['epochs']} epochs x {event['steps_per_epoch']} steps"
            )
            self.write(now)
            events.publish_progress(self.run_id, {"kind": "start", **{k: v for k, v in event.items() if k != "type"}})
            self._last_event = now
        elif kind == "batch":
            point = {
                "step": event["step"], "epoch": event["epoch"], "loss": _round(event["loss"]),
                "lr": _round(event["lr"], 8), "samples_per_s": _round(event["samples_per_s"], 1),
            }
            if now - self._last_sample >= self.sample_every:
                self._sample(point)
                self._last_sample = now
            self.fields.update(
                epoch=event["epoch"], step=event["step"], total_steps=event["total_steps"],
                progress=min(1.0, max(0.0, float(event["progress"]))), eta_seconds=float(event["eta_s"]),
                samples_per_second=float(event["samples_per_s"]),
            )
            if now - self._last_event >= self.event_every:
                events.publish_progress(self.run_id, {
                    "kind": "batch", **point, "total_steps": event["total_steps"],
                    "progress": self.fields["progress"], "eta_s": _round(event["eta_s"], 1),
                })
                self._last_event = now
            if now - self._last_write >= self.write_every:
                self.write(now)
        elif kind == "epoch":
            record = {k: _round(v) for k, v in event.items() if k not in ("type", "total_epochs")}
            self.epochs.append(record)
            val = f", validation loss {record['val_loss']:.4f} accuracy {100 * record['val_accuracy']:.2f}%" if "val_accuracy" in record else ""
            self.log(
                f"epoch {record['epoch']}/{event['total_epochs']}: train loss {record['train_loss']:.4f} "
                f"accuracy {100 * record['train_accuracy']:.2f}%{val}, lr {record['lr']:.5f}, {record['seconds']:.1f} s"
            )
            self.write(now)
            events.publish_progress(self.run_id, {"kind": "epoch", **record, "total_epochs": event["total_epochs"]})
            self._last_event = now
        elif kind == "end":
            self.log(
                f"training {event['status']}: {event['steps']:,} steps in {event['train_seconds']:.1f} s "
                f"({event['device']}, {event['precision']}); epoch {event['best_epoch']} kept (best on validation)"
            )
            self.fields["progress"] = 1.0 if event["status"] != "cancelled" else self.fields.get("progress", 0.0)
            self.write(now)

    def evaluated(self, metrics: dict[str, Any]) -> None:
        """After training: the MNIST test and field-set figures of the kept weights."""
        field = metrics.get("field_accuracy")
        self.log(
            f"evaluated: MNIST test accuracy {100 * metrics['test_accuracy']:.2f}% (n={metrics.get('test_n')}), "
            + (f"field set {100 * field:.2f}% (n={metrics.get('field_n')})" if field is not None else "field set empty")
        )
        self.write(monotonic())
        events.publish_progress(self.run_id, {
            "kind": "evaluate", "test_accuracy": metrics["test_accuracy"], "field_accuracy": field,
            "field_n": metrics.get("field_n", 0),
        })

    # ------------------------------------------------------------------ the row
    def log(self, text: str) -> None:
        self.pending_log.append(log_line(text))

    def history(self) -> dict[str, Any]:
        return {"batches": list(self.batches), "epochs": list(self.epochs)}

    def write(self, now: float | None = None) -> bool:
        """Write progress, history, heartbeat and new log lines, if the run is still running."""
        updates: dict[str, Any] = {**self.fields, "history": self.history(), "heartbeat_at": timezone.now()}
        if self.pending_log:
            updates["log"] = append_lines(self.pending_log)
        updated = reconnecting(
            lambda: TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).update(**updates))
        self._last_write = monotonic() if now is None else now
        self.writes += 1
        self.pending_log.clear()
        if not updated:
            self.lost = True
        return bool(updated)

    def _sample(self, point: dict[str, Any]) -> None:
        self.batches.append(point)
        if len(self.batches) > MAX_BATCH_POINTS:
            self.batches = self.batches[::2]
            self.sample_every *= 2


class CancelFlag:
    """``should_cancel`` for the engine: true once cancel was requested or the run was taken away.

    The engine calls it after every batch; the row is read at most every ``TRAINING_CANCEL_POLL_SECONDS``.
    """

    def __init__(self, run_id: int, reporter: RunReporter | None = None, heartbeat: "Heartbeat | None" = None) -> None:
        self.run_id = run_id
        self.reporter = reporter
        self.heartbeat = heartbeat
        self.poll_every = settings.TRAINING_CANCEL_POLL_SECONDS
        self.cancelled = False
        self.lost = False
        self._last_poll = float("-inf")

    def __call__(self) -> bool:
        if self.reporter is not None and self.reporter.lost or self.heartbeat is not None and self.heartbeat.lost:
            self.lost = True
        if self.cancelled or self.lost:
            return True
        now = monotonic()
        if now - self._last_poll >= self.poll_every:
            self._last_poll = now
            self.poll()
        return self.cancelled or self.lost

    def poll(self) -> None:
        row = reconnecting(
            lambda: TrainingRun.objects.filter(pk=self.run_id).values_list("status", "cancel_requested").first())
        if row is None or row[0] != TrainingRun.Status.RUNNING:
            self.lost = True
        elif row[1]:
            self.cancelled = True


class Heartbeat:
    """A thread writing ``heartbeat_at`` every ``TRAINING_HEARTBEAT_SECONDS`` while the run executes."""

    def __init__(self, run_id: int, interval: float | None = None) -> None:
        self.run_id = run_id
        self.interval = settings.TRAINING_HEARTBEAT_SECONDS if interval is None else interval
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-run-{run_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def beat(self) -> None:
        updated = reconnecting(lambda: TrainingRun.objects.filter(
            pk=self.run_id, status=TrainingRun.Status.RUNNING).update(heartbeat_at=timezone.now()))
        if not updated:
            self.lost = True

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.beat()
                except Exception:
                    log.warning("heartbeat for run %s failed", self.run_id, exc_info=True)
        finally:
            connection.close()
