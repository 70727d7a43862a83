"""A run that asks for a target accuracy gets the fast recipe; the shipped recipe is unchanged otherwise."""
from dataclasses import replace

import pytest

from engine.augment import AugmentConfig
from engine.job import train_to_checkpoint
from engine.trainer import FAST_RECIPES, RECIPES, TrainConfig, recipe


def test_target_accuracy_picks_the_fast_recipe():
    config = recipe("cnn", target_accuracy=0.99, seed=3)
    fast = FAST_RECIPES["cnn"]
    assert (config.epochs, config.batch_size, config.lr, config.warmup) == (
        fast["epochs"], fast["batch_size"], fast["lr"], fast["warmup"])
    assert config.epochs < RECIPES["cnn"]["epochs"]
    assert config.ema > 0 and config.first_check == config.warmup  # the average is checked, from the end of warm-up
    augment = AugmentConfig(**config.augment_config)
    assert not augment.has_habits and augment.thickness == 0  # habit synthesis and stroke thickness off
    assert augment.rotate_deg == AugmentConfig.rotate_deg  # the affine warp stays
    assert config.augment and config.target_accuracy == 0.99 and config.seed == 3
    assert config.tta == "none"  # one view, as the target is checked
    config.validate()


def test_without_a_target_the_shipped_recipe_is_unchanged():
    config = recipe("cnn", seed=3)
    assert config.epochs == RECIPES["cnn"]["epochs"] == 20
    assert (config.batch_size, config.lr, config.warmup) == (TrainConfig.batch_size, TrainConfig.lr, TrainConfig.warmup)
    assert config.augment_config == RECIPES["cnn"]["augment_config"]
    assert AugmentConfig(**config.augment_config).has_habits
    assert (config.ema, config.first_check) == (0.0, 0.0)


def test_a_chosen_schedule_keeps_the_shipped_recipe():
    for choice in (dict(epochs=5), dict(lr=0.05), dict(batch_size=64)):
        config = recipe("cnn", target_accuracy=0.99, **choice)
        assert config.augment_config == RECIPES["cnn"]["augment_config"], choice
        for key, value in choice.items():
            assert getattr(config, key) == value
    assert recipe("cnn", target_accuracy=0.99, epochs=5).lr == TrainConfig.lr


def test_architectures_without_a_fast_recipe_keep_theirs():
    for arch in set(RECIPES) - set(FAST_RECIPES):
        assert recipe(arch, target_accuracy=0.9) == replace(recipe(arch), target_accuracy=0.9)


@pytest.mark.slow
def test_a_run_stopped_by_its_check_reports_the_checked_accuracy(mnist_root):
    # The check set is the test set: the reported test figures come from the check that stopped the run.
    # A gentle schedule on a tiny network (one view, as the fast recipe is served), so the target is reached.
    config = recipe("cnn", arch_config={"widths": [4, 8, 16]}, target_accuracy=0.5, eval_every=5, lr=0.05,
                    augment=False, tta="none", val_size=500, precision="fp32")
    trained = train_to_checkpoint(config, mnist_root=mnist_root, out=None, mnist_limit=3000)
    result = trained.result
    assert result.status == "target_reached" and result.checks
    assert trained.checkpoint["metrics"]["test_accuracy"] == result.checks[-1]["accuracy"] >= 0.5
    assert trained.checkpoint["metrics"]["test_n"] == 10_000
