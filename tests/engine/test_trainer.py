from dataclasses import replace

import pytest
import torch

from engine.augment import AugmentConfig, augment_batch, stroke_thickness
from engine.evaluate import evaluate
from engine.trainer import TrainConfig, TrainingData, WeightAverage, recipe, split_validation, train

TINY = {"widths": [4, 8, 16]}


def synthetic_digits(n: int, seed: int = 0) -> TrainingData:
    """Ten easy classes: a bright bar at a class-specific row (learnable in a few batches)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    for i, y in enumerate(labels.tolist()):
        row = 4 + 2 * y
        images[i, row : row + 2, 6:22] = 255
    return TrainingData(images=images, labels=labels)


def tiny_config(**overrides) -> TrainConfig:
    values = dict(arch="cnn", arch_config=TINY, epochs=2, batch_size=32, lr=0.05, val_size=64,
                  augment=False, precision="fp32", device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def test_training_smoke_reports_progress_and_learns():
    events = []
    result = train(tiny_config(), synthetic_digits(640), callback=events.append)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    batches = [e for e in events if e["type"] == "batch"]
    assert len(batches) == result.steps == 2 * ((640 - 64) // 32)
    first = batches[0]
    for key in ("loss", "lr", "samples_per_s", "eta_s", "progress", "epoch", "step", "total_steps"):
        assert key in first
    assert batches[-1]["progress"] == pytest.approx(1.0)
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"} <= set(epochs[0])
    assert result.status == "completed"
    assert result.val_metrics["accuracy"] > 0.9  # the bars are trivially separable
    assert batches[-1]["loss"] < batches[0]["loss"]


def test_same_seed_same_model():
    a = train(tiny_config(epochs=1), synthetic_digits(320))
    b = train(tiny_config(epochs=1), synthetic_digits(320))
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_cancel_stops_within_one_batch():
    steps = []
    result = train(
        tiny_config(epochs=5),
        synthetic_digits(640),
        callback=lambda e: steps.append(e["step"]) if e["type"] == "batch" else None,
        should_cancel=lambda: len(steps) >= 3,
    )
    assert result.status == "cancelled"
    assert result.steps == 3
    assert steps == [1, 2, 3]


def test_user_drawings_are_mixed_in_and_oversampled():
    data = synthetic_digits(320)
    extra = torch.zeros(8, 1, 28, 28)
    extra[:, :, 10:18, 12:16] = 1.0
    data.extra_images, data.extra_labels = extra, torch.full((8,), 3)
    events = []
    train(tiny_config(epochs=1, extra_repeat=4), data, callback=events.append)
    start = events[0]
    assert start["train_size"] == (320 - 64) + 8 * 4


def test_target_accuracy_stops_early():
    data = synthetic_digits(640)
    check = synthetic_digits(200, seed=1)
    data.check_images, data.check_labels = check.images, check.labels
    result = train(tiny_config(epochs=10, target_accuracy=0.95, eval_every=4), data)
    assert result.status == "target_reached"
    assert result.checks[-1]["accuracy"] >= 0.95
    assert result.steps < 10 * ((640 - 64) // 32)


def test_target_checks_wait_for_first_check():
    data = synthetic_digits(640)
    check = synthetic_digits(200, seed=1)
    data.check_images, data.check_labels = check.images, check.labels
    total = 10 * ((640 - 64) // 32)
    result = train(tiny_config(epochs=10, target_accuracy=1.0, eval_every=4, first_check=0.5), data)
    steps = [c["step"] for c in result.checks]
    assert steps and min(steps) == next(s for s in range(4, total + 1, 4) if s >= total // 2)
    assert all(s % 4 == 0 for s in steps)


def test_the_weight_average_is_what_a_run_checks_and_keeps():
    data = synthetic_digits(640)
    check = synthetic_digits(200, seed=1)
    data.check_images, data.check_labels = check.images, check.labels
    config = tiny_config(epochs=1)
    plain, averaged = train(config, data), train(replace(config, ema=0.9), data)
    # The same steps on the same data (the average never feeds back): only the weights kept differ.
    assert plain.steps == averaged.steps
    assert any(not torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(),
                                                     averaged.model.state_dict().values()) if a.is_floating_point())
    assert averaged.val_metrics["accuracy"] > 0.9
    # A run stopped by a check keeps the weights that check scored: the average.
    stopped = train(replace(config, ema=0.9, target_accuracy=0.01, eval_every=5), data)
    assert stopped.status == "target_reached" and stopped.steps == 5
    assert evaluate(stopped.model, check.images, check.labels)["accuracy"] == stopped.checks[-1]["accuracy"]


def test_weight_average_update():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.99)
    start = [t.clone() for t in average.model.state_dict().values()]
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    model.train()(torch.randn(4, 3))  # moves the batch-norm statistics and their counter
    average.update(step=1)
    share = 1 - 2 / 11  # the decay at step 1 is (1 + 1) / (10 + 1), below the 0.99 cap
    for (name, mine), old, theirs in zip(average.model.state_dict().items(), start, model.state_dict().values()):
        if mine.is_floating_point():
            torch.testing.assert_close(mine, old + share * (theirs - old), msg=name)
        else:
            assert torch.equal(mine, theirs), name  # counters are copied
    assert not any(p.requires_grad for p in average.model.parameters())


def test_validation_split_is_disjoint_and_seeded():
    tr, val = split_validation(100, 10, seed=3)
    assert len(val) == 10 and len(tr) == 90
    assert set(tr.tolist()).isdisjoint(val.tolist())
    assert torch.equal(val, split_validation(100, 10, seed=3)[1])


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="epochs"):
        tiny_config(epochs=0).validate()
    with pytest.raises(ValueError, match="unknown architecture"):
        recipe("vgg").validate()
    with pytest.raises(ValueError):
        tiny_config(optimizer="rmsprop").validate()


def test_augmentation_keeps_shape_range_and_varies_thickness():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 6:22, 13:15] = 1.0
    out = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    thick = stroke_thickness(x, torch.ones(8))
    thin = stroke_thickness(x, -torch.ones(8))
    assert thick.sum() > x.sum() > thin.sum()
    # no augmentation at all when the ranges are zero
    still = augment_batch(x, AugmentConfig(rotate_deg=0, scale=(1, 1), aspect=0, shear_deg=0, shift_px=0,
                                           thickness=0), torch.Generator().manual_seed(0))
    assert torch.allclose(still, x, atol=1e-5)


def test_training_with_writing_habits_adds_them_to_mnist_rows_only():
    from engine.trainer import HABITS

    data = synthetic_digits(320)
    extra = torch.zeros(8, 1, 28, 28)
    extra[:, :, 10:18, 12:16] = 1.0
    data.extra_images, data.extra_labels = extra, torch.full((8,), 1)
    events = []
    config = tiny_config(epochs=1, augment=True, augment_config=dict(HABITS, habits_extra=True))
    result = train(config, data, callback=events.append)
    assert result.status == "completed" and result.calibration is not None
    assert recipe("cnn").augment_config["flagged_one"] == HABITS["flagged_one"] > 0
