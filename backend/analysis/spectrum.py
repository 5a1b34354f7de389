"""A4: Fourier analysis of token representations (relative log amplitude), as pure functions of tensors.

States are ``(B, N, C)`` with ``N = num_prefix + H * W``; prefix tokens are dropped and patch token ``t`` sits
at row ``t // W``, column ``t % W``. Work stays on the input's device; float16 is promoted to float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from backend.analysis._common import AnalysisArgumentError, as_float, check_grid, check_tokens, tokens_to_grid

AMPLITUDE_EPS = 1e-6  # L = log(|F| + 1e-6)


def log_amplitude_spectrum(z: Tensor, grid: tuple[int, int], num_prefix: int) -> Tensor:
    """Centred log-amplitude spectrum of each image, averaged over channels: ``(B, N, C)`` -> ``(B, H, W)``.

    Unnormalized ``fft2`` over the token grid per image and channel, natural log of ``|F| + 1e-6`` taken
    before any averaging (!), then the mean over channels, then ``fftshift`` (zero frequency at
    ``(H // 2, W // 2)``). Averaging over images is left to the caller: everything after the log is linear,
    so from here on the order no longer matters.
    """
    # (..., C, H, W) as in the paper's code: the FFT over the two trailing axes is the well-trodden path
    x = as_float(tokens_to_grid(z, grid, num_prefix)).movedim(-1, -3).contiguous()
    f = torch.view_as_real(torch.fft.fft2(x))  # |F| by hypot of the parts: equal, 1.6x faster than abs
    spec = torch.log(torch.hypot(f[..., 0], f[..., 1]) + AMPLITUDE_EPS).mean(-3)
    return torch.fft.fftshift(spec, dim=(-2, -1))


def half_diagonal_bins(grid: tuple[int, int]) -> int:
    """How many half-diagonal bins the paper's code keeps: ``(h + 1) // 2`` on an ``h x h`` grid.

    The paper rolls the spectrum by ``h // 2`` and keeps ``diag()[h // 2:]``: frequencies ``0 .. h/2 - 1`` on
    an even grid (Nyquist left out: 7 bins on 14 x 14) and ``0 .. (h - 1)/2`` on an odd one (4 bins on 7 x 7).
    A non-square grid steps one bin along each axis and stops at the shorter side's count.
    """
    h, w = check_grid(grid)
    if min(h, w) < 2:
        raise AnalysisArgumentError(f"a {h}x{w} grid has no half-diagonal: both sides must be at least 2")
    return min((h + 1) // 2, (w + 1) // 2)


def half_diagonal_delta(spec: Tensor) -> Tensor:
    """``delta(m) = L(m, m) - L(0, 0)`` from the centre outwards: ``(..., H, W)`` -> ``(..., bins)``.

    ``m = 0 .. half_diagonal_bins - 1`` (7 values on 14 x 14, 4 on 7 x 7), so ``delta(0) = 0``. On a
    non-square grid the diagonal steps one bin along each axis, i.e. frequencies ``(2 pi m / H, 2 pi m / W)``
    (see ``half_diagonal_frequencies``).
    """
    if spec.dim() < 2:
        raise AnalysisArgumentError(f"spectrum must be (..., H, W), got shape {tuple(spec.shape)}")
    h, w = int(spec.shape[-2]), int(spec.shape[-1])
    m = torch.arange(half_diagonal_bins((h, w)), device=spec.device)
    diag = spec[..., h // 2 + m, w // 2 + m]
    return diag - diag[..., :1]


def half_diagonal_frequencies(grid: tuple[int, int]) -> list[tuple[float, float]]:
    """The (row, column) frequencies in radians per patch of each ``half_diagonal_delta`` bin."""
    h, w = check_grid(grid)
    return [(2 * math.pi * m / h, 2 * math.pi * m / w) for m in range(half_diagonal_bins(grid))]


def _pi_fraction(m: int, n: int) -> str:
    f = Fraction(2 * m, n)  # 2 pi m / n radians = f pi
    if f == 0:
        return "0"
    if f == 1:
        return "pi"
    return f"{f.numerator} pi" if f.denominator == 1 else f"{f.numerator}/{f.denominator} pi"


def delta_bin(grid: tuple[int, int]) -> dict[str, Any]:
    """Which half-diagonal bin the plotted scalar reads, for ``metrics.json`` and figure labels.

    ``index`` m, ``cycles_per_image`` (m along rows and columns: m periods across the grid), the same as
    ``radians_per_patch`` (2 pi m / H, 2 pi m / W), and a ``label`` such as "bin 3: 3 cycles per image,
    3/4 pi per patch, 8x8 grid".
    """
    h, w = check_grid(grid)
    m = half_diagonal_bins(grid) - 1
    rows, cols = _pi_fraction(m, h), _pi_fraction(m, w)
    per_patch = rows if rows == cols else f"({rows}, {cols})"
    return {
        "index": m,
        "cycles_per_image": [m, m],
        "radians_per_patch": [2 * math.pi * m / h, 2 * math.pi * m / w],
        "label": f"bin {m}: {m} cycle{'' if m == 1 else 's'} per image, {per_patch} per patch, {h}x{w} grid",
    }


def high_frequency_delta(z: Tensor, grid: tuple[int, int], num_prefix: int) -> Tensor:
    """The paper's plotted scalar: ``delta`` at the last half-diagonal bin (``m = H/2 - 1`` on an even grid,
    not Nyquist (!); ``(H - 1)/2`` on an odd one: ``delta_bin``).

    ``(B, N, C)`` -> ``(B,)``. Higher (less negative) = relatively more high-frequency content. Equal to
    ``half_diagonal_delta(log_amplitude_spectrum(z, ...))[..., -1]`` (the tests check it), but it computes
    only the two Fourier coefficients it needs, ``F(0, 0)`` and ``F(m, m)``, as one small matrix product, in
    float64: the constant-token check value needs ``|F(m, m)|`` far below the 1e-6 epsilon, which float32 sums
    of rounded cosines do not give.
    """
    return high_frequency_deltas([z], grid, num_prefix)[0]


def _last_bin_basis(grid: tuple[int, int], device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(2, Np)``: cos and sin of ``2 pi (m r / H + m c / W)`` with ``m = half_diagonal_bins - 1``."""
    h, w = check_grid(grid)
    m = half_diagonal_bins(grid) - 1
    t = torch.arange(h * w, device=device)
    turns = (m * (t // w) * w + m * (t % w) * h) % (h * w)  # reduced modulo 2 pi in exact integers
    theta = (2 * math.pi / (h * w)) * turns.to(torch.float64)
    return torch.stack([torch.cos(theta), torch.sin(theta)]).to(dtype)


def high_frequency_deltas(states: Sequence[Tensor], grid: tuple[int, int], num_prefix: int) -> Tensor:
    """``high_frequency_delta`` of several states of one shape at once: ``S x (B, N, C)`` -> ``(S, B)``."""
    if not states:
        raise AnalysisArgumentError("high_frequency_deltas needs at least one state")
    for z in states:
        if z.dim() < 2 or z.shape != states[0].shape:
            raise AnalysisArgumentError(
                f"states must be (..., N, C) of one shape, got {tuple(z.shape)} and {tuple(states[0].shape)}"
            )
        check_tokens(z.shape[-2], grid, num_prefix)
    dtype = as_float(states[0]).dtype
    if half_diagonal_bins(grid) == 1:  # the last bin is the zero frequency itself: delta(0) = 0 by definition
        return torch.zeros(len(states), *states[0].shape[:-2], dtype=dtype, device=states[0].device)
    basis = _last_bin_basis(grid, states[0].device, dtype)
    dc, fm = [], []
    for z in states:
        patches = as_float(z[..., num_prefix:, :])
        dc.append(patches.sum(-2))
        # A non-zero frequency ignores any per-channel offset, so subtracting the first token changes nothing
        # in exact arithmetic and keeps float32 exact where it matters: constant tokens give exactly 0 here
        # (the -19.094 check value), which a float32 product over the raw tokens would not.
        fm.append(basis @ (patches - patches[..., :1, :]))  # (..., 2, C)
    dcs, fms = torch.stack(dc), torch.stack(fm)
    log_dc = torch.log(dcs.abs() + AMPLITUDE_EPS).mean(-1)
    log_m = torch.log(torch.hypot(fms[..., 0, :], fms[..., 1, :]) + AMPLITUDE_EPS).mean(-1)
    return log_m - log_dc
