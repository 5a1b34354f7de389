"""Token-state analyses beyond the paper: high-norm tokens, effective rank (RankMe), positional share.

States are ``(B, N, C)`` with ``num_prefix`` prefix tokens first (CLS, registers); only patch tokens enter.
Every function takes all depths at once (a sequence of states) and is vectorized over images; per-image values
keep the image axis so that the caller averages afterwards (ANALYSES.md section 0). Natural log throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from backend.analysis._common import AnalysisArgumentError, as_float, check_prefix, singular_values_of

OUTLIER_FACTOR = 4.0  # a token is "high-norm" above this many times its image's median patch-token norm
RANKME_EPS = 1e-7  # Garrido et al. 2023: p = s / sum(s) + 1e-7
TOKEN_NORM_STATS = ("mean", "p99", "max", "outlier_fraction")


def _check_states(states: Sequence[Tensor], num_prefix: int) -> None:
    if not states:
        raise AnalysisArgumentError("need at least one state")
    shapes = {tuple(s.shape) for s in states}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise AnalysisArgumentError(f"every state must be one (B, N, C) shape, got {sorted(shapes)}")
    check_prefix(int(states[0].shape[1]), num_prefix)


def _patch_stack(states: Sequence[Tensor], num_prefix: int) -> Tensor:
    """``D x (B, N, C)`` -> ``(D, B, Np, C)`` patch tokens (prefix dropped)."""
    _check_states(states, num_prefix)
    return torch.stack([as_float(s[:, num_prefix:]) for s in states])


def token_norms(states: Sequence[Tensor], num_prefix: int, outlier_factor: float = OUTLIER_FACTOR) -> Tensor:
    """L2 norms of the patch tokens per image and depth: ``D x (B, N, C)`` -> ``(4, D, B)``.

    Rows (``TOKEN_NORM_STATS``): mean, 99th percentile (linear interpolation, as numpy), max, and the fraction
    of patch tokens whose norm exceeds ``outlier_factor`` x the image's median norm at that depth (the median
    of an even count is the mean of the two middle values). The high-norm "artifact" tokens of Darcet et al.
    2024 (Vision Transformers Need Registers) are such outliers.
    """
    if not outlier_factor > 0:
        raise AnalysisArgumentError(f"outlier_factor must be > 0, got {outlier_factor}")
    _check_states(states, num_prefix)
    norms = torch.stack(
        [torch.linalg.vector_norm(as_float(s[:, num_prefix:]), dim=-1) for s in states]
    )  # (D, B, Np)
    q = torch.tensor([0.5, 0.99], dtype=norms.dtype, device=norms.device)
    median, p99 = torch.quantile(norms, q, dim=-1)
    outliers = (norms > outlier_factor * median.unsqueeze(-1)).to(norms.dtype).mean(-1)
    return torch.stack([norms.mean(-1), p99, norms.amax(-1), outliers])


def effective_rank(states: Sequence[Tensor], num_prefix: int) -> Tensor:
    """RankMe (Garrido et al. 2023) of each image's patch tokens ``Z`` (Np x C, not centred), per depth.

    ``s`` = singular values of Z, ``p = s / sum(s) + 1e-7``, value ``exp(-sum p log p)``: ``D x (B, N, C)`` ->
    ``(D, B)`` float64. About k for k equal singular values, 1 for rank one; at most min(Np, C).
    """
    _check_states(states, num_prefix)
    # one depth at a time: a (B, Np, C) float64 copy, not a (D, B, Np, C) one
    s = torch.stack([singular_values_of(state[:, num_prefix:]) for state in states])  # (D, B, min(Np, C))
    p = s / s.sum(-1, keepdim=True) + RANKME_EPS
    return torch.exp(-torch.special.xlogy(p, p).sum(-1))


@dataclass
class PositionSums:
    """What ``positional_share`` needs of a set, summed over images so that batches add up.

    ``total[d, t, c] = sum_i z[i, t, c]`` and ``square[d] = sum_{i,t,c} z^2`` (float64; ``total`` of one
    image is its float32 tokens themselves, exact), ``count`` images.
    """

    count: int
    total: Tensor  # (D, Np, C)
    square: Tensor  # (D,)

    @staticmethod
    def of(states: Sequence[Tensor], num_prefix: int) -> PositionSums:
        z = _patch_stack(states, num_prefix).double()  # (D, B, Np, C)
        return PositionSums(int(z.shape[1]), z.sum(1), z.square().sum((1, 2, 3)))

    @staticmethod
    def per_image(states: Sequence[Tensor], num_prefix: int) -> list[PositionSums]:
        """The sums of each image of a batch alone, without a float64 copy of the batch."""
        _check_states(states, num_prefix)
        out = []
        for i in range(int(states[0].shape[0])):
            z = torch.stack([as_float(s[i, num_prefix:]) for s in states])  # (D, Np, C): this image's tokens
            square = torch.linalg.vector_norm(z, dim=(1, 2), dtype=torch.float64).square()  # (D,)
            out.append(PositionSums(1, z, square))
        return out

    def accumulate(self, other: PositionSums) -> None:
        """Add ``other`` into these float64 sums in place (a set adding up its images as they arrive)."""
        if self.total.shape != other.total.shape:
            raise AnalysisArgumentError(
                f"position sums of shapes {tuple(self.total.shape)} and {tuple(other.total.shape)} do not add"
            )
        self.count += other.count
        self.total += other.total
        self.square += other.square

    @staticmethod
    def zeros_like(part: PositionSums) -> PositionSums:
        """Float64 sums of no image, the shape of ``part``'s."""
        total = torch.zeros(part.total.shape, dtype=torch.float64, device=part.total.device)
        return PositionSums(0, total, torch.zeros_like(total[:, 0, 0]))

    @staticmethod
    def add(parts: Sequence[PositionSums]) -> PositionSums:
        if not parts:
            raise AnalysisArgumentError("PositionSums.add needs at least one part")
        out = PositionSums.zeros_like(parts[0])
        for part in parts:
            out.accumulate(part)  # checks the shapes
        return out


def positional_share(sums: PositionSums) -> Tensor | None:
    """Share of the patch tokens' variance that is the same at each position for every image, per depth.

    With ``mu_c`` the mean over images and positions and ``p[t, c] = mean_i z[i, t, c] - mu_c``:
    ``n * sum p^2 / sum (z - mu)^2``, ``(D,)`` float64. 1 = tokens depend on their position only (a position
    code), 0 = nothing positional survives. ``None`` for fewer than 2 images (trivially 1). Computed from
    the sums as ``sum (z - mu)^2 = sum z^2 - n Np sum_c mu_c^2`` in float64.
    """
    n = sums.count
    if n < 2:
        return None
    n_tokens = sums.total.shape[1]
    mean_t = sums.total / n  # (D, Np, C): mean over images
    mu = mean_t.mean(1, keepdim=True)  # (D, 1, C)
    between = n * (mean_t - mu).square().sum((1, 2))
    total = sums.square - n * n_tokens * mu.square().sum((1, 2))
    return between / total


def positional_share_of(states: Sequence[Tensor], num_prefix: int) -> Tensor | None:
    """``positional_share`` of one batch of states: ``D x (B, N, C)`` -> ``(D,)`` (None for B < 2)."""
    return positional_share(PositionSums.of(states, num_prefix))
