"""Executing a run: the one task body, shared by Celery workers and the server-thread executor.

``training_run_execute`` claims a queued run, trains with ``engine.job.train_to_checkpoint`` (feeding
its progress callback and cancel flag), writes the checkpoint atomically, and only then, in one
transaction, registers the model version, applies the promotion gate and marks the run succeeded.
A worker that dies before that transaction leaves no version row; the reaper marks its run failed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import torch
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from classifier.checkpoints import checkpoint_discard, checkpoint_store, version_checkpoint
from classifier.drawings import Drawings, field_set, labelled_drawings
from classifier.lifecycle import model_version_activate, model_version_register
from classifier.mnist_source import mnist_ensure
from classifier.models import ModelVersion
from classifier.promotion import GateDecision, promotion_gate
from engine.checkpoint import CheckpointError
from engine.data import DataError, mnist_fingerprint
from engine.job import train_to_checkpoint
from engine.trainer import TrainConfig
from mnistsite import logs
from mnistsite.errors import ApplicationError

from . import events
from .models import TrainingRun
from .policy_shadow import POLICY, policy_candidate_to_shadow
from .reaper import RUN_CHECKPOINTS
from .reporting import CancelFlag, Heartbeat, RunReporter, append_lines, append_log, reconnecting

log = logging.getLogger(__name__)

STORED_IDS_LIMIT = 10_000


def _finish(run_id: int, status: str, *, error: str = "", line: str) -> bool:
    """Move a running run to a final status (only if it is still running), and announce it. Reconnects
    once if the connection was lost (which may be why the run failed): the outcome is recorded truthfully."""
    updated = reconnecting(lambda: TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(
        status=status, error=error, finished_at=timezone.now(), log=append_log(line)
    ))
    if updated:
        events.publish_lifecycle(run_id, {"status": status, "error": error or None})
    return bool(updated)


def training_run_fail_to_queue(*, run_id: int, error: str) -> None:
    """The executor could not take the run (e.g. the broker is unreachable)."""
    updated = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.FAILED, error=error, finished_at=timezone.now(), log=append_log(error)
    )
    if updated:
        events.publish_lifecycle(run_id, {"status": TrainingRun.Status.FAILED, "error": error})


class _Stop(Exception):
    """The run ended without a version: cancelled, or taken away (reaped, deleted)."""


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, (DataError, CheckpointError, ApplicationError)):
        return str(getattr(exc, "message", None) or exc)
    if isinstance(exc, ValueError):
        return f"invalid training setup: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _data_for(run: TrainingRun) -> tuple[Drawings, Drawings, str, dict[str, Any]]:
    config = run.config
    field = field_set()
    drawings = labelled_drawings(part="train") if config["use_drawings"] else Drawings.empty()
    limit = config.get("mnist_limit")
    repeat = config["extra_repeat"]
    fingerprint = mnist_fingerprint(mnist_ensure()) + (f"[:{limit}]" if limit else "")
    if len(drawings) and repeat:
        fingerprint += f"+{drawings.fingerprint}x{repeat}"
    data = {
        "mnist_train_images": limit or 60000,
        "drawings": len(drawings),
        "drawings_fingerprint": drawings.fingerprint if len(drawings) else None,
        "extra_repeat": repeat,
        "field_set": len(field),
        "field_fingerprint": field.fingerprint if len(field) else None,
    }
    if len(drawings) <= STORED_IDS_LIMIT:
        data["drawing_ids"] = drawings.ids
    return drawings, field, fingerprint, data


def _train(run: TrainingRun, reporter: RunReporter, cancel: CancelFlag):
    config = run.config
    train_values = dict(config["train"])
    train_config = TrainConfig(**train_values)
    init_state = None
    if config["base_version"] is not None:
        base = ModelVersion.objects.filter(pk=config["base_version"]).first()
        if base is None:
            raise ApplicationError("base_version_missing", f"the base version {config['base_version']} no longer exists")
        init_state = version_checkpoint(base)["state_dict"]
    drawings, field, fingerprint, data = _data_for(run)
    reconnecting(lambda: TrainingRun.objects.filter(pk=run.pk).update(data=data, data_fingerprint=fingerprint[:200]))
    reporter.log(
        f"data: {data['mnist_train_images']:,} MNIST training images, {len(drawings):,} labelled drawings "
        f"x{config['extra_repeat']}, field set of {len(field):,} held out; fingerprint {fingerprint}"
    )
    trained = train_to_checkpoint(
        train_config,
        mnist_root=settings.MNIST_ROOT,
        out=None,
        extra_images=drawings.images if len(drawings) else None,
        extra_labels=drawings.labels if len(drawings) else None,
        callback=reporter,
        should_cancel=cancel,
        init_state=init_state,
        mnist_limit=config.get("mnist_limit"),
        extra_eval={"field": (field.images, field.labels)},
        data_fingerprint=fingerprint,
    )
    if len(field):
        trained.checkpoint["metrics"]["field_fingerprint"] = field.fingerprint
    return trained, fingerprint, field


@contextlib.contextmanager
def training_threads() -> Iterator[int]:
    """``TRAINING_TORCH_THREADS`` torch threads for the calling thread while a run trains in it.

    torch's thread count belongs to each thread (a thread that never sets one starts from the last
    count set anywhere in the process): the server's request threads keep ``INFERENCE_THREADS``, the
    thread that trains gets the training budget, and the count it had is put back afterwards.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, settings.TRAINING_TORCH_THREADS))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def training_run_execute(*, run_id: int) -> None:
    """Run a queued training run to its end. Safe to call twice: only one caller can claim a run."""
    with training_threads(), logs.bind(run_id=run_id):  # its log lines carry the run's id
        _execute(run_id)


def _execute(run_id: int) -> None:
    worker = f"{socket.gethostname()}:{os.getpid()}"
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now, worker=worker[:200],
        log=append_log(f"started on {worker}"),
    )
    if not claimed:
        log.info("run %s is not queued (cancelled, finished or taken by another worker); skipped", run_id)
        return
    run = TrainingRun.objects.get(pk=run_id)
    events.publish_lifecycle(run_id, {"status": TrainingRun.Status.RUNNING, "worker": worker})
    active_at_start = ModelVersion.objects.active().first()
    reporter = RunReporter(run_id)
    reporter.log(f"training with {torch.get_num_threads()} torch threads (TRAINING_TORCH_THREADS)")
    stored: str | None = None
    with Heartbeat(run_id) as heartbeat:
        cancel = CancelFlag(run_id, reporter, heartbeat)
        try:
            trained, fingerprint, field = _train(run, reporter, cancel)
            if trained.result.status == "cancelled" or cancel():
                raise _Stop()
            metrics = trained.checkpoint["metrics"]
            reporter.evaluated(metrics)
            stored, sha = checkpoint_store(
                name=f"{RUN_CHECKPOINTS}/run-{run_id}-{run.config['arch']}.pt", checkpoint=trained.checkpoint
            )
            decision = promotion_gate(
                candidate_metrics=metrics, candidate_model=trained.result.model,
                active=ModelVersion.objects.active().first(), field=field,
            )
            _register(run, trained.checkpoint, stored, sha, fingerprint, decision, active_at_start, reporter)
        except _Stop:
            if stored:
                checkpoint_discard(stored)
            if not (cancel.cancelled or cancel.lost):
                cancel.poll()
            reporter.write()
            if cancel.cancelled:
                _finish(run_id, TrainingRun.Status.CANCELLED, line="cancelled; no model version was registered")
            else:
                log.warning("run %s was taken away while running (reaped or deleted); its result is dropped", run_id)
        except BaseException as exc:
            if stored:
                checkpoint_discard(stored)
            message = _error_message(exc)
            if not isinstance(exc, (DataError, CheckpointError, ApplicationError)):
                log.exception("run %s failed", run_id)
            try:
                reporter.write()
            except Exception:
                pass
            _finish(run_id, TrainingRun.Status.FAILED, error=message, line=f"failed: {message}")
            if not isinstance(exc, Exception):
                raise


def _register(
    run: TrainingRun, checkpoint: dict[str, Any], stored: str, sha: str, fingerprint: str,
    decision: GateDecision, active_at_start: ModelVersion | None, reporter: RunReporter,
) -> ModelVersion:
    """One transaction: the version, the gate's outcome and the run's success, or none of them."""
    config = run.config
    base = run.base_version if config["base_version"] is not None else None
    parent = base or active_at_start
    started_from = f"fine-tuned from {base.label}" if base else "from scratch"
    lineage = {
        "run": run.pk,
        "base_version": base.pk if base else None,
        "started_from": "version" if base else "scratch",
        "active_at_start": active_at_start.pk if active_at_start else None,
    }
    automatic = run.trigger == TrainingRun.Trigger.POLICY
    with transaction.atomic():
        row = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if row.status != TrainingRun.Status.RUNNING:
            raise _Stop()
        if row.cancel_requested:
            raise _Stop()
        version = model_version_register(
            checkpoint=checkpoint, file_name=stored, sha256=sha, name=config["name"], parent=parent,
            created_by=row.created_by,
            notes=f"Trained by run {run.pk}, {started_from}"
            + (f" (active version at the start: {active_at_start.label})." if active_at_start and not base else "."),
            training=lineage, data_fingerprint=fingerprint, run_id=row.pk, reason=f"trained by run {run.pk}",
            actor=POLICY if automatic else "",
        )
        promoted = False
        reason = decision.reason
        if not run.promote:
            reason = f"promotion not requested (the gate's verdict: {decision.reason})"
        elif decision.promote:
            current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
            if (current.pk if current else None) != decision.active:
                reason = "not promoted: the active version changed while the gate was comparing"
            else:
                model_version_activate(version=version, by=row.created_by, reason=decision.reason,
                                                 action="promote", run_id=row.pk, check=False)
                promoted = True
        promotion = {"requested": run.promote, "promoted": promoted, "reason": reason, "gate": decision.as_dict()}
        if not promoted:
            version.notes += f" Gate: {reason}"
            version.save(update_fields=["notes"])
        reporter.log(f"registered {version.label} (id {version.pk}); {reason}")
        reporter.log("succeeded")
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.SUCCEEDED, result_version=version, metrics=dict(checkpoint["metrics"]),
            promotion=promotion, finished_at=timezone.now(), progress=1.0, history=reporter.history(),
            log=append_lines(reporter.pending_log),
        )
        reporter.pending_log.clear()
    events.publish_lifecycle(run.pk, {
        "status": TrainingRun.Status.SUCCEEDED, "version": version.pk, "promoted": promoted, "reason": reason,
        "test_accuracy": checkpoint["metrics"].get("test_accuracy"),
        "field_accuracy": checkpoint["metrics"].get("field_accuracy"),
    })
    if automatic:  # the retraining policy's run: its version answers live drawings in shadow from now on
        try:
            version = policy_candidate_to_shadow(run=run, version=version)
        except Exception:  # the run succeeded all the same; the policy's next check tries again
            log.exception("run %s: %s could not enter shadow", run.pk, version.label)
    return version
