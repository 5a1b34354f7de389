"""Attention analyses (ANALYSES.md A1-A3), plus attention entropy and rollout.

Attention tensors are ``(..., N, N)`` softmax probabilities with ``N = num_prefix + H * W`` (prefix = CLS and
registers, first); the leading dims are usually ``(B, heads)``. Every metric keeps the leading dims, so it is
computed per image and per head, and the caller averages afterwards (ANALYSES.md section 0, averaging order).
All work stays on the input's device; float16 is promoted to float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from backend.analysis._common import AnalysisArgumentError, as_float, check_grid, check_prefix, check_tokens

DISTANCE_EPS = 1e-32  # A2
NMI_EPS = 1e-8  # A3: a different epsilon from A2 (!)
# The entropy shares A3's epsilon, so that attention_metrics computes both from one tensor; it adds at most
# (Np - 1) * 1e-8 * 18.4 nats to a one-hot row (4e-5 on 14 x 14).
ENTROPY_EPS = NMI_EPS


def _check_attention(attn: Tensor) -> int:
    if attn.dim() < 2 or attn.shape[-1] != attn.shape[-2]:
        raise AnalysisArgumentError(f"attention must be (..., N, N), got shape {tuple(attn.shape)}")
    return int(attn.shape[-1])


def patch_attention(attn: Tensor, num_prefix: int, eps: float = 0.0) -> Tensor:
    """Drop the prefix rows and columns of ``(..., N, N)``, add ``eps``, renormalize each row to sum 1.

    With ``eps = 0`` a row with no mass on patches becomes NaN (A1 uses no epsilon on purpose).
    """
    n = _check_attention(attn)
    check_prefix(n, num_prefix)
    a = as_float(attn)[..., num_prefix:, num_prefix:]
    if eps:
        a = a + eps
    return a / a.sum(-1, keepdim=True)


def head_mean(attn: Tensor) -> Tensor:
    """Mean over the heads axis of ``(B, heads, N, N)`` (or ``(heads, N, N)``) attention."""
    if attn.dim() < 3:
        raise AnalysisArgumentError(
            f"attention with heads must be (..., heads, N, N), got {tuple(attn.shape)}"
        )
    return as_float(attn).mean(dim=-3)


def query_index(row: int, col: int, grid: tuple[int, int]) -> int:
    """The 0-based patch index of grid cell (row, col): ``row * W + col``."""
    h, w = check_grid(grid)
    if not (0 <= row < h and 0 <= col < w):
        raise AnalysisArgumentError(f"query ({row}, {col}) is outside the {h}x{w} grid")
    return row * w + col


def query_map(attn: Tensor, grid: tuple[int, int], num_prefix: int, query: int | None = None) -> Tensor:
    """A1: the attention of one query over the patches, ``(..., N, N)`` -> ``(..., H, W)``.

    ``query`` is a patch index (``row * W + col``, see ``query_index``); ``None`` takes the CLS row (the
    classic DINO map, an addition to the paper), which needs a prefix token. The row is renormalized over
    patches.
    """
    n = _check_attention(attn)
    h, w = check_tokens(n, grid, num_prefix)
    if query is None:
        if num_prefix < 1:
            raise AnalysisArgumentError("query=None takes the CLS row, but this model has no prefix token")
        src = 0
    else:
        if not 0 <= query < h * w:
            raise AnalysisArgumentError(f"query must be a patch index in [0, {h * w}), got {query}")
        src = num_prefix + query
    row = as_float(attn)[..., src, num_prefix:]
    row = row / row.sum(-1, keepdim=True)
    return row.reshape(*row.shape[:-1], h, w)


def pixel_distances(
    grid: tuple[int, int],
    patch_size: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``(Np, Np)`` Euclidean distances between patch centres in pixels of the model input (A2)."""
    h, w = check_grid(grid)
    if patch_size < 1:
        raise AnalysisArgumentError(f"patch_size must be a positive int, got {patch_size}")
    t = torch.arange(h * w, device=device)
    r = (t // w).to(dtype)
    c = (t % w).to(dtype)
    return patch_size * torch.hypot(r[:, None] - r[None, :], c[:, None] - c[None, :])


def uniform_attention_distance(grid: tuple[int, int], patch_size: int) -> float:
    """A2 of uniform attention (every query attends every patch equally, itself included), in pixels.

    The mean distance between two patch centres of the grid: 116.49 px on 14 x 14 at patch 16, 16.55 px on
    8 x 8 at patch 4. The natural unit for comparing models whose grids or input sizes differ.
    """
    return float(pixel_distances(grid, patch_size, dtype=torch.float64).mean())


def relative_attention_distance(distance: Tensor, grid: tuple[int, int], patch_size: int) -> Tensor:
    """A2 divided by the same grid's uniform-attention distance: 1 = uniform, 0 = every query on itself.

    The patch size cancels; the value depends on the grid only, so a 32 px and a 224 px model share one axis.
    """
    return distance / uniform_attention_distance(grid, patch_size)


def _distance(a: Tensor, dist: Tensor) -> Tensor:
    # sum_q sum_k a[q, k] D[q, k] / Nq as one mat-vec: no (..., Np, Np) temporary.
    return (a.flatten(-2) @ dist.to(a.dtype).flatten()) / a.shape[-1]


def mean_attention_distance(attn: Tensor, grid: tuple[int, int], patch_size: int, num_prefix: int) -> Tensor:
    """A2: mean attention distance in pixels, ``(..., N, N)`` -> ``(...)`` (per image and head)."""
    check_tokens(_check_attention(attn), grid, num_prefix)
    a = patch_attention(attn, num_prefix, DISTANCE_EPS)
    return _distance(a, pixel_distances(grid, patch_size, a.device, a.dtype))


def _mean_row_entropy(a: Tensor) -> Tensor:
    # xlogy: 0 * log 0 = 0, so exact zeros (underflow) never give NaN.
    return -torch.special.xlogy(a, a).sum(-1).mean(-1)


def _nmi(a: Tensor) -> Tensor:
    # I = H(k) - H(k | q) with p(q) uniform; H(q) = log Q.
    q = a.shape[-1]
    p_k = a.mean(-2)
    h_k = -torch.special.xlogy(p_k, p_k).sum(-1)
    mutual = h_k - _mean_row_entropy(a)
    return mutual / torch.sqrt(math.log(q) * h_k)


def attention_nmi(attn: Tensor, num_prefix: int) -> Tensor:
    """A3: normalized mutual information between query and key, ``(..., N, N)`` -> ``(...)``.

    Natural log (the base cancels); 1 = every query looks somewhere else, 0 = every query sees the same map
    (attention collapse).
    """
    n = _check_attention(attn)
    if n - num_prefix < 2:
        raise AnalysisArgumentError(f"NMI needs at least 2 patch tokens, got {n - num_prefix}")
    return _nmi(patch_attention(attn, num_prefix, NMI_EPS))


def attention_entropy(attn: Tensor, num_prefix: int) -> Tensor:
    """Mean over queries of the row entropy (nats) of the patch attention: ``(..., N, N)`` -> ``(...)``.

    Rows are renormalized over patches first (with ``ENTROPY_EPS``, A3's epsilon). An addition to the paper:
    0 for one-hot rows, ``log(Np)`` for uniform rows. Unlike NMI it does not tell collapse (all rows equal)
    from broad query-specific attention; the two together do.
    """
    return _mean_row_entropy(patch_attention(attn, num_prefix, ENTROPY_EPS))


class AttentionMetrics(NamedTuple):
    distance: Tensor  # A2, pixels
    nmi: Tensor  # A3
    entropy: Tensor  # nats


class _RowStats(NamedTuple):
    """The ``O(Np^2)`` part of one layer's metrics; what follows is ``O(Np)`` (see attention_metrics)."""

    mass: Tensor  # (..., Q): S_q = sum_k A[q, k]
    weighted: Tensor  # (..., Q): sum_k A[q, k] D[q, k]
    x_log_x: Tensor  # (..., Q): sum_k X log X, X = A + 1e-8
    col: Tensor  # (..., K): sum_q X[q, k] / s_q


def _row_stats(a: Tensor, dist: Tensor) -> _RowStats:
    q = a.shape[-1]
    mass = a.sum(-1)
    # A2 from A itself, so that a row with no patch mass gets exactly the uniform row's distance
    weighted = torch.einsum("...qk,qk->...q", a, dist)
    x = a + NMI_EPS
    inv_s = 1.0 / (mass + q * NMI_EPS)
    x_log_x = x.log().mul_(x).sum(-1)  # in place: one temporary instead of two
    col = (inv_s.unsqueeze(-2) @ x).squeeze(-2)
    return _RowStats(mass, weighted, x_log_x, col)


def _metrics_from_stats(stats: _RowStats, dist: Tensor) -> AttentionMetrics:
    """Finish attention_metrics from the row statistics; works on statistics of several layers stacked."""
    q = stats.mass.shape[-1]
    distance = (stats.weighted + DISTANCE_EPS * dist.sum(-1)) / (stats.mass + q * DISTANCE_EPS)
    inv_s = 1.0 / (stats.mass + q * NMI_EPS)
    entropy = -(stats.x_log_x * inv_s + inv_s.log()).mean(-1)  # log s_q = -log(1 / s_q)
    p_k = stats.col / q
    h_k = -torch.special.xlogy(p_k, p_k).sum(-1)
    nmi = (h_k - entropy) / torch.sqrt(math.log(q) * h_k)
    return AttentionMetrics(distance.mean(-1), nmi, entropy)


def _patch_block(attn: Tensor, grid: tuple[int, int], num_prefix: int) -> Tensor:
    check_tokens(_check_attention(attn), grid, num_prefix)
    a = as_float(attn)[..., num_prefix:, num_prefix:]
    if a.shape[-1] < 2:
        raise AnalysisArgumentError(f"NMI needs at least 2 patch tokens, got {a.shape[-1]}")
    return a


def attention_metrics(
    attn: Tensor, grid: tuple[int, int], patch_size: int, num_prefix: int, dist: Tensor | None = None
) -> AttentionMetrics:
    """A2, A3 and the entropy of one layer in one sweep: ``(..., N, N)`` -> three ``(...)`` tensors.

    The same numbers as ``mean_attention_distance``, ``attention_nmi`` and ``attention_entropy`` (the tests
    check it) with about half the memory passes, for compute_metrics' time budget: the renormalized maps are
    never stored. With ``A`` the patch block, ``S_q`` its row sums and ``X = A + 1e-8``, a row of A3's map is
    ``X[q] / s_q`` with ``s_q = S_q + Np * 1e-8``, so ``sum_k a log a = (sum_k X log X) / s_q - log s_q`` and
    ``p(k) = mean_q X[q, k] / s_q``; A2's row is ``(A[q] + 1e-32) / (S_q + Np * 1e-32)``.
    ``dist`` is ``pixel_distances(grid, patch_size)``, to reuse across layers.
    """
    a = _patch_block(attn, grid, num_prefix)
    if dist is None:
        dist = pixel_distances(grid, patch_size, a.device, a.dtype)
    dist = dist.to(a.dtype)
    return _metrics_from_stats(_row_stats(a, dist), dist)


def layers_attention_metrics(
    attentions: Sequence[Tensor], grid: tuple[int, int], patch_size: int, num_prefix: int
) -> AttentionMetrics:
    """``attention_metrics`` of every layer, stacked: ``L x (B, heads, N, N)`` -> three ``(L, B, heads)``.

    Only the ``O(Np^2)`` sweep runs per layer; the rest runs once on the stacked row statistics, which keeps
    the number of kernel launches (what bounds this on a GPU) low without stacking the attention maps.
    """
    if not attentions:
        raise AnalysisArgumentError("layers_attention_metrics needs at least one layer")
    blocks = [_patch_block(attn, grid, num_prefix) for attn in attentions]
    dist = pixel_distances(grid, patch_size, blocks[0].device, blocks[0].dtype)
    per_layer = [_row_stats(a, dist.to(a.dtype)) for a in blocks]
    stacked = _RowStats(*(torch.stack(parts) for parts in zip(*per_layer, strict=True)))
    return _metrics_from_stats(stacked, dist.to(stacked.mass.dtype))


HeadFusion = Literal["mean", "max", "min"]


def attention_rollout(
    attentions: Sequence[Tensor],
    num_prefix: int = 0,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020): ``L x (B, heads, N, N)`` -> ``(B, N, N)``.

    Per layer: fuse the heads (mean by default, as in the paper), optionally zero the ``discard_ratio``
    smallest patch weights of each row (prefix columns are never discarded: ``num_prefix`` says which they
    are), add the identity for the residual path, renormalize rows; then multiply the layers, last on the
    left. Rows of the result sum to 1. An addition to the paper, not part of its code.
    """
    if not attentions:
        raise AnalysisArgumentError("attention_rollout needs at least one layer")
    if not 0.0 <= discard_ratio < 1.0:
        raise AnalysisArgumentError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    rollout: Tensor | None = None
    for attn in attentions:
        n = _check_attention(attn)
        check_prefix(n, num_prefix)
        if attn.dim() != 4:
            raise AnalysisArgumentError(f"each layer must be (B, heads, N, N), got {tuple(attn.shape)}")
        a = as_float(attn)
        if head_fusion == "mean":
            fused = a.mean(1)
        elif head_fusion == "max":
            fused = a.amax(1)
        elif head_fusion == "min":
            fused = a.amin(1)
        else:
            raise AnalysisArgumentError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
        k = int(discard_ratio * (n - num_prefix))
        if k > 0:
            patches = fused[..., num_prefix:]
            drop = patches.topk(k, dim=-1, largest=False).indices
            fused = torch.cat([fused[..., :num_prefix], patches.scatter(-1, drop, 0.0)], dim=-1)
        eye = torch.eye(n, device=a.device, dtype=a.dtype)
        step = fused + eye
        step = step / step.sum(-1, keepdim=True)
        rollout = step if rollout is None else step @ rollout
    assert rollout is not None
    return rollout


def rollout_query_map(
    attentions: Sequence[Tensor],
    grid: tuple[int, int],
    num_prefix: int,
    query: int | None = None,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
) -> Tensor:
    """The rollout row of one query (a patch index, or ``None`` for CLS) over the patches: ``(B, H, W)``."""
    rollout = attention_rollout(attentions, num_prefix, head_fusion, discard_ratio)
    return query_map(rollout, grid, num_prefix, query)
