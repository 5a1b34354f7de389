"""Batched augmentations on the training device: uint8 (B, 3, S, S) in, normalized float views out.

Per-sample random parameters, one ``grid_sample`` for crop + flip, colour operations as tensor maths: no
per-image Python work, so a GPU is never waiting for the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2


# MoCo v3's views, with the crop scale of small-image recipes (no blur at 32 px).
CL_AUGMENT = AugmentConfig()
# SimMIM's: a mild random resized crop and a flip, no colour changes.
MIM_AUGMENT = AugmentConfig(crop_scale=(0.67, 1.0), jitter_p=0.0, grayscale_p=0.0)

_LUMA = (0.299, 0.587, 0.114)
_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_FROM_YIQ = tuple(tuple(float(v) for v in row) for row in np.linalg.inv(np.array(_TO_YIQ)))

# Constants are Python floats, never tensors made from host data: on a GPU each such tensor is a blocking
# host-to-device copy, i.e. a sync every step.


def to_float(images: Tensor) -> Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def _per_channel(x: Tensor, scale: Sequence[float], shift: Sequence[float]) -> Tensor:
    """``x[:, c] * scale[c] + shift[c]`` with Python scalars (one op when all channels agree)."""
    if len(set(scale)) == 1 and len(set(shift)) == 1:
        return x * scale[0] + shift[0]
    return torch.stack([x[:, c] * scale[c] + shift[c] for c in range(x.shape[1])], 1)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    return _per_channel(x, [1.0 / s for s in std], [-m / s for m, s in zip(mean, std, strict=True)])


def _mix(x: Tensor, matrix: Sequence[Sequence[float]]) -> list[Tensor]:
    """Channels of ``matrix @ x`` per pixel, as a list of (B, H, W) planes."""
    return [sum(w * x[:, j] for j, w in enumerate(row)) for row in matrix]  # type: ignore[misc]


def random_resized_crop(
    x: Tensor, scale: tuple[float, float], ratio: tuple[float, float], flip_p: float
) -> Tensor:
    """torchvision's RandomResizedCrop (+ horizontal flip) for a whole batch, bilinear, same output size."""
    b = x.shape[0]
    dev = x.device
    area = torch.empty(b, device=dev).uniform_(*scale)
    log_r = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)  # fraction of the width
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(b, device=dev) * 2 - 1) * (1 - w)  # centre in [-1, 1] coordinates
    cy = (torch.rand(b, device=dev) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, device=dev) < flip_p, -1.0, 1.0)
    zero = torch.zeros_like(w)
    theta = torch.stack([w * flip, zero, cx, zero, h, cy], 1).view(b, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: Tensor) -> Tensor:
    return _mix(x, [_LUMA])[0].unsqueeze(1)


def _rotate_hue(x: Tensor, angle: Tensor) -> Tensor:
    # A hue shift is a rotation of the chroma plane of YIQ; cheap and close to torchvision's HSV shift.
    y, i, q = _mix(x, _TO_YIQ)
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    yiq = torch.stack([y, c * i - s * q, s * i + c * q], 1)
    return torch.stack(_mix(yiq, _FROM_YIQ), 1)


def colour_jitter(x: Tensor, cfg: AugmentConfig) -> Tensor:
    b, dev = x.shape[0], x.device

    def factor(strength: float) -> Tensor:
        return torch.empty(b, 1, 1, 1, device=dev).uniform_(1 - strength, 1 + strength)

    apply = (torch.rand(b, 1, 1, 1, device=dev) < cfg.jitter_p).to(x.dtype)
    y = x * factor(cfg.brightness)
    mean = _gray(y).mean((2, 3), keepdim=True)
    y = ((y - mean) * factor(cfg.contrast) + mean).clamp(0, 1)
    g = _gray(y)
    y = ((y - g) * factor(cfg.saturation) + g).clamp(0, 1)
    if cfg.hue > 0:
        y = _rotate_hue(y, torch.empty(b, device=dev).uniform_(-cfg.hue, cfg.hue) * 2 * math.pi)
    y = y.clamp(0, 1)
    return apply * y + (1 - apply) * x


def augment(images: Tensor, cfg: AugmentConfig, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """One random view of each image, normalized."""
    x = to_float(images)
    x = random_resized_crop(x, cfg.crop_scale, cfg.crop_ratio, cfg.flip_p)
    if cfg.jitter_p > 0:
        x = colour_jitter(x, cfg)
    if cfg.grayscale_p > 0:
        gray = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) < cfg.grayscale_p).to(x.dtype)
        x = gray * _gray(x).expand_as(x) + (1 - gray) * x
    return normalize(x.clamp(0, 1), mean, std)
