"""How a checkpoint's answers are made for serving: its temperature and its test-time views.

Both are stored with the checkpoint, in ``checkpoint["calibration"]`` (``temperature`` and ``tta``),
because they belong together: the temperature is fitted, at the end of training, on the validation
split's probabilities as served, i.e. averaged over the same views. A checkpoint without them is
served as it always was: one view, ``T = 1``.

Test-time augmentation averages the probabilities of a few warped copies of the 28x28 input (one
forward pass for all of them). ``"scale"`` looks at the digit at 90%, 100% and 110% of its size: the
size a drawing is brought to is the least certain step of the MNIST convention for pen drawings.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .calibration import calibrated_probabilities

# Each view is (rotation in degrees, scale, shift x, shift y in pixels); the first is the input itself.
TTA_VIEWS: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "none": ((0.0, 1.0, 0.0, 0.0),),
    "scale": ((0.0, 1.0, 0.0, 0.0), (0.0, 0.9, 0.0, 0.0), (0.0, 1.1, 0.0, 0.0)),
    "shift": ((0.0, 1.0, 0.0, 0.0), (0.0, 1.0, 1.0, 0.0), (0.0, 1.0, -1.0, 0.0), (0.0, 1.0, 0.0, 1.0),
              (0.0, 1.0, 0.0, -1.0)),
    "affine": ((0.0, 1.0, 0.0, 0.0), (-8.0, 1.0, 0.0, 0.0), (8.0, 1.0, 0.0, 0.0), (0.0, 0.9, 0.0, 0.0),
               (0.0, 1.1, 0.0, 0.0)),
}


def check_tta(tta: str) -> str:
    if tta not in TTA_VIEWS:
        raise ValueError(f"unknown test-time augmentation {tta!r}; known: {', '.join(TTA_VIEWS)}")
    return tta


def tta_views(x: torch.Tensor, tta: str) -> torch.Tensor:
    """``[N,1,H,W]`` inputs -> ``[V*N,1,H,W]``: the ``V`` views of ``TTA_VIEWS[tta]``, view-major
    (rows ``v*N .. v*N+N-1`` are view ``v``), made by one ``grid_sample``."""
    views = TTA_VIEWS[check_tta(tta)]
    if len(views) == 1:
        return x
    n, c, h, w = x.shape
    grid = (_cached_grid if n <= GRID_CACHE_MAX_BATCH else _view_grid)(tta, n, c, h, w, x.dtype, x.device)
    return F.grid_sample(x.repeat(len(views), 1, 1, 1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def _view_grid(tta: str, n: int, c: int, h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The sampling grid of ``tta``'s views for ``n`` inputs of ``c x h x w``: ``[V*n, h, w, 2]``."""
    thetas = []
    for angle, scale, dx, dy in TTA_VIEWS[tta]:
        a = math.radians(angle)
        cos, sin = math.cos(a) / scale, math.sin(a) / scale
        thetas.append([[cos, -sin, -dx * 2 / w], [sin, cos, -dy * 2 / h]])
    # An ordinary tensor even when asked from inference mode: a cached grid serves both modes.
    with torch.inference_mode(False), torch.no_grad():
        theta = torch.tensor(thetas, dtype=dtype, device=device).repeat_interleave(n, dim=0)
        return F.affine_grid(theta, [len(thetas) * n, c, h, w], align_corners=False)


# Serving asks for the same small grids on every request (one drawing, or a small batch): they depend
# only on the views and the shape, so they are made once. Larger batches (evaluation) make their own.
GRID_CACHE_MAX_BATCH = 64
_cached_grid = functools.lru_cache(maxsize=16)(_view_grid)


@torch.inference_mode()
def view_logits(model: nn.Module, x: torch.Tensor, tta: str = "none", *, batch_size: int = 512) -> torch.Tensor:
    """Float ``[N,1,28,28]`` inputs -> logits ``[V, N, 10]`` of each test-time view (float32, CPU)."""
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size].to(device)
        views = tta_views(chunk, tta)
        logits = model(views.contiguous(memory_format=torch.channels_last)).float().cpu()
        chunks.append(logits.view(-1, len(chunk), logits.shape[-1]))
    if not chunks:
        return torch.empty(len(TTA_VIEWS[check_tta(tta)]), 0, 10)
    return torch.cat(chunks, dim=1)


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module, x: torch.Tensor, *, temperature: float = 1.0, tta: str = "none"
) -> torch.Tensor:
    """``[N,1,28,28]`` inputs -> ``[N,10]`` probabilities: softmax(logits / T), averaged over the
    test-time views (one forward pass for all of them)."""
    views = tta_views(x, tta)
    logits = model(views.contiguous(memory_format=torch.channels_last))
    return calibrated_probabilities(logits.view(-1, len(x), logits.shape[-1]), temperature)


def _calibration(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    calibration = checkpoint.get("calibration")
    return calibration if isinstance(calibration, Mapping) else {}


def checkpoint_temperature(checkpoint: Mapping[str, Any]) -> float:
    """The serving temperature stored in a checkpoint; 1 (no change) for checkpoints made without one."""
    try:
        temperature = float(_calibration(checkpoint).get("temperature", 1.0))
    except (TypeError, ValueError):
        return 1.0
    return temperature if math.isfinite(temperature) and temperature > 0 else 1.0


def checkpoint_tta(checkpoint: Mapping[str, Any]) -> str:
    """The test-time views a checkpoint is served with; ``"none"`` for checkpoints made without."""
    tta = _calibration(checkpoint).get("tta", "none")
    return tta if isinstance(tta, str) and tta in TTA_VIEWS else "none"
