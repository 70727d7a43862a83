"""The model lifecycle: register, upload, activate, roll back and archive model versions.

Every write here is a service function; each lifecycle action is recorded in the audit log
(``LifecycleEvent``: who, when, from which version to which, why). Switching the active version is
a row update in one transaction, guarded by the "at most one active" constraint; every server
process's inference registry re-reads the active version within ``MODEL_REFRESH_SECONDS``, so the
switch needs no restart and in-flight requests finish on the version they started with.

A version's checkpoint file is written atomically (``checkpoints.checkpoint_store``) *before* its
row is created, and checked with the one checkpoint loader before it is registered or activated.
The promotion gate is in ``promotion``; evaluation in ``evaluation``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from engine.checkpoint import CheckpointError, check_plain, load_checkpoint, model_from_checkpoint, sha256_of
from engine.nets import count_parameters
from mnistsite.errors import ApplicationError

from .checkpoints import checkpoint_discard, checkpoint_store, version_model
from .evaluation import model_evaluate
from .models import LifecycleEvent, ModelVersion

log = logging.getLogger(__name__)

User = AbstractBaseUser


def _usable_or_error(version: ModelVersion) -> None:
    try:
        version_model(version)
    except CheckpointError as exc:
        raise ApplicationError(
            "checkpoint_unusable", f"{version.label} cannot be served: {exc}",
            detail={"model": version.pk}, status=409,
        ) from None


# ---------------------------------------------------------------------------- audit log


def _record(action: str, *, to_version: ModelVersion | None, from_version: ModelVersion | None = None,
            by: User | None = None, reason: str = "", run_id: int | None = None, actor: str = "") -> LifecycleEvent:
    return LifecycleEvent.objects.create(
        action=action,
        from_version=from_version,
        to_version=to_version,
        by=by if by is not None and by.is_authenticated else None,
        reason=reason,
        run_id=run_id,
        actor=actor[:20],
    )


# ---------------------------------------------------------------------------- registering


def _next_version_number(name: str) -> int:
    return (ModelVersion.objects.filter(name=name).aggregate(n=Max("version"))["n"] or 0) + 1


def model_version_register(
    *,
    checkpoint: dict[str, Any],
    file_name: str,
    sha256: str,
    name: str,
    parent: ModelVersion | None = None,
    created_by: User | None = None,
    notes: str = "",
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    data_fingerprint: str | None = None,
    run_id: int | None = None,
    reason: str = "",
    actor: str = "",
) -> ModelVersion:
    """Create a *candidate* version for a checkpoint file already in storage, and log it.

    ``metrics`` (e.g. from a fresh evaluation) override the checkpoint's own figures. Runs in the
    caller's transaction when there is one; the version number is the next free one for ``name``.
    """
    figures = {**checkpoint.get("metrics", {}), **(metrics or {})}
    per_class = figures.pop("per_class_accuracy", [])
    confusion = figures.pop("confusion_matrix", [])
    test_accuracy = figures.get("test_accuracy")
    config = {k: v for k, v in checkpoint.get("training", {}).items() if k != "history"}
    config.update(training or {})
    user = created_by if created_by is not None and created_by.is_authenticated else None
    for attempt in range(5):
        try:
            with transaction.atomic():
                version = ModelVersion.objects.create(
                    name=name,
                    version=_next_version_number(name),
                    arch=checkpoint["arch"],
                    checkpoint=file_name,
                    sha256=sha256,
                    num_parameters=checkpoint.get("num_parameters", 0),
                    test_accuracy=test_accuracy,
                    per_class_accuracy=per_class,
                    confusion_matrix=confusion,
                    metrics=figures,
                    preprocessing=checkpoint.get("preprocessing", ""),
                    data_fingerprint=(data_fingerprint or checkpoint.get("data_fingerprint", ""))[:100],
                    training_config=config,
                    status=ModelVersion.Status.CANDIDATE,
                    parent=parent,
                    notes=notes,
                    created_by=user,
                )
                _record("register", to_version=version, from_version=parent, by=user, reason=reason or notes, run_id=run_id,
                        actor=actor)
                return version
        except IntegrityError:
            if attempt == 4:
                raise
            log.info("version number for %s taken concurrently; retrying", name)
    raise AssertionError("unreachable")


def _register_checkpoint_file(
    *, data: bytes | str | os.PathLike[str], folder: str, name: str, by: User | None, notes: str, reason: str,
    evaluate_mnist: bool, parent: ModelVersion | None = None, training: dict[str, Any] | None = None,
) -> ModelVersion:
    """Check a checkpoint (bytes or a file), evaluate it, copy it into media storage and register it.

    The file goes through the one checkpoint loader (``weights_only=True``): garbage, a pickle that
    would run code, an unknown architecture, a network beyond a run's bounds (checked before it is
    built), weights of the wrong shape, NaN or infinite weights or metrics are refused with the
    loader's message (``invalid_checkpoint``, 400). A copy already registered (same sha256) is refused too.
    """
    try:
        checkpoint = load_checkpoint(data)
        model = model_from_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise ApplicationError("invalid_checkpoint", str(exc), status=400) from None
    preprocessing = checkpoint.get("preprocessing", "")
    limit = ModelVersion._meta.get_field("preprocessing").max_length
    if not isinstance(preprocessing, str) or len(preprocessing) > limit:
        raise ApplicationError("invalid_checkpoint", f"'preprocessing' must be a name of at most {limit} characters.",
                               status=400)
    # The figure registered is the model's own count, not the file's claim.
    checkpoint = {**checkpoint, "num_parameters": count_parameters(model)}
    sha = sha256_of(data)
    existing = ModelVersion.objects.filter(sha256=sha).first()
    if existing is not None:
        raise ApplicationError(
            "duplicate_checkpoint", f"This checkpoint is already registered as {existing.label}.",
            detail={"model": existing.pk}, status=409,
        )
    name = (name or checkpoint["arch"]).strip()[:100]
    metrics = model_evaluate(model, mnist=evaluate_mnist)
    claimed = checkpoint.get("metrics", {}).get("test_accuracy")
    if evaluate_mnist and claimed is not None:
        metrics["claimed_test_accuracy"] = claimed
    try:  # finite weights can still overflow to infinite answers
        check_plain(metrics, where="the evaluation", source="this checkpoint")
    except CheckpointError as exc:
        raise ApplicationError("invalid_checkpoint", f"{exc} (are its weights far too large?)", status=400) from None
    stored, stored_sha = checkpoint_store(name=f"checkpoints/{folder}/{name}-{sha[:12]}.pt", checkpoint=checkpoint)
    try:
        with transaction.atomic():
            return model_version_register(
                checkpoint=checkpoint, file_name=stored, sha256=stored_sha, name=name, parent=parent,
                created_by=by, notes=notes, metrics=metrics, training=training, reason=reason,
            )
    except BaseException:
        checkpoint_discard(stored)
        raise


def model_version_upload(
    *, data: bytes, name: str = "", by: User | None = None, notes: str = ""
) -> ModelVersion:
    """Register an uploaded checkpoint as a candidate, evaluated here on the MNIST test set and the
    field set (the file's own claimed figure is kept as ``claimed_test_accuracy``)."""
    return _register_checkpoint_file(
        data=data, folder="uploads", name=name, by=by, notes=notes or "Uploaded checkpoint.",
        reason="uploaded checkpoint", evaluate_mnist=True,
    )


def model_version_register_file(
    *, path: str | os.PathLike[str], name: str = "", by: User | None = None, notes: str = ""
) -> ModelVersion:
    """Register a checkpoint written by ``manage.py train`` (copied into media storage). Its MNIST
    figures come from the training command; the field set is evaluated here."""
    active = ModelVersion.objects.active().first()
    return _register_checkpoint_file(
        data=Path(path), folder="cli", name=name, by=by,
        notes=notes or "Trained with `manage.py train` from scratch"
        + (f" (active version then: {active.label})." if active else "."),
        reason="registered from manage.py train", evaluate_mnist=False, parent=active,
        training={"started_from": "scratch", "active_at_start": active.pk if active else None},
    )


# ---------------------------------------------------------------------------- switching


def why_not_vetted(version: ModelVersion) -> str | None:
    """Why a person may not simply activate ``version`` (it would skip the promotion gate), or None."""
    if version.vetted:
        return None
    if version.status == ModelVersion.Status.ARCHIVED:
        return "is archived"
    return "was never active and did not ship with the site"


def _past_the_gate(target: ModelVersion, *, force: bool, reason: str) -> bool:
    """Whether activating ``target`` by hand skips the promotion gate, and may (``force`` and a reason).

    A person may activate a vetted version (active once, or shipped, and not archived): that is going back
    to a version that already earned its place. An archived version, or a candidate that was never active,
    reaches the public only through the gate (``shadow.shadow_promote``), or by force: an explicit choice
    with a reason, recorded as its own action ("forced")."""
    why = why_not_vetted(target)
    if why is None:
        return False
    if not force:
        raise ApplicationError(
            "activation_needs_gate",
            f"{target.label} {why}: activating it would skip the promotion gate. Promote it through the gate, "
            "or force the activation with a reason (recorded as forced).",
            detail={"model": target.pk, "status": target.status, "force": False}, status=409)
    if not reason.strip():
        raise ApplicationError(
            "reason_required", f"{target.label} {why}: a forced activation needs a reason for the audit log.",
            detail={"model": target.pk, "force": True}, status=400)
    return True


def model_version_activate(
    *, version: ModelVersion, by: User | None, reason: str = "", action: str = "activate", run_id: int | None = None,
    check: bool = True, actor: str = "", force: bool = False,
) -> ModelVersion:
    """Make ``version`` the active one; the previously active version becomes a candidate.

    A person's activation (``action="activate"``) of an archived or never-vetted version is refused unless
    ``force`` with a ``reason``; it is then recorded as "forced" (``_past_the_gate``). The gate's promotions
    and rollbacks (to a version that was active) pass their own ``action``.
    ``actor`` names who acted when no person did (``"policy"``: automatic retraining)."""
    if check:
        _usable_or_error(version)
    try:
        with transaction.atomic():
            target = ModelVersion.objects.select_for_update().get(pk=version.pk)
            current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
            if current is not None and current.pk == target.pk:
                raise ApplicationError("already_active", f"{target.label} is already the active version.",
                                       detail={"model": target.pk}, status=409)
            if action == LifecycleEvent.Action.ACTIVATE and _past_the_gate(target, force=force, reason=reason):
                action = LifecycleEvent.Action.FORCED
            if current is not None:
                current.status = ModelVersion.Status.CANDIDATE
                current.save(update_fields=["status"])
            target.status = ModelVersion.Status.ACTIVE
            target.activated_at = timezone.now()
            target.save(update_fields=["status", "activated_at"])
            _record(action, to_version=target, from_version=current, by=by, reason=reason, run_id=run_id, actor=actor)
    except IntegrityError:
        raise ApplicationError("conflict", "Another activation happened at the same moment; try again.",
                               status=409) from None
    (log.warning if action == LifecycleEvent.Action.FORCED else log.info)(
        "%s: %s is now active (was %s) by %s: %s", action, target.label, current.label if current else None,
        getattr(by, "username", None), reason)
    return target


def previous_active_version() -> ModelVersion | None:
    """The version that was active before the current one, from the audit log.

    Activations push onto a stack and rollbacks pop it, so rolling back twice goes two versions back.
    Archived or deleted versions are skipped.
    """
    current = ModelVersion.objects.active().first()
    if current is None:
        return None
    stack: list[int] = []
    events = (
        LifecycleEvent.objects.filter(action__in=LifecycleEvent.SWITCHES)
        .order_by("at", "id")
        .values_list("action", "from_version_id", "to_version_id")
    )
    for action, from_id, to_id in events:
        if action == LifecycleEvent.Action.ROLLBACK:
            while stack and stack[-1] != to_id:
                stack.pop()
            if not stack and to_id is not None:
                stack.append(to_id)
        else:
            if not stack and from_id is not None:
                stack.append(from_id)
            if to_id is not None:
                stack.append(to_id)
    if not stack or stack[-1] != current.pk:
        stack.append(current.pk)  # activated outside the lifecycle (e.g. by a migration)
    below = [pk for pk in reversed(stack[:-1]) if pk != current.pk]
    usable = ModelVersion.objects.in_bulk(below)
    for pk in below:
        version = usable.get(pk)
        if version is not None and version.status != ModelVersion.Status.ARCHIVED:
            return version
    return None


def model_version_rollback(*, by: User | None, reason: str = "") -> ModelVersion:
    """Activate the version that was active before the current one, in one action."""
    current = ModelVersion.objects.active().first()
    target = previous_active_version()
    if target is None:
        raise ApplicationError(
            "nothing_to_roll_back",
            "There is no earlier active version to roll back to." if current else "No version is active.",
            detail={"active": current.pk if current else None}, status=409,
        )
    return model_version_activate(version=target, by=by, reason=reason, action="rollback")


def model_version_archive(*, version: ModelVersion, by: User | None, reason: str = "") -> ModelVersion:
    """Retire a version: it no longer serves or appears among usable versions. The active one cannot be."""
    with transaction.atomic():
        target = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if target.status == ModelVersion.Status.ACTIVE:
            raise ApplicationError(
                "cannot_archive_active",
                f"{target.label} is the active version; activate another version or roll back first.",
                detail={"model": target.pk}, status=409,
            )
        if target.status == ModelVersion.Status.ARCHIVED:
            raise ApplicationError("already_archived", f"{target.label} is already archived.",
                                   detail={"model": target.pk}, status=409)
        target.status = ModelVersion.Status.ARCHIVED
        target.save(update_fields=["status"])
        _record("archive", to_version=target, by=by, reason=reason)
    return target
