"""Whole-batch data augmentation on the training device (no per-sample Python, no PIL).

People draw digits rotated, sized and placed a little differently from MNIST, and with thicker or
thinner pens. Each batch gets a random affine warp (rotation, scale, shear, shift) and a random
stroke-thickness change (grey-level dilation or erosion, blended by a random amount).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 12.0
    scale: tuple[float, float] = (0.85, 1.1)
    aspect: float = 0.12  # horizontal stretch range +- (people draw narrower or wider)
    shear_deg: float = 10.0
    shift_px: float = 2.0
    thickness: float = 1.0  # max blend towards dilation (+) or erosion (-); 0 turns it off
    thickness_p: float = 0.7  # share of images whose stroke thickness is changed


def stroke_thickness(images: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Thicken (amount > 0) or thin (amount < 0) strokes of ``[N,1,H,W]`` images, per image.

    Uses 3x3 grey-level dilation / erosion (max-pooling), blended linearly by ``|amount|`` in [0, 1]
    so thickness varies continuously.
    """
    dilated = F.max_pool2d(images, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-images, 3, stride=1, padding=1)
    a = amount.view(-1, 1, 1, 1)
    thick = images + a.clamp(min=0) * (dilated - images)
    return thick + (-a).clamp(min=0) * (eroded - images)


def random_affine(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    n, device = images.shape[0], images.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, device=device, generator=generator) * (hi - lo) + lo

    angle = uniform(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180)
    shear = uniform(-cfg.shear_deg, cfg.shear_deg) * (math.pi / 180)
    scale = uniform(*cfg.scale)
    aspect = uniform(-cfg.aspect, cfg.aspect).exp()
    sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
    # shift in normalized coordinates: 2 px of a 28 px image is 2 * 2/28
    tx = uniform(-cfg.shift_px, cfg.shift_px) * (2.0 / images.shape[-1])
    ty = uniform(-cfg.shift_px, cfg.shift_px) * (2.0 / images.shape[-2])
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map: rotate(shear(scale(p))) + t; grid_sample wants the inverse (output -> input).
    a11, a12 = sx * cos, sy * (cos * torch.tan(shear) - sin)
    a21, a22 = sx * sin, sy * (sin * torch.tan(shear) + cos)
    det = a11 * a22 - a12 * a21
    i11, i12, i21, i22 = a22 / det, -a12 / det, -a21 / det, a11 / det
    theta = torch.stack(
        [
            torch.stack([i11, i12, -(i11 * tx + i12 * ty)], dim=1),
            torch.stack([i21, i22, -(i21 * tx + i22 * ty)], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Augment float ``[N,1,28,28]`` images in [0,1]; returns a new tensor."""
    if cfg.thickness > 0 and cfg.thickness_p > 0:
        n = images.shape[0]
        amount = (torch.rand(n, device=images.device, generator=generator) * 2 - 1) * cfg.thickness
        apply = torch.rand(n, device=images.device, generator=generator) < cfg.thickness_p
        images = stroke_thickness(images, amount * apply)
    return random_affine(images, cfg, generator).clamp_(0, 1)
