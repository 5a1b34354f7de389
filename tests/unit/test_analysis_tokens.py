"""A5 (PCA, t-SNE, singular values) and A6 (movement coherence and projection)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from backend.analysis import movement_coherence, movement_projection, pca_2d, singular_values, tsne_2d


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_pca_matches_sklearn_up_to_sign_and_is_sign_fixed() -> None:
    x = torch.randn(30, 6, generator=gen(0), dtype=torch.float64) * torch.tensor([5.0, 3, 1, 0.5, 0.2, 0.1])
    ours = pca_2d(x)
    assert ours.shape == (30, 2)
    ref = PCA(n_components=2).fit_transform(x.numpy())
    np.testing.assert_allclose(np.abs(ours.numpy()), np.abs(ref), atol=1e-8)
    torch.testing.assert_close(pca_2d(-x), ours)  # a mirrored cloud gets the same picture
    torch.testing.assert_close(pca_2d(x + 100.0), ours)  # centred
    for k in range(2):  # the sign convention: each component's largest-magnitude coordinate is positive
        assert ours[ours[:, k].abs().argmax(), k] > 0


def test_pca_of_rank_one_and_tiny_sets() -> None:
    t = torch.linspace(-1, 1, 7, dtype=torch.float64)
    x = t[:, None] * torch.tensor([[3.0, 4.0]], dtype=torch.float64)  # on a line, |direction| = 5
    p = pca_2d(x)
    torch.testing.assert_close(p[:, 0].abs(), (5 * t).abs())
    torch.testing.assert_close(p[:, 1], torch.zeros(7, dtype=torch.float64), atol=1e-12, rtol=0)
    assert pca_2d(torch.ones(1, 4)).shape == (1, 2)  # one point: zeros, no error


def test_tsne_separates_images_and_is_seeded() -> None:
    g = gen(1)
    centres = torch.tensor([[0.0] * 8, [20.0] * 8])
    x = torch.cat([centres[i] + torch.randn(15, 8, generator=g) for i in range(2)])
    emb = tsne_2d(x, perplexity=20, seed=0)  # perplexity 20 < 30 points
    assert emb.shape == (30, 2) and emb.dtype == torch.float32
    a, b = emb[:15], emb[15:]
    within = max(torch.cdist(a, a).max().item(), torch.cdist(b, b).max().item())
    assert torch.cdist(a, b).min().item() > within / 4
    torch.testing.assert_close(tsne_2d(x, perplexity=20, seed=0), emb)


def test_tsne_clamps_perplexity_for_small_sets() -> None:
    x = torch.randn(5, 3, generator=gen(2))
    assert tsne_2d(x, perplexity=20).shape == (5, 2)
    assert tsne_2d(x[:1]).shape == (1, 2)
    with pytest.raises(ValueError):
        tsne_2d(x, perplexity=0)


def test_singular_values_per_image_drop_prefix() -> None:
    u = torch.tensor([2.0, 0.0, 3.0, 0.0, 6.0, 0.0], dtype=torch.float64)  # |u| = 7
    v = torch.tensor([3.0, 0.0, 4.0, 0.0], dtype=torch.float64)  # |v| = 5
    rank1 = torch.outer(u, v)
    prefix = torch.full((5, 4), 1e3, dtype=torch.float64)
    z = torch.stack([torch.cat([prefix, rank1]), torch.cat([prefix, 2 * rank1])])
    s = singular_values(z, 5)
    assert s.shape == (2, 4)
    torch.testing.assert_close(s[:, 0], torch.tensor([35.0, 70.0], dtype=torch.float64))
    torch.testing.assert_close(s[:, 1:], torch.zeros(2, 3, dtype=torch.float64), atol=1e-9, rtol=0)
    const = torch.ones(1, 7, 3)
    assert singular_values(const, 1)[0, 0].item() == pytest.approx(math.sqrt(6 * 3), rel=1e-5)
    torch.testing.assert_close(singular_values(const, 1, centre=True), torch.zeros(1, 3))


def test_movement_coherence() -> None:
    x_in = torch.randn(3, 1 + 196, 64, generator=gen(3))
    shift = torch.randn(1, 1, 64, generator=gen(4))
    moved = x_in + shift
    moved[:, 0] += 1e3  # the prefix token's move must not count
    torch.testing.assert_close(movement_coherence(x_in, moved, 1), torch.ones(3))
    random_moves = x_in + torch.randn(3, 1 + 196, 64, generator=gen(5))
    assert torch.all(movement_coherence(x_in, random_moves, 1) < 0.15)  # about 1 / sqrt(196)
    assert torch.all(movement_coherence(x_in, x_in, 1) == 0)


def test_movement_coherence_by_hand() -> None:
    x_in = torch.zeros(2, 2, 2)
    x_out = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    torch.testing.assert_close(movement_coherence(x_in, x_out, 0), torch.tensor([0.0, math.sqrt(0.5)]))


def test_movement_projection() -> None:
    t, c = 20, 16
    x_in = 0.01 * torch.randn(2 + t, c, generator=gen(6), dtype=torch.float64)
    x_out = x_in.clone()
    x_out[2:, 3] += 10.0  # every patch token moves by 10 along one axis; the 2 prefix tokens stay put
    start, end = movement_projection(x_in, x_out, 2)
    assert start.shape == end.shape == (t, 3)
    arrows = end - start
    torch.testing.assert_close(
        arrows.norm(dim=-1), torch.full((t,), 10.0, dtype=torch.float64), rtol=1e-3, atol=0
    )
    torch.testing.assert_close(arrows, arrows[:1].expand(t, 3), rtol=0, atol=1e-2)
    torch.testing.assert_close(
        torch.cat([start, end]).mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0
    )
    small_in, small_out = movement_projection(torch.randn(4, 2), torch.randn(4, 2), 0)
    assert small_in.shape == small_out.shape == (4, 3)  # two features: the third axis is padded
    with pytest.raises(ValueError):
        movement_projection(x_in[None], x_out[None], 2)
