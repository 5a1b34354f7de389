"""Shared helpers of the analyses: argument checks, dtype promotion, token grids."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from backend.errors import BadRequest


class AnalysisArgumentError(BadRequest, ValueError):
    """A shape, grid, prefix count or index that does not fit the tensors given.

    Both a ``BadRequest`` (the API answers 4xx) and a ``ValueError`` (plain Python callers).
    """


def as_float(x: Tensor) -> Tensor:
    """Promote half precision (the cache stores float16) to float32; keep float32/float64 as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_grid(grid: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(v) for v in grid)
    if h < 1 or w < 1:
        raise AnalysisArgumentError(f"grid must be two positive ints (H, W), got {grid!r}")
    return h, w


def check_tokens(n_tokens: int, grid: tuple[int, int], num_prefix: int) -> tuple[int, int]:
    """Check that ``n_tokens == num_prefix + H * W`` and return (H, W)."""
    h, w = check_grid(grid)
    if num_prefix < 0 or n_tokens != num_prefix + h * w:
        raise AnalysisArgumentError(
            f"{n_tokens} tokens do not match num_prefix={num_prefix} + grid {h}x{w} = {num_prefix + h * w}"
        )
    return h, w


def check_prefix(n_tokens: int, num_prefix: int) -> None:
    if not 0 <= num_prefix < n_tokens:
        raise AnalysisArgumentError(f"num_prefix must be in [0, {n_tokens}), got {num_prefix}")


def tokens_to_grid(z: Tensor, grid: tuple[int, int], num_prefix: int) -> Tensor:
    """``(..., N, C)`` -> ``(..., H, W, C)`` patch tokens, prefix dropped, row-major (t at t // W, t % W)."""
    if z.dim() < 2:
        raise AnalysisArgumentError(f"expected token states (..., N, C), got shape {tuple(z.shape)}")
    h, w = check_tokens(z.shape[-2], grid, num_prefix)
    return z[..., num_prefix:, :].reshape(*z.shape[:-2], h, w, z.shape[-1])


def singular_values_of(x: Tensor) -> Tensor:
    """Singular values of each matrix of ``(..., n, c)``, descending, float64, on ``x``'s device.

    The square roots of the eigenvalues of the smaller Gram matrix, formed and solved in float64: a few times
    faster than an SVD, and exact to ~1e-8 of the largest (a float32 Gram rounds at ~1e-7 of its largest
    entry, which reads as singular values of ~3e-4 x the largest where the matrix has none). On the CPU the
    eigenvalues come from numpy's LAPACK: torch's MKL-threaded one turns 5-12x slower on small matrices once
    a second thread has called it (the runner thread or a worker beside the event loop; measured on 2 cores:
    1.7 s instead of 0.13 s for 104 matrices of 196 x 196), while numpy's stays at 0.13 s from any thread.
    """
    z = x.double()
    gram = z @ z.transpose(-1, -2) if z.shape[-2] <= z.shape[-1] else z.transpose(-1, -2) @ z
    if gram.device.type == "cpu":
        eig = torch.from_numpy(np.linalg.eigvalsh(gram.numpy()))
    else:
        eig = torch.linalg.eigvalsh(gram)
    return eig.flip(-1).clamp_min(0).sqrt()
