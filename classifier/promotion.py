"""The promotion gate: is a candidate at least as good as the active version on the same images?"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from torch import nn

from engine.checkpoint import CheckpointError

from .checkpoints import version_model
from .drawings import Drawings, field_set
from .evaluation import model_evaluate
from .models import ModelVersion


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


def _field_accuracy(metrics: dict[str, Any], model: nn.Module | None, drawings: Drawings) -> float | None:
    """The candidate's field-set accuracy: from its metrics when they were measured on these very
    drawings, else measured now."""
    if metrics.get("field_fingerprint") == drawings.fingerprint and metrics.get("field_accuracy") is not None:
        return metrics["field_accuracy"]
    if model is None:
        return None
    return model_evaluate(model, field=drawings, mnist=False)["field_accuracy"]


def promotion_gate(
    *, candidate_metrics: dict[str, Any], candidate_model: nn.Module | None, active: ModelVersion | None,
    field: Drawings | None = None,
) -> GateDecision:
    """Whether a candidate is at least as good as the active version on MNIST test and on the field set.

    Both are compared on the same images: MNIST test figures are stored per version; the field set
    grows, so the active version is evaluated on today's field set (``field``, read once by the
    caller, or read here). Margins (accuracy the candidate may lose) come from
    ``PROMOTION_MARGIN_MNIST`` and ``PROMOTION_MARGIN_FIELD``.
    """
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
    drawings = field_set() if field is None else field
    if not len(drawings):
        figures["field"] = None
        reasons.append("field set is empty, so only MNIST was compared")
    else:
        cand_field = _field_accuracy(candidate_metrics, candidate_model, drawings)
        try:
            act_field = model_evaluate(version_model(active), field=drawings, mnist=False)["field_accuracy"]
        except CheckpointError as exc:
            act_field = None
            reasons.append(f"{active.label} could not be evaluated on the field set ({exc})")
        figures["field"] = {"candidate": cand_field, "active": act_field, "margin": m_field, "n": len(drawings)}
        if act_field is not None and cand_field is not None:
            passed = cand_field >= act_field - m_field - 1e-12
            ok &= passed
            reasons.append(
                f"field set {_pct(cand_field)} {'>=' if passed else '<'} {_pct(act_field)} (n={len(drawings)})"
                + (f" minus margin {100 * m_field:.2f} pp" if m_field else "")
            )
    verdict = "promoted" if ok else "not promoted"
    return GateDecision(ok, f"{verdict}: " + "; ".join(reasons), active.pk, figures)
