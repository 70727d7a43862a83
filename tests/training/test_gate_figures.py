"""The gate's decision as a run stores and shows it: paired counts, p-values and the rule applied."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from classifier.models import LifecycleEvent, ModelVersion
from classifier.promotion import Evidence, gate_decide
from training.models import TrainingRun

from .conftest import QUICK_RUN

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_media(settings, tmp_path):
    """Checkpoints (the weak version's upload, the run's) stay out of the other tests' media folder."""
    settings.MEDIA_ROOT = tmp_path


def paired(name: str, *, n: int, both: int, b: int, c: int) -> Evidence:
    import torch

    candidate, active = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    candidate[:both] = active[:both] = True
    candidate[both : both + b] = True
    active[both + b : both + b + c] = True
    title = {"mnist": "MNIST test", "field": "field set"}[name]
    return Evidence.paired(name=name, title=title, candidate=candidate, active=active, for_users=name == "field",
                           margin=0.0)


def test_run_admin_shows_the_gates_evidence(admin_client):
    active = ModelVersion.objects.active().get()
    decision = gate_decide([paired("mnist", n=10_000, both=9_948, b=10, c=17),
                            paired("field", n=824, both=792, b=18, c=3)], active=active, alpha=0.05)
    run = TrainingRun.objects.create(
        config={"arch": "logreg", "epochs": 1}, executor="inline", status="succeeded", progress=1.0,
        promotion={"requested": True, "promoted": True, "reason": decision.reason, "gate": decision.as_dict()},
    )

    html = admin_client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()

    table = re.search(r'<table class="mv-metrics mv-gate">.*?</table>', html, re.S).group(0)
    cells = [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", table, re.S)]
    assert cells[8:16] == ["MNIST test", "10000", "99.58%", "99.65%", "10", "17", "0.25", "no significant difference"]
    assert cells[16:24] == ["field set (users)", "824", "98.30%", "96.48%", "18", "3", "0.0015", "significantly better"]
    assert "Rule applied: significantly better than cnn v1 on the field set, and not significantly worse anywhere" in html
    assert "(significance level 0.05)" in html
    # the reason in words is there too
    assert "only the candidate right on 18, only cnn v1 on 3 (McNemar p = 0.0015: significantly better)" in html


def test_run_admin_without_gate_figures(admin_client):
    run = TrainingRun.objects.create(config={"arch": "logreg", "epochs": 1}, executor="inline", status="succeeded",
                                     promotion={"requested": True, "promoted": False, "reason": "not promoted"})
    html = admin_client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    assert "mv-gate" not in html and "not promoted" in html


@pytest.mark.slow
def test_a_promoting_run_stores_and_shows_the_paired_figures(staff_client, admin_client, weak_active,
                                                             labelled_drawings, django_capture_on_commit_callbacks,
                                                             settings):
    labelled_drawings(60)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post("/api/retrain/", {**QUICK_RUN, "promote": True}, format="json")
    state = staff_client.get(response.json()["url"]).json()

    assert state["status"] == "succeeded", state["error"]
    promotion = state["promotion"]
    assert promotion["promoted"] is True, promotion["reason"]
    figures = promotion["gate"]["figures"]
    assert figures["order"] == ["mnist", "field"] and figures["alpha"] == settings.PROMOTION_ALPHA
    mnist, field = figures["mnist"], figures["field"]
    version = ModelVersion.objects.get(pk=state["result_version"]["id"])
    assert mnist["n"] == 10_000 and mnist["candidate"] == version.test_accuracy
    assert mnist["active"] == weak_active.test_accuracy
    assert mnist["only_candidate"] > mnist["only_active"] and mnist["p_value"] < 1e-6
    assert mnist["only_candidate"] - mnist["only_active"] == round(10_000 * (mnist["candidate"] - mnist["active"]))
    assert field["n"] == version.metrics["field_n"] and field["candidate"] == version.metrics["field_accuracy"]
    # the audit log says why, with the figures
    event = LifecycleEvent.objects.get(action="promote", to_version=version)
    assert event.reason == promotion["reason"] and "McNemar" in event.reason and "Rule:" in event.reason
    # and the run's admin page shows them as a table
    html = admin_client.get(reverse("admin:training_trainingrun_change", args=[state["id"]])).content.decode()
    assert '<table class="mv-metrics mv-gate">' in html and f"<td class=\"mv-num\">{mnist['only_candidate']}</td>" in html
