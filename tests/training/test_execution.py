"""One run reads the field set once; the gate answers the same images with both versions."""
from __future__ import annotations

from collections import OrderedDict

import pytest

from classifier import drawings, promotion
from classifier.models import ModelVersion
from training import execution

from .conftest import QUICK_RUN

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _own_media(settings, tmp_path):
    """The checkpoint this run registers stays out of the other tests' media folder."""
    settings.MEDIA_ROOT = tmp_path


def test_a_run_reads_the_field_set_once_and_the_gate_pairs_both_versions_on_the_same_images(
    staff_client, weak_active, labelled_drawings, django_capture_on_commit_callbacks, monkeypatch,
):
    labelled_drawings(40)
    reads: list[str] = []
    read = drawings.labelled_drawings

    def counting(*, part: str):
        reads.append(part)
        return read(part=part)

    monkeypatch.setattr(drawings, "labelled_drawings", counting)  # behind field_set()
    monkeypatch.setattr(execution, "labelled_drawings", counting)  # the training part
    answered: list[int] = []
    correct = promotion.correct_per_image

    def counting_correct(model, images, labels):
        answered.append(len(labels))
        return correct(model, images, labels)

    monkeypatch.setattr(promotion, "correct_per_image", counting_correct)
    monkeypatch.setattr(promotion, "_active_answers", OrderedDict())  # nothing cached by earlier tests

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post("/api/retrain/", {**QUICK_RUN, "promote": True}, format="json")
    state = staff_client.get(response.json()["url"]).json()

    assert state["status"] == "succeeded", state["error"]
    assert sorted(reads) == ["field", "train"]  # each part of the labelled drawings read once
    field = state["promotion"]["gate"]["figures"]["field"]
    # the gate answers MNIST test and the (same) field set once with each version, for the paired test
    assert sorted(answered) == sorted([10_000, 10_000, field["n"], field["n"]])
    version = ModelVersion.objects.get(pk=state["result_version"]["id"])
    assert field["candidate"] == version.metrics["field_accuracy"] and field["n"] == version.metrics["field_n"]
    assert version.metrics["field_fingerprint"].startswith(f"drawings:{field['n']}:")
    assert execution.field_set is drawings.field_set  # the run reads it through the registry
