"""The review queue: drawings whose label is not trusted yet, the most valuable label first.

What is in it: every drawing whose effective label is not a trusted source's (``classifier.labels``):
never labelled, or labelled by visitors only ("visitor" or "agreed"). A visitor's label is the
drawing's *suggestion*: staff confirm it (its digit key, or Enter) or correct it with one key, and
either makes the label trusted, so that it trains and judges versions (``LABELS_TRAIN_TRUST``,
``LABELS_EVIDENCE_TRUST``). A drawing leaves the queue when a trusted source labels it (a digit or
"not a digit").

The order, by what is stored: first the drawings a visitor disagreed on (their label differs from the
model's answer, or they said "not a digit"), then those with a visitor's label, then by the stored
calibrated confidence, lowest first. Then, for the ``REVIEW_OPINION_WINDOW`` drawings at the head
(default 32), the active version and the newest fresh candidate (a candidate version neither shipped
nor ever active) are asked for their answers in one batch, in memory (nothing is written), and the
drawings they disagree on move up behind the disputed ones. Each answer shown carries those opinions.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from django.conf import settings
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, QuerySet

from mnistsite.errors import ApplicationError

from .inference import ServingModel, registry
from .models import Label, ModelVersion, Prediction
from .selectors import input_data_url

log = logging.getLogger(__name__)

PIXELS = 28 * 28
LOW_CONFIDENCE = 0.6  # counted apart in the queue's counts ("unsure")
MAX_ITEMS = 10


def review_queryset() -> QuerySet[Prediction]:
    """The queue, in its stored order (see the module docstring)."""
    visitor_disagrees = Exists(
        Label.objects.filter(prediction=OuterRef("pk"), by_staff=False, trusted=False).exclude(digit=OuterRef("digit"))
    )
    suggested = Q(label__isnull=False) | Q(not_a_digit=True)
    return (
        Prediction.objects.exclude(label_trust=Prediction.Trust.TRUSTED)
        .annotate(visitor_disagrees=visitor_disagrees,
                  suggested=ExpressionWrapper(suggested, output_field=BooleanField()))
        .order_by("-visitor_disagrees", "-suggested", "confidence", "-created_at", "-id")
    )


def review_counts() -> dict[str, int]:
    """What is left, and of it: disputed by a visitor, waiting with a visitor's label, and answered with
    low confidence; and how many drawings have a trusted label."""
    queue = review_queryset()
    return {
        "left": queue.count(),
        "disputed": queue.filter(visitor_disagrees=True).count(),
        "suggested": queue.filter(Q(label__isnull=False) | Q(not_a_digit=True)).count(),
        "unsure": queue.filter(confidence__lt=LOW_CONFIDENCE).count(),
        "reviewed": Prediction.objects.filter(label_trust=Prediction.Trust.TRUSTED).count(),
    }


@dataclass
class Opinions:
    """The active version's and the newest fresh candidate's answers for some drawings."""

    active: ServingModel | None = None
    candidate: ServingModel | None = None
    answers: dict[int, dict[str, Any]] = field(default_factory=dict)  # prediction id -> {"active": ..., "candidate": ...}

    def disagree(self, pk: int) -> bool:
        answer = self.answers.get(pk, {})
        active, candidate = answer.get("active"), answer.get("candidate")
        return bool(active and candidate and active["digit"] != candidate["digit"])

    def refs(self) -> dict[str, Any]:
        return {"active": self.active.ref.as_dict() if self.active else None,
                "candidate": self.candidate.ref.as_dict() if self.candidate else None}


def newest_candidate() -> ModelVersion | None:
    """The newest candidate that is neither shipped with the code nor ever was active."""
    return (ModelVersion.objects.filter(status=ModelVersion.Status.CANDIDATE, shipped=False, activated_at__isnull=True)
            .order_by("-created_at", "-id").first())


def opinions_for(predictions: list[Prediction]) -> Opinions:
    """Ask the active version and the newest fresh candidate about these drawings (one batch each)."""
    opinions = Opinions()
    usable = [p for p in predictions if p.input_pixels is not None and len(bytes(p.input_pixels)) == PIXELS]
    if not usable:
        return opinions
    try:
        opinions.active = registry.serving()
    except ApplicationError:
        log.warning("review queue: no serving model for second opinions")
    candidate = newest_candidate()
    if candidate is not None and (opinions.active is None or candidate.pk != opinions.active.ref.id):
        try:
            opinions.candidate = registry.for_version(candidate)
        except ApplicationError:
            log.warning("review queue: candidate %s cannot be loaded for second opinions", candidate.pk)
    batch = torch.frombuffer(bytearray(b"".join(bytes(p.input_pixels) for p in usable)), dtype=torch.uint8)
    batch = batch.view(len(usable), 1, 28, 28).float().div(255)
    for role in ("active", "candidate"):
        model = getattr(opinions, role)
        if model is None:
            continue
        probabilities = model.probabilities(batch)
        confidence, digits = probabilities.max(dim=1)
        for p, digit, conf in zip(usable, digits.tolist(), confidence.tolist()):
            opinions.answers.setdefault(p.pk, {})[role] = {"digit": int(digit), "confidence": round(float(conf), 6)}
    return opinions


def review_next(*, skip: Iterable[int] = (), count: int = 3, window: int | None = None) -> dict[str, Any]:
    """The next ``count`` drawings to review (after leaving out ``skip``), the counts, and the versions asked."""
    count = max(1, min(count, MAX_ITEMS))
    window = settings.REVIEW_OPINION_WINDOW if window is None else window
    queue = review_queryset().select_related("model_version")
    skip = list(skip)
    if skip:
        queue = queue.exclude(pk__in=skip)
    head = list(queue[: max(window, count)])
    opinions = opinions_for(head[:window]) if window > 0 else Opinions()
    head.sort(key=lambda p: (not p.visitor_disagrees, not opinions.disagree(p.pk), not p.suggested, p.confidence))
    chosen = head[:count]
    visitor_labels: dict[int, list[Label]] = {}
    for label in Label.objects.filter(prediction__in=chosen, by_staff=False, trusted=False).order_by("at", "id"):
        visitor_labels.setdefault(label.prediction_id, []).append(label)
    return {
        "items": [_item(p, opinions, visitor_labels.get(p.pk, [])) for p in chosen],
        "counts": review_counts(),
        "models": opinions.refs(),
    }


def _item(p: Prediction, opinions: Opinions, labels: list[Label]) -> dict[str, Any]:
    probabilities = [float(x) for x in p.probabilities]
    top3 = sorted(range(10), key=lambda d: -probabilities[d])[:3]
    reasons = []
    if p.visitor_disagrees:
        reasons.append("visitor_disagrees")
    if opinions.disagree(p.pk):
        reasons.append("models_disagree")
    if p.confidence < LOW_CONFIDENCE:
        reasons.append("low_confidence")
    try:
        image_url = p.image.url if p.image else None
    except ValueError:
        image_url = None
    return {
        "id": p.pk,
        "image_url": image_url,
        "input": input_data_url(p.input_pixels),
        "digit": p.digit,
        "confidence": p.confidence,
        "top3": [{"digit": d, "probability": probabilities[d]} for d in top3],
        "model_version": p.model_version.as_ref(),
        "source": p.source,
        "created_at": p.created_at.isoformat(),
        "label": p.label,
        # The visitors' effective label, which Enter confirms: a digit, "x", or None.
        "suggestion": "x" if p.not_a_digit else p.label,
        "trust": p.label_trust,
        "visitor_labels": [{"label": label.value, "via": label.via, "client": label.client,
                            "at": label.at.isoformat()} for label in labels],
        "opinions": opinions.answers.get(p.pk, {}),
        "reasons": reasons,
    }
