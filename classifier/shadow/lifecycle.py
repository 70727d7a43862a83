"""In and out of shadow (``shadow_start``, ``shadow_stop``, both in the audit log), and the promotion gate
for a candidate in shadow (``shadow_gate``, ``shadow_promote``): when ``PROMOTION_SHADOW_MIN_LABELLED``
is set, a candidate in shadow is refused until its shadow answers cover that many labelled drawings
with no loss on them.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from engine.checkpoint import CheckpointError
from mnistsite.errors import ApplicationError

from ..checkpoints import version_model
from ..lifecycle import model_version_activate
from ..models import LifecycleEvent, ModelVersion
from ..promotion import GateDecision, Requirement, promotion_gate
from .reports import SHADOW_EVIDENCE, SHADOW_TITLE, shadow_evidence
from .versions import shadow_ids

__all__ = ["shadow_gate", "shadow_promote", "shadow_start", "shadow_stop"]

log = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser


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
    shadow_ids.expire()
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
    shadow_ids.expire()
    log.info("%s left shadow (by %s%s): %s", target.label, getattr(by, "username", None),
             f", {actor}" if actor else "", reason)
    return target


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
        shadow_ids.expire()
    return decision
