"""Train to a checkpoint: one training job from data to checkpoint, shared by ``manage.py train`` and runs.

Plain Python (no Django): load MNIST, train with the engine, evaluate on the MNIST test set
(reported, never used for selection), write the checkpoint atomically.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .preprocessing import PREPROCESSING_VERSION
from .checkpoint import make_checkpoint, save_checkpoint
from .data import load_mnist, mnist_fingerprint
from .calibration import calibrated_probabilities, expected_calibration_error
from .evaluate import as_float_images, evaluate_sets
from .nets import inference_copy
from .serving import view_logits
from .trainer import (
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
    mnist_limit: int | None = None,
    extra_eval: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    data_fingerprint: str | None = None,
) -> TrainedModel:
    """Train per ``config`` and, unless cancelled or ``out`` is None, write the checkpoint.

    ``mnist_limit`` trains on the first N MNIST training images only (quick runs); ``extra_eval``
    names further evaluation sets (e.g. ``{"field": (images, labels)}``) whose figures join the
    checkpoint's metrics as ``<name>_accuracy`` etc.; ``data_fingerprint`` replaces the default one
    when the caller knows more exactly what was used.
    """
    train_split = load_mnist(mnist_root, "train")
    test_split = load_mnist(mnist_root, "test")
    train_images, train_labels = train_split.images, train_split.labels
    if mnist_limit is not None:
        if mnist_limit < 1:
            raise ValueError("mnist_limit must be at least 1")
        train_images, train_labels = train_images[:mnist_limit], train_labels[:mnist_limit]
    data = TrainingData(
        images=train_images,
        labels=train_labels,
        extra_images=extra_images,
        extra_labels=extra_labels,
        check_images=test_split.images if config.target_accuracy is not None else None,
        check_labels=test_split.labels if config.target_accuracy is not None else None,
    )
    result = train(config, data, callback=callback, should_cancel=should_cancel, init_state=init_state)
    # One forward pass over the test set serves both the accuracy figures (the plain view) and the
    # calibration report (every view the model is served with). A run stopped by its target check
    # made that pass already: the check set is the test set, and the kept weights are the ones checked.
    tta = result.calibration["tta"] if result.calibration is not None else "none"
    if result.status == "target_reached" and tta == "none" and result.check_logits is not None:
        test_views = result.check_logits.unsqueeze(0)
    else:
        test_views = view_logits(inference_copy(result.model), as_float_images(test_split.images), tta)
    metrics = evaluate_sets(result.model, {"test": (test_split.images, test_split.labels), **(extra_eval or {})},
                            logits={"test": test_views[0]})
    metrics.update({"val_accuracy": (result.val_metrics or {}).get("accuracy"), "best_epoch": result.best_epoch})
    if result.calibration is not None:
        # Reported, as accuracy is: the temperature was fitted on the validation split, not on these.
        # Before: one view at T = 1; after: as served (the checkpoint's temperature and views).
        served = calibrated_probabilities(test_views, result.calibration["temperature"])
        metrics.update({
            "test_ece": expected_calibration_error(test_views[0].softmax(dim=1), test_split.labels),
            "test_ece_calibrated": expected_calibration_error(served, test_split.labels),
        })
        if tta != "none":
            metrics["test_accuracy_served"] = float((served.argmax(dim=1) == test_split.labels).float().mean())
    fingerprint = data_fingerprint
    if fingerprint is None:
        fingerprint = mnist_fingerprint(mnist_root)
        if mnist_limit is not None:
            fingerprint += f"[:{mnist_limit}]"
        n_extra = 0 if extra_labels is None else int(len(extra_labels))
        if n_extra:
            fingerprint += f"+drawings:{n_extra}"
    checkpoint = make_checkpoint(
        model=result.model,
        arch=config.arch,
        config=config_summary(config)["arch_config"],
        metrics=metrics,
        preprocessing=PREPROCESSING_VERSION,
        training={**config_summary(config), "history": result.history, **result.summary},
        data_fingerprint=fingerprint,
        calibration=result.calibration,
    )
    path = sha = None
    if out is not None and result.status != "cancelled":
        path = Path(out)
        sha = save_checkpoint(path, checkpoint)
    return TrainedModel(result=result, checkpoint=checkpoint, path=path, sha256=sha)
