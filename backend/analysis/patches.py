"""Patch-token views: the cosine similarity of one patch's token to every patch, and PCA of the patch tokens
to RGB (as DINOv2 / DINOv3 show their features).

Tokens are ``(Np, C)`` patch tokens of one image and depth (prefix dropped), row-major: patch ``t`` at row
``t // W``, column ``t % W``. Raw features, no normalization other than what each function says.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from backend.analysis._common import AnalysisArgumentError, as_float

_COS_EPS = 1e-12  # a zero token has similarity 0 with everything
_RANK_TOL = 1e-6  # components below this share of the largest singular value are rounding noise


def _check(tokens: Tensor) -> None:
    if tokens.dim() != 2 or tokens.shape[0] < 1:
        raise AnalysisArgumentError(f"patch tokens must be (Np, C), got shape {tuple(tokens.shape)}")


def patch_similarity(tokens: Tensor, query: int) -> Tensor:
    """Cosine similarity of patch ``query``'s token with every patch token: ``(Np, C)`` -> ``(Np,)``."""
    _check(tokens)
    n = int(tokens.shape[0])
    if not 0 <= query < n:
        raise AnalysisArgumentError(f"query must be a patch index in [0, {n}), got {query}")
    z = as_float(tokens)
    unit = z / torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min(_COS_EPS)
    return unit @ unit[query]


class PcaRgb(NamedTuple):
    rgb: Tensor  # (Np, 3) in [0, 1]
    explained: Tensor  # (3,): share of the fitted tokens' variance on each component


def pca_rgb(tokens: Tensor, fit: Tensor | None = None) -> PcaRgb:
    """The patch tokens on the top 3 principal components, each scaled to [0, 1] over this image's patches.

    Components are fitted on ``fit`` (``(M, C)``, e.g. the tokens of every image of a set) or on ``tokens``
    themselves, centred by the fitted mean; signs fixed so that each component's largest-magnitude coordinate
    over the fitted tokens is positive (as ``tokens.pca_2d``). Fewer than 3 components (rank, relative
    tolerance 1e-6): the missing channels are 0.
    """
    _check(tokens)
    z = as_float(tokens)
    base = z if fit is None else as_float(fit)
    _check(base)
    if base.shape[1] != z.shape[1]:
        raise AnalysisArgumentError(f"fit has {base.shape[1]} channels, tokens {z.shape[1]}")
    mean = base.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(base - mean, full_matrices=False)
    k = min(3, int((s > s[0] * _RANK_TOL).sum()) if s.numel() and s[0] > 0 else 0)
    comps = vh[:k]
    fitted = (base - mean) @ comps.T
    peak = fitted.abs().argmax(0)
    signs = torch.sign(fitted[peak, torch.arange(k, device=z.device)])
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
    proj = (z - mean) @ comps.T  # (Np, k)
    lo, hi = proj.amin(0), proj.amax(0)
    rgb = (proj - lo) / (hi - lo).clamp_min(torch.finfo(proj.dtype).tiny)
    var = s.square()
    explained = var[:k] / var.sum().clamp_min(torch.finfo(var.dtype).tiny)
    if k < 3:
        rgb = torch.cat([rgb, rgb.new_zeros(rgb.shape[0], 3 - k)], dim=1)
        explained = torch.cat([explained, explained.new_zeros(3 - k)])
    return PcaRgb(rgb, explained)
