"""A5 and A6: token embeddings (PCA, t-SNE, singular values) and how attention moves tokens.

States are ``(B, N, C)`` (or ``(N, C)`` for one image) with the prefix tokens first; they are dropped here.
Raw features, no normalization (A5). Which block and which state (post-attention or block output) a projection
shows is the caller's to record: these functions only see tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from backend.analysis._common import AnalysisArgumentError, as_float, check_prefix, singular_values_of

# Guards 0 / 0 in movement_coherence when no token moves: the coherence is then 0.
_MOVE_EPS = 1e-12


def _check_matrix(x: Tensor, name: str) -> None:
    if x.dim() != 2:
        raise AnalysisArgumentError(
            f"{name} must be a 2D (points, features) matrix, got shape {tuple(x.shape)}"
        )


def _project(centred: Tensor, k: int) -> Tensor:
    """Rows of a centred matrix on its top-k right singular vectors: sign-fixed, zero-padded to k columns.

    Sign convention (as sklearn's ``svd_flip``): each component's largest-magnitude coordinate is positive, so
    the result does not depend on the SVD backend's arbitrary signs.
    """
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    r = min(k, s.shape[0])
    coords = u[:, :r] * s[:r]
    if coords.shape[0]:
        peak = coords.abs().argmax(0)
        signs = torch.sign(coords[peak, torch.arange(r, device=coords.device)])
        coords = coords * torch.where(signs == 0, torch.ones_like(signs), signs)
    if r < k:
        coords = torch.cat([coords, coords.new_zeros(coords.shape[0], k - r)], dim=1)
    return coords


def pca_2d(x: Tensor) -> Tensor:
    """Deterministic 2D PCA of ``(n, C)`` points -> ``(n, 2)`` (centred, sign-fixed; zeros where rank < 2)."""
    _check_matrix(x, "x")
    x = as_float(x)
    return _project(x - x.mean(0, keepdim=True), 2)


def tsne_2d(x: Tensor, perplexity: float = 20.0, seed: int = 0) -> Tensor:
    """t-SNE of ``(n, C)`` points to ``(n, 2)`` (A5: learning rate auto, random init, seeded).

    sklearn needs ``perplexity < n``, so it is clamped to ``n - 1`` for small sets; fewer than 2 points
    map to 0.
    Runs on the CPU (sklearn); the result comes back on the input's device as float32.
    """
    from sklearn.manifold import TSNE  # heavy import, only when t-SNE is asked for

    _check_matrix(x, "x")
    if perplexity <= 0:
        raise AnalysisArgumentError(f"perplexity must be positive, got {perplexity}")
    n = x.shape[0]
    if n < 2:
        return torch.zeros(n, 2, device=x.device)
    data = x.detach().to("cpu", torch.float32).numpy()
    tsne = TSNE(
        n_components=2,
        perplexity=min(float(perplexity), n - 1.0),
        learning_rate="auto",
        init="random",
        random_state=seed,
    )
    out = np.asarray(tsne.fit_transform(data), dtype=np.float32)
    return torch.from_numpy(out).to(x.device)


def singular_values(z: Tensor, num_prefix: int, centre: bool = False) -> Tensor:
    """Singular values of each image's patch-token matrix, ``(B, N, C)`` -> ``(B, min(Np, C))``, descending.

    Raw tokens by default, as A5 says; ``centre=True`` removes each image's mean token first (an option).
    """
    if z.dim() != 3:
        raise AnalysisArgumentError(f"z must be (B, N, C), got shape {tuple(z.shape)}")
    check_prefix(z.shape[1], num_prefix)
    x = as_float(z[:, num_prefix:])
    if centre:
        x = x - x.mean(1, keepdim=True)
    return singular_values_of(x).to(x.dtype)


def _displacements(x_in: Tensor, x_out: Tensor, num_prefix: int) -> Tensor:
    if x_in.shape != x_out.shape or x_in.dim() < 2:
        raise AnalysisArgumentError(
            f"x_in and x_out must both be (..., N, C) of one shape, "
            f"got {tuple(x_in.shape)} and {tuple(x_out.shape)}"
        )
    check_prefix(x_in.shape[-2], num_prefix)
    return as_float(x_out[..., num_prefix:, :]) - as_float(x_in[..., num_prefix:, :])


def movement_coherence(x_in: Tensor, x_out: Tensor, num_prefix: int) -> Tensor:
    """A6 scalar ``||mean_t d_t|| / mean_t ||d_t||``, ``d_t = x_out[t] - x_in[t]``: ``(B, N, C)`` -> ``(B,)``.

    1 = all tokens move together (the CL signature), near 0 = each its own way (MIM); 0 if nothing moves.
    """
    return layers_movement_coherence([x_in], [x_out], num_prefix)[0]


def layers_movement_coherence(x_in: Sequence[Tensor], x_out: Sequence[Tensor], num_prefix: int) -> Tensor:
    """``movement_coherence`` of several (input, output) pairs, stacked: ``S x (B, N, C)`` -> ``(S, B)``."""
    if not x_in or len(x_in) != len(x_out):
        raise AnalysisArgumentError(
            f"need as many inputs as outputs, at least one; got {len(x_in)}, {len(x_out)}"
        )
    means, norms = [], []
    for a, b in zip(x_in, x_out, strict=True):
        d = _displacements(a, b, num_prefix)
        means.append(d.mean(-2))
        norms.append(torch.linalg.vector_norm(d, dim=-1).mean(-1))
    together = torch.linalg.vector_norm(torch.stack(means), dim=-1)
    return together / torch.stack(norms).clamp_min(_MOVE_EPS)


def movement_projection(x_in: Tensor, x_out: Tensor, num_prefix: int) -> tuple[Tensor, Tensor]:
    """A6 arrows for one image: ``(N, C)`` input and output states -> ``(T, 3)`` starts and ``(T, 3)`` ends.

    Both are projected onto the top-3 right singular vectors of the stacked ``[X_in; X_out]`` matrix centred
    by its mean row (sign-fixed as in ``pca_2d``), so arrows share one coordinate system.
    """
    if x_in.dim() != 2:
        raise AnalysisArgumentError(
            f"movement_projection takes one image (N, C), got shape {tuple(x_in.shape)}"
        )
    _displacements(x_in, x_out, num_prefix)  # shape checks
    a = as_float(x_in[num_prefix:])
    b = as_float(x_out[num_prefix:])
    stacked = torch.cat([a, b], dim=0)
    coords = _project(stacked - stacked.mean(0, keepdim=True), 3)
    t = a.shape[0]
    return coords[:t], coords[t:]
