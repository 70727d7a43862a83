"""The retraining policy's first step after a run: its version enters shadow; and the policy's audit log.

Apart from ``training.policy`` so that the task body (``training.execution``) can call it the moment
an automatic run succeeds, without depending on the services that start runs.
"""
from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser

from classifier.models import ModelVersion
from classifier.shadow import shadow_start
from mnistsite.errors import ApplicationError

from .models import RetrainPolicy, RetrainPolicyEvent, TrainingRun

log = logging.getLogger(__name__)

POLICY = RetrainPolicyEvent.POLICY


def policy_event(action: str, *, run: TrainingRun | None = None, version: ModelVersion | None = None,
                 reason: str = "", by: AbstractBaseUser | None = None) -> RetrainPolicyEvent:
    """One entry of the policy's audit log: by a person (``by``), else by the policy itself."""
    person = by if by is not None and by.is_authenticated else None
    return RetrainPolicyEvent.objects.create(action=action, actor="" if person else POLICY, by=person, run=run,
                                             version=version, reason=reason)


def policy_candidate_to_shadow(*, run: TrainingRun, version: ModelVersion) -> ModelVersion:
    """Put an automatic run's version in shadow (actor "policy"); returns the version as it is now.

    Called by the worker when the run succeeds, and by later checks when that did not happen (the
    policy was paused, the checkpoint could not be read). A paused policy does nothing.
    """
    if RetrainPolicy.objects.filter(pk=RetrainPolicy.SINGLETON, paused=True).exists():
        log.info("retraining policy is paused: %s stays out of shadow for now", version.label)
        return version
    try:
        version = shadow_start(version=version, actor=POLICY, reason=f"trained by automatic run {run.pk}")
    except ApplicationError as exc:
        if exc.code != "already_in_shadow":
            log.warning("retraining policy: %s could not enter shadow: %s", version.label, exc.message)
        return ModelVersion.objects.get(pk=version.pk)
    policy_event(RetrainPolicyEvent.Action.SHADOW, run=run, version=version,
                 reason=f"{version.label}, trained by automatic run {run.pk}, answers live drawings in shadow")
    return version
