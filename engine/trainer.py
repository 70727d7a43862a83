"""The trainer: whole dataset as tensors on the device, batch augmentation, OneCycle schedule.

``train()`` knows nothing of Django, Celery or WebSockets. Callers plug in through two hooks:
``callback(event: dict)`` receives progress events (plain JSON-able dicts), and ``should_cancel()``
is checked between batches.
"""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentConfig, augment_labelled_batch
from .calibration import calibration_record
from .evaluate import as_float_images, evaluate_with_logits
from .nets import build_model, config_to_dict, count_parameters, inference_copy, make_config
from .optim import OneCycle, make_optimizer
from .serving import TTA_VIEWS, view_logits

ProgressCallback = Callable[[dict[str, Any]], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "cnn"
    arch_config: dict[str, Any] = field(default_factory=dict)
    epochs: int = 16
    batch_size: int = 128
    lr: float = 0.1  # peak learning rate of the one-cycle schedule
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    momentum: float = 0.9  # unused: the one-cycle schedule sets each step's (engine.optim); kept for stored configs
    weight_decay: float = 5e-4
    warmup: float = 0.15  # share of the steps spent ramping the learning rate up
    label_smoothing: float = 0.1
    augment: bool = True
    augment_config: dict[str, Any] = field(default_factory=dict)
    val_size: int = 5000  # carved from the training set, for early stopping and model selection
    patience: int = 0  # stop after this many epochs without validation improvement; 0 = never
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    precision: str = "auto"  # "auto" = bfloat16 autocast where the hardware does it fast, else "fp32"
    extra_repeat: int = 1  # how many times each labelled user drawing is repeated per epoch
    eval_every: int = 0  # steps between checks of target accuracy; 0 = four times per epoch
    first_check: float = 0.0  # share of the run's steps trained before target checks start
    target_accuracy: float | None = None  # stop as soon as the check set reaches this accuracy
    tta: str = "none"  # test-time views the model is served with (engine.serving); T is fitted for them
    ema: float = 0.0  # decay of an exponential moving average of the weights, which is checked and kept; 0 = off

    def validate(self) -> None:
        make_config(self.arch, self.arch_config)
        AugmentConfig(**self.augment_config)
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 2, "batch size must be at least 2"),
            (self.lr > 0, "learning rate must be positive"),
            (self.optimizer in {"sgd", "adamw"}, "optimizer must be 'sgd' or 'adamw'"),
            (0 <= self.warmup < 1, "warmup must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (self.val_size >= 0, "validation size cannot be negative"),
            (self.extra_repeat >= 0, "extra_repeat cannot be negative"),
            (self.precision in {"auto", "fp32", "bf16"}, "precision must be auto, fp32 or bf16"),
            (self.target_accuracy is None or 0 < self.target_accuracy <= 1, "target accuracy must be in (0, 1]"),
            (0 <= self.ema < 1, "ema must be in [0, 1)"),
            (0 <= self.first_check < 1, "first_check must be in [0, 1)"),
            (self.tta in TTA_VIEWS, f"tta must be one of {', '.join(TTA_VIEWS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Writing habits MNIST hardly has, synthesised from its glyphs (``engine.augment.habit_variants``):
# the share of each class's images drawn with the habit, each variant an extra sample beside its
# plain original (variants replacing their originals gave the cnn 99.56-99.58% on MNIST test in four
# runs, as extra samples 99.65%). Open fours stay off: only ~4.5% of MNIST's fours are closed (the
# rest are open already), and real fours are read right without it.
HABITS: dict[str, Any] = dict(slashed_zero=0.4, dotted_zero=0.05, flagged_one=0.5, serif_one=0.3,
                              crossed_seven=0.3, open_four=0.0, habits_extra=True)

# The recipe each shipped model was trained with; `train --arch X` starts from these. The cnn is
# served with the "scale" test-time views (engine.serving): +0.2% on real drawings, and the choice
# of every leave-one-writer-group-out split, never worse on the group left out; ~0.5 ms per drawing.
RECIPES: dict[str, dict[str, Any]] = {
    "logreg": dict(epochs=10, batch_size=256, lr=0.01, optimizer="adamw", weight_decay=1e-4,
                   label_smoothing=0.0, augment=False),
    "mlp": dict(epochs=20, batch_size=128, lr=0.002, optimizer="adamw", weight_decay=1e-4,
                augment=True, augment_config=dict(thickness=0.5, **HABITS)),
    "lenet5": dict(epochs=20, batch_size=128, lr=0.003, optimizer="adamw", weight_decay=1e-4, augment=True,
                   augment_config=dict(HABITS)),
    "cnn": dict(epochs=20, augment_config=dict(HABITS), tta="scale"),
}


# The schedule a run that asks for a target accuracy gets (``train --target-accuracy``, the speed
# benchmark), over its architecture's recipe, when the caller chose none of epochs, batch size and
# learning rate: a short one-cycle (airbench-style) of two epochs, a fifth of it warm-up, checked and
# kept as an exponential moving average of the weights (``ema``). The average is what reaches 99% on
# MNIST test early: the raw weights at the peak learning rate are noisy, their average is not. On
# seeds 0-5 it reached 99% at every seed's first check, half an epoch in (99.05-99.18%), where the
# same schedule without the average needed 0.75-1.25 epochs; at batch 256 it needed 0.75 epochs. The
# checks start when the warm-up ends (``first_check``): before it the rising rate keeps the test
# accuracy far from the target (95-97.5% at a quarter epoch), and a check costs about 0.7 s.
# Habit synthesis is off: it serves real drawings, not MNIST test, costs twice the time of the rest of
# the augmentation per batch, and its extra samples give every batch a different size, which makes
# the CPU kernels re-plan for each new shape. Stroke thickening/thinning is off too (most of the
# remaining augmentation time); the affine warp stays. One test-time view (tta "none"): the target is
# checked on one view, and fitting and reporting the three "scale" views cost ~3 s more per run.
# Figures: docs/benchmarks.md, the training-speed row.
FAST_RECIPES: dict[str, dict[str, Any]] = {
    "cnn": dict(epochs=2, batch_size=128, lr=0.3, warmup=0.2, ema=0.99, first_check=0.2,
                augment_config=dict(thickness=0.0), tta="none"),
}
FAST_CHOICES = ("epochs", "batch_size", "lr")  # any of these chosen by the caller keeps the shipped recipe


def recipe(arch: str, **overrides: Any) -> TrainConfig:
    """The default training config for an architecture, with explicit overrides (None = keep).

    With ``target_accuracy`` and none of ``FAST_CHOICES`` given, the architecture's fast recipe
    (``FAST_RECIPES``) replaces the shipped one's schedule.
    """
    chosen = {k: v for k, v in overrides.items() if v is not None}
    values = {"arch": arch, **RECIPES.get(arch, {})}
    if "target_accuracy" in chosen and not any(k in chosen for k in FAST_CHOICES):
        values.update(FAST_RECIPES.get(arch, {}))
    values.update(chosen)
    return TrainConfig(**values)


# How a version is fine-tuned on MNIST plus the drawings users corrected (runs with a base version),
# over its architecture's recipe (augmentation, habits, test-time views stay the recipe's): two
# epochs at a peak learning rate of ``FINETUNE_LR_FACTOR`` times the recipe's, on the first
# ``FINETUNE_MNIST_LIMIT`` MNIST images (2,000 of them the validation split) as rehearsal beside the
# drawings, each repeated ``extra_repeat`` times per epoch (so with a few thousand corrections about
# half of what it sees are drawings), and ones' flags drawn flatter and reaching further than the
# from-scratch recipe's (``FINETUNE_AUGMENT``). Measured leave one writer group out on the real
# pen-drawn development digits (label three groups, score the fourth; bench/finetune_recipes.py, and
# end to end bench/learning_from_corrections.py): longer schedules, more repeats, a higher learning
# rate or all of MNIST did no better on the group left out; the flatter flags did (the European one
# read as a 7 is the commonest error on groups that write it). Measured the other way too (the same
# population: half of every group's writers correct, the other half score; --question population),
# corrections weighing 4x more, twice the learning rate, more epochs or less MNIST read new writers no
# better and cost MNIST accuracy, so staff, the API and the policy share this one recipe. Figures:
# docs/benchmarks.md, "Learning from corrections".
FINETUNE: dict[str, Any] = dict(epochs=2, extra_repeat=4, val_size=2000)
FINETUNE_LR_FACTOR = 0.3
FINETUNE_MNIST_LIMIT: int | None = 10_000  # the first N MNIST training images a fine-tune sees
FINETUNE_AUGMENT: dict[str, Any] = dict(flag_angle=(5.0, 65.0), flag_reach=0.55)


def finetune_recipe(arch: str, **overrides: Any) -> TrainConfig:
    """The default config for fine-tuning a version of ``arch``, with explicit overrides (None = keep)."""
    base = {"arch": arch, **RECIPES.get(arch, {})}
    lr = base.get("lr", TrainConfig.lr) * FINETUNE_LR_FACTOR
    values = {**base, **FINETUNE, "lr": lr}
    if values.get("augment", TrainConfig.augment):
        values["augment_config"] = {**values.get("augment_config", {}), **FINETUNE_AUGMENT}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


@dataclass
class TrainingData:
    """What a run trains on: MNIST (uint8 ``[N,28,28]``) plus optional labelled user drawings."""

    images: torch.Tensor
    labels: torch.Tensor
    extra_images: torch.Tensor | None = None  # [M,28,28] or [M,1,28,28], uint8 or float in [0,1]
    extra_labels: torch.Tensor | None = None
    check_images: torch.Tensor | None = None  # only for --target-accuracy checks (never for selection)
    check_labels: torch.Tensor | None = None


@dataclass
class TrainResult:
    model: nn.Module
    status: str  # "completed", "early_stopped", "target_reached" or "cancelled"
    history: list[dict[str, Any]]  # one entry per finished epoch
    best_epoch: int
    val_metrics: dict[str, Any] | None
    train_seconds: float  # time spent in training steps (evaluations excluded)
    wall_seconds: float
    samples_seen: int
    steps: int
    device: str
    precision: str
    checks: list[dict[str, Any]] = field(default_factory=list)  # target-accuracy checks
    calibration: dict[str, Any] | None = None  # temperature fitted on the validation split (None without one)
    check_logits: torch.Tensor | None = None  # the last target check's logits over the check set

    @property
    def summary(self) -> dict[str, Any]:
        val = self.val_metrics or {}
        return {
            "status": self.status,
            "best_epoch": self.best_epoch,
            "val_accuracy": val.get("accuracy"),
            "train_seconds": round(self.train_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "samples_seen": self.samples_seen,
            "steps": self.steps,
            "device": self.device,
            "precision": self.precision,
        }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but is not available on this machine")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # bf16 autocast is only a win on CPUs with native bf16 dot products (AVX512-BF16 / AMX).
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


@contextlib.contextmanager
def own_random_state(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global generator(s) seeded for one run, and put back as they were when it ends.

    Weight initialisation and dropout draw from torch's global generator (they take no generator of
    their own), so a run seeds it and hands it back untouched; everything else the trainer draws (the
    validation split, the shuffles, the augmentation) comes from its own ``torch.Generator``s, and
    Python's ``random`` is never used. The global generator is process-wide: a draw from it in another
    thread while a run trains would change that run's dropout masks (nothing in the site draws from it).
    """
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield


def split_validation(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and validation parts; depends only on ``n`` and ``seed``."""
    if val_size >= n:
        raise ValueError(f"validation size {val_size} leaves nothing to train on (n={n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


class WeightAverage:
    """An exponential moving average of a model's weights and batch-norm statistics.

    The decay starts low and rises to ``decay`` ((1 + t) / (10 + t) at step t), so the first steps'
    random weights are forgotten quickly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model)
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.decay = decay
        self._source = [t for t in model.state_dict().values() if t.is_floating_point()]
        self._target = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        self._counts = [(a, b) for a, b in zip(self.model.state_dict().values(), model.state_dict().values())
                        if not a.is_floating_point()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self._target, self._source, 1.0 - decay)
        for mine, theirs in self._counts:
            mine.copy_(theirs)


def train(
    config: TrainConfig,
    data: TrainingData,
    *,
    callback: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train a network per ``config``; ``init_state`` fine-tunes from existing weights.

    The same config and data give the same run; the caller's random state (Python's ``random``, torch's
    global generators) is the same after it as before.
    """
    config.validate()
    device = resolve_device(config.device)
    with own_random_state(config.seed, device):
        return _train(config, data, device, callback=callback, should_cancel=should_cancel, init_state=init_state)


def _train(
    config: TrainConfig,
    data: TrainingData,
    device: torch.device,
    *,
    callback: ProgressCallback | None,
    should_cancel: CancelCheck | None,
    init_state: dict[str, torch.Tensor] | None,
) -> TrainResult:
    emit = callback or (lambda event: None)
    cancelled = should_cancel or (lambda: False)
    started = time.perf_counter()
    precision = resolve_precision(config.precision, device)

    # ---- data, all on the device
    train_idx, val_idx = split_validation(len(data.labels), config.val_size, config.seed)
    x_train = data.images[train_idx].to(device)
    y_train = data.labels[train_idx].long().to(device)
    x_train_f: torch.Tensor | None = None
    if data.extra_images is not None and len(data.extra_images) and config.extra_repeat > 0:
        extra = as_float_images(data.extra_images).squeeze(1)
        extra = extra.repeat(config.extra_repeat, 1, 1)
        extra_y = data.extra_labels.long().repeat(config.extra_repeat)
        # One float tensor when drawings are mixed in (they are not uint8 images).
        x_train_f = torch.cat([x_train.float().div(255), extra.to(device)])
        y_train = torch.cat([y_train, extra_y.to(device)])
    x_val, y_val = data.images[val_idx], data.labels[val_idx].long()
    n_mnist = len(train_idx)  # rows past this are users' drawings: they keep the habits they have
    n_train = len(y_train)
    steps_per_epoch = n_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {config.batch_size} is larger than the training set ({n_train})")
    total_steps = steps_per_epoch * config.epochs

    # ---- model and optimisation
    model = build_model(config.arch, config.arch_config)
    if init_state is not None:
        model.load_state_dict(init_state, strict=True)
    model = model.to(device).to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 else decay).append(param)
    optimizer = make_optimizer(config.optimizer, [(decay, config.weight_decay), (no_decay, 0.0)])
    schedule = OneCycle(config.lr, total_steps, max(config.warmup, 1e-3))
    averaged = WeightAverage(model, config.ema) if config.ema else None
    aug_cfg = AugmentConfig(**config.augment_config)
    aug_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    shuffle_gen = torch.Generator(device=device).manual_seed(config.seed + 2)
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    eval_every = config.eval_every or max(1, steps_per_epoch // 4)
    first_check_step = int(config.first_check * total_steps)

    emit({
        "type": "start", "arch": config.arch, "device": str(device), "precision": precision,
        "epochs": config.epochs, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
        "train_size": n_train, "val_size": len(y_val), "num_parameters": count_parameters(model),
        "threads": torch.get_num_threads(),  # torch's intra-op threads in the thread that trains
    })

    history: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_key: tuple[float, float] | None = None
    best_epoch, best_val = 0, None
    check_logits: torch.Tensor | None = None
    val_logits: torch.Tensor | None = None  # the last validation pass's logits (the weights checked last)
    best_val_logits: torch.Tensor | None = None
    train_seconds = 0.0
    step = 0
    status = "completed"
    epochs_without_gain = 0

    def kept() -> nn.Module:
        """The weights a check or the validation sees and the run keeps: the average when there is one."""
        return averaged.model if averaged is not None else model

    def check_target() -> bool:
        assert data.check_images is not None and data.check_labels is not None
        nonlocal check_logits
        metrics, check_logits = evaluate_with_logits(kept(), data.check_images, data.check_labels)
        model.train()
        checks.append({"step": step, "samples": step * config.batch_size, "train_seconds": train_seconds,
                       "accuracy": metrics["accuracy"]})
        emit({"type": "check", "step": step, "accuracy": metrics["accuracy"], "train_seconds": train_seconds})
        return metrics["accuracy"] >= (config.target_accuracy or 2.0)

    for epoch in range(1, config.epochs + 1):
        model.train()
        perm = torch.randperm(n_train, device=device, generator=shuffle_gen)
        loss_sum = torch.zeros((), device=device)
        correct_sum = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        epoch_started = time.perf_counter()
        for i in range(steps_per_epoch):
            t0 = time.perf_counter()
            idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
            if x_train_f is not None:
                x = x_train_f[idx].unsqueeze(1)
            else:
                x = x_train[idx].unsqueeze(1).float().div_(255)
            y = y_train[idx]
            if config.augment:
                eligible = idx < n_mnist if x_train_f is not None else None
                x, y = augment_labelled_batch(x, y, aug_cfg, aug_gen, eligible=eligible)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step(*schedule.at(step))
            step += 1
            if averaged is not None:
                averaged.update(step)
            loss_sum += loss.detach() * len(y)
            correct_sum += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds += time.perf_counter() - t0
            rate = step * config.batch_size / max(train_seconds, 1e-9)
            emit({
                "type": "batch", "epoch": epoch, "step": step, "epoch_step": i + 1,
                "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                "loss": float(loss.detach()), "lr": schedule.at(step)[0],
                "samples_per_s": rate, "eta_s": (total_steps - step) * config.batch_size / rate,
                "progress": step / total_steps,
            })
            if cancelled():
                status = "cancelled"
                break
            if config.target_accuracy is not None and data.check_images is not None and step % eval_every == 0 \
                    and step >= first_check_step:
                if check_target():
                    status = "target_reached"
                    break
        if status == "cancelled":
            break

        epoch_train_seconds = time.perf_counter() - epoch_started
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_accuracy": float(correct_sum) / max(seen, 1),
            "lr": schedule.at(step)[0],
            "seconds": epoch_train_seconds,
        }
        if len(y_val):
            val, val_logits = evaluate_with_logits(kept(), x_val, y_val)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            key = (val["accuracy"], -val["loss"])
            if best_key is None or key >= best_key:
                best_key, best_epoch, best_val, best_val_logits = key, epoch, val, val_logits
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in kept().state_dict().items()})
                epochs_without_gain = 0
            else:
                epochs_without_gain += 1
        else:
            best_epoch, best_state = epoch, None
        history.append(record)
        emit({"type": "epoch", **record, "best_epoch": best_epoch, "total_epochs": config.epochs})
        if status == "target_reached":
            break
        if config.patience and epochs_without_gain >= config.patience:
            status = "early_stopped"
            break

    # Model selection by validation accuracy (never by the test set). A run stopped by the
    # target check keeps the weights that reached the target.
    if averaged is not None:
        model = averaged.model
    if status != "target_reached" and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    calibration = None
    if len(y_val) and status != "cancelled":
        # One temperature for calibrated confidence, fitted on the same validation split (never the
        # test set): the kept weights' logits on it, for each test-time view the model is served with.
        # Served with one view, those are the logits the last validation pass of these weights made.
        kept_logits = val_logits if status == "target_reached" else best_val_logits
        if config.tta == "none" and kept_logits is not None:
            logits = kept_logits.unsqueeze(0)
        else:
            logits = view_logits(inference_copy(model), as_float_images(x_val), config.tta)
        calibration = calibration_record(logits, y_val, tta=config.tta)
    result = TrainResult(
        model=model.to(memory_format=torch.contiguous_format),
        status=status,
        history=history,
        best_epoch=best_epoch,
        val_metrics=best_val,
        train_seconds=train_seconds,
        wall_seconds=time.perf_counter() - started,
        samples_seen=step * config.batch_size,
        steps=step,
        device=str(device),
        precision=precision,
        checks=checks,
        calibration=calibration,
        check_logits=check_logits,
    )
    emit({"type": "end", **result.summary})
    return result


def config_summary(config: TrainConfig) -> dict[str, Any]:
    """The training config with the architecture config filled in with its defaults."""
    values = config.to_dict()
    values["arch_config"] = config_to_dict(make_config(config.arch, config.arch_config))
    values["augment_config"] = asdict(AugmentConfig(**config.augment_config))
    return values
