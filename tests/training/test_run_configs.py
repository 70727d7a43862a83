"""Network configs are checked by their bounds before anything is built."""
from __future__ import annotations

import pytest

from engine.nets import CNNConfig, MLPConfig, make_config
from tests.support.registry import assert_error
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("arch, config, fragment", [
    ("mlp", {"hidden": [0]}, "between 1 and"),
    ("mlp", {"hidden": [1] * 3000}, "at most 8 layers"),
    ("mlp", {"hidden": [64, -3]}, "between 1 and"),
    ("mlp", {"hidden": [True]}, "whole numbers"),
    ("mlp", {"dropout": 1.5}, "dropout"),
    ("cnn", {"widths": [0, 0, 0]}, "between 1 and 4096"),
    ("cnn", {"widths": [8, 16]}, "exactly 3"),
    ("cnn", {"widths": "wide"}, "whole numbers"),
])
def test_degenerate_network_configs_are_refused(staff_client, arch, config, fragment):
    response = staff_client.post("/api/retrain/", {"arch": arch, "arch_config": config, "epochs": 1}, format="json")
    error = assert_error(response, 400, "invalid_config")
    assert fragment in error["message"]
    assert not TrainingRun.objects.exists()


def test_config_bounds_live_with_the_configs():
    assert make_config("mlp", {"hidden": [32, 16]}) == MLPConfig(hidden=(32, 16))
    assert CNNConfig().widths == (16, 32, 96)
    with pytest.raises(ValueError, match="between 1 and 4096"):
        CNNConfig(widths=(16, 32, 4097))
