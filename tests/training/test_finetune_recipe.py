"""Fine-tuning runs (``base_version``) take the fine-tune recipe for the options left out.

Only the stored config is checked (nothing is trained): the API, the admin's start form and the
``run_config_build`` service all resolve the same defaults.
"""
from __future__ import annotations

import pytest

from classifier.models import ModelVersion
from engine.augment import AugmentConfig
from engine.trainer import FINETUNE, FINETUNE_AUGMENT, FINETUNE_LR_FACTOR, FINETUNE_MNIST_LIMIT, RECIPES, TrainConfig, recipe
from training.forms import StartRunForm
from training.models import TrainingRun
from training.services import run_config_build

pytestmark = pytest.mark.django_db

RETRAIN = "/api/retrain/"


@pytest.fixture
def cnn_version():
    return ModelVersion.objects.get(name="cnn", status="active")


def _finetune_values(arch: str) -> dict:
    lr = RECIPES[arch].get("lr", TrainConfig.lr) * FINETUNE_LR_FACTOR
    return {**FINETUNE, "lr": lr}


def test_the_finetune_recipe_differs_from_the_architectures():
    # Otherwise the tests below would pass whether or not the fine-tune recipe is used.
    scratch = recipe("cnn")
    finetune = _finetune_values("cnn")
    assert finetune["epochs"] != scratch.epochs
    assert finetune["lr"] != scratch.lr
    assert finetune["extra_repeat"] != scratch.extra_repeat


def test_a_base_version_run_left_with_defaults_gets_the_finetune_recipe(cnn_version):
    config, base = run_config_build({"base_version": cnn_version.pk})
    assert base == cnn_version and config["arch"] == "cnn"
    expected = _finetune_values("cnn")
    assert config["epochs"] == expected["epochs"] == config["train"]["epochs"]
    assert config["lr"] == pytest.approx(expected["lr"]) and config["train"]["lr"] == pytest.approx(expected["lr"])
    # the repeat the run records is the one it trains with
    assert config["extra_repeat"] == expected["extra_repeat"] == config["train"]["extra_repeat"]
    assert config["mnist_limit"] == FINETUNE_MNIST_LIMIT
    assert config["val_size"] == FINETUNE.get("val_size", TrainConfig.val_size)
    # what the fine-tune recipe does not set stays the architecture's (augmentation, habits, views)
    scratch = recipe("cnn")
    assert config["train"]["augment"] == scratch.augment
    assert config["train"]["tta"] == scratch.tta
    assert config["train"]["augment_config"]["flagged_one"] == scratch.augment_config["flagged_one"]
    assert config["batch_size"] == scratch.batch_size
    # ... except the ones' flags, drawn flatter and reaching further when fine-tuning
    assert tuple(config["train"]["augment_config"]["flag_angle"]) == FINETUNE_AUGMENT["flag_angle"]
    assert config["train"]["augment_config"]["flag_reach"] == FINETUNE_AUGMENT["flag_reach"]
    assert AugmentConfig(**scratch.augment_config).flag_angle != FINETUNE_AUGMENT["flag_angle"]


def test_other_architectures_get_the_same_share_of_their_own_learning_rate():
    version = ModelVersion.objects.get(name="lenet5")
    config, _ = run_config_build({"base_version": version.pk})
    assert config["lr"] == pytest.approx(RECIPES["lenet5"]["lr"] * FINETUNE_LR_FACTOR)
    assert config["epochs"] == FINETUNE["epochs"]


def test_explicit_options_win_over_the_finetune_recipe(cnn_version):
    config, _ = run_config_build({"base_version": cnn_version.pk, "epochs": 1, "lr": 0.05, "extra_repeat": 2,
                                  "mnist_limit": 12000, "augment": False})
    assert config["epochs"] == 1 and config["train"]["epochs"] == 1
    assert config["lr"] == 0.05 and config["train"]["lr"] == 0.05
    assert config["extra_repeat"] == 2 and config["train"]["extra_repeat"] == 2
    assert config["mnist_limit"] == 12000
    assert config["augment"] is False and config["train"]["augment"] is False


def test_zero_repeat_is_an_explicit_choice_not_a_default(cnn_version):
    config, _ = run_config_build({"base_version": cnn_version.pk, "extra_repeat": 0})
    assert config["extra_repeat"] == 0 and config["train"]["extra_repeat"] == 0


def test_from_scratch_runs_keep_the_architecture_recipe():
    config, base = run_config_build({"arch": "cnn"})
    scratch = recipe("cnn")
    assert base is None
    assert config["epochs"] == scratch.epochs and config["lr"] == scratch.lr
    assert config["extra_repeat"] == 1 == config["train"]["extra_repeat"]
    assert config["mnist_limit"] is None
    config, _ = run_config_build({"arch": "lenet5", "extra_repeat": 5})
    assert config["lr"] == RECIPES["lenet5"]["lr"] and config["extra_repeat"] == 5 == config["train"]["extra_repeat"]


def test_the_api_stores_the_finetune_recipe(staff_client, cnn_version, monkeypatch):
    monkeypatch.setattr("training.services.dispatch", lambda run: None)  # left queued: nothing trains here
    response = staff_client.post(RETRAIN, {"base_version": cnn_version.pk}, format="json")
    assert response.status_code == 202, response.json()
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert run.config["epochs"] == FINETUNE["epochs"] and run.total_epochs == FINETUNE["epochs"]
    assert run.config["train"]["extra_repeat"] == FINETUNE["extra_repeat"]

    response = staff_client.post(RETRAIN, {"base_version": cnn_version.pk, "epochs": 2, "extra_repeat": 4},
                                 format="json")
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert run.config["epochs"] == 2 and run.config["train"]["extra_repeat"] == 4


def test_the_admin_form_leaves_the_repeat_to_the_recipe(cnn_version):
    form = StartRunForm(data={"base_version": cnn_version.pk, "device": "auto", "seed": "0"})
    assert form.is_valid(), form.errors
    spec = form.spec()
    assert "extra_repeat" not in spec and "epochs" not in spec
    config, _ = run_config_build(spec)
    assert config["extra_repeat"] == FINETUNE["extra_repeat"] and config["epochs"] == FINETUNE["epochs"]
