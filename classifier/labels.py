"""Labels and their provenance: who said what about a drawing, and the effective label that follows.

Every word a person gives on a drawing is a ``Label`` row (a digit or "not a digit", who, staff or
visitor, how, when). The prediction's own ``label`` / ``not_a_digit`` fields hold the *effective*
label, the one that trains and that the statistics count, derived from those rows by one rule:

1. If staff labelled the drawing, staff's latest word is the label: a staff label overrides visitors'.
2. Otherwise visitors' labels count according to ``LABELS_VISITOR_AGREEMENT``:
   ``"none"`` — the latest visitor label counts at once (each visitor's latest word);
   ``"staff"`` — none counts: a visitor's label waits for staff (who confirm or override it);
   ``"two"`` — a label counts once two different visitors gave it (each visitor's latest word; a tie
   between two such labels counts for neither).
3. "Not a digit" is a label like any other, but it leaves the drawing without a digit: it never trains.

The setting is applied when a label is recorded; after changing it, ``manage.py recompute_labels``
applies it to every drawing.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from mnistsite.errors import ApplicationError

from .models import Label, Prediction

VISITOR_AGREEMENT = ("none", "staff", "two")
NOT_A_DIGIT = "x"
# The prediction's fields that hold its effective label.
EFFECTIVE_FIELDS = ("label", "not_a_digit", "label_by_staff", "labelled_by_id", "labelled_at")

LabelValue = int | str  # a digit 0-9, or NOT_A_DIGIT


@dataclass(frozen=True)
class Verdict:
    """The effective label of a drawing and the Label row it comes from (None: no effective label)."""

    digit: int | None = None
    not_a_digit: bool = False
    by_staff: bool = False
    source: Label | None = None


def is_staff(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def label_value(value: Any, *, allow_not_a_digit: bool = True) -> LabelValue:
    """A digit 0-9 (a JSON integer, not a bool or a string) or ``"x"``; anything else is a 400."""
    if allow_not_a_digit and value == NOT_A_DIGIT:
        return NOT_A_DIGIT
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        message = "The label must be a digit from 0 to 9" + (' or "x" (not a digit).' if allow_not_a_digit else ".")
        raise ApplicationError("invalid_label", message, detail={"label": value}, status=400)
    return value


def effective_label(labels: Iterable[Label], *, agreement: str | None = None) -> Verdict:
    """Apply the rule above to a drawing's labels (any order)."""
    agreement = settings.LABELS_VISITOR_AGREEMENT if agreement is None else agreement
    if agreement not in VISITOR_AGREEMENT:
        raise ValueError(f"LABELS_VISITOR_AGREEMENT must be one of {VISITOR_AGREEMENT}, not {agreement!r}")
    ordered = sorted(labels, key=lambda label: (label.at, label.pk or 0))
    staff = [label for label in ordered if label.by_staff]
    if staff:
        return _verdict(staff[-1])
    latest_per_visitor: dict[str, Label] = {}
    for label in ordered:
        latest_per_visitor[label.giver or f"label:{label.pk}"] = label  # later words replace earlier ones
    visitors = sorted(latest_per_visitor.values(), key=lambda label: (label.at, label.pk or 0))
    if not visitors or agreement == "staff":
        return Verdict()
    if agreement == "none":
        return _verdict(visitors[-1])
    votes = Counter(label.value for label in visitors)
    agreed = [value for value, count in votes.items() if count >= 2]
    if len(agreed) != 1:
        return Verdict()
    return _verdict([label for label in visitors if label.value == agreed[0]][-1])


def _verdict(label: Label) -> Verdict:
    return Verdict(digit=None if label.not_a_digit else label.digit, not_a_digit=label.not_a_digit,
                   by_staff=label.by_staff, source=label)


def label_recompute(*, prediction: Prediction, agreement: str | None = None) -> bool:
    """Set the prediction's effective label from its Label rows; whether anything changed."""
    verdict = effective_label(prediction.labels.all(), agreement=agreement)
    fields = {
        "label": verdict.digit,
        "not_a_digit": verdict.not_a_digit,
        "label_by_staff": verdict.by_staff,
        "labelled_by_id": verdict.source.given_by_id if verdict.source else None,
        "labelled_at": verdict.source.at if verdict.source else None,
    }
    changed = [name for name, value in fields.items() if getattr(prediction, name) != value]
    for name in changed:
        setattr(prediction, name, fields[name])
    if changed:
        prediction.save(update_fields=[name.removesuffix("_id") for name in changed])
    return bool(changed)


def label_record(
    *,
    prediction: Prediction,
    value: Any,
    by: AbstractBaseUser | AnonymousUser | None,
    via: str,
    giver: str = "",
    allow_not_a_digit: bool = True,
    at: Any = None,
) -> Label:
    """Record one person's label on a drawing and update the drawing's effective label."""
    value = label_value(value, allow_not_a_digit=allow_not_a_digit)
    user = by if by is not None and by.is_authenticated else None
    if user is not None:
        giver = f"user:{user.pk}"  # one person, whichever way they came
    with transaction.atomic():
        # Lock the drawing: two labels arriving together are applied one after the other.
        locked = Prediction.objects.select_for_update().get(pk=prediction.pk)
        label = Label.objects.create(
            prediction=locked, digit=None if value == NOT_A_DIGIT else value,
            not_a_digit=value == NOT_A_DIGIT, given_by=user, by_staff=is_staff(user), giver=giver[:64], via=via,
            at=at or timezone.now(),
        )
        label_recompute(prediction=locked)
    for name in EFFECTIVE_FIELDS:
        setattr(prediction, name, getattr(locked, name))
    return label


def labels_clear(*, prediction: Prediction) -> Prediction:
    """Withdraw every label of a drawing (staff, from the admin): it is unlabelled again."""
    with transaction.atomic():
        locked = Prediction.objects.select_for_update().get(pk=prediction.pk)
        locked.labels.all().delete()
        label_recompute(prediction=locked)
    for name in EFFECTIVE_FIELDS:
        setattr(prediction, name, getattr(locked, name))
    return prediction


def labels_recompute_all(*, agreement: str | None = None) -> int:
    """Re-apply the rule to every drawing that has labels (after changing the setting); how many changed."""
    changed = 0
    ids = Prediction.objects.filter(labels__isnull=False).distinct().order_by("id").values_list("id", flat=True)
    for pk in ids.iterator(chunk_size=2000):
        with transaction.atomic():
            prediction = Prediction.objects.select_for_update().get(pk=pk)
            changed += label_recompute(prediction=prediction, agreement=agreement)
    return changed
