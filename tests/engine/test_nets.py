import pytest
import torch

from engine.nets import (
    ARCHITECTURES,
    UnknownArchitectureError,
    build_model,
    config_to_dict,
    count_parameters,
    inference_copy,
    make_config,
)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_maps_images_to_ten_logits(arch):
    model = build_model(arch).eval()
    x = torch.rand(5, 1, 28, 28)
    out = model(x)
    assert out.shape == (5, 10)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_required_architectures_are_registered():
    assert {"logreg", "mlp", "lenet5", "cnn"} <= set(ARCHITECTURES)


def test_flagship_stays_within_parameter_budget():
    assert count_parameters(build_model("cnn")) <= 500_000


def test_logreg_is_linear():
    model = build_model("logreg")
    assert count_parameters(model) == 784 * 10 + 10


def test_lenet5_has_the_1998_layer_shapes():
    model = build_model("lenet5")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 6, (5, 5)), (6, 16, (5, 5)), (16, 120, (5, 5))
    ]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(120, 84), (84, 10)]


def test_config_round_trips_through_plain_values():
    config = make_config("cnn", {"widths": [8, 16, 32], "dropout": 0.1})
    assert config.widths == (8, 16, 32)
    assert make_config("cnn", config_to_dict(config)) == config
    model = build_model("cnn", {"widths": [8, 16, 32]})
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_architecture_and_config_field_are_refused():
    with pytest.raises(UnknownArchitectureError, match="unknown architecture 'resnet'"):
        build_model("resnet")
    with pytest.raises(ValueError, match="unknown config field"):
        make_config("cnn", {"depth": 3})


def test_inference_copy_folds_batchnorm_without_changing_outputs():
    torch.manual_seed(0)
    model = build_model("cnn")
    # give batch norm non-trivial running statistics
    model.train()
    for _ in range(3):
        model(torch.rand(64, 1, 28, 28))
    model.eval()
    fast = inference_copy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), fast(x), atol=1e-4)
    # the original is untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
