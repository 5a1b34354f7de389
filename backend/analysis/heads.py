"""Attention analyses beyond the paper: how different the heads are, and what the CLS token attends to.

Attention is ``(B, heads, N, N)`` softmax probabilities, prefix (CLS, registers) first. Every function keeps
the image axis (and the head axis where there is one) and is vectorized over both; the caller averages.
Natural log throughout.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from backend.analysis._common import AnalysisArgumentError, as_float, check_prefix
from backend.analysis.attention import DISTANCE_EPS, patch_attention


def _check(attn: Tensor, num_prefix: int) -> int:
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise AnalysisArgumentError(f"attention must be (B, heads, N, N), got shape {tuple(attn.shape)}")
    n = int(attn.shape[-1])
    check_prefix(n, num_prefix)
    return n


def _entropy(p: Tensor) -> Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


def head_diversity(attn: Tensor, num_prefix: int) -> Tensor:
    """Mean Jensen-Shannon divergence between heads (patch attention rows): ``(B, heads, N, N)`` -> ``(B,)``.

    Rows are renormalized over patches as in A2 (``+ 1e-32``). For every pair of heads ``h < h'`` and every
    query ``q``: ``JS = H((P + Q) / 2) - (H(P) + H(Q)) / 2`` with ``P = A'_h[q]``, ``Q = A'_h'[q]``; the mean
    over pairs and queries. 0 = all heads alike, log 2 = every pair of heads attends disjoint patches.
    """
    _check(attn, num_prefix)
    b, heads = int(attn.shape[0]), int(attn.shape[1])
    if heads < 2:
        raise AnalysisArgumentError("head_diversity needs at least 2 heads")
    a = patch_attention(attn, num_prefix, DISTANCE_EPS)  # (B, H, Q, K)
    n_queries = int(a.shape[2])
    # The pairs' (H(P) + H(Q)) / 2 add up to (heads - 1) / 2 x the sum of the heads' H(P), per query. Every
    # entry is > 0 (the 1e-32), so a plain log serves: several times faster than xlogy.
    own = a.log().mul_(a).sum(-1).double().sum((1, 2)) * (-(heads - 1) / 2)  # (B,)
    # The mixtures of head h with every later head, one h at a time into two reused contiguous buffers: the
    # cost is one log per entry, not the allocation of a (B, pairs, Q, K) tensor and its copies. With
    # S = P + Q (rows summing to 2): H(S / 2) = log 2 - sum(S log S) / 2.
    by_head = a.transpose(0, 1).contiguous()  # (H, B, Q, K)
    pair_sum, logs = torch.empty_like(by_head[1:]), torch.empty_like(by_head[1:])
    s_log_s = torch.zeros(b, dtype=torch.float64, device=a.device)  # over pairs and queries
    for h in range(heads - 1):
        later = heads - 1 - h
        s = torch.add(by_head[h], by_head[h + 1 :], out=pair_sum[:later])  # every entry > 0
        s_log_s += torch.log(s, out=logs[:later]).mul_(s).sum(-1).double().sum((0, 2))
    pairs = heads * (heads - 1) // 2
    mixed = pairs * n_queries * math.log(2) - s_log_s / 2  # sum over pairs and queries of H(S / 2)
    return ((mixed - own) / (pairs * n_queries)).to(a.dtype)


def _cls_row(attn: Tensor, num_prefix: int) -> Tensor:
    if num_prefix < 1:
        raise AnalysisArgumentError("this model has no CLS token; query a patch or use mean")
    return attn[..., 0, :]


def cls_selectivity(attn: Tensor, num_prefix: int) -> Tensor:
    """Entropy of the CLS row over the patches (renormalized, ``+ 1e-32``) / log Np: ``(B, heads)``.

    1 = CLS attends all patches equally, 0 = one patch. Only for models whose token 0 is a CLS token: the
    caller checks that (``Trace.has_cls``), since a register in front looks the same here.
    """
    n = _check(attn, num_prefix)
    n_patches = n - num_prefix
    if n_patches < 2:
        raise AnalysisArgumentError(f"cls_selectivity needs at least 2 patch tokens, got {n_patches}")
    row = as_float(_cls_row(attn, num_prefix)[..., num_prefix:]) + DISTANCE_EPS
    row = row / row.sum(-1, keepdim=True)
    return _entropy(row) / math.log(n_patches)


def cls_self(attn: Tensor, num_prefix: int) -> Tensor:
    """Attention of the CLS token to itself, ``A[0, 0]`` (prefix included in the row): ``(B, heads)``."""
    _check(attn, num_prefix)
    return _cls_row(attn, num_prefix)[..., 0]
