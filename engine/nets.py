"""The network architectures, each built by name from a small config dataclass.

Every network takes a float tensor ``[N, 1, 28, 28]`` in ``[0, 1]`` (ink = 1, the MNIST convention
produced by ``engine.preprocessing``) and returns logits ``[N, 10]``. Input normalization is part
of the network, so callers never need to know the dataset statistics.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import torch
from torch import nn

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
NUM_CLASSES = 10


class UnknownArchitectureError(ValueError):
    """No architecture is registered under this name."""


class Normalize(nn.Module):
    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class LogRegConfig:
    """Multinomial logistic regression on the 784 pixels."""


MAX_WIDTH = 4096  # units or channels in one layer
MAX_HIDDEN_LAYERS = 8


def _check_widths(name: str, widths: Any, *, count: int | None = None, limit: int = MAX_WIDTH) -> None:
    if not isinstance(widths, tuple) or any(isinstance(w, bool) or not isinstance(w, int) for w in widths):
        raise ValueError(f"{name} must be a list of whole numbers")
    if count is not None and len(widths) != count:
        raise ValueError(f"{name} must have exactly {count} entries")
    if any(not 1 <= w <= limit for w in widths):
        raise ValueError(f"every entry of {name} must be between 1 and {limit}")


def _check_dropout(dropout: Any) -> None:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError("dropout must be a number in [0, 1)")


@dataclass(frozen=True)
class MLPConfig:
    """Hidden layers of ``hidden[i]`` units (1 to 4,096 each, at most 8 layers), ReLU and dropout."""

    hidden: tuple[int, ...] = (512, 256)
    dropout: float = 0.2

    def __post_init__(self) -> None:
        _check_widths("hidden", self.hidden)
        if len(self.hidden) > MAX_HIDDEN_LAYERS:
            raise ValueError(f"hidden may have at most {MAX_HIDDEN_LAYERS} layers")
        _check_dropout(self.dropout)


@dataclass(frozen=True)
class LeNet5Config:
    """LeCun et al. 1998: C1 6@5x5, S2, C3 16@5x5, S4, C5 120, F6 84, output 10.

    The 28x28 input is padded to 32x32 as in the paper; subsampling is average pooling and the
    squashing function tanh. (The paper's partial C3 connection table and RBF output are replaced by
    full connections and a linear layer, as usual today.)
    """

    activation: str = "tanh"


@dataclass(frozen=True)
class CNNConfig:
    """The flagship: conv-BN-ReLU blocks, most of the width at low resolution where it is cheap.

    28x28 conv(w1) -> pool -> 14x14 conv(w2) -> pool -> 7x7 conv(w3) x2 -> pool -> 3x3 -> linear.
    """

    widths: tuple[int, int, int] = (16, 32, 96)  # each 1 to 4,096 channels (and 20 M parameters in all)
    dropout: float = 0.2

    def __post_init__(self) -> None:
        _check_widths("widths", self.widths, count=3)
        _check_dropout(self.dropout)


# --------------------------------------------------------------------------- networks


class LogReg(nn.Module):
    def __init__(self, config: LogRegConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = Normalize()
        self.fc = nn.Linear(28 * 28, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x).flatten(1))


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [Normalize(), nn.Flatten()]
        width = 28 * 28
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, NUM_CLASSES))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


class LeNet5(nn.Module):
    def __init__(self, config: LeNet5Config) -> None:
        super().__init__()
        if config.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}")
        self.config = config
        act = _ACTIVATIONS[config.activation]
        self.features = nn.Sequential(
            Normalize(),
            nn.Conv2d(1, 6, 5, padding=2), act(),  # C1: 32x32 (padded) -> 28x28
            nn.AvgPool2d(2),  # S2: 14x14
            nn.Conv2d(6, 16, 5), act(),  # C3: 10x10
            nn.AvgPool2d(2),  # S4: 5x5
            nn.Conv2d(16, 120, 5), act(),  # C5: 1x1
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(120, 84), act(), nn.Linear(84, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CNN(nn.Module):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2, w3 = config.widths
        self.features = nn.Sequential(
            Normalize(),
            *_conv_bn(1, w1), nn.MaxPool2d(2),  # 14x14
            *_conv_bn(w1, w2), nn.MaxPool2d(2),  # 7x7
            *_conv_bn(w2, w3), *_conv_bn(w3, w3), nn.MaxPool2d(2),  # 3x3
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(w3 * 9, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    config_class: type
    model_class: type[nn.Module]


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("logreg", "Logistic regression (linear)", LogRegConfig, LogReg),
        Architecture("mlp", "Multi-layer perceptron", MLPConfig, MLP),
        Architecture("lenet5", "LeNet-5 (LeCun et al. 1998)", LeNet5Config, LeNet5),
        Architecture("cnn", "Convolutional network with batch norm (flagship)", CNNConfig, CNN),
    )
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None


def make_config(arch: str, values: dict[str, Any] | None = None) -> Any:
    """Build an architecture's config from plain values (as stored in a checkpoint)."""
    config_class = get_architecture(arch).config_class
    values = dict(values or {})
    known = {f.name for f in fields(config_class)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config field(s) for {arch}: {', '.join(sorted(unknown))}")
    for f in fields(config_class):  # lists come back from JSON / checkpoints; configs hold tuples
        if isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    return config_class(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain values only (lists, numbers, strings), safe for ``weights_only`` checkpoints and JSON."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def build_model(arch: str, config: dict[str, Any] | Any | None = None) -> nn.Module:
    spec = get_architecture(arch)
    if config is None or isinstance(config, dict):
        config = make_config(arch, config)
    return spec.model_class(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The most parameters a network may have: 80 MB of float32 weights. Runs are refused beyond it
# (``training.services``), and so are checkpoints (``engine.checkpoint``), before anything is allocated.
MAX_PARAMETERS = 20_000_000


def parameter_count(arch: str, config: dict[str, Any] | Any | None = None) -> int:
    """The parameters of ``build_model(arch, config)``, counted on the meta device (nothing is allocated).

    Raises ``ValueError`` (``UnknownArchitectureError``) for an unknown architecture or a config out of bounds."""
    with torch.device("meta"):
        return count_parameters(build_model(arch, config))


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy for fast CPU inference: batch norm folded into the preceding conv,
    weights in channels-last layout.

    Numerically the same function as ``model.eval()`` up to float rounding.
    """
    model = copy.deepcopy(model).eval()
    _fold_batchnorm(model)
    return model.to(memory_format=torch.channels_last)  # oneDNN's fast layout for convolutions


def _fold_batchnorm(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Sequential):
            items = list(child)
            out: list[nn.Module] = []
            i = 0
            while i < len(items):
                layer = items[i]
                nxt = items[i + 1] if i + 1 < len(items) else None
                if isinstance(layer, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
                    out.append(torch.nn.utils.fusion.fuse_conv_bn_eval(layer, nxt))
                    i += 2
                    continue
                out.append(layer)
                i += 1
            setattr(module, name, nn.Sequential(*out))
        else:
            _fold_batchnorm(child)
