"""Batched augmentations on the training device: uint8 (B, 3, S, S) in, normalized float views out.

Per-sample random parameters, one ``grid_sample`` for crop + flip, colour operations as tensor maths: no
per-image Python work, so a GPU is never waiting for the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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


def to_float(images: Tensor) -> Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


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
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: Tensor) -> Tensor:
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _rotate_hue(x: Tensor, angle: Tensor) -> Tensor:
    # A hue shift is a rotation of the chroma plane of YIQ; cheap and close to torchvision's HSV shift.
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
        device=x.device,
        dtype=x.dtype,
    )
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], c * i - s * q, s * i + c * q], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)


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
