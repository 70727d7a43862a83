"""One training job from data to checkpoint file, shared by the ``train`` command and the workers.

Plain Python (no Django): load MNIST, train with the engine, evaluate on the MNIST test set
(reported, never used for selection), write the checkpoint atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from classifier.preprocessing import PREPROCESSING_VERSION
from training.engine.checkpoint import make_checkpoint, save_checkpoint
from training.engine.data import load_mnist, mnist_fingerprint
from training.engine.evaluate import evaluate
from training.engine.trainer import (
    CancelCheck,
    ProgressCallback,
    TrainConfig,
    TrainingData,
    TrainResult,
    config_summary,
    train,
)


@dataclass
class TrainedModel:
    result: TrainResult
    test_metrics: dict[str, Any]
    checkpoint: dict[str, Any]
    path: Path | None
    sha256: str | None


def train_to_checkpoint(
    config: TrainConfig,
    *,
    mnist_root: str | Path,
    out: str | Path | None,
    extra_images: torch.Tensor | None = None,
    extra_labels: torch.Tensor | None = None,
    callback: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
) -> TrainedModel:
    """Train per ``config`` and, unless cancelled or ``out`` is None, write the checkpoint."""
    train_split = load_mnist(mnist_root, "train")
    test_split = load_mnist(mnist_root, "test")
    data = TrainingData(
        images=train_split.images,
        labels=train_split.labels,
        extra_images=extra_images,
        extra_labels=extra_labels,
        check_images=test_split.images if config.target_accuracy is not None else None,
        check_labels=test_split.labels if config.target_accuracy is not None else None,
    )
    result = train(config, data, callback=callback, should_cancel=should_cancel, init_state=init_state)
    test_metrics = evaluate(result.model, test_split.images, test_split.labels)
    fingerprint = mnist_fingerprint(mnist_root)
    n_extra = 0 if extra_labels is None else int(len(extra_labels))
    if n_extra:
        fingerprint += f"+drawings:{n_extra}"
    checkpoint = make_checkpoint(
        model=result.model,
        arch=config.arch,
        config=config_summary(config)["arch_config"],
        metrics={
            "test_accuracy": test_metrics["accuracy"],
            "test_loss": test_metrics["loss"],
            "per_class_accuracy": test_metrics["per_class_accuracy"],
            "confusion_matrix": test_metrics["confusion_matrix"],
            "test_n": test_metrics["n"],
            "val_accuracy": (result.val_metrics or {}).get("accuracy"),
            "best_epoch": result.best_epoch,
        },
        preprocessing=PREPROCESSING_VERSION,
        training={**config_summary(config), "history": result.history, **result.summary},
        data_fingerprint=fingerprint,
    )
    path = sha = None
    if out is not None and result.status != "cancelled":
        path = Path(out)
        sha = save_checkpoint(path, checkpoint)
    return TrainedModel(result=result, test_metrics=test_metrics, checkpoint=checkpoint, path=path, sha256=sha)
