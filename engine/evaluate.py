"""Batched evaluation and prediction. Returns numbers; printing is the caller's job."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .nets import NUM_CLASSES, inference_copy


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N,28,28]`` (0..255) or float ``[N,28,28]``/``[N,1,28,28]`` -> float ``[N,1,28,28]`` in [0,1]."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, *, batch_size: int = 256, device: str | torch.device | None = None
) -> torch.Tensor:
    """Logits ``[N, 10]`` (float32, on the CPU) for a batch of images, computed in chunks."""
    if device is None:
        device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = as_float_images(images[start : start + batch_size].to(device, non_blocking=True))
        out.append(model(chunk.contiguous(memory_format=torch.channels_last)).float().cpu())
    if not out:
        return torch.empty(0, NUM_CLASSES)
    return torch.cat(out)


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 256,
    fast: bool = True,
) -> dict[str, Any]:
    """Accuracy, per-class accuracy, confusion matrix (rows = true digit) and mean cross-entropy loss.

    ``fast`` evaluates a copy with batch norm folded into the convolutions (same function, fewer ops).
    """
    return evaluate_with_logits(model, images, labels, batch_size=batch_size, fast=fast)[0]


def evaluate_with_logits(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 256,
    fast: bool = True,
) -> tuple[dict[str, Any], torch.Tensor]:
    """``evaluate``'s figures and the logits ``[N, 10]`` they were computed from (for a caller that
    needs the same forward pass again, e.g. to fit a temperature)."""
    net = inference_copy(model) if fast else model
    logits = predict_logits(net, images, batch_size=batch_size)
    return metrics_from_logits(logits, labels.to("cpu").long()), logits


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    n = int(labels.numel())
    if n == 0:
        raise ValueError("cannot evaluate on an empty set")
    predicted = logits.argmax(dim=1)
    confusion = torch.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES**2).view(
        NUM_CLASSES, NUM_CLASSES
    )
    support = confusion.sum(dim=1)
    correct = confusion.diag()
    per_class = [
        (float(c) / float(s)) if s > 0 else None for c, s in zip(correct.tolist(), support.tolist())
    ]
    return {
        "accuracy": float(correct.sum()) / n,
        "loss": float(F.cross_entropy(logits, labels)),
        "n": n,
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def evaluate_sets(
    model: nn.Module,
    sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    batch_size: int = 256,
    logits: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Figures for several named sets, flattened into the shape a model version stores.

    The MNIST test set is ``"test"``: ``test_accuracy``, ``test_loss``, ``test_n``, and the
    unprefixed ``per_class_accuracy`` / ``confusion_matrix``. Any other set ``name`` gives
    ``<name>_accuracy``, ``<name>_loss``, ``<name>_n``, ``<name>_per_class_accuracy`` and
    ``<name>_confusion_matrix``; an empty one only ``<name>_accuracy = None`` and ``<name>_n = 0``.
    A set named in ``logits`` is scored from those (the caller's own forward pass of this model over
    its images, e.g. one made for a calibration report) instead of a new one.
    """
    known = logits or {}
    net = inference_copy(model) if set(sets) - set(known) else model
    metrics: dict[str, Any] = {}
    for name, (images, labels) in sets.items():
        if len(labels) == 0:
            metrics.update({f"{name}_accuracy": None, f"{name}_n": 0})
            continue
        if name in known:
            if len(known[name]) != len(labels):
                raise ValueError(f"{name}: {len(known[name])} rows of logits for {len(labels)} labels")
            figures = metrics_from_logits(known[name], labels.to("cpu").long())
        else:
            figures = evaluate(net, images, labels, batch_size=batch_size, fast=False)
        grid = "" if name == "test" else f"{name}_"
        metrics.update({
            f"{name}_accuracy": figures["accuracy"],
            f"{name}_loss": figures["loss"],
            f"{name}_n": figures["n"],
            f"{grid}per_class_accuracy": figures["per_class_accuracy"],
            f"{grid}confusion_matrix": figures["confusion_matrix"],
        })
    return metrics
