"""Quality over time: reads for the statistics page, plain numbers.

- ``quality_over_time``: per day and model version, accuracy on the drawings people labelled and the
  confidence of every prediction (mean per day, and a histogram over the period), with the moments
  the active version changed (activations, promotions, roll-backs). A drawing counts on the day it
  was drawn, for the version that answered it.
- ``quality_by_drawings``: the same accuracy per ``QUALITY_BUCKET`` labelled drawings rather than per day:
  each version's labelled drawings, in the order they were drawn, cut into consecutive buckets, on the
  axis of every labelled drawing (1 = the oldest), with the switches of the active version placed on it.
  A quiet week and a busy hour weigh the same there: each point is as many drawings.
- ``quality_checks``: per version, accuracy on its last ``QUALITY_WINDOW`` labelled drawings against
  the field-set accuracy measured when it was registered; a warning when it is lower by more than
  ``QUALITY_WARNING_MARGIN``.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import LifecycleEvent, ModelVersion, Prediction

CONFIDENCE_BINS = 10  # histogram bins of width 0.1; the last one includes 1.0
QUALITY_DAYS = 60  # the per-day series cover this many days at most (the stats page and GET /api/stats/)


def _bin_filter(index: int) -> Q:
    low = Q(confidence__gte=index / CONFIDENCE_BINS) if index else Q()
    if index == CONFIDENCE_BINS - 1:
        return low
    return low & Q(confidence__lt=(index + 1) / CONFIDENCE_BINS)


def quality_over_time(*, days: int = QUALITY_DAYS, today: dt.date | None = None) -> dict[str, Any]:
    """The last ``days`` days (from the first one with a prediction): per version and day, labelled
    drawings, correct answers, accuracy, predictions and mean confidence; per version the confidence
    histogram of the period; the switches of the active version.

    Lists are aligned with ``days`` (ISO dates); a day without labels has accuracy ``None``.
    """
    today = today or timezone.localdate()
    first = today - dt.timedelta(days=days - 1)
    since = timezone.make_aware(dt.datetime.combine(first, dt.time.min))
    bins = {f"bin{i}": Count("id", filter=_bin_filter(i)) for i in range(CONFIDENCE_BINS)}
    rows = list(
        Prediction.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day", "model_version")
        .annotate(
            predictions=Count("id"),
            labelled=Count("id", filter=Q(label__isnull=False)),
            correct=Count("id", filter=Q(label=F("digit"))),
            confidence_sum=Sum("confidence"),
            **bins,
        )
        .order_by("day", "model_version")
    )
    events = list(
        LifecycleEvent.objects.filter(action__in=LifecycleEvent.SWITCHES, at__gte=since, to_version__isnull=False)
        .select_related("to_version", "from_version").order_by("at", "id")
    )
    starts = [row["day"] for row in rows] + [timezone.localdate(event.at) for event in events]
    if not starts:
        return {"days": [], "versions": [], "switches": [], "bins": _bin_edges()}
    start = max(first, min(starts))
    axis = [start + dt.timedelta(days=i) for i in range((today - start).days + 1)]
    index = {day: i for i, day in enumerate(axis)}
    versions = ModelVersion.objects.in_bulk({row["model_version"] for row in rows})
    series: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["day"] not in index:
            continue
        version = versions[row["model_version"]]
        s = series.setdefault(version.pk, _empty_series(version, len(axis)))
        i = index[row["day"]]
        s["predictions"][i] = row["predictions"]
        s["labelled"][i] = row["labelled"]
        s["correct"][i] = row["correct"]
        s["accuracy"][i] = row["correct"] / row["labelled"] if row["labelled"] else None
        s["mean_confidence"][i] = row["confidence_sum"] / row["predictions"] if row["predictions"] else None
        for b in range(CONFIDENCE_BINS):
            s["confidence_histogram"][b] += row[f"bin{b}"]
    for s in series.values():
        s["total_predictions"] = sum(s["predictions"])
        s["total_labelled"] = sum(s["labelled"])
        s["total_correct"] = sum(s["correct"])
        s["accuracy_overall"] = s["total_correct"] / s["total_labelled"] if s["total_labelled"] else None
    switches = [{"day": timezone.localdate(event.at).isoformat(), **_switch(event)} for event in events]
    return {
        "days": [day.isoformat() for day in axis],
        "versions": sorted(series.values(), key=lambda s: s["id"]),
        "switches": switches,
        "bins": _bin_edges(),
    }


def _switch(event: LifecycleEvent) -> dict[str, Any]:
    """A change of the active version, as the charts mark it."""
    return {
        "at": event.at.isoformat(),
        "action": event.action,
        "action_display": event.get_action_display(),
        "version": event.to_version.label,
        "from_version": event.from_version.label if event.from_version else None,
    }


def _bin_edges() -> list[float]:
    return [round(i / CONFIDENCE_BINS, 2) for i in range(CONFIDENCE_BINS + 1)]


def _empty_series(version: ModelVersion, length: int) -> dict[str, Any]:
    return {
        "id": version.pk, "label": version.label, "status": version.status,
        "field_accuracy": (version.metrics or {}).get("field_accuracy"),
        "predictions": [0] * length, "labelled": [0] * length, "correct": [0] * length,
        "accuracy": [None] * length, "mean_confidence": [None] * length,
        "confidence_histogram": [0] * CONFIDENCE_BINS,
    }


@dataclass
class _Bucket:
    """One version's run of consecutive labelled drawings, filled as the drawings stream past."""

    index: int  # 1 = the version's first bucket
    first: int  # position of its first drawing on the axis of every labelled drawing
    first_at: dt.datetime
    last: int = 0
    last_at: dt.datetime | None = None
    labelled: int = 0
    correct: int = 0
    confidence_sum: float = 0.0

    def add(self, *, position: int, created_at: dt.datetime, correct: bool, confidence: float) -> None:
        self.last, self.last_at = position, created_at
        self.labelled += 1
        self.correct += correct
        self.confidence_sum += confidence

    def point(self, *, full: bool) -> dict[str, Any]:
        return {
            "index": self.index, "first": self.first, "last": self.last,
            "first_at": self.first_at.isoformat(), "last_at": self.last_at.isoformat(),
            "labelled": self.labelled, "correct": self.correct, "accuracy": self.correct / self.labelled,
            "mean_confidence": self.confidence_sum / self.labelled, "full": full,
        }


@dataclass
class _VersionBuckets:
    """One version's closed buckets and the one it is filling."""

    points: list[dict[str, Any]] = field(default_factory=list)
    current: _Bucket | None = None
    labelled: int = 0
    correct: int = 0


def quality_by_drawings(*, bucket: int | None = None) -> dict[str, Any]:
    """Accuracy per ``bucket`` (default: the ``QUALITY_BUCKET`` setting) labelled drawings, per model version.

    Every labelled drawing has a position on one axis, in the order drawn (``created_at``, then id;
    1 = the oldest). Per version, its own labelled drawings in that order are cut into consecutive
    buckets of ``bucket``; the last may hold fewer (``full`` false). A point gives the positions of its
    first and last drawing and when they were drawn, labelled and correct counts, accuracy and the mean
    confidence of those answers. ``switches`` are the changes of the active version (activations,
    promotions, roll-backs), each at ``position``: the number of labelled drawings drawn before it.

    Three queries whatever the size: the switches, the versions, and one streamed pass over the labelled
    drawings (five columns each) that is bucketed here in Python. That pass is linear in the number of
    labelled drawings, which people label by hand: fine at this project's scale; a site with millions
    of them would bucket in SQL (a window function per version) instead.
    """
    size = settings.QUALITY_BUCKET if bucket is None else bucket
    if size < 1:
        raise ValueError(f"bucket must be at least 1, not {size}")
    events = list(
        LifecycleEvent.objects.filter(action__in=LifecycleEvent.SWITCHES, to_version__isnull=False)
        .select_related("to_version", "from_version").order_by("at", "id")
    )
    switch_positions: list[int] = []
    series: dict[int, _VersionBuckets] = {}
    position = 0
    rows = (Prediction.objects.labelled().order_by("created_at", "id")
            .values_list("model_version", "created_at", "label", "digit", "confidence"))
    for version_id, created_at, label, digit, confidence in rows.iterator(chunk_size=2000):
        while len(switch_positions) < len(events) and events[len(switch_positions)].at <= created_at:
            switch_positions.append(position)
        position += 1
        s = series.setdefault(version_id, _VersionBuckets())
        if s.current is None:
            s.current = _Bucket(index=len(s.points) + 1, first=position, first_at=created_at)
        s.current.add(position=position, created_at=created_at, correct=label == digit, confidence=confidence)
        s.labelled += 1
        s.correct += label == digit
        if s.current.labelled == size:
            s.points.append(s.current.point(full=True))
            s.current = None
    if not position:
        return {"bucket": size, "total": 0, "versions": [], "switches": []}
    switch_positions += [position] * (len(events) - len(switch_positions))
    versions = ModelVersion.objects.in_bulk(list(series))
    return {
        "bucket": size,
        "total": position,
        "versions": [
            {
                "id": pk, "label": versions[pk].label, "status": versions[pk].status,
                "labelled": s.labelled, "correct": s.correct, "accuracy": s.correct / s.labelled,
                "points": s.points + ([s.current.point(full=False)] if s.current else []),
            }
            for pk, s in sorted(series.items())
        ],
        "switches": [{"position": p, **_switch(event)} for p, event in zip(switch_positions, events)],
    }


def quality_checks(*, window: int | None = None, margin: float | None = None) -> list[dict[str, Any]]:
    """For the active version and every other usable version with labels: accuracy on its last
    ``window`` labelled drawings (most recently labelled first) against its field-set accuracy.

    ``state`` is ``"warning"`` (lower by more than ``margin``), ``"ok"``, ``"too_few_labels"`` (fewer
    than ``window``: no verdict yet) or ``"no_field_accuracy"`` (nothing to compare with).
    """
    window = settings.QUALITY_WINDOW if window is None else window
    margin = settings.QUALITY_WARNING_MARGIN if margin is None else margin
    labelled_versions = Prediction.objects.labelled().values("model_version").distinct()
    versions = ModelVersion.objects.usable().filter(
        Q(status=ModelVersion.Status.ACTIVE) | Q(pk__in=labelled_versions)
    )
    checks = []
    # The active version first, then the newest.
    for version in sorted(versions, key=lambda v: (v.status != ModelVersion.Status.ACTIVE, -v.pk)):
        answers = list(
            Prediction.objects.labelled().filter(model_version=version)
            .order_by(F("labelled_at").desc(nulls_last=True), "-id")
            .values_list("label", "digit")[:window]
        )
        n = len(answers)
        correct = sum(1 for label, digit in answers if label == digit)
        recent = correct / n if n else None
        field_accuracy = (version.metrics or {}).get("field_accuracy")
        drop = None if recent is None or field_accuracy is None else field_accuracy - recent
        if field_accuracy is None:
            state = "no_field_accuracy"
        elif n < window:
            state = "too_few_labels"
        elif drop > margin + 1e-12:
            state = "warning"
        else:
            state = "ok"
        checks.append({
            "model_version": version.as_ref(), "window": window, "margin": margin, "n": n, "correct": correct,
            "recent_accuracy": recent, "field_accuracy": field_accuracy,
            "field_n": (version.metrics or {}).get("field_n"), "drop": drop, "state": state,
        })
    return checks


def quality_report() -> dict[str, Any]:
    """Quality over time in full, as ``GET /api/stats/`` gives it: per day, per N labelled drawings, the checks."""
    return {
        "quality": quality_over_time(),
        "quality_by_drawings": quality_by_drawings(),
        "quality_checks": quality_checks(),
    }
