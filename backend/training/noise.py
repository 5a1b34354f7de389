"""Frequency-band noise (ANALYSES.md A8): random sign noise kept only inside a square ring of frequencies."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def frequency_radius(h: int, w: int, device: torch.device | str = "cpu") -> Tensor:
    """(h, w) map, in the centred (fftshift) layout, of max(|wy|, |wx|) in radians per pixel (0..pi)."""
    fy = torch.fft.fftshift(torch.fft.fftfreq(h, device=device)).abs() * 2 * math.pi
    fx = torch.fft.fftshift(torch.fft.fftfreq(w, device=device)).abs() * 2 * math.pi
    return torch.maximum(fy[:, None], fx[None, :])


def band_mask(
    h: int, w: int, freq: float, half_width: float = 0.2, device: torch.device | str = "cpu"
) -> Tensor:
    """Centred-layout mask of the square ring ``|max(|wy|, |wx|) - freq| <= half_width``."""
    r = frequency_radius(h, w, device)
    return (r - freq).abs() <= half_width + 1e-9


def band_filter(x: Tensor, freq: float, half_width: float = 0.2) -> Tensor:
    """Keep only the ring's frequencies of ``x`` (..., H, W): mask the centred 2D FFT and invert it.

    The ring is symmetric under (wy, wx) -> (-wy, -wx), so the inverse is real up to rounding.
    """
    h, w = x.shape[-2:]
    spec = torch.fft.fftshift(torch.fft.fft2(x.float()), dim=(-2, -1))
    spec = spec * band_mask(h, w, freq, half_width, x.device)
    return torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1))).real


def band_noise(
    shape: tuple[int, ...],
    eps: float,
    freq: float,
    half_width: float = 0.2,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``eps * sign(N(0, 1))`` per pixel and channel, filtered to the ring centred at ``freq``."""
    z = torch.randn(shape, generator=generator)
    return band_filter(eps * torch.sign(z), freq, half_width).to(device)
