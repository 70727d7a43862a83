"""The promotion gate reads evidence: a paired McNemar test per evidence set, and the documented rule."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from classifier import promotion
from classifier.checkpoints import version_model
from classifier.drawings import Drawings
from classifier.models import ModelVersion
from classifier.promotion import Evidence, Requirement, decision_rows, gate_decide, mcnemar_p, promotion_gate
from classifier.shadow import SHADOW_EVIDENCE, SHADOW_TITLE

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]


def answers(*, n: int, both: int, only_candidate: int, only_active: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image correctness of two versions on ``n`` images with the given agreement counts."""
    candidate = torch.zeros(n, dtype=torch.bool)
    active = torch.zeros(n, dtype=torch.bool)
    candidate[:both] = active[:both] = True
    candidate[both : both + only_candidate] = True
    active[both + only_candidate : both + only_candidate + only_active] = True
    return candidate, active


def evidence(name: str, *, n: int, both: int, b: int, c: int, margin: float = 0.0) -> Evidence:
    candidate, active = answers(n=n, both=both, only_candidate=b, only_active=c)
    title = {"mnist": "MNIST test", "field": "field set"}.get(name, name)
    return Evidence.paired(name=name, title=title, candidate=candidate, active=active, for_users=name != "mnist",
                           margin=margin)


@pytest.fixture
def active() -> ModelVersion:
    return ModelVersion.objects.get(name="cnn", version=1)


def brute_force_p(b: int, c: int) -> float:
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


# ------------------------------------------------------------------ the test


@pytest.mark.parametrize("b, c, expected", [
    (0, 7, 0.015625), (7, 0, 0.015625), (10, 10, 1.0), (0, 0, 1.0), (1, 9, 0.021484375), (0, 1, 1.0),
    (3, 4, 1.0), (0, 5, 0.0625),
])
def test_mcnemar_exact_p_values(b, c, expected):
    assert mcnemar_p(b, c) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("b, c", [(10, 17), (18, 3), (37, 61), (250, 310)])
def test_mcnemar_matches_the_binomial_sum(b, c):
    assert mcnemar_p(b, c) == pytest.approx(brute_force_p(b, c), rel=1e-9)
    assert mcnemar_p(b, c) == mcnemar_p(c, b)


def test_mcnemar_refuses_negative_counts_and_handles_large_ones():
    with pytest.raises(ValueError):
        mcnemar_p(-1, 3)
    assert mcnemar_p(4900, 5100) == pytest.approx(0.0466, abs=1e-4)  # normal approximation: 0.0466
    assert mcnemar_p(8305, 19) == 0.0


def test_paired_evidence_counts_the_discordant_images():
    e = evidence("field", n=824, both=792, b=18, c=3)
    assert (e.n, e.only_candidate, e.only_active) == (824, 18, 3)
    assert e.candidate_accuracy == pytest.approx(810 / 824) and e.active_accuracy == pytest.approx(795 / 824)
    assert e.p_value == pytest.approx(brute_force_p(18, 3)) and e.verdict(0.05) == "better"
    with pytest.raises(ValueError):
        Evidence.paired(name="x", title="x", candidate=torch.ones(3, dtype=torch.bool),
                        active=torch.ones(4, dtype=torch.bool), for_users=True, margin=0)


# ------------------------------------------------------------------ the rule


def test_the_issues_example_is_promoted_and_the_decision_carries_the_figures(active):
    # MNIST test 99.65% -> 99.58%: seven images, from 10 against 17 disagreements (not significant);
    # field set 96.5% -> 98.3% (n=824): 18 against 3 (significant).
    mnist = evidence("mnist", n=10_000, both=9_948, b=10, c=17)
    field = evidence("field", n=824, both=792, b=18, c=3)
    assert (mnist.candidate_accuracy, mnist.active_accuracy) == (0.9958, 0.9965)
    assert round(field.active_accuracy, 3) == 0.965 and round(field.candidate_accuracy, 3) == 0.983

    decision = gate_decide([mnist, field], active=active, alpha=0.05)

    assert decision.promote, decision.reason
    assert decision.figures["rule"] == "significantly_better" and decision.figures["order"] == ["mnist", "field"]
    m, f = decision.figures["mnist"], decision.figures["field"]
    assert (m["n"], m["only_candidate"], m["only_active"], m["verdict"]) == (10_000, 10, 17, "no significant difference")
    assert m["p_value"] == pytest.approx(0.2478, abs=1e-4)
    assert (f["n"], f["only_candidate"], f["only_active"], f["verdict"]) == (824, 18, 3, "better")
    assert f["p_value"] == pytest.approx(0.00149, abs=1e-5) and f["candidate"] == pytest.approx(810 / 824)
    assert decision.figures["alpha"] == 0.05 and decision.active == active.pk
    # in words, with the counts and the test's figures
    assert decision.reason.startswith("promoted: MNIST test 99.58% < 99.65% of cnn v1 on the same 10,000 images")
    assert "only the candidate right on 10, only cnn v1 on 17 (McNemar p = 0.25: no significant difference)" in decision.reason
    assert "field set 98.30% >= 96.48%" in decision.reason and "(McNemar p = 0.0015: significantly better)" in decision.reason
    assert "Rule: significantly better than cnn v1 on the field set" in decision.reason
    # the same decision under the old margin rule alone would have refused it
    assert not mnist.within_margin
    # stored as JSON (the run's promotion field) and read back for pages
    stored = json.loads(json.dumps(decision.as_dict()))
    rows = decision_rows(stored["figures"])
    assert [r["title"] for r in rows] == ["MNIST test", "field set"]
    assert rows[1] == {"title": "field set", "n": 824, "candidate": "98.30%", "active": "96.48%", "only_candidate": 18,
                       "only_active": 3, "p_value": "0.0015", "verdict": "better", "for_users": True, "margin": 0.0}


def test_significantly_worse_on_mnist_is_refused_even_when_users_gain(active):
    mnist = evidence("mnist", n=10_000, both=9_900, b=5, c=40)  # forgets 35 images: p < 0.0001
    field = evidence("field", n=824, both=792, b=18, c=3)
    decision = gate_decide([mnist, field], active=active, alpha=0.05)
    assert not decision.promote
    assert decision.figures["rule"] == "significantly_worse" and decision.figures["mnist"]["verdict"] == "worse"
    assert "McNemar p < 0.0001: significantly worse" in decision.reason
    assert decision.reason.endswith("Rule: significantly worse than cnn v1 on the MNIST test (significance level 0.05).")


def test_significantly_worse_on_the_field_set_is_refused(active):
    mnist = evidence("mnist", n=10_000, both=9_950, b=30, c=5)  # better on MNIST
    field = evidence("field", n=824, both=780, b=2, c=20)
    decision = gate_decide([mnist, field], active=active, alpha=0.05)
    assert not decision.promote and decision.figures["field"]["verdict"] == "worse"
    assert "significantly worse than cnn v1 on the field set" in decision.reason


def test_a_loss_within_the_margin_is_tolerated_even_when_significant(active):
    mnist = evidence("mnist", n=10_000, both=9_900, b=5, c=40, margin=0.005)  # loses 0.35 pp < 0.5 pp
    field = evidence("field", n=824, both=792, b=18, c=3)
    decision = gate_decide([mnist, field], active=active, alpha=0.05)
    assert decision.promote and decision.figures["rule"] == "significantly_better"
    assert "with a margin of 0.50 pp" in decision.reason


def test_without_a_significant_gain_where_users_draw_the_margin_rule_decides(active):
    small_field = evidence("field", n=40, both=36, b=3, c=1)  # better, but 3 against 1 proves nothing
    assert small_field.verdict(0.05) == "no significant difference"
    mnist_loses_7 = evidence("mnist", n=10_000, both=9_948, b=10, c=17)
    refused = gate_decide([mnist_loses_7, small_field], active=active, alpha=0.05)
    assert not refused.promote and refused.figures["rule"] == "margin"
    assert "no significant gain where users draw, and below cnn v1 on the MNIST test by more than the margin" in refused.reason

    lenient = evidence("mnist", n=10_000, both=9_948, b=10, c=17, margin=0.001)  # PROMOTION_MARGIN_MNIST
    passed = gate_decide([lenient, small_field], active=active, alpha=0.05)
    assert passed.promote and passed.figures["rule"] == "margin"

    level = gate_decide([evidence("mnist", n=10_000, both=9_950, b=12, c=12), small_field], active=active, alpha=0.05)
    assert level.promote and "at least as accurate as cnn v1 on every set" in level.reason


def test_a_significant_gain_on_mnist_alone_does_not_carry_the_decision(active):
    mnist = evidence("mnist", n=10_000, both=9_900, b=40, c=5)  # significantly better on MNIST
    field = evidence("field", n=40, both=36, b=1, c=2)  # a drawing worse where users draw
    decision = gate_decide([mnist, field], active=active, alpha=0.05)
    assert not decision.promote and decision.figures["rule"] == "margin"


def test_another_evidence_set_is_a_simple_addition(active):
    mnist = evidence("mnist", n=10_000, both=9_950, b=10, c=12)
    small_field = evidence("field", n=40, both=36, b=2, c=2)
    shadow = evidence("shadow", n=3_000, both=2_900, b=45, c=15)
    decision = gate_decide([mnist, small_field, shadow], active=active, alpha=0.05)
    assert decision.promote and decision.figures["order"] == ["mnist", "field", "shadow"]
    assert decision.figures["shadow"]["verdict"] == "better" and decision.figures["shadow"]["for_users"] is True
    assert "significantly better than cnn v1 on the shadow" in decision.reason
    # the significance level is a setting
    strict = gate_decide([mnist, small_field, shadow], active=active, alpha=1e-6)
    assert strict.figures["shadow"]["verdict"] == "no significant difference" and strict.figures["alpha"] == 1e-6


def test_unknown_accuracy_refuses(active):
    stored = Evidence(name="mnist", title="MNIST test", n=10_000, candidate_accuracy=None, active_accuracy=0.99)
    decision = gate_decide([stored], active=active, alpha=0.05)
    assert not decision.promote and "accuracy is unknown for the candidate" in decision.reason


def test_rows_of_a_decision_stored_before_the_paired_test():
    old = {"mnist": {"candidate": 0.9958, "active": 0.9965, "margin": 0.0},
           "field": {"candidate": 0.983, "active": 0.965, "margin": 0.0, "n": 824}}
    rows = decision_rows(old)
    assert [r["title"] for r in rows] == ["MNIST test", "field set"]
    assert rows[0]["verdict"] == "not tested" and rows[0]["p_value"] is None and rows[1]["n"] == 824
    assert decision_rows(None) == [] and decision_rows({"field": None}) == []


# ------------------------------------------------------------------ the forgetting budget (the defaults)


def _settings_of_a_fresh_process(**env: str) -> subprocess.CompletedProcess:
    """The promotion margins as a process started with ``env`` (and nothing else of ours) loads them."""
    code = "from django.conf import settings as s; print(s.PROMOTION_MARGIN_MNIST, s.PROMOTION_MARGIN_FIELD)"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "mnistsite.settings", **env})


def test_the_default_budget_is_a_tenth_of_a_point_on_mnist_and_nothing_on_users_drawings():
    result = _settings_of_a_fresh_process()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.001", "0.0"]
    changed = _settings_of_a_fresh_process(PROMOTION_MARGIN_MNIST="0.002", PROMOTION_MARGIN_FIELD="0.05")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.split() == ["0.002", "0.05"]


@pytest.mark.parametrize("name, value", [
    ("PROMOTION_MARGIN_MNIST", "0.06"),  # six points of MNIST is no longer a forgetting guard
    ("PROMOTION_MARGIN_FIELD", "-0.001"),
    ("PROMOTION_MARGIN_MNIST", "0.1%"),
])
def test_a_margin_outside_zero_to_five_points_is_refused_at_start(name, value):
    result = _settings_of_a_fresh_process(**{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and f"{name} must be" in result.stderr
    assert "between 0 and 0.05" in result.stderr and repr(value) in result.stderr


def test_the_settings_margins_reach_the_gate(active, settings):
    """No candidate weights: the gate compares stored MNIST accuracies under PROMOTION_MARGIN_MNIST."""
    settings.PROMOTION_MARGIN_MNIST = 0.001
    empty = Drawings.empty()
    within = promotion_gate(candidate_metrics={"test_accuracy": active.test_accuracy - 0.001}, candidate_model=None,
                            active=active, field=empty)
    assert within.promote and within.figures["mnist"]["margin"] == 0.001, within.reason
    assert "with a margin of 0.10 pp" in within.reason
    beyond = promotion_gate(candidate_metrics={"test_accuracy": active.test_accuracy - 0.0011}, candidate_model=None,
                            active=active, field=empty)
    assert not beyond.promote and beyond.figures["rule"] == "margin", beyond.reason


def _budget_evidence(settings, *, mnist: tuple[int, int], field: tuple[int, int], shadow: tuple[int, int] | None = None):
    """MNIST test (10,000 images), field set (300) and optionally shadow traffic (400), each with the margin
    the site gives it (``gate_evidence`` and ``shadow_evidence``); pairs are (only candidate, only active)."""
    sets = [
        evidence("mnist", n=10_000, both=9_900, b=mnist[0], c=mnist[1], margin=settings.PROMOTION_MARGIN_MNIST),
        evidence("field", n=300, both=250, b=field[0], c=field[1], margin=settings.PROMOTION_MARGIN_FIELD),
    ]
    if shadow is not None:
        b, c = shadow
        candidate, current = answers(n=400, both=300, only_candidate=b, only_active=c)
        sets.append(Evidence.paired(name=SHADOW_EVIDENCE, title=SHADOW_TITLE, candidate=candidate, active=current,
                                    for_users=True, margin=settings.PROMOTION_MARGIN_FIELD))
    return sets


@pytest.fixture
def default_margins(settings):
    settings.PROMOTION_MARGIN_MNIST, settings.PROMOTION_MARGIN_FIELD = 0.001, 0.0  # the settings' defaults
    return settings


def test_an_honest_fine_tune_within_the_budget_is_promoted_without_a_user_gain(active, default_margins):
    # 10 MNIST test images lost (0.10 pp: 20 only the candidate right, 30 only the active version; p = 0.2),
    # users' drawings level: promoted by the margin rule
    assert mcnemar_p(20, 30) > 0.05
    within = gate_decide(_budget_evidence(default_margins, mnist=(20, 30), field=(4, 4)), active=active)
    assert within.promote and within.figures["rule"] == "margin", within.reason
    assert within.figures["mnist"]["active"] - within.figures["mnist"]["candidate"] == pytest.approx(0.001)
    assert "at least as accurate as cnn v1 on every set, within the margins" in within.reason
    # 11 images (0.11 pp): beyond the budget, refused
    beyond = gate_decide(_budget_evidence(default_margins, mnist=(20, 31), field=(4, 4)), active=active)
    assert not beyond.promote and beyond.figures["rule"] == "margin", beyond.reason
    assert "below cnn v1 on the MNIST test by more than the margin" in beyond.reason
    # the old default (no budget) refused the one within it
    default_margins.PROMOTION_MARGIN_MNIST = 0.0
    assert not gate_decide(_budget_evidence(default_margins, mnist=(20, 30), field=(4, 4)), active=active).promote


def test_significant_forgetting_beyond_the_budget_is_refused_even_when_users_gain(active, default_margins):
    users_gain = (30, 5)  # field set: significantly better (p < 0.0001)
    assert mcnemar_p(*users_gain) < 1e-4
    # MNIST: 35 images lost (0.35 pp), 5 against 40, p < 0.0001
    refused = gate_decide(_budget_evidence(default_margins, mnist=(5, 40), field=users_gain), active=active)
    assert not refused.promote and refused.figures["rule"] == "significantly_worse", refused.reason
    assert refused.figures["field"]["verdict"] == "better" and refused.figures["mnist"]["verdict"] == "worse"
    assert "significantly worse than cnn v1 on the MNIST test, by more than the margin" in refused.reason
    # 12 images lost (0.12 pp), 0 against 12 (p = 0.0005): still beyond the budget, still refused
    assert not gate_decide(_budget_evidence(default_margins, mnist=(0, 12), field=users_gain), active=active).promote
    # 10 images lost, 0 against 10 (p = 0.002): significant, but within the budget, and users gain: promoted
    within = gate_decide(_budget_evidence(default_margins, mnist=(0, 10), field=users_gain), active=active)
    assert within.figures["mnist"]["verdict"] == "worse"
    assert within.promote and within.figures["rule"] == "significantly_better", within.reason


def test_significantly_worse_on_shadow_traffic_is_refused_whatever_mnist_says(active, default_margins):
    shadow_loss = (5, 30)  # 25 more of users' live drawings wrong (p < 0.0001)
    for mnist in [(60, 5), (20, 20), (20, 30)]:  # significantly better, level, within the budget
        decision = gate_decide(_budget_evidence(default_margins, mnist=mnist, field=(4, 4), shadow=shadow_loss),
                               active=active)
        assert not decision.promote and decision.figures["rule"] == "significantly_worse", decision.reason
        assert decision.figures["shadow"]["verdict"] == "worse"
        assert f"significantly worse than cnn v1 on the {SHADOW_TITLE}" in decision.reason
    # even with a significant gain on the field set
    mixed = gate_decide(_budget_evidence(default_margins, mnist=(60, 5), field=(30, 5), shadow=shadow_loss),
                        active=active)
    assert not mixed.promote and mixed.figures["rule"] == "significantly_worse"
    # required shadow evidence (PROMOTION_SHADOW_MIN_LABELLED) refuses any loss there, before anything else
    required = gate_decide(_budget_evidence(default_margins, mnist=(60, 5), field=(4, 4), shadow=(10, 12)),
                           active=active, requirements=[Requirement(SHADOW_EVIDENCE, SHADOW_TITLE, 100)])
    assert not required.promote and required.figures["rule"] == "required_no_loss", required.reason


# ------------------------------------------------------------------ on real models and images


def test_the_gate_answers_the_same_images_with_both_versions(mnist_settings, labelled_drawings, settings,
                                                               monkeypatch):
    settings.PROMOTION_MARGIN_MNIST = settings.PROMOTION_MARGIN_FIELD = 0.0
    monkeypatch.setattr(promotion, "_active_answers", OrderedDict())
    logreg, mlp = (ModelVersion.objects.get(name=name, version=1) for name in ("logreg", "mlp"))
    labelled_drawings(60)
    answered: list[int] = []
    correct = promotion.correct_per_image

    def counting(model, images, labels):
        answered.append(len(labels))
        return correct(model, images, labels)

    monkeypatch.setattr(promotion, "correct_per_image", counting)

    # mlp (99.09%) against logreg (92.66%) on the same 10,000 MNIST images and field set
    decision = promotion_gate(candidate_metrics={}, candidate_model=version_model(mlp), active=logreg)
    mnist, field = decision.figures["mnist"], decision.figures["field"]
    assert mnist["n"] == 10_000 and mnist["candidate"] == pytest.approx(mlp.test_accuracy)
    assert mnist["active"] == pytest.approx(logreg.test_accuracy)
    assert mnist["only_candidate"] - mnist["only_active"] == round(10_000 * (mlp.test_accuracy - logreg.test_accuracy))
    assert mnist["verdict"] == "better" and mnist["p_value"] < 1e-6
    assert field["n"] > 0 and field["for_users"] is True and decision.active == logreg.pk
    assert decision.promote, decision.reason

    # the active version's answers are kept per weights and data: a second gate only runs the candidate
    calls = len(answered)
    promotion_gate(candidate_metrics={}, candidate_model=version_model(mlp), active=logreg)
    assert len(answered) - calls == 2

    # a version against itself: no discordant images, p = 1, the margin rule passes
    same = promotion_gate(candidate_metrics={}, candidate_model=version_model(logreg), active=logreg)
    assert same.promote and same.figures["mnist"]["only_candidate"] == same.figures["mnist"]["only_active"] == 0
    assert same.figures["mnist"]["p_value"] == 1.0 and same.figures["rule"] == "margin"


def test_the_gate_takes_extra_evidence_and_falls_back_to_stored_figures(mnist_settings, settings):
    settings.PROMOTION_MARGIN_MNIST = settings.PROMOTION_MARGIN_FIELD = 0.0
    active = ModelVersion.objects.get(name="logreg", version=1)
    shadow = evidence("shadow", n=3_000, both=2_900, b=45, c=15)
    decision = promotion_gate(candidate_metrics={}, candidate_model=version_model(active), active=active,
                              field=Drawings.empty(), extra_evidence=[shadow])
    assert decision.promote and decision.figures["order"] == ["mnist", "shadow"]
    assert "field set is empty, so only MNIST was compared" in decision.reason

    # no candidate weights: the stored accuracies, without a paired test, under the margin rule
    stored = promotion_gate(candidate_metrics={"test_accuracy": 0.9, "test_n": 10_000}, candidate_model=None,
                            active=active, field=Drawings.empty())
    assert not stored.promote and stored.figures["mnist"]["verdict"] == "not tested"
    assert "stored accuracies" in stored.reason and "McNemar" not in stored.reason


def test_an_active_version_that_cannot_be_loaded_falls_back_to_stored_figures(mnist_settings):
    logreg = ModelVersion.objects.get(name="logreg", version=1)
    broken = ModelVersion.objects.create(name="gone", version=1, arch="logreg", checkpoint="checkpoints/gone.pt",
                                         sha256="0" * 64, test_accuracy=0.5)
    drawings = Drawings(ids=[1], images=torch.zeros((1, 28, 28), dtype=torch.uint8), labels=torch.tensor([0]))
    decision = promotion_gate(candidate_metrics={"test_accuracy": 0.9}, candidate_model=version_model(logreg),
                              active=broken, field=drawings)
    assert decision.promote and decision.figures["order"] == ["mnist"]
    assert "gone v1 could not be loaded (its checkpoint file cannot be read)" in decision.reason
    assert "the field set was not compared" in decision.reason and "gone.pt" not in decision.reason
