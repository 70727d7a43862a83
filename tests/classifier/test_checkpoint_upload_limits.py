"""Uploading a checkpoint (the admin's "Upload a checkpoint" form, ``lifecycle.model_version_upload``;
there is no upload endpoint in the API): a network beyond a run's bounds, NaN or infinite weights or
metrics, a claimed parameter count, a file over CHECKPOINT_UPLOAD_MAX_BYTES are each a clear 400-style
refusal that registers nothing, never a 500."""
from __future__ import annotations

import io

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from classifier import lifecycle
from classifier.models import ModelVersion
from engine.checkpoint import load_checkpoint
from mnistsite.errors import ApplicationError

pytestmark = pytest.mark.django_db

UPLOAD = reverse("admin:classifier_modelversion_upload")


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def nan_weights(good: dict) -> bytes:
    weight = good["state_dict"]["fc.weight"].clone()
    weight[0, 0] = float("nan")
    return torch_bytes({**good, "state_dict": {**good["state_dict"], "fc.weight": weight}})


HOSTILE = {  # what: (the file from a good logreg checkpoint, a part of the message)
    "wide network": (lambda good: torch_bytes({**good, "arch": "cnn", "config": {"widths": [4096, 4096, 4096]}}),
                     "network of 453,423,114 parameters; at most 20,000,000 are allowed"),
    "mlp too wide": (lambda good: torch_bytes({**good, "arch": "mlp", "config": {"hidden": [4096] * 8}}),
                     "at most 20,000,000 are allowed"),
    "nan weights": (nan_weights, "weight 'fc.weight' holds NaN or infinite values"),
    "nan metric": (lambda good: torch_bytes({**good, "metrics": {"test_accuracy": float("nan")}}),
                   "metrics['test_accuracy'] is nan, not a finite number"),
    "infinite figure in training": (lambda good: torch_bytes({**good, "training": {"best_val_loss": float("inf")}}),
                                    "training['best_val_loss'] is inf, not a finite number"),
    "long preprocessing": (lambda good: torch_bytes({**good, "preprocessing": "x" * 51}),
                           "'preprocessing' must be a name of at most 50 characters"),
}


@pytest.mark.parametrize("what", HOSTILE)
def test_the_service_refuses_with_a_400(zero_logreg_checkpoint, what):
    make, message = HOSTILE[what]
    before = ModelVersion.objects.count()
    with pytest.raises(ApplicationError) as caught:
        lifecycle.model_version_upload(data=make(load_checkpoint(zero_logreg_checkpoint)), name="hostile")
    assert (caught.value.code, caught.value.status) == ("invalid_checkpoint", 400)
    assert message in caught.value.message
    assert ModelVersion.objects.count() == before


@pytest.mark.parametrize("what", ["wide network", "nan weights", "nan metric"])
def test_the_admin_form_shows_the_refusal(admin_client, zero_logreg_checkpoint, what):
    make, message = HOSTILE[what]
    before = ModelVersion.objects.count()
    data = make(load_checkpoint(zero_logreg_checkpoint))
    response = admin_client.post(UPLOAD, {"checkpoint": SimpleUploadedFile("x.pt", data), "name": "hostile"})
    assert response.status_code == 200
    (error,) = response.context["form"].errors["checkpoint"]
    assert error.startswith("Refused: ") and message in error
    assert ModelVersion.objects.count() == before


def test_answers_that_overflow_are_refused(mnist_settings, zero_logreg_checkpoint):
    """Finite weights so large that the logits overflow: the evaluation's figures are not finite."""
    good = load_checkpoint(zero_logreg_checkpoint)
    huge = {name: torch.full_like(tensor, 3e38) for name, tensor in good["state_dict"].items()}
    huge["fc.weight"][1::2] = -3e38
    with pytest.raises(ApplicationError) as caught:
        lifecycle.model_version_upload(data=torch_bytes({**good, "state_dict": huge}), name="overflow")
    assert caught.value.code == "invalid_checkpoint" and "not a finite number" in caught.value.message
    assert not ModelVersion.objects.filter(name="overflow").exists()


def test_the_registered_parameter_count_is_the_models_own(mnist_settings, zero_logreg_checkpoint):
    claimed = torch_bytes({**load_checkpoint(zero_logreg_checkpoint), "num_parameters": 10 ** 15})
    version = lifecycle.model_version_upload(data=claimed, name="claims")
    assert version.num_parameters == 7850  # 784 x 10 + 10


def test_the_form_refuses_a_file_over_the_setting(admin_client, settings, zero_logreg_checkpoint):
    settings.CHECKPOINT_UPLOAD_MAX_BYTES = 1000
    response = admin_client.post(UPLOAD, {"checkpoint": SimpleUploadedFile("x.pt", zero_logreg_checkpoint)})
    (error,) = response.context["form"].errors["checkpoint"]
    assert "at most 1000\xa0bytes may be uploaded (CHECKPOINT_UPLOAD_MAX_BYTES)" in error
