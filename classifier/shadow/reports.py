"""What the shadow shows: a candidate's shadow answers against the answers users got.

``shadow_report`` compares a candidate with the version that answered the users: how often they
agree, and on the drawings labelled since (the effective label, ``classifier.labels``, when trusted
enough to be evidence: ``LABELS_EVIDENCE_TRUST``, by default a trusted source's) both accuracies
with the discordant counts of the paired test. A candidate is trained before it enters shadow, so
these drawings are new to it. ``shadow_evidence`` is the same comparison as an evidence set for the
promotion gate (``classifier.shadow.lifecycle.shadow_gate``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from django.conf import settings
from django.db.models import Count, F, Min, Q

from ..models import ModelVersion, Prediction, ShadowPrediction
from ..promotion import Evidence, mcnemar_p
from .versions import shadow_versions

__all__ = ["SHADOW_EVIDENCE", "SHADOW_TITLE", "ShadowReport", "shadow_evidence", "shadow_report", "shadow_reports"]

SHADOW_EVIDENCE = "shadow"  # the gate's name for the evidence set
SHADOW_TITLE = "shadow traffic"


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
