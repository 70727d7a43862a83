"""Automatic retraining: the policy that fine-tunes, shadows and promotes by itself.

One cycle at a time, each step taken by ``policy_check`` (called on a schedule, see
``training.policy_schedule``):

1. **Enough new labels.** Once ``min_new_labels`` drawings got a usable label (an effective digit
   label trusted enough to train, ``LABELS_TRAIN_TRUST``: by default a trusted source's, never a mere
   visitor's, see ``classifier.labels``; "not a digit" never counts) since the policy's last run, it queues a
   fine-tune of the active version: the fine-tune recipe (options left out), with
   ``RETRAIN_POLICY_RUN_OPTIONS`` over it, ``promote`` false. The run is marked ``trigger="policy"``.
2. **Training.** While the run is queued or running the policy waits; it never queues a second one.
3. **Shadow.** When the run succeeds its version enters shadow (``classifier.shadow``; the worker that
   ran it does this at once, or the next check does).
4. **The gate.** Once the candidate has answered ``shadow_min_labels`` drawings that were then labelled,
   (with a label trusted enough to be evidence, ``LABELS_EVIDENCE_TRUST``), the gate decides on MNIST
   test, the field set and the shadow traffic (``classifier.shadow.shadow_gate``):
   promoted, or left a candidate (out of shadow) with the gate's reason in its notes. Either way
   the cycle ends and step 1 starts counting again.

Every automatic action is in the audit log with ``"policy"`` as its actor: the model lifecycle's
(``classifier.LifecycleEvent``: registered, entered / left shadow, promoted) and the policy's own
(``RetrainPolicyEvent``: queued, shadow, promoted, kept, failed; and staff's pause / resume).

Concurrent checks (several serving processes, beat and a stray manual call) are serialized by a row
lock on the policy (``select_for_update``; on SQLite the write lock of an immediate transaction), so
two checks can never queue two runs. The gate itself runs outside the lock and its verdict is applied
only if the cycle is still where it was.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from classifier.lifecycle import model_version_activate
from classifier.models import Label, ModelVersion, Prediction
from classifier.promotion import GateDecision
from classifier.shadow import shadow_gate, shadow_report, shadow_stop
from mnistsite import metrics
from mnistsite.errors import ApplicationError

from .models import RetrainPolicy, RetrainPolicyEvent, TrainingRun
from .policy_shadow import POLICY, policy_candidate_to_shadow, policy_event
from .reporting import append_log
from .services import training_run_start

log = logging.getLogger(__name__)

Action = RetrainPolicyEvent.Action


@dataclass(frozen=True)
class PolicyOutcome:
    """What one check found or did: ``action`` is one of ``disabled``, ``paused``, ``waiting``, ``queued``,
    ``training``, ``shadow``, ``promoted``, ``kept``, ``failed``, and ``message`` says it in words."""

    action: str
    message: str
    run_id: int | None = None
    version_id: int | None = None
    new_labels: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "message": self.message, "run": self.run_id, "version": self.version_id,
                "new_labels": self.new_labels}


# ----------------------------------------------------------------------------- reads


def policy_get() -> RetrainPolicy:
    """The policy's row, created from the settings the first time it is needed."""
    policy, _ = RetrainPolicy.objects.get_or_create(pk=RetrainPolicy.SINGLETON)
    return policy


def new_labels_count(policy: RetrainPolicy) -> int:
    """Drawings that got a label after the policy's watermark and have a label that may train now
    (a digit, at least ``LABELS_TRAIN_TRUST``)."""
    return (Prediction.objects.for_training().filter(labels__id__gt=policy.label_watermark)
            .values("pk").distinct().count())


def policy_candidate(policy: RetrainPolicy) -> TrainingRun | None:
    """The automatic run whose cycle is still open (queued, running, or its version awaiting the gate)."""
    run = policy.last_run
    if run is None or run.pk == policy.decided_run_id:
        return None
    return run


def shadow_needed(policy: RetrainPolicy) -> int:
    """Labelled shadow drawings the gate is asked with: the policy's threshold, at least the gate's own."""
    return max(1, policy.shadow_min_labels, settings.PROMOTION_SHADOW_MIN_LABELLED)


def policy_status(policy: RetrainPolicy | None = None) -> str:
    """One line for staff: "waiting for 57 more labels", "run #12 running", "paused by alice"..."""
    policy = policy or policy_get()
    if not settings.RETRAIN_POLICY_ENABLED:
        return "turned off (RETRAIN_POLICY_ENABLED)"
    if policy.paused:
        who = getattr(policy.paused_by, "username", None) or "staff"
        when = f" since {policy.paused_at:%Y-%m-%d %H:%M} UTC" if policy.paused_at else ""
        return f"paused by {who}{when}" + (f": {policy.pause_reason}" if policy.pause_reason else "")
    run = policy_candidate(policy)
    if run is not None:
        if run.status in TrainingRun.UNFINISHED:
            return f"run #{run.pk} {run.status}"
        version = run.result_version
        if run.status == TrainingRun.Status.SUCCEEDED and version is not None:
            if version.in_shadow:
                report = shadow_report(version)
                return (f"{version.label} (run #{run.pk}) in shadow: {report.labelled} of {shadow_needed(policy)} "
                        f"labelled drawings before the gate decides")
            return f"{version.label} (run #{run.pk}) succeeded; it enters shadow at the next check"
        return f"run #{run.pk} {run.status}; noted at the next check"
    missing = policy.min_new_labels - new_labels_count(policy)
    if missing > 0:
        return f"waiting for {missing} more label{'s' if missing != 1 else ''} (threshold {policy.min_new_labels})"
    return f"{policy.min_new_labels} new labels reached: a run is queued at the next check"


# ----------------------------------------------------------------------------- the check


def _locked() -> RetrainPolicy:
    return RetrainPolicy.objects.select_for_update(of=("self",)).select_related("last_run__result_version").get(
        pk=RetrainPolicy.SINGLETON)


@dataclass(frozen=True)
class _Judge:
    run_id: int
    version_id: int


def policy_check(*, now: datetime | None = None) -> PolicyOutcome:
    """Take the policy's next step, if there is one (see the module's docstring); what it found or did."""
    now = now or timezone.now()
    if not settings.RETRAIN_POLICY_ENABLED:
        return PolicyOutcome("disabled", "the retraining policy is turned off (RETRAIN_POLICY_ENABLED)")
    policy_get()
    with transaction.atomic():
        policy = _locked()
        outcome, judge = _step(policy)
        _checked(policy, now, outcome)
    if judge is None:
        return outcome
    version = ModelVersion.objects.get(pk=judge.version_id)
    try:
        decision = shadow_gate(version=version)  # both versions answer the evidence: no lock held meanwhile
    except ApplicationError as exc:
        decision = GateDecision(False, f"not promoted: {exc.message}", None, {"rule": "unusable"})
    with transaction.atomic():
        policy = _locked()
        outcome = _settle(policy, judge, decision)
        _checked(policy, now, outcome)
    return outcome


def _checked(policy: RetrainPolicy, now: datetime, outcome: PolicyOutcome) -> None:
    message = outcome.message[:2000]
    if message != policy.last_outcome:  # a check that finds what the last one found says nothing new
        log.info("retraining policy: %s", outcome.message)
    policy.last_checked_at = now
    policy.last_outcome = message
    policy.save(update_fields=["last_checked_at", "last_outcome", "last_run", "decided_run", "label_watermark"])


def _step(policy: RetrainPolicy) -> tuple[PolicyOutcome, _Judge | None]:
    """Under the policy's lock: follow the open cycle, or start one when enough labels came in."""
    if policy.paused:
        return PolicyOutcome("paused", policy_status(policy)), None
    run = policy_candidate(policy)
    if run is not None:
        if run.status in TrainingRun.UNFINISHED:
            return PolicyOutcome("training", f"run #{run.pk} is {run.status}", run.pk), None
        version = run.result_version
        if run.status != TrainingRun.Status.SUCCEEDED or version is None:
            reason = f"automatic run #{run.pk} ended {run.status}" + (f": {run.error}" if run.error else "")
            policy.decided_run = run
            policy_event(Action.FAILED, run=run, reason=reason)
            return PolicyOutcome("failed", reason + "; the next run waits for new labels", run.pk), None
        version = ModelVersion.objects.get(pk=version.pk)
        if version.status != ModelVersion.Status.CANDIDATE:  # a person activated or archived it meanwhile
            reason = f"{version.label} (run #{run.pk}) was made {version.status} by a person; the gate was not asked"
            policy.decided_run = run
            policy_event(Action.KEPT, run=run, version=version, reason=reason)
            return PolicyOutcome("kept", reason, run.pk, version.pk), None
        if not version.in_shadow:
            version = policy_candidate_to_shadow(run=run, version=version)
            if not version.in_shadow:
                return PolicyOutcome("shadow", f"{version.label} could not enter shadow; trying again at the next "
                                     "check", run.pk, version.pk), None
        report = shadow_report(version)
        needed = shadow_needed(policy)
        if report.labelled < needed:
            return PolicyOutcome("shadow", f"{version.label} (run #{run.pk}) in shadow: {report.labelled} of {needed} "
                                 "labelled drawings before the gate decides", run.pk, version.pk), None
        return PolicyOutcome("shadow", f"{version.label} (run #{run.pk}): asking the gate", run.pk, version.pk), \
            _Judge(run.pk, version.pk)
    return _maybe_queue(policy), None


def _maybe_queue(policy: RetrainPolicy) -> PolicyOutcome:
    count = new_labels_count(policy)
    if count < policy.min_new_labels:
        missing = policy.min_new_labels - count
        return PolicyOutcome("waiting", f"waiting for {missing} more label{'s' if missing != 1 else ''} "
                             f"({count} of {policy.min_new_labels} since the last automatic run)", new_labels=count)
    active = ModelVersion.objects.active().first()
    if active is None:
        return PolicyOutcome("waiting", "no version is active: nothing to fine-tune", new_labels=count)
    top = Label.objects.aggregate(top=Max("id"))["top"] or 0
    spec = {**settings.RETRAIN_POLICY_RUN_OPTIONS, "base_version": active.pk, "promote": False}
    reason = (f"{count} drawings labelled since the last automatic run (threshold {policy.min_new_labels}): "
              f"fine-tuning {active.label}")
    try:
        with transaction.atomic():
            run = training_run_start(spec=spec, by=None)  # handed to its executor when this check commits
            TrainingRun.objects.filter(pk=run.pk).update(
                trigger=TrainingRun.Trigger.POLICY, log=append_log(f"started by the retraining policy: {reason}"))
    except ApplicationError as exc:
        message = f"could not start a run: {exc.message}"
        log.warning("retraining policy: %s", message)
        return PolicyOutcome("waiting", message, new_labels=count)
    policy.last_run = run
    policy.label_watermark = top
    policy_event(Action.QUEUED, run=run, version=active, reason=reason)
    return PolicyOutcome("queued", f"queued run #{run.pk}: {reason}", run.pk, active.pk, count)


def _settle(policy: RetrainPolicy, judge: _Judge, decision: GateDecision) -> PolicyOutcome:
    """Under the lock again: apply the gate's verdict if the cycle is still the one that was judged."""
    run = policy_candidate(policy)
    version = ModelVersion.objects.select_for_update().get(pk=judge.version_id)
    if policy.paused or run is None or run.pk != judge.run_id or version.status != ModelVersion.Status.CANDIDATE:
        return PolicyOutcome("shadow", f"{version.label}: the cycle changed while the gate was comparing; "
                             "nothing done", judge.run_id, version.pk)
    promoted = False
    if decision.promote:
        current = ModelVersion.objects.select_for_update().active().first()
        if (current.pk if current else None) != decision.active:
            return PolicyOutcome("shadow", f"{version.label}: the active version changed while the gate was "
                                 "comparing; asking again at the next check", run.pk, version.pk)
        model_version_activate(version=version, by=None, reason=decision.reason, action="promote", run_id=run.pk,
                               check=False, actor=POLICY)
        promoted = True  # activating it ends its shadow
        policy_event(Action.PROMOTED, run=run, version=version, reason=decision.reason)
    else:
        version.notes += f" Retraining policy: {decision.reason}"
        version.save(update_fields=["notes"])
        if version.in_shadow:
            shadow_stop(version=version, actor=POLICY, reason=f"the gate decided: {decision.reason}")
        policy_event(Action.KEPT, run=run, version=version, reason=decision.reason)
    TrainingRun.objects.filter(pk=run.pk).update(
        promotion={"requested": True, "by": POLICY, "promoted": promoted, "reason": decision.reason,
                   "gate": decision.as_dict()},
        log=append_log(f"retraining policy: {decision.reason}"),
    )
    policy.decided_run = run
    return PolicyOutcome("promoted" if promoted else "kept", f"{version.label} (run #{run.pk}) {decision.reason}",
                         run.pk, version.pk)


def policy_check_once() -> PolicyOutcome | None:
    """One scheduled check: never raises (logs instead), releases the connection (a background thread's)."""
    try:
        return metrics.policy_checked(policy_check())
    except Exception:
        log.exception("the retraining policy's check failed")
        return None
    finally:
        connection.close()


# ----------------------------------------------------------------------------- staff


def policy_pause(*, by: AbstractBaseUser | None, reason: str = "") -> RetrainPolicy:
    """Stop the policy from acting (a run already queued or running goes on; cancel it separately)."""
    policy_get()
    with transaction.atomic():
        policy = _locked()
        if policy.paused:
            raise ApplicationError("already_paused", "The retraining policy is already paused.", status=409)
        policy.paused = True
        policy.paused_by = by if by is not None and by.is_authenticated else None
        policy.paused_at = timezone.now()
        policy.pause_reason = reason
        policy.save(update_fields=["paused", "paused_by", "paused_at", "pause_reason"])
        policy_event(Action.PAUSED, by=by, reason=reason)
    return policy


def policy_resume(*, by: AbstractBaseUser | None, reason: str = "") -> RetrainPolicy:
    """Let the policy act again; it picks up where its cycle was."""
    policy_get()
    with transaction.atomic():
        policy = _locked()
        if not policy.paused:
            raise ApplicationError("not_paused", "The retraining policy is not paused.", status=409)
        policy.paused = False
        policy.paused_by = None
        policy.paused_at = None
        policy.pause_reason = ""
        policy.save(update_fields=["paused", "paused_by", "paused_at", "pause_reason"])
        policy_event(Action.RESUMED, by=by, reason=reason)
    return policy


def policy_update(*, by: AbstractBaseUser | None, min_new_labels: int | None = None,
                  shadow_min_labels: int | None = None) -> RetrainPolicy:
    """Change the thresholds (staff); the change is in the policy's audit log."""
    policy_get()
    with transaction.atomic():
        policy = _locked()
        changes = []
        for name, value in (("min_new_labels", min_new_labels), ("shadow_min_labels", shadow_min_labels)):
            if value is None or value == getattr(policy, name):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
                raise ApplicationError("invalid_request", f"{name} must be a whole number from 1 to 1,000,000",
                                       detail={name: value}, status=400)
            changes.append(f"{name} {getattr(policy, name)} -> {value}")
            setattr(policy, name, value)
        if changes:
            policy.save(update_fields=["min_new_labels", "shadow_min_labels"])
            policy_event(Action.CHANGED, by=by, reason="; ".join(changes))
    return policy
