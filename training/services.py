"""Writes for training runs: start, cancel, execute (the task body), fail, reap.

``training_run_execute`` is the body of the Celery task and of the server-thread executor alike: it
claims a queued run, trains with the engine through ``training.pipeline.train_to_checkpoint`` (feeding
its progress callback and cancel flag), writes the checkpoint atomically, and only then, in one
transaction, registers the model version, applies the promotion gate and marks the run succeeded.
A worker that dies before that transaction leaves no version row; the reaper marks its run failed
once its heartbeat is older than ``TRAINING_HEARTBEAT_TIMEOUT`` and removes any checkpoint file it left.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any

import torch
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from classifier import lifecycle
from classifier.models import ModelVersion
from mnistsite.errors import ApplicationError
from training.engine.checkpoint import CheckpointError
from training.engine.data import DataError, mnist_fingerprint
from training.engine.nets import ARCHITECTURES, build_model, config_to_dict, count_parameters, make_config
from training.engine.trainer import TrainConfig, config_summary, recipe
from training.pipeline import train_to_checkpoint

from . import events
from .dataset import Drawings, labelled_drawings
from .models import TrainingRun
from .reporting import CancelFlag, Heartbeat, RunReporter, append_lines, append_log, log_line

log = logging.getLogger(__name__)

RUN_CHECKPOINTS = "checkpoints/runs"
MAX_PARAMETERS = 20_000_000
MAX_EPOCHS = 200
STORED_IDS_LIMIT = 10_000

# What a run may be asked for, with the defaults of anything not given (None: the recipe's value).
SPEC_FIELDS: dict[str, Any] = {
    "arch": None,
    "arch_config": None,
    "epochs": None,
    "batch_size": None,
    "lr": None,
    "seed": 0,
    "augment": None,
    "val_size": None,
    "device": "auto",
    "base_version": None,
    "use_drawings": True,
    "extra_repeat": 1,
    "mnist_limit": None,
    "promote": False,
    "name": "",
}


def _invalid(message: str, detail: Any = None) -> ApplicationError:
    return ApplicationError("invalid_config", message, detail, status=400)


def _username(user: AbstractBaseUser | None) -> str:
    return getattr(user, "username", None) or "system"


# ---------------------------------------------------------------------------- the run config


def run_config_build(spec: dict[str, Any]) -> tuple[dict[str, Any], ModelVersion | None]:
    """Check a run request and turn it into the stored config; raises ``ApplicationError`` (400).

    Options left out take the architecture's recipe. Fine-tuning (``base_version``) takes the
    architecture and its config from the base version's checkpoint.
    """
    unknown = set(spec) - set(SPEC_FIELDS)
    if unknown:
        raise _invalid(f"unknown field(s): {', '.join(sorted(unknown))}", {"unknown": sorted(unknown)})
    values = {**SPEC_FIELDS, **{k: v for k, v in spec.items() if v is not None or k == "base_version"}}
    base = values["base_version"]
    if base is not None and not isinstance(base, ModelVersion):
        base = ModelVersion.objects.filter(pk=base).first()
        if base is None:
            raise _invalid(f"there is no model version {spec['base_version']}", {"base_version": spec["base_version"]})
    arch = values["arch"]
    if base is not None:
        if arch and arch != base.arch:
            raise _invalid(f"arch {arch!r} does not match the base version's architecture {base.arch!r}")
        if values["arch_config"]:
            raise _invalid("arch_config cannot be given when fine-tuning: it comes from the base version")
        try:
            arch_config = lifecycle.version_checkpoint(base)["config"]
        except CheckpointError as exc:
            raise _invalid(f"the base version {base.label} cannot be loaded: {exc}") from None
        arch = base.arch
    else:
        if not arch:
            raise _invalid("arch is required when not fine-tuning from a base version")
        if arch not in ARCHITECTURES:
            raise _invalid(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
        arch_config = values["arch_config"] or {}
        if not isinstance(arch_config, dict):
            raise _invalid("arch_config must be an object")
    try:
        train = recipe(
            arch, arch_config=arch_config, epochs=values["epochs"], batch_size=values["batch_size"], lr=values["lr"],
            seed=values["seed"], augment=values["augment"], val_size=values["val_size"], device=values["device"],
        )
        train.validate()
        with torch.device("meta"):  # count parameters without allocating them
            parameters = count_parameters(build_model(arch, make_config(arch, arch_config)))
    except (ValueError, TypeError, RuntimeError) as exc:
        raise _invalid(str(exc)) from None
    if parameters > MAX_PARAMETERS:
        raise _invalid(f"the network would have {parameters:,} parameters; at most {MAX_PARAMETERS:,} are allowed")
    if train.epochs > MAX_EPOCHS:
        raise _invalid(f"epochs must be at most {MAX_EPOCHS}")
    if values["device"] not in {"auto", "cpu", "cuda"}:
        raise _invalid("device must be auto, cpu or cuda")
    limit = values["mnist_limit"]
    if limit is not None and (limit > 60000 or limit - train.val_size < train.batch_size):
        raise _invalid(
            f"mnist_limit {limit} must be at most 60000 and leave at least one batch ({train.batch_size}) "
            f"after the validation split ({train.val_size})"
        )
    if not 0 <= int(values["extra_repeat"]) <= 100:
        raise _invalid("extra_repeat must be between 0 and 100")
    name = (values["name"] or arch).strip()[:100]
    config = {
        "arch": arch,
        "arch_config": config_to_dict(make_config(arch, arch_config)),
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "lr": train.lr,
        "seed": train.seed,
        "augment": train.augment,
        "val_size": train.val_size,
        "device": train.device,
        "base_version": base.pk if base is not None else None,
        "use_drawings": bool(values["use_drawings"]),
        "extra_repeat": int(values["extra_repeat"]),
        "mnist_limit": limit,
        "promote": bool(values["promote"]),
        "name": name,
        "num_parameters": parameters,
        "train": config_summary(train),
    }
    return config, base


# ---------------------------------------------------------------------------- start, cancel


def training_run_start(*, spec: dict[str, Any], by: AbstractBaseUser | None) -> TrainingRun:
    """Create a queued run and hand it to the executor once the transaction commits."""
    from .executor import dispatch

    config, base = run_config_build(spec)
    executor = settings.TRAINING_EXECUTOR
    user = by if by is not None and by.is_authenticated else None
    with transaction.atomic():
        run = TrainingRun.objects.create(
            config=config,
            base_version=base,
            promote=config["promote"],
            executor=executor,
            created_by=user,
            total_epochs=config["epochs"],
            log=log_line(
                f"queued by {_username(user)} ({executor}): {config['arch']}, {config['epochs']} epochs, "
                + (f"fine-tuning {base.label}" if base else "from scratch")
            ),
        )
        run_id = run.pk
        transaction.on_commit(lambda: events.publish_lifecycle(run_id, {"status": TrainingRun.Status.QUEUED}))
        dispatch(run)
    run.refresh_from_db()
    return run


def training_run_cancel(*, run: TrainingRun, by: AbstractBaseUser | None) -> TrainingRun:
    """Cancel a queued run at once; ask a running one to stop (it does within one batch)."""
    with transaction.atomic():
        row = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if row.is_finished:
            raise ApplicationError("run_finished", f"Run {row.pk} has already finished ({row.status}).",
                                   detail={"run": row.pk, "status": row.status}, status=409)
        if row.status == TrainingRun.Status.QUEUED:
            TrainingRun.objects.filter(pk=row.pk).update(
                status=TrainingRun.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now(),
                log=append_log(f"cancelled by {_username(by)} before it started"),
            )
            transaction.on_commit(lambda: events.publish_lifecycle(row.pk, {"status": TrainingRun.Status.CANCELLED}))
        elif not row.cancel_requested:
            TrainingRun.objects.filter(pk=row.pk).update(
                cancel_requested=True, log=append_log(f"cancel requested by {_username(by)}")
            )
    run.refresh_from_db()
    return run


def _finish(run_id: int, status: str, *, error: str = "", line: str) -> bool:
    """Move a running run to a final status (only if it is still running), and announce it."""
    updated = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(
        status=status, error=error, finished_at=timezone.now(), log=append_log(line)
    )
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


# ---------------------------------------------------------------------------- the reaper


def _discard_run_files(run_id: int) -> None:
    """Remove checkpoint files (finished or temp) a dead run left behind, unless a version uses them."""
    prefixes = (f"run-{run_id}-", f".run-{run_id}-")
    try:
        _, files = default_storage.listdir(RUN_CHECKPOINTS)
    except (FileNotFoundError, NotImplementedError, OSError):
        return
    for file in files:
        if file.startswith(prefixes):
            lifecycle.checkpoint_discard(f"{RUN_CHECKPOINTS}/{file}")


def training_runs_reap(*, now=None) -> list[int]:
    """Mark running runs whose heartbeat is older than ``TRAINING_HEARTBEAT_TIMEOUT`` as failed."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT)
    stale = (
        TrainingRun.objects.running()
        .filter(Q(heartbeat_at__lt=limit) | Q(heartbeat_at__isnull=True, started_at__lt=limit))
        .values_list("pk", "heartbeat_at", "worker")
    )
    reaped = []
    for pk, beat, worker in stale:
        last = f"{beat:%Y-%m-%d %H:%M:%S} UTC" if beat else "never"
        error = (
            f"The worker running this run ({worker or 'unknown'}) stopped sending heartbeats (last: {last}; "
            f"limit {settings.TRAINING_HEARTBEAT_TIMEOUT:g} s) and is presumed dead. The run was marked failed; "
            f"no model version was registered."
        )
        updated = TrainingRun.objects.filter(pk=pk, status=TrainingRun.Status.RUNNING, heartbeat_at=beat).update(
            status=TrainingRun.Status.FAILED, error=error, finished_at=now, log=append_log(error)
        )
        if updated:
            log.warning("run %s: %s", pk, error)
            _discard_run_files(pk)
            events.publish_lifecycle(pk, {"status": TrainingRun.Status.FAILED, "error": error})
            reaped.append(pk)
    return reaped


# ---------------------------------------------------------------------------- executing a run


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
    field = labelled_drawings(part="field")
    drawings = labelled_drawings(part="train") if config["use_drawings"] else Drawings.empty()
    limit = config.get("mnist_limit")
    repeat = config["extra_repeat"]
    fingerprint = mnist_fingerprint(settings.MNIST_ROOT) + (f"[:{limit}]" if limit else "")
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
        init_state = lifecycle.version_checkpoint(base)["state_dict"]
    drawings, field, fingerprint, data = _data_for(run)
    TrainingRun.objects.filter(pk=run.pk).update(data=data, data_fingerprint=fingerprint[:200])
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
    return trained, fingerprint


def training_run_execute(*, run_id: int) -> None:
    """Run a queued training run to its end. Safe to call twice: only one caller can claim a run."""
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
    stored: str | None = None
    with Heartbeat(run_id) as heartbeat:
        cancel = CancelFlag(run_id, reporter, heartbeat)
        try:
            trained, fingerprint = _train(run, reporter, cancel)
            if trained.result.status == "cancelled" or cancel():
                raise _Stop()
            metrics = trained.checkpoint["metrics"]
            reporter.evaluated(metrics)
            stored, sha = lifecycle.checkpoint_store(
                name=f"{RUN_CHECKPOINTS}/run-{run_id}-{run.config['arch']}.pt", checkpoint=trained.checkpoint
            )
            decision = lifecycle.promotion_gate(
                candidate_metrics=metrics, candidate_model=trained.result.model,
                active=ModelVersion.objects.active().first(),
            )
            _register(run, trained.checkpoint, stored, sha, fingerprint, decision, active_at_start, reporter)
        except _Stop:
            if stored:
                lifecycle.checkpoint_discard(stored)
            if not (cancel.cancelled or cancel.lost):
                cancel.poll()
            reporter.write()
            if cancel.cancelled:
                _finish(run_id, TrainingRun.Status.CANCELLED, line="cancelled; no model version was registered")
            else:
                log.warning("run %s was taken away while running (reaped or deleted); its result is dropped", run_id)
        except BaseException as exc:
            if stored:
                lifecycle.checkpoint_discard(stored)
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
    decision: lifecycle.GateDecision, active_at_start: ModelVersion | None, reporter: RunReporter,
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
    with transaction.atomic():
        row = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if row.status != TrainingRun.Status.RUNNING:
            raise _Stop()
        if row.cancel_requested:
            raise _Stop()
        version = lifecycle.model_version_register(
            checkpoint=checkpoint, file_name=stored, sha256=sha, name=config["name"], parent=parent,
            created_by=row.created_by,
            notes=f"Trained by run {run.pk}, {started_from}"
            + (f" (active version at the start: {active_at_start.label})." if active_at_start and not base else "."),
            training=lineage, data_fingerprint=fingerprint, run=row, reason=f"trained by run {run.pk}",
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
                lifecycle.model_version_activate(version=version, by=row.created_by, reason=decision.reason,
                                                 action="promote", run=row, check=False)
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
    return version
