"""Linear CKA (Kornblith et al. 2019) between every depth of two models, with a permutation null.

Inputs are per-image representations, one ``(N, C)`` matrix per depth (the mean of each image's patch tokens),
the same N images in the same order for both models. Columns are centred over images here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from backend.analysis._common import AnalysisArgumentError, as_float, check_prefix

CKA_PERMUTATIONS = 20
CKA_SEED = 0
CKA_REPRESENTATION = "each image's mean patch token (x_out, no prefix), centred over images"


def image_means(states: Sequence[Tensor], num_prefix: int) -> Tensor:
    """``D x (B, N, C)`` -> ``(D, B, C)``: each image's mean patch token (prefix dropped), per depth."""
    if not states:
        raise AnalysisArgumentError("need at least one state")
    check_prefix(int(states[0].shape[1]), num_prefix)
    return torch.stack([as_float(s[:, num_prefix:]).mean(1) for s in states])


def _grams(x: Tensor) -> Tensor:
    """``(D, N, C)`` -> centred Gram matrices ``(D, N, N)`` in float64: ``||Y^T X||_F^2 = <X X^T, Y Y^T>``."""
    x = x.double()
    x = x - x.mean(-2, keepdim=True)
    return x @ x.transpose(-1, -2)


def _cka(kx: Tensor, ky: Tensor) -> Tensor:
    """``(Dx, N, N)``, ``(..., Dy, N, N)`` -> ``(..., Dx, Dy)``; 0 where a representation is constant."""
    cross = torch.einsum("aij,...bij->...ab", kx, ky)
    norm_x = torch.linalg.matrix_norm(kx)  # ||X^T X||_F = ||X X^T||_F
    norm_y = torch.linalg.matrix_norm(ky)
    denom = norm_x[:, None] * norm_y.unsqueeze(-2)
    return torch.where(denom > 0, cross / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0)


def linear_cka(x: Tensor, y: Tensor) -> Tensor:
    """Linear CKA of ``(N, Cx)``, ``(N, Cy)``, columns centred: ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``.

    1 for representations equal up to rotation, isotropic scaling and translation; 0-d float64 tensor.
    """
    return cka_matrix(x[None], y[None])[0, 0]


def cka_matrix(x: Tensor, y: Tensor) -> Tensor:
    """CKA between every depth of two models: ``(Dx, N, Cx)``, ``(Dy, N, Cy)`` -> ``(Dx, Dy)`` float64."""
    _check_pair(x, y)
    return _cka(_grams(x), _grams(y))


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.dim() != 3 or y.dim() != 3:
        raise AnalysisArgumentError(
            f"expected (depths, images, channels) for both models, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[1] != y.shape[1]:
        raise AnalysisArgumentError(f"both models need the same images: {x.shape[1]} != {y.shape[1]}")
    if x.shape[1] < 2:
        raise AnalysisArgumentError(f"CKA needs at least 2 images, got {x.shape[1]}")


def permutations(n: int, count: int = CKA_PERMUTATIONS, seed: int = CKA_SEED) -> Tensor:
    """``(count, n)`` row permutations from one seeded generator (the null's, so tests can redo them)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=gen) for _ in range(count)])


@dataclass
class CkaResult:
    cka: Tensor  # (Dx, Dy)
    null: Tensor  # (count, Dx, Dy): CKA with the rows (images) of y shuffled
    calibrated: Tensor  # cka - mean(null)
    seed: int  # of the permutations


def cka_payload(res: CkaResult) -> dict[str, Any]:
    """A CKA result as the API's ``/sets/{id}/cka`` and ``vitscope analyze``'s ``metrics.json`` give it."""
    return {
        "depth_a": list(range(int(res.cka.shape[0]))),
        "depth_b": list(range(int(res.cka.shape[1]))),
        "representation": CKA_REPRESENTATION,
        "permutations": int(res.null.shape[0]),
        "seed": res.seed,
        "cka": res.cka.tolist(),
        "null_mean": res.null.mean(0).tolist(),
        "null_std": res.null.std(0, correction=0).tolist(),
        "calibrated": res.calibrated.tolist(),
    }


def cka_with_null(x: Tensor, y: Tensor, count: int = CKA_PERMUTATIONS, seed: int = CKA_SEED) -> CkaResult:
    """``cka_matrix`` plus its permutation null (rows of y shuffled, ``count`` seeded permutations).

    With few images CKA of unrelated representations is far from 0 (the null's mean says how far);
    ``calibrated = cka - mean(null)`` removes that bias.
    """
    _check_pair(x, y)
    if count < 1:
        raise AnalysisArgumentError(f"count must be >= 1, got {count}")
    kx, ky = _grams(x), _grams(y)
    perm = permutations(int(x.shape[1]), count, seed).to(ky.device)
    cka = _cka(kx, ky)
    # P K P^T one permutation at a time: all at once is count x (Dy, N, N), 2.2 GB at 1024 images, 13 depths
    null = torch.stack([_cka(kx, ky[:, p[:, None], p[None, :]]) for p in perm])
    return CkaResult(cka, null, cka - null.mean(0), seed)
