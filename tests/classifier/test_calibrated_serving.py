"""Serving applies the checkpoint's temperature exactly once; older checkpoints are served with T = 1."""
import pytest
import torch

from classifier.inference import registry
from classifier.lifecycle import model_version_register_file
from engine.checkpoint import make_checkpoint, save_checkpoint
from engine.nets import build_model
from engine.serving import tta_views


def logreg_file(path, *, calibration=None, seed=0):
    torch.manual_seed(seed)
    model = build_model("logreg")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    save_checkpoint(path, make_checkpoint(model=model, arch="logreg", config={}, calibration=calibration))
    return model.eval()


@pytest.mark.django_db
def test_served_probabilities_are_softmax_of_logits_over_t_once(tmp_path):
    model = logreg_file(tmp_path / "calibrated.pt", calibration={"temperature": 2.5})
    version = model_version_register_file(path=tmp_path / "calibrated.pt", name="calibrated")
    serving = registry.for_version(version)
    assert serving.temperature == pytest.approx(2.5)
    x = torch.rand(6, 1, 28, 28)
    probs = serving.probabilities(x)
    with torch.no_grad():
        logits = model(x)
    assert torch.allclose(probs, (logits / 2.5).softmax(dim=1), atol=1e-5)
    assert not torch.allclose(probs, (logits / 2.5**2).softmax(dim=1), atol=1e-3)  # not twice
    assert torch.allclose(probs.sum(dim=1), torch.ones(6), atol=1e-5)
    assert torch.equal(probs.argmax(dim=1), logits.argmax(dim=1))


@pytest.mark.django_db
def test_served_probabilities_average_the_checkpoints_views(tmp_path):
    model = logreg_file(tmp_path / "views.pt", calibration={"temperature": 0.5, "tta": "scale"}, seed=2)
    version = model_version_register_file(path=tmp_path / "views.pt", name="views")
    serving = registry.for_version(version)
    assert serving.tta == "scale"
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        logits = model(tta_views(x, "scale")).view(3, 2, 10)
    assert torch.allclose(serving.probabilities(x), (logits / 0.5).softmax(dim=-1).mean(dim=0), atol=1e-5)


@pytest.mark.django_db
def test_a_checkpoint_without_calibration_is_served_with_t_equal_one(tmp_path):
    model = logreg_file(tmp_path / "old.pt", seed=1)
    version = model_version_register_file(path=tmp_path / "old.pt", name="old")
    serving = registry.for_version(version)
    assert serving.temperature == 1.0 and serving.tta == "none"
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = model(x).softmax(dim=1)
    assert torch.allclose(serving.probabilities(x), expected, atol=1e-5)
