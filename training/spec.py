"""What a training run may be asked for: one dataclass, its fields, defaults and bounds.

``RunSpec`` is the single definition. The API's request serializer, the admin's start form, the
dashboard's start form and the ``train`` command's arguments are all built from ``run_options()``,
so an option or a bound is added or changed here, once. A field left at ``None`` takes the
architecture's recipe (``engine.trainer.recipe``), or when fine-tuning from a base version the
fine-tune recipe (``engine.trainer.finetune_recipe``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from engine.nets import ARCHITECTURES
from engine.trainer import FINETUNE, FINETUNE_LR_FACTOR, FINETUNE_MNIST_LIMIT

# The fine-tune recipe's defaults, as the help texts show them (``engine.trainer.FINETUNE``).
_FT = {"epochs": FINETUNE.get("epochs"), "extra_repeat": FINETUNE.get("extra_repeat", 1)}
_FINETUNE_LIMIT = f"when fine-tuning the first {FINETUNE_MNIST_LIMIT:,}" if FINETUNE_MNIST_LIMIT else "also when fine-tuning"


def _option(default: Any, *, kind: str, label: str, help: str, minimum: float | None = None,
            maximum: float | None = None, choices: tuple[str, ...] = (), max_length: int | None = None,
            dashboard: str = "", cli: bool = False) -> Any:
    """A ``RunSpec`` field. ``dashboard`` is "main" or "more" (under "More options") to show it on the
    dashboard's start form; ``cli`` makes it an argument of ``manage.py train``."""
    meta = {"kind": kind, "label": label, "help": help, "minimum": minimum, "maximum": maximum,
            "choices": choices, "max_length": max_length, "dashboard": dashboard, "cli": cli}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunSpec:
    arch: str | None = _option(
        None, kind="choice", choices=tuple(sorted(ARCHITECTURES)), label="Architecture", dashboard="main", cli=True,
        help="Architecture; required unless fine-tuning from base_version.")
    arch_config: dict | None = _option(
        None, kind="object", label="Network config", cli=True,
        help='Network config, e.g. {"widths": [8, 16, 32]} for cnn (default: the architecture\'s).')
    epochs: int | None = _option(None, kind="int", minimum=1, maximum=200, label="Epochs", dashboard="main", cli=True,
                                 help=f"Passes over the training data (default: the recipe's; fine-tuning: {_FT['epochs']}).")
    batch_size: int | None = _option(None, kind="int", minimum=2, maximum=8192, label="Batch size", dashboard="more",
                                     cli=True, help="Images per optimizer step.")
    lr: float | None = _option(None, kind="float", minimum=1e-7, maximum=10, label="Learning rate", dashboard="main",
                               cli=True, help="Peak learning rate (one-cycle schedule; default: the recipe's, when fine-tuning "
                                    f"{FINETUNE_LR_FACTOR:g} times the recipe's).")
    seed: int = _option(0, kind="int", minimum=0, maximum=2**31 - 1, label="Seed", dashboard="more", cli=True,
                        help="Seed of every random choice; the same seed and config give the same run.")
    augment: bool | None = _option(None, kind="bool", label="Augment",
                                   help="Random rotation, scale, shear, shift and stroke width (default: the recipe's).")
    val_size: int | None = _option(None, kind="int", minimum=0, maximum=30000, label="Validation images", cli=True,
                                   help="Images carved from the training set to pick the epoch that is kept.")
    device: str = _option("auto", kind="choice", choices=("auto", "cpu", "cuda"), label="Device", cli=True,
                          help="auto: CUDA when available; cuda runs go to the GPU workers' queue.")
    base_version: int | None = _option(None, kind="version", label="Base version",
                                       help="Fine-tune from this model version; null or absent: from scratch. Options "
                                            "left out then take the fine-tune recipe (engine.trainer.FINETUNE; its augmentation draws "
                                            "ones' flags flatter: FINETUNE_AUGMENT).")
    use_drawings: bool = _option(True, kind="bool", label="Use labelled drawings", dashboard="main",
                                 help="Mix in the drawings users corrected (the field set is always held out).")
    extra_repeat: int | None = _option(None, kind="int", minimum=0, maximum=100, label="Repeat drawings",
                                       help="How many times each labelled drawing is repeated per epoch "
                                            f"(default: 1 from scratch, {_FT['extra_repeat']} when fine-tuning).")
    mnist_limit: int | None = _option(None, kind="int", minimum=1, maximum=60000,
                                      label="MNIST training images (quick runs)", dashboard="more", cli=True,
                                      help="Train on the first N MNIST training images only (quick runs; default: all of "
                                           f"them, {_FINETUNE_LIMIT}).")
    promote: bool = _option(False, kind="bool", label="Promote if better", dashboard="main",
                            help="Promote the result if it passes the gate.")
    name: str = _option("", kind="text", max_length=100, label="Version name",
                        help="Version name (default: the architecture); its number increments.")


@dataclass(frozen=True)
class RunOption:
    """One ``RunSpec`` field as the form builders see it."""

    name: str
    default: Any
    kind: str
    label: str
    help: str
    minimum: float | None
    maximum: float | None
    choices: tuple[str, ...]
    max_length: int | None
    dashboard: str
    cli: bool

    @property
    def step(self) -> str:
        return "1" if self.kind == "int" else "any"

    def check(self, value: Any) -> Any:
        """``value`` if it fits this option, else ``ValueError`` naming the option and its bounds."""
        if value is None:
            return None
        kinds = {"int": int, "float": (int, float), "bool": bool, "choice": str, "text": str, "object": dict,
                 "version": int}
        if self.kind != "bool" and isinstance(value, bool) or not isinstance(value, kinds[self.kind]):
            raise ValueError(f"{self.name} must be {_kind_words[self.kind]}")
        if self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.name} must be between {self.minimum:g} and {self.maximum:g}")
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"{self.name} must be at most {self.max_length} characters")
        return value


_kind_words = {"int": "an integer", "float": "a number", "bool": "true or false", "choice": "a string",
               "text": "a string", "object": "an object", "version": "a model version id"}


def run_options() -> tuple[RunOption, ...]:
    return tuple(
        RunOption(name=f.name, default=f.default, **f.metadata) for f in dataclasses.fields(RunSpec)
    )


def run_option(name: str) -> RunOption:
    return next(option for option in run_options() if option.name == name)


def spec_values(data: dict[str, Any]) -> dict[str, Any]:
    """A request's options checked against their kinds and bounds, with the defaults of the rest.

    Raises ``ValueError`` for an unknown option or a value out of bounds.
    """
    options = {option.name: option for option in run_options()}
    unknown = sorted(set(data) - set(options))
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    values = {}
    for name, option in options.items():
        given = data.get(name)
        values[name] = option.default if given is None and name != "base_version" else option.check(given)
    return values
