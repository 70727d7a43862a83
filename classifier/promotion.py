"""The promotion gate: is a candidate better than the active version on the same images, beyond chance?

**Evidence.** An evidence set is a list of images both versions answered: the MNIST test set, today's
field set (held-out labelled drawings), and any set a caller adds (shadow traffic, say). On each,
only the images where the two disagree tell them apart: ``b`` images only the candidate got right,
``c`` images only the active version got right. The exact two-sided McNemar test asks how often a
split at least as uneven as b : c would happen if both versions were equally good (a fair coin over
the b + c discordant images): that is the p-value. Accuracies alone cannot say this: 7 images out of
10,000 are noise when they come from 10 against 17 disagreements.

**The rule** (significance level ``PROMOTION_ALPHA``, margins ``PROMOTION_MARGIN_MNIST`` and
``PROMOTION_MARGIN_FIELD``, accuracy 0..1 the candidate may lose):

0. Refused if a required set (``Requirement``: shadow traffic when ``PROMOTION_SHADOW_MIN_LABELLED`` is set,
   see ``classifier.shadow``) is missing, has fewer images than required, or shows any loss: significantly
   worse, or below the active version's accuracy minus the set's margin.
1. Refused if the candidate is significantly worse (c > b, p < alpha) on any set by more than that
   set's margin.
2. Otherwise promoted if it is significantly better (b > c, p < alpha) on a set that matters to users
   (the field set, shadow traffic). MNIST only guards against forgetting.
3. Otherwise (no significant gain where users draw: a small field set, or no real change) the margin
   rule: promoted if on every set its accuracy is at least the active version's minus the margin.

The figures of every set (n, both accuracies, b, c, p, the verdict) and the rule applied are in the
decision's ``figures``; its ``reason`` says the same in words.
"""
from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from django.conf import settings
from torch import nn

from engine.checkpoint import CheckpointError
from engine.data import DataError, mnist_fingerprint
from engine.evaluate import predict_logits
from engine.nets import inference_copy
from mnistsite.errors import ApplicationError

from .checkpoints import version_model
from .drawings import Drawings, field_set
from .evaluation import mnist_test_set
from .models import ModelVersion

BETTER, WORSE, NO_DIFFERENCE, NOT_TESTED = "better", "worse", "no significant difference", "not tested"


# ----------------------------------------------------------------------------- the test


def mcnemar_p(only_candidate: int, only_active: int) -> float:
    """Exact two-sided McNemar p-value: 2 P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), at most 1.

    Computed with whole numbers (no rounding until the last division), so b=0, c=7 gives exactly
    2/128 = 0.015625.
    """
    b, c = int(only_candidate), int(only_active)
    if b < 0 or c < 0:
        raise ValueError("discordant counts cannot be negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = term = 1  # C(n, 0)
    for k in range(min(b, c)):
        term = term * (n - k) // (k + 1)  # C(n, k + 1), exact
        tail += term
    return min(1.0, 2 * tail / 2**n)


# ----------------------------------------------------------------------------- evidence


@dataclass(frozen=True)
class Evidence:
    """Candidate and active version on one set of images.

    Paired (``only_candidate`` / ``only_active`` known): built with ``Evidence.paired`` from the two
    versions' per-image correctness. Unpaired: stored accuracies only (when a model cannot be run);
    then only the margin rule can use it.
    """

    name: str  # "mnist", "field", "shadow"...
    title: str  # in words: "MNIST test", "field set"
    n: int
    candidate_accuracy: float | None
    active_accuracy: float | None
    only_candidate: int | None = None  # b
    only_active: int | None = None  # c
    for_users: bool = False  # a significant gain here can carry the decision (rule 2)
    margin: float = 0.0

    @classmethod
    def paired(cls, *, name: str, title: str, candidate: torch.Tensor, active: torch.Tensor, for_users: bool,
               margin: float) -> "Evidence":
        """From per-image correctness (bool ``[n]``) of the candidate and the active version, same images."""
        candidate = candidate.detach().to("cpu", torch.bool).flatten()
        active = active.detach().to("cpu", torch.bool).flatten()
        if candidate.shape != active.shape:
            raise ValueError(f"{title}: {len(candidate)} candidate answers but {len(active)} active answers")
        n = len(candidate)
        if n == 0:
            raise ValueError(f"{title}: no images")
        return cls(
            name=name, title=title, n=n,
            candidate_accuracy=int(candidate.sum()) / n, active_accuracy=int(active.sum()) / n,
            only_candidate=int((candidate & ~active).sum()), only_active=int((active & ~candidate).sum()),
            for_users=for_users, margin=margin,
        )

    @property
    def is_paired(self) -> bool:
        return self.only_candidate is not None and self.only_active is not None

    @property
    def p_value(self) -> float | None:
        return mcnemar_p(self.only_candidate, self.only_active) if self.is_paired else None

    def verdict(self, alpha: float) -> str:
        p = self.p_value
        if p is None:
            return NOT_TESTED
        if p < alpha and self.only_candidate != self.only_active:
            return BETTER if self.only_candidate > self.only_active else WORSE
        return NO_DIFFERENCE

    @property
    def known(self) -> bool:
        return self.candidate_accuracy is not None and self.active_accuracy is not None

    @property
    def within_margin(self) -> bool:
        """The margin rule: accuracy at least the active version's minus the margin."""
        return self.known and self.candidate_accuracy >= self.active_accuracy - self.margin - 1e-12

    def figures(self, alpha: float) -> dict[str, Any]:
        return {
            "title": self.title, "n": self.n, "candidate": self.candidate_accuracy, "active": self.active_accuracy,
            "only_candidate": self.only_candidate, "only_active": self.only_active, "p_value": self.p_value,
            "verdict": self.verdict(alpha), "for_users": self.for_users, "margin": self.margin,
        }


@dataclass(frozen=True)
class Requirement:
    """An evidence set the candidate must be compared on, on at least ``min_n`` images, with no loss there."""

    name: str  # the evidence set's name, e.g. "shadow"
    title: str  # in words, for the reason when the set is missing
    min_n: int


# ----------------------------------------------------------------------------- the decision


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


def _p_text(value: float) -> str:
    return "< 0.0001" if value < 1e-4 else f"{value:.2g}"


def _p(value: float) -> str:
    return "p < 0.0001" if value < 1e-4 else f"p = {_p_text(value)}"


def _titles(items: Sequence[Evidence]) -> str:
    return " and ".join(f"the {e.title}" for e in items)


def _no_gain(evidence: Sequence[Evidence]) -> str:
    if any(e.for_users for e in evidence):
        return "no significant gain where users draw"
    return "no comparison on users' drawings"


def _clause(e: Evidence, label: str, alpha: float) -> str:
    if not e.known:
        who = "the candidate" if e.candidate_accuracy is None else label
        return f"{e.title} accuracy is unknown for {who}"
    op = ">=" if e.candidate_accuracy >= e.active_accuracy - 1e-12 else "<"
    text = f"{e.title} {_pct(e.candidate_accuracy)} {op} {_pct(e.active_accuracy)} of {label}"
    if e.is_paired:
        words = {BETTER: "significantly better", WORSE: "significantly worse"}.get(e.verdict(alpha), "no significant difference")
        text += (f" on the same {e.n:,} images: only the candidate right on {e.only_candidate:,}, only {label} on "
                 f"{e.only_active:,} (McNemar {_p(e.p_value)}: {words})")
    else:
        text += f" (n={e.n:,}; stored accuracies, no paired test)"
    if e.margin:
        text += f" with a margin of {100 * e.margin:.2f} pp"
    return text


def gate_decide(evidence: Sequence[Evidence], *, active: ModelVersion, alpha: float | None = None,
                notes: Sequence[str] = (), requirements: Sequence[Requirement] = ()) -> GateDecision:
    """The decision on named evidence sets (see the module's rule), with its figures and reason."""
    alpha = settings.PROMOTION_ALPHA if alpha is None else alpha
    label = active.label
    by_name = {e.name: e for e in evidence}
    short = [(r, by_name[r.name].n if r.name in by_name else 0) for r in requirements
             if r.name not in by_name or by_name[r.name].n < r.min_n]
    lost = [by_name[r.name] for r in requirements if r.name in by_name and by_name[r.name].known
            and (by_name[r.name].verdict(alpha) == WORSE or not by_name[r.name].within_margin)]
    unknown = [e for e in evidence if not e.known]
    worse = [e for e in evidence if e.verdict(alpha) == WORSE
             and e.known and e.active_accuracy - e.candidate_accuracy > e.margin + 1e-12]
    better = [e for e in evidence if e.for_users and e.verdict(alpha) == BETTER]
    below = [e for e in evidence if e.known and not e.within_margin]
    if not evidence or unknown:
        promote, rule = False, "unknown"
        text = "without both versions' accuracy on every set, nothing can be compared"
    elif short:
        promote, rule = False, "required_evidence"
        text = "; ".join(f"the {r.title} has {n:,} of the {r.min_n:,} images required" for r, n in short)
    elif lost:
        promote, rule = False, "required_no_loss"
        text = f"a loss against {label} on {_titles(lost)}, where none is allowed"
    elif worse:
        promote, rule = False, "significantly_worse"
        text = f"significantly worse than {label} on {_titles(worse)}" + (
            ", by more than the margin" if any(e.margin for e in worse) else "")
    elif better:
        promote, rule = True, "significantly_better"
        text = f"significantly better than {label} on {_titles(better)}, and not significantly worse anywhere"
    elif below:
        promote, rule = False, "margin"
        text = f"{_no_gain(evidence)}, and below {label} on {_titles(below)} by more than the margin"
    else:
        promote, rule = True, "margin"
        text = f"{_no_gain(evidence)}, and at least as accurate as {label} on every set, within the margins"
    figures: dict[str, Any] = {"alpha": alpha, "rule": rule, "rule_text": text, "order": [e.name for e in evidence]}
    if requirements:
        figures["required"] = {r.name: r.min_n for r in requirements}
    figures.update({e.name: e.figures(alpha) for e in evidence})
    clauses = [_clause(e, label, alpha) for e in evidence] + list(notes)
    verdict = "promoted" if promote else "not promoted"
    reason = f"{verdict}: " + "; ".join(clauses) + f". Rule: {text} (significance level {alpha:g})."
    return GateDecision(promote, reason, active.pk, figures)


# ----------------------------------------------------------------------------- per-image answers

_CACHE_SIZE = 8
_active_answers: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
_cache_lock = threading.Lock()


def correct_per_image(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bool ``[n]``: which images the model gets right (the same forward pass as ``engine.evaluate``)."""
    logits = predict_logits(inference_copy(model), images)
    return logits.argmax(dim=1) == labels.to("cpu").long()


def _cached_answers(version: ModelVersion, data_key: str, load: Callable[[], nn.Module],
                    images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A registered version's per-image correctness, kept per (weights, data): the active version meets
    the same MNIST test set at every gate."""
    key = (version.sha256, data_key)
    with _cache_lock:
        if key in _active_answers:
            _active_answers.move_to_end(key)
            return _active_answers[key]
    answers = correct_per_image(load(), images, labels)
    with _cache_lock:
        _active_answers[key] = answers
        while len(_active_answers) > _CACHE_SIZE:
            _active_answers.popitem(last=False)
    return answers


def gate_evidence(*, candidate_metrics: dict[str, Any], candidate_model: nn.Module | None,
                  active: ModelVersion, field: Drawings) -> tuple[list[Evidence], list[str]]:
    """The standard evidence sets, MNIST test and the field set, and notes on anything left out.

    Where a paired comparison is impossible (no candidate weights, an unreadable active checkpoint,
    MNIST files missing) MNIST falls back to the stored accuracies, and the notes say why.
    """
    margin_mnist, margin_field = settings.PROMOTION_MARGIN_MNIST, settings.PROMOTION_MARGIN_FIELD
    notes: list[str] = []
    load_active = functools.cache(lambda: version_model(active))
    stored_mnist = Evidence(name="mnist", title="MNIST test", n=int(candidate_metrics.get("test_n") or 10_000),
                            candidate_accuracy=candidate_metrics.get("test_accuracy"),
                            active_accuracy=active.test_accuracy, margin=margin_mnist)
    if candidate_model is None:
        return [stored_mnist], ["the candidate's weights were not given, so stored accuracies were compared"]
    try:
        load_active()
    except CheckpointError as exc:
        skipped = " and the field set was not compared" if len(field) else ""
        why = getattr(exc, "public", None) or exc  # no server paths in a reason the dashboard shows
        return [stored_mnist], [f"{active.label} could not be loaded ({why}), so stored MNIST accuracies were "
                                f"compared{skipped}"]

    evidence: list[Evidence] = []
    try:
        test = mnist_test_set()
        test_key = mnist_fingerprint(settings.MNIST_ROOT) + ":test"
    except (ApplicationError, DataError) as exc:
        evidence.append(stored_mnist)
        notes.append(f"the MNIST test images are not available ({getattr(exc, 'message', exc)}), "
                     "so stored MNIST accuracies were compared")
    else:
        evidence.append(Evidence.paired(
            name="mnist", title="MNIST test", for_users=False, margin=margin_mnist,
            candidate=correct_per_image(candidate_model, test.images, test.labels),
            active=_cached_answers(active, test_key, load_active, test.images, test.labels),
        ))
    if not len(field):
        notes.append("field set is empty, so only MNIST was compared")
    else:
        evidence.append(Evidence.paired(
            name="field", title="field set", for_users=True, margin=margin_field,
            candidate=correct_per_image(candidate_model, field.images, field.labels),
            active=_cached_answers(active, field.fingerprint, load_active, field.images, field.labels),
        ))
    return evidence, notes


def promotion_gate(
    *, candidate_metrics: dict[str, Any], candidate_model: nn.Module | None, active: ModelVersion | None,
    field: Drawings | None = None, extra_evidence: Sequence[Evidence] = (), requirements: Sequence[Requirement] = (),
) -> GateDecision:
    """Whether a candidate should replace the active version (the rule is in the module's docstring).

    Both versions answer the same images: the MNIST test set and today's field set (``field``, read
    once by the caller, or read here), plus ``extra_evidence`` (more paired sets, e.g. shadow traffic,
    built with ``Evidence.paired``); ``requirements`` name sets that must be there, large enough, with no loss.
    """
    if active is None:
        return GateDecision(True, "no version is active, so the candidate is promoted", None, {"rule": "no_active"})
    drawings = field_set() if field is None else field
    evidence, notes = gate_evidence(candidate_metrics=candidate_metrics, candidate_model=candidate_model,
                                    active=active, field=drawings)
    return gate_decide([*evidence, *extra_evidence], active=active, notes=notes, requirements=requirements)


def decision_rows(figures: Any) -> list[dict[str, Any]]:
    """A stored decision's evidence sets in order, for pages: plain values with percentages as text.

    Tolerates decisions stored before the paired test (no ``order``: the ``mnist`` and ``field`` keys).
    """
    if not isinstance(figures, dict):
        return []
    names = figures.get("order") or [k for k in ("mnist", "field") if isinstance(figures.get(k), dict)]
    rows = []
    for name in names:
        row = figures.get(name)
        if not isinstance(row, dict):
            continue
        p = row.get("p_value")
        rows.append({
            "title": row.get("title") or {"mnist": "MNIST test", "field": "field set"}.get(name, name),
            "n": row.get("n"),
            "candidate": _pct(row.get("candidate")), "active": _pct(row.get("active")),
            "only_candidate": row.get("only_candidate"), "only_active": row.get("only_active"),
            "p_value": None if p is None else _p_text(p),
            "verdict": row.get("verdict") or NOT_TESTED,
            "for_users": bool(row.get("for_users", name != "mnist")),
            "margin": row.get("margin") or 0.0,
        })
    return rows
