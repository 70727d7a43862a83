"""A run that asks for a target accuracy gets the fast recipe; the shipped recipe is unchanged otherwise."""
from dataclasses import replace

from engine.augment import AugmentConfig
from engine.trainer import FAST_RECIPES, RECIPES, TrainConfig, recipe


def test_target_accuracy_picks_the_fast_recipe():
    config = recipe("cnn", target_accuracy=0.99, seed=3)
    fast = FAST_RECIPES["cnn"]
    assert (config.epochs, config.batch_size, config.lr, config.warmup) == (
        fast["epochs"], fast["batch_size"], fast["lr"], fast["warmup"])
    assert config.epochs < RECIPES["cnn"]["epochs"]
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
