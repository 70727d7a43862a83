"""Calibrated confidence: the temperature is fitted on validation, stored in the checkpoint, read
back (T = 1 for older checkpoints) and applied once."""
import io
import math

import pytest
import torch

from engine.calibration import (
    calibrated_probabilities,
    calibration_record,
    expected_calibration_error,
    fit_temperature,
    nll,
)
from engine.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from engine.nets import build_model, inference_copy
from engine.serving import (
    TTA_VIEWS,
    checkpoint_temperature,
    checkpoint_tta,
    predict_probabilities,
    tta_views,
    view_logits,
)
from engine.trainer import TrainConfig, TrainingData, split_validation, train


def sampled(n: int = 20000, temperature: float = 2.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that are ``temperature`` times too sharp for labels drawn from softmax(logits / T)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 10, generator=g) * 2.0
    labels = torch.multinomial(base.softmax(dim=1), 1, generator=g).flatten()
    return base * temperature, labels


def test_fit_temperature_recovers_the_true_temperature():
    logits, labels = sampled(temperature=2.5)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)
    logits, labels = sampled(temperature=0.4)
    assert fit_temperature(logits, labels) == pytest.approx(0.4, rel=0.05)


def test_temperature_never_changes_a_prediction_and_probabilities_sum_to_one():
    logits, _ = sampled(500)
    for t in (0.3, 1.0, 4.0):
        probs = calibrated_probabilities(logits, t)
        assert torch.allclose(probs.sum(dim=1), torch.ones(500), atol=1e-5)
        assert torch.equal(probs.argmax(dim=1), logits.argmax(dim=1))


def test_ece_is_small_when_calibrated_and_large_when_not():
    logits, labels = sampled(temperature=3.0)
    before = expected_calibration_error(logits.softmax(dim=1), labels)
    after = expected_calibration_error((logits / 3.0).softmax(dim=1), labels)
    assert before > 0.1 and after < 0.02
    # by hand: two samples at 0.9 confidence, one right and one wrong -> |0.5 - 0.9| = 0.4
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == pytest.approx(0.4)


def test_calibration_record_describes_the_fit():
    logits, labels = sampled(temperature=2.0)
    record = calibration_record(logits, labels)
    assert record["temperature"] == pytest.approx(2.0, rel=0.05)
    assert record["val_ece_after"] < record["val_ece_before"]
    assert record["val_nll_after"] <= record["val_nll_before"]
    assert record["n"] == len(labels) and record["fitted_on"] == "validation"


def test_the_temperature_travels_in_the_checkpoint_and_old_ones_mean_one(tmp_path):
    model = build_model("logreg")
    with_t = make_checkpoint(model=model, arch="logreg", config={}, calibration={"temperature": 0.45, "tta": "scale"})
    save_checkpoint(tmp_path / "new.pt", with_t)
    loaded = load_checkpoint(tmp_path / "new.pt")
    assert checkpoint_temperature(loaded) == pytest.approx(0.45) and checkpoint_tta(loaded) == "scale"
    old = make_checkpoint(model=model, arch="logreg", config={})
    assert "calibration" not in old
    save_checkpoint(tmp_path / "old.pt", old)
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert checkpoint_temperature(loaded) == 1.0 and checkpoint_tta(loaded) == "none"
    # nonsense is never served: T = 1, one view
    for bad in ({"temperature": 0}, {"temperature": -2.0}, {"temperature": math.inf}, {"temperature": "x"}, "x", None):
        assert checkpoint_temperature({"calibration": bad}) == 1.0
    for bad in ({"tta": "everything"}, {"tta": 3}, "x", None):
        assert checkpoint_tta({"calibration": bad}) == "none"


def test_views_are_averaged_after_the_temperature_once():
    logits = torch.randn(3, 50, 10)
    probs = calibrated_probabilities(logits, 2.0)
    assert probs.shape == (50, 10)
    assert torch.allclose(probs, (logits / 2.0).softmax(dim=-1).mean(dim=0), atol=1e-6)
    assert torch.allclose(probs.sum(dim=1), torch.ones(50), atol=1e-5)
    # one view is the plain case
    assert nll(logits[:1], torch.zeros(50, dtype=torch.long), 2.0) == pytest.approx(
        nll(logits[0], torch.zeros(50, dtype=torch.long), 2.0), rel=1e-5)


def test_serving_grids_are_made_once_and_serve_both_modes():
    from engine import serving

    serving._cached_grid.cache_clear()
    x = torch.rand(2, 1, 28, 28)
    with torch.inference_mode():  # as serving asks
        first, again = tta_views(x, "affine"), tta_views(x, "affine")
    assert torch.equal(first, again) and serving._cached_grid.cache_info().hits == 1
    fresh = torch.nn.functional.grid_sample(
        x.repeat(5, 1, 1, 1), serving._view_grid("affine", 2, 1, 28, 28, torch.float32, torch.device("cpu")),
        mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.equal(first, fresh)
    y = x.clone().requires_grad_(True)  # the cached grid also works where gradients are recorded
    tta_views(y, "affine").sum().backward()
    assert y.grad is not None and y.grad.shape == y.shape
    big = torch.rand(serving.GRID_CACHE_MAX_BATCH + 1, 1, 28, 28)
    misses = serving._cached_grid.cache_info().misses
    tta_views(big, "scale")
    assert serving._cached_grid.cache_info().misses == misses  # large batches make their own grid


def test_test_time_views_are_one_batch_and_the_first_is_the_input():
    x = torch.rand(4, 1, 28, 28)
    for name, views in TTA_VIEWS.items():
        out = tta_views(x, name)
        assert out.shape == (len(views) * 4, 1, 28, 28)
        assert torch.allclose(out[:4], x, atol=1e-5)
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        tta_views(x, "everything")
    model = build_model("cnn", {"widths": [4, 8, 16]}).eval()
    assert view_logits(model, x, "scale").shape == (3, 4, 10)
    probs = predict_probabilities(model, x, temperature=0.5, tta="scale")
    assert torch.allclose(probs, calibrated_probabilities(view_logits(model, x, "scale"), 0.5), atol=1e-5)
    assert torch.allclose(predict_probabilities(model, x), model(x).softmax(dim=1), atol=1e-5)


def test_a_checkpoint_with_calibration_still_loads_weights_only():
    model = build_model("logreg")
    checkpoint = make_checkpoint(model=model, arch="logreg", config={},
                                 calibration=calibration_record(*sampled(2000, temperature=1.5)))
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    loaded = load_checkpoint(buffer.getvalue())
    assert loaded["calibration"]["temperature"] == pytest.approx(checkpoint["calibration"]["temperature"])


def test_training_fits_the_temperature_on_its_validation_split():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (640,), generator=g)
    images = torch.zeros(640, 28, 28, dtype=torch.uint8)
    for i, y in enumerate(labels.tolist()):
        images[i, 4 + 2 * y : 6 + 2 * y, 6:22] = 255
    config = TrainConfig(arch="cnn", arch_config={"widths": [4, 8, 16]}, epochs=2, batch_size=32, lr=0.05,
                         val_size=64, augment=False, precision="fp32", device="cpu")
    result = train(config, TrainingData(images=images, labels=labels))
    calibration = result.calibration
    assert calibration is not None and calibration["n"] == 64
    assert 0.05 < calibration["temperature"] < 20
    assert calibration["val_ece_after"] <= calibration["val_ece_before"] + 1e-6
    assert calibration["tta"] == "none"
    # Served with one view, the temperature comes from the last validation pass of the kept weights;
    # fitted afresh on those weights' logits it is the same, for a run kept by validation and for one
    # stopped by its target check.
    x_val, y_val = images[split_validation(640, 64, config.seed)[1]], labels[split_validation(640, 64, config.seed)[1]]
    stopped = train(TrainConfig(**{**config.to_dict(), "target_accuracy": 0.01, "eval_every": 5}),
                    TrainingData(images=images, labels=labels, check_images=images[:100], check_labels=labels[:100]))
    assert stopped.status == "target_reached" and stopped.steps == 5
    for run in (result, stopped):
        fresh = calibration_record(view_logits(inference_copy(run.model), x_val.float().div(255).unsqueeze(1)),
                                   y_val, tta="none")
        assert fresh["temperature"] == pytest.approx(run.calibration["temperature"], rel=1e-4)
    no_val = train(TrainConfig(**{**config.to_dict(), "val_size": 0}), TrainingData(images=images, labels=labels))
    assert no_val.calibration is None
    with_views = train(TrainConfig(**{**config.to_dict(), "tta": "scale"}), TrainingData(images=images, labels=labels))
    assert with_views.calibration["tta"] == "scale"
    with pytest.raises(ValueError, match="tta"):
        TrainConfig(**{**config.to_dict(), "tta": "everything"}).validate()


@pytest.mark.slow
def test_train_to_checkpoint_stores_calibration_and_test_ece(mnist_root, tmp_path):
    from engine.job import train_to_checkpoint
    from engine.trainer import recipe

    trained = train_to_checkpoint(recipe("logreg", epochs=1, val_size=1000), mnist_root=mnist_root,
                                  out=tmp_path / "logreg.pt", mnist_limit=6000)
    checkpoint = load_checkpoint(tmp_path / "logreg.pt")
    assert checkpoint["calibration"]["n"] == 1000
    assert checkpoint_temperature(checkpoint) == pytest.approx(trained.result.calibration["temperature"])
    metrics = checkpoint["metrics"]
    assert 0 <= metrics["test_ece_calibrated"] <= 1 and 0 <= metrics["test_ece"] <= 1
