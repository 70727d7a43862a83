"""Writes for training runs: check a request and start a run, cancel one.

Execution (the task body) is in ``execution``, the executors in ``executor``, the reaper in ``reaper``.
"""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from classifier.checkpoints import version_checkpoint
from classifier.models import ModelVersion
from engine.checkpoint import CheckpointError
from engine.nets import ARCHITECTURES, MAX_PARAMETERS, config_to_dict, make_config, parameter_count
from engine.trainer import FINETUNE_MNIST_LIMIT, config_summary, finetune_recipe, recipe
from mnistsite.errors import ApplicationError

from . import events
from .executor import dispatch
from .models import TrainingRun
from .reporting import append_log, log_line
from .spec import run_options, spec_values

log = logging.getLogger(__name__)


def _invalid(message: str, detail: Any = None) -> ApplicationError:
    return ApplicationError("invalid_config", message, detail, status=400)


def _username(user: AbstractBaseUser | None) -> str:
    return getattr(user, "username", None) or "system"


# ---------------------------------------------------------------------------- the run config


def run_config_build(spec: dict[str, Any]) -> tuple[dict[str, Any], ModelVersion | None]:
    """Check a run request and turn it into the stored config; raises ``ApplicationError`` (400).

    Options left out take the architecture's recipe, or when fine-tuning (``base_version``) the
    fine-tune recipe (``engine.trainer.finetune_recipe``: epochs, learning rate, ``extra_repeat``,
    and ``FINETUNE_MNIST_LIMIT`` for ``mnist_limit``). Fine-tuning takes the architecture and its
    config from the base version's checkpoint.
    """
    unknown = sorted(set(spec) - {option.name for option in run_options()})
    if unknown:
        raise _invalid(f"unknown field(s): {', '.join(unknown)}", {"unknown": unknown})
    if isinstance(spec.get("base_version"), ModelVersion):
        spec = {**spec, "base_version": spec["base_version"].pk}
    try:
        values = spec_values(spec)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
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
            arch_config = version_checkpoint(base)["config"]
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
    # Fine-tuning takes the fine-tune recipe (fewer epochs, a lower peak learning rate, drawings
    # repeated more, perhaps an MNIST subset); from scratch, the architecture's. Given options win.
    build = finetune_recipe if base is not None else recipe
    limit = values["mnist_limit"]
    if limit is None and base is not None:
        limit = FINETUNE_MNIST_LIMIT
    try:
        train = build(
            arch, arch_config=arch_config, epochs=values["epochs"], batch_size=values["batch_size"], lr=values["lr"],
            seed=values["seed"], augment=values["augment"], val_size=values["val_size"], device=values["device"],
            extra_repeat=values["extra_repeat"],
        )
        train.validate()
        parameters = parameter_count(arch, arch_config)  # counted without allocating them
    except (ValueError, TypeError, RuntimeError) as exc:
        raise _invalid(str(exc)) from None
    if parameters > MAX_PARAMETERS:
        raise _invalid(f"the network would have {parameters:,} parameters; at most {MAX_PARAMETERS:,} are allowed")
    if limit is not None and limit - train.val_size < train.batch_size:
        raise _invalid(
            f"mnist_limit {limit} must leave at least one batch ({train.batch_size}) "
            f"after the validation split ({train.val_size})"
        )
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
        "extra_repeat": train.extra_repeat,
        "mnist_limit": limit,
        "promote": bool(values["promote"]),
        "name": name,
        "num_parameters": parameters,
        "train": config_summary(train),
    }
    return config, base


# ---------------------------------------------------------------------------- start, cancel


# Any number that is not a PostgreSQL advisory lock key of something else: "mnist" in ASCII.
_RUN_START_LOCK = 0x6D6E697374


def _run_starts_serialized() -> None:
    """Inside a transaction: wait for every other run start to commit, so that counting runs and creating
    one is a single step. PostgreSQL: a transaction-level advisory lock. SQLite: every transaction
    already begins with the database's write lock (``transaction_mode`` IMMEDIATE in the settings)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_RUN_START_LOCK])


def _runs_words(runs: list[TrainingRun]) -> str:
    return ", ".join(f"#{run.pk} {run.status}" for run in runs)


def _queue_limits_check(user: AbstractBaseUser | None) -> None:
    """Refuse a user's run while they have ``TRAINING_MAX_QUEUED_PER_USER`` runs queued or running, or
    while ``TRAINING_MAX_QUEUED`` runs (anyone's, the policy's included) are; 0 turns a limit off.

    Runs started without a user (the retraining policy, which has at most one run of its own at a time)
    are never refused here: a queue that users filled must not stop the policy. Call inside the
    transaction that creates the run, after ``_run_starts_serialized``."""
    if user is None:
        return
    unfinished = TrainingRun.objects.unfinished().order_by("id")
    per_user = settings.TRAINING_MAX_QUEUED_PER_USER
    if per_user:
        mine = list(unfinished.filter(created_by=user).only("id", "status")[:per_user])
        if len(mine) >= per_user:
            raise ApplicationError(
                "too_many_runs",
                f"You already have {len(mine)} run{'s' if len(mine) != 1 else ''} queued or running "
                f"({_runs_words(mine)}); at most {per_user} per person (TRAINING_MAX_QUEUED_PER_USER). "
                "Wait for one to finish or cancel one.",
                detail=[{"id": run.pk, "status": run.status} for run in mine], status=409,
            )
    total = settings.TRAINING_MAX_QUEUED
    if total:
        everyone = list(unfinished.only("id", "status")[:total])
        if len(everyone) >= total:
            raise ApplicationError(
                "too_many_runs",
                f"{len(everyone)} runs are queued or running ({_runs_words(everyone)}); at most {total} at a time "
                "(TRAINING_MAX_QUEUED). Try again when one has finished.",
                detail=[{"id": run.pk, "status": run.status} for run in everyone], status=409,
            )


def training_run_start(*, spec: dict[str, Any], by: AbstractBaseUser | None) -> TrainingRun:
    """Create a queued run and hand it to the executor once the transaction commits.

    A user's run is refused (``too_many_runs``, 409) beyond the queue limits (``_queue_limits_check``)."""
    config, base = run_config_build(spec)
    executor = settings.TRAINING_EXECUTOR
    user = by if by is not None and by.is_authenticated else None
    with transaction.atomic():
        _run_starts_serialized()
        _queue_limits_check(user)
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
    if run.status == TrainingRun.Status.FAILED and run.started_at is None:  # never taken: e.g. the broker is down
        raise ApplicationError("queue_unavailable", f"The run could not be started: {run.error}",
                               detail={"run": run.pk}, status=503)
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


