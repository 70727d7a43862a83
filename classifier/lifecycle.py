"""The model lifecycle: register, promote (gate), activate, roll back and archive model versions.

Every write here is a service function; each lifecycle action is recorded in the audit log
(``training.LifecycleEvent``: who, when, from which version to which, why). Switching the active
version is a row update in one transaction, guarded by the "at most one active" constraint; every
server process's inference registry re-reads the active version within ``MODEL_REFRESH_SECONDS``, so
the switch needs no restart and in-flight requests finish on the version they started with.

A version's checkpoint file is always written atomically (temp file + rename) *before* its row is
created, and checked with the one checkpoint loader (``weights_only=True``) before it is registered
or activated.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from torch import nn

from mnistsite.errors import ApplicationError
from training.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    sha256_of,
)

from .models import ModelVersion

log = logging.getLogger(__name__)

User = AbstractBaseUser


# ---------------------------------------------------------------------------- checkpoint files


def _local_path(name: str) -> Path | None:
    """The file system path behind a storage name, when media storage is a local (or mounted) folder."""
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:  # object storage: no paths
        return None


def checkpoint_store(*, name: str, checkpoint: dict[str, Any]) -> tuple[str, str]:
    """Write ``checkpoint`` into media storage under ``name`` atomically; returns (storage name, sha256).

    On a file system (local or shared media folder) the file is written to a temp file next to its
    destination and renamed into place, so a reader or a crash never sees half a file. Other storages
    get the finished bytes in one upload.
    """
    path = _local_path(name)
    if path is not None:
        if path.exists():
            name = default_storage.get_available_name(name)
            path = Path(default_storage.path(name))
        sha = save_checkpoint(path, checkpoint)
        return name, sha
    with tempfile.TemporaryDirectory(prefix="mnistsite-checkpoint-") as scratch:
        local = Path(scratch) / Path(name).name
        sha = save_checkpoint(local, checkpoint)
        stored = default_storage.save(name, ContentFile(local.read_bytes()))
    return stored, sha


def checkpoint_discard(name: str) -> None:
    """Remove a checkpoint file that no version refers to (and any temp files left next to it)."""
    if not name or ModelVersion.objects.filter(checkpoint=name).exists():
        return
    try:
        default_storage.delete(name)
    except OSError:
        log.warning("could not delete orphan checkpoint %s", name, exc_info=True)
    path = _local_path(name)
    if path is not None and path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def version_checkpoint(version: ModelVersion) -> dict[str, Any]:
    """A version's checkpoint, read through the one loader and checked against its sha256."""
    try:
        with default_storage.open(version.checkpoint.name, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CheckpointError(f"checkpoint file {version.checkpoint.name} cannot be read: {exc}") from None
    return load_checkpoint(data, sha256=version.sha256)


def version_model(version: ModelVersion) -> nn.Module:
    return model_from_checkpoint(version_checkpoint(version))


def _usable_or_error(version: ModelVersion) -> None:
    try:
        version_model(version)
    except CheckpointError as exc:
        raise ApplicationError(
            "checkpoint_unusable", f"{version.label} cannot be served: {exc}",
            detail={"model": version.pk}, status=409,
        ) from None


# ---------------------------------------------------------------------------- evaluation


def _mnist_test():
    from training.engine.data import DataError, load_mnist

    try:
        return load_mnist(settings.MNIST_ROOT, "test")
    except DataError as exc:
        raise ApplicationError(
            "mnist_unavailable", "The MNIST test set is not available on this server, so the model cannot be "
            "evaluated. Run `python manage.py fetch_mnist` or set MNIST_ROOT.", detail=str(exc), status=503,
        ) from None


def evaluation_metrics(model: nn.Module, *, field_set: Any = None) -> dict[str, Any]:
    """MNIST test and field-set figures for a model, in the shape a version's fields use."""
    from training.dataset import labelled_drawings
    from training.engine.evaluate import evaluate

    test = _mnist_test()
    figures = evaluate(model, test.images, test.labels)
    field = labelled_drawings(part="field") if field_set is None else field_set
    metrics: dict[str, Any] = {
        "test_accuracy": figures["accuracy"],
        "test_loss": figures["loss"],
        "test_n": figures["n"],
        "per_class_accuracy": figures["per_class_accuracy"],
        "confusion_matrix": figures["confusion_matrix"],
        "field_accuracy": None,
        "field_n": len(field),
    }
    if len(field):
        on_field = evaluate(model, field.images, field.labels)
        metrics.update(
            field_accuracy=on_field["accuracy"],
            field_loss=on_field["loss"],
            field_per_class_accuracy=on_field["per_class_accuracy"],
            field_confusion_matrix=on_field["confusion_matrix"],
            field_fingerprint=field.fingerprint,
        )
    return metrics


# ---------------------------------------------------------------------------- audit log


def _record(action: str, *, to_version: ModelVersion | None, from_version: ModelVersion | None = None,
            by: User | None = None, reason: str = "", run: Any = None) -> Any:
    from training.models import LifecycleEvent

    return LifecycleEvent.objects.create(
        action=action,
        from_version=from_version,
        to_version=to_version,
        by=by if by is not None and by.is_authenticated else None,
        reason=reason,
        run=run,
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
    run: Any = None,
    reason: str = "",
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
                _record("register", to_version=version, from_version=parent, by=user, reason=reason or notes, run=run)
                return version
        except IntegrityError:
            if attempt == 4:
                raise
            log.info("version number for %s taken concurrently; retrying", name)
    raise AssertionError("unreachable")


def model_version_upload(
    *, data: bytes, name: str = "", by: User | None = None, notes: str = ""
) -> ModelVersion:
    """Register an uploaded checkpoint as a candidate, after checking and evaluating it.

    The file goes through the one checkpoint loader (``weights_only=True``): garbage, a pickle that
    would run code, an unknown architecture or weights of the wrong shape are refused with the
    loader's message. A valid checkpoint is evaluated on the MNIST test set and the field set (its
    own claimed figures are kept as ``claimed_test_accuracy``), stored atomically and registered.
    """
    try:
        checkpoint = load_checkpoint(data)
        model = model_from_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise ApplicationError("invalid_checkpoint", str(exc), status=400) from None
    sha = sha256_of(data)
    existing = ModelVersion.objects.filter(sha256=sha).first()
    if existing is not None:
        raise ApplicationError(
            "duplicate_checkpoint", f"This checkpoint is already registered as {existing.label}.",
            detail={"model": existing.pk}, status=409,
        )
    name = (name or checkpoint["arch"]).strip()[:100]
    metrics = evaluation_metrics(model)
    claimed = checkpoint.get("metrics", {}).get("test_accuracy")
    if claimed is not None:
        metrics["claimed_test_accuracy"] = claimed
    stored, stored_sha = checkpoint_store(name=f"checkpoints/uploads/{name}-{sha[:12]}.pt", checkpoint=checkpoint)
    try:
        with transaction.atomic():
            return model_version_register(
                checkpoint=checkpoint, file_name=stored, sha256=stored_sha, name=name, created_by=by,
                notes=notes or "Uploaded checkpoint.", metrics=metrics, reason="uploaded checkpoint",
            )
    except BaseException:
        checkpoint_discard(stored)
        raise


def model_version_register_file(
    *, path: str | os.PathLike[str], name: str = "", by: User | None = None, notes: str = ""
) -> ModelVersion:
    """Register a checkpoint written by ``manage.py train`` (the file is copied into media storage)."""
    try:
        checkpoint = load_checkpoint(path)
        model = model_from_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise ApplicationError("invalid_checkpoint", str(exc), status=400) from None
    name = (name or checkpoint["arch"]).strip()[:100]
    from training.dataset import labelled_drawings
    from training.engine.evaluate import evaluate

    metrics: dict[str, Any] = {}
    field = labelled_drawings(part="field")
    metrics["field_n"] = len(field)
    metrics["field_accuracy"] = None
    if len(field):
        on_field = evaluate(model, field.images, field.labels)
        metrics.update(field_accuracy=on_field["accuracy"], field_loss=on_field["loss"],
                       field_per_class_accuracy=on_field["per_class_accuracy"],
                       field_confusion_matrix=on_field["confusion_matrix"], field_fingerprint=field.fingerprint)
    sha = sha256_of(path)
    stored, stored_sha = checkpoint_store(name=f"checkpoints/cli/{name}-{sha[:12]}.pt", checkpoint=checkpoint)
    active = ModelVersion.objects.active().first()
    try:
        with transaction.atomic():
            return model_version_register(
                checkpoint=checkpoint, file_name=stored, sha256=stored_sha, name=name, parent=active, created_by=by,
                notes=notes or "Trained with `manage.py train` from scratch"
                + (f" (active version then: {active.label})." if active else "."),
                metrics=metrics, training={"started_from": "scratch", "active_at_start": active.pk if active else None},
                reason="registered from manage.py train",
            )
    except BaseException:
        checkpoint_discard(stored)
        raise


# ---------------------------------------------------------------------------- switching


def model_version_activate(
    *, version: ModelVersion, by: User | None, reason: str = "", action: str = "activate", run: Any = None,
    check: bool = True,
) -> ModelVersion:
    """Make ``version`` the active one; the previously active version becomes a candidate."""
    if check:
        _usable_or_error(version)
    try:
        with transaction.atomic():
            target = ModelVersion.objects.select_for_update().get(pk=version.pk)
            current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
            if current is not None and current.pk == target.pk:
                raise ApplicationError("already_active", f"{target.label} is already the active version.",
                                       detail={"model": target.pk}, status=409)
            if current is not None:
                current.status = ModelVersion.Status.CANDIDATE
                current.save(update_fields=["status"])
            target.status = ModelVersion.Status.ACTIVE
            target.activated_at = timezone.now()
            target.save(update_fields=["status", "activated_at"])
            _record(action, to_version=target, from_version=current, by=by, reason=reason, run=run)
    except IntegrityError:
        raise ApplicationError("conflict", "Another activation happened at the same moment; try again.",
                               status=409) from None
    log.info("%s: %s is now active (was %s) by %s: %s", action, target.label,
             current.label if current else None, getattr(by, "username", None), reason)
    return target


def previous_active_version() -> ModelVersion | None:
    """The version that was active before the current one, from the audit log.

    Activations push onto a stack and rollbacks pop it, so rolling back twice goes two versions back.
    Archived or deleted versions are skipped.
    """
    from training.models import LifecycleEvent

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


# ---------------------------------------------------------------------------- promotion gate


@dataclass
class GateDecision:
    promote: bool
    reason: str
    active: int | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reason": self.reason, "active": self.active, "figures": self.figures}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def promotion_gate(
    *, candidate_metrics: dict[str, Any], candidate_model: nn.Module, active: ModelVersion | None
) -> GateDecision:
    """Whether a candidate is at least as good as the active version on MNIST test and on the field set.

    Both are measured on the same images: MNIST test figures are stored per version; the field set
    grows, so the active version is evaluated on today's field set here. Margins (accuracy the
    candidate may lose) come from ``PROMOTION_MARGIN_MNIST`` and ``PROMOTION_MARGIN_FIELD``.
    """
    from training.dataset import labelled_drawings
    from training.engine.evaluate import evaluate

    if active is None:
        return GateDecision(True, "no version is active, so the candidate is promoted", None)
    m_mnist, m_field = settings.PROMOTION_MARGIN_MNIST, settings.PROMOTION_MARGIN_FIELD
    cand_test, act_test = candidate_metrics.get("test_accuracy"), active.test_accuracy
    figures: dict[str, Any] = {"mnist": {"candidate": cand_test, "active": act_test, "margin": m_mnist}}
    reasons: list[str] = []
    ok = True
    if cand_test is None or act_test is None:
        ok = False
        reasons.append("MNIST test accuracy is unknown for " + ("the candidate" if cand_test is None else active.label))
    else:
        passed = cand_test >= act_test - m_mnist - 1e-12
        ok &= passed
        reasons.append(
            f"MNIST test {_pct(cand_test)} {'>=' if passed else '<'} {_pct(act_test)} of {active.label}"
            + (f" minus margin {100 * m_mnist:.2f} pp" if m_mnist else "")
        )
    field_set = labelled_drawings(part="field")
    if not len(field_set):
        figures["field"] = None
        reasons.append("field set is empty, so only MNIST was compared")
    else:
        cand_field = evaluate(candidate_model, field_set.images, field_set.labels)["accuracy"]
        try:
            act_field = evaluate(version_model(active), field_set.images, field_set.labels)["accuracy"]
        except CheckpointError as exc:
            act_field = None
            reasons.append(f"{active.label} could not be evaluated on the field set ({exc})")
        figures["field"] = {"candidate": cand_field, "active": act_field, "margin": m_field, "n": len(field_set)}
        if act_field is not None:
            passed = cand_field >= act_field - m_field - 1e-12
            ok &= passed
            reasons.append(
                f"field set {_pct(cand_field)} {'>=' if passed else '<'} {_pct(act_field)} (n={len(field_set)})"
                + (f" minus margin {100 * m_field:.2f} pp" if m_field else "")
            )
    verdict = "promoted" if ok else "not promoted"
    return GateDecision(ok, f"{verdict}: " + "; ".join(reasons), active.pk, figures)
