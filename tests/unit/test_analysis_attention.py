"""Attention analyses (A1-A3, entropy, rollout) against ANALYSES.md's check values and by-hand references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.analysis import (
    AnalysisArgumentError,
    attention_entropy,
    attention_metrics,
    attention_nmi,
    attention_rollout,
    head_mean,
    layers_attention_metrics,
    mean_attention_distance,
    patch_attention,
    pixel_distances,
    query_index,
    query_map,
    rollout_query_map,
)
from backend.analysis.attention import HeadFusion


def with_prefix(patch: torch.Tensor, num_prefix: int, seed: int = 0) -> torch.Tensor:
    """Wrap row-stochastic ``(..., Np, Np)`` patch attention into ``(..., N, N)`` behind random prefix rows.

    Each patch row keeps its shape but loses a random share of its mass to the prefix columns, so the analyses
    must drop the prefix and renormalize to get ``patch`` back.
    """
    g = torch.Generator().manual_seed(seed)
    *lead, n_p, _ = patch.shape
    n = num_prefix + n_p
    full = torch.rand(*lead, n, n, generator=g, dtype=torch.float64) + 0.05
    scale = torch.rand(*lead, n_p, 1, generator=g, dtype=torch.float64) * 3 + 0.2
    full[..., num_prefix:, num_prefix:] = patch.double() * scale
    return (full / full.sum(-1, keepdim=True)).float()


def coords(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(h * w)
    return t // w, t % w


def box(h: int, w: int) -> torch.Tensor:
    """Uniform 3 x 3 box around each query, clipped at the borders."""
    r, c = coords(h, w)
    m = ((r[:, None] - r[None]).abs() <= 1) & ((c[:, None] - c[None]).abs() <= 1)
    m = m.double()
    return m / m.sum(-1, keepdim=True)


def naive_distance(a: np.ndarray, h: int, w: int, p: int) -> float:
    """A2 straight from the formula, with explicit loops over queries and keys (float64)."""
    a = a + 1e-32
    a = a / a.sum(-1, keepdims=True)
    total = 0.0
    for q in range(h * w):
        for k in range(h * w):
            total += a[q, k] * p * math.hypot(q // w - k // w, q % w - k % w)
    return total / (h * w)


def naive_nmi(a: np.ndarray) -> float:
    """A3 straight from the formula (float64)."""
    a = a + 1e-8
    a = a / a.sum(-1, keepdims=True)
    q = a.shape[0]
    p_q = 1.0 / q
    p_k = (p_q * a).sum(0)
    mutual = sum(p_q * a[i, j] * math.log(a[i, j] / p_k[j]) for i in range(q) for j in range(q))
    h_k = -float((p_k * np.log(p_k)).sum())
    return mutual / math.sqrt(math.log(q) * h_k)


H14, P16 = 14, 16


@pytest.fixture(scope="module")
def check_patterns() -> torch.Tensor:
    """(1, 3, 1 + 196, 1 + 196): uniform, identity and 3 x 3 box attention behind one CLS token."""
    n_p = H14 * H14
    patterns = torch.stack(
        [torch.full((n_p, n_p), 1.0 / n_p, dtype=torch.float64), torch.eye(n_p).double(), box(H14, H14)]
    )
    return with_prefix(patterns[None], num_prefix=1)


def test_distance_check_values(check_patterns: torch.Tensor) -> None:
    d = mean_attention_distance(check_patterns, (H14, H14), P16, num_prefix=1)
    assert d.shape == (1, 3)
    uniform, identity, box3 = d[0].tolist()
    assert uniform == pytest.approx(116.49, abs=0.005)  # ANALYSES.md gives two decimals
    assert identity == pytest.approx(0.0, abs=1e-4)
    assert box3 == pytest.approx(16.70, abs=0.005)
    # the same values to 1e-4 (relative) from a by-hand loop
    ref_uniform = naive_distance(np.full((196, 196), 1 / 196), H14, H14, P16)
    ref_box = naive_distance(box(H14, H14).numpy(), H14, H14, P16)
    assert uniform == pytest.approx(ref_uniform, rel=1e-4)
    assert box3 == pytest.approx(ref_box, rel=1e-4)


def test_nmi_check_values(check_patterns: torch.Tensor) -> None:
    nmi = attention_nmi(check_patterns, num_prefix=1)
    uniform, identity, box3 = nmi[0].tolist()
    assert uniform == pytest.approx(0.0, abs=1e-4)
    assert identity == pytest.approx(0.99999, abs=1e-4)
    # the 1e-8 epsilon (!) keeps identity visibly below 1 (no epsilon, or A2's 1e-32, gives 1 - 1e-7 or so)
    assert identity < 1 - 2e-6
    assert box3 == pytest.approx(0.6046, abs=1e-4)


def test_nmi_of_equal_rows_is_zero() -> None:
    g = torch.Generator().manual_seed(1)
    row = torch.rand(196, generator=g, dtype=torch.float64)
    equal = (row / row.sum()).expand(196, 196)
    nmi = attention_nmi(with_prefix(equal[None, None], 1), num_prefix=1)
    assert nmi.item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize(("grid", "num_prefix"), [((3, 5), 5), ((4, 2), 0), ((2, 3), 1)])
def test_distance_and_nmi_match_formula_on_other_grids(grid: tuple[int, int], num_prefix: int) -> None:
    """Non-square grids, registers (prefix 5), no prefix: random attention against the by-hand formulas."""
    h, w = grid
    g = torch.Generator().manual_seed(2)
    patch = torch.softmax(3 * torch.randn(2, 3, h * w, h * w, generator=g, dtype=torch.float64), -1)
    attn = with_prefix(patch, num_prefix)
    d = mean_attention_distance(attn, grid, 16, num_prefix)
    nmi = attention_nmi(attn, num_prefix)
    assert d.shape == nmi.shape == (2, 3)
    for b in range(2):
        for head in range(3):
            a = patch[b, head].numpy()
            assert d[b, head].item() == pytest.approx(naive_distance(a, h, w, 16), rel=1e-4)
            assert nmi[b, head].item() == pytest.approx(naive_nmi(a), rel=1e-4, abs=1e-6)


def test_distance_uses_row_major_grid() -> None:
    """Every query attends only to patch (row 2, col 4) of a 3 x 5 grid: mean of P * |(r, c) - (2, 4)|."""
    h, w, p = 3, 5, 14
    patch = torch.zeros(h * w, h * w, dtype=torch.float64)
    patch[:, 2 * w + 4] = 1.0
    d = mean_attention_distance(with_prefix(patch[None, None], 5), (h, w), p, num_prefix=5).item()
    expected = np.mean([p * math.hypot(r - 2, c - 4) for r in range(h) for c in range(w)])
    assert d == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(("grid", "num_prefix"), [((14, 14), 1), ((3, 5), 5), ((4, 2), 0)])
def test_attention_metrics_equals_the_reference_functions(grid: tuple[int, int], num_prefix: int) -> None:
    """The one-sweep path of compute_metrics against the three straightforward functions, including a row with
    no mass on patches (all on the prefix) and rows with exact zeros."""
    h, w = grid
    n = num_prefix + h * w
    g = torch.Generator().manual_seed(5)
    attn = torch.softmax(4 * torch.randn(2, 3, n, n, generator=g), -1)
    attn[0, 0, -1] = torch.eye(n)[0] if num_prefix else torch.eye(n)[1]  # all on CLS (or one-hot)
    attn[1, 2, num_prefix:, num_prefix:] = torch.eye(h * w)  # identity on patches, zeros elsewhere
    for dtype in (torch.float32, torch.float16):
        a = attn.to(dtype)
        m = attention_metrics(a, grid, 16, num_prefix)
        torch.testing.assert_close(
            m.distance, mean_attention_distance(a, grid, 16, num_prefix), rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(m.nmi, attention_nmi(a, num_prefix), rtol=0, atol=1e-5)
        torch.testing.assert_close(m.entropy, attention_entropy(a, num_prefix), rtol=0, atol=1e-5)


def test_layers_attention_metrics_stacks_the_layers() -> None:
    g = torch.Generator().manual_seed(6)
    attns = [torch.softmax(torch.randn(2, 3, 5 + 12, 5 + 12, generator=g), -1) for _ in range(4)]
    stacked = layers_attention_metrics(attns, (3, 4), 16, 5)
    for field, values in zip(("distance", "nmi", "entropy"), stacked, strict=True):
        assert values.shape == (4, 2, 3)
        one_by_one = torch.stack([getattr(attention_metrics(a, (3, 4), 16, 5), field) for a in attns])
        torch.testing.assert_close(values, one_by_one)


def test_pixel_distances() -> None:
    d = pixel_distances((3, 5), 16)
    assert d.shape == (15, 15)
    assert d[0, 5].item() == pytest.approx(16.0)  # one row down
    assert d[0, 1].item() == pytest.approx(16.0)  # one column right
    assert d[0, 6].item() == pytest.approx(16 * math.sqrt(2))
    assert d[0, 14].item() == pytest.approx(16 * math.hypot(2, 4))
    assert torch.equal(d.diagonal(), torch.zeros(15))


def test_patch_attention_drops_prefix_and_renormalizes() -> None:
    patch = box(3, 4)[None, None]
    a = patch_attention(with_prefix(patch, 5), 5)
    assert a.shape == (1, 1, 12, 12)
    torch.testing.assert_close(a.double(), patch, atol=1e-6, rtol=0)
    assert torch.allclose(patch_attention(with_prefix(patch, 5), 5, eps=1e-2).sum(-1), torch.ones(1, 1, 12))


def test_entropy() -> None:
    n_p = 12
    patterns = torch.stack([torch.full((n_p, n_p), 1.0 / n_p, dtype=torch.float64), torch.eye(n_p).double()])
    ent = attention_entropy(with_prefix(patterns[None], 1), 1)
    assert ent.shape == (1, 2)
    assert ent[0, 0].item() == pytest.approx(math.log(n_p), abs=1e-4)
    assert ent[0, 1].item() == pytest.approx(0.0, abs=1e-4)
    g = torch.Generator().manual_seed(3)
    a = torch.softmax(torch.randn(n_p, n_p, generator=g, dtype=torch.float64), -1)
    expected = -sum(float(a[q, k] * math.log(a[q, k])) for q in range(n_p) for k in range(n_p)) / n_p
    assert attention_entropy(with_prefix(a, 5), 5).item() == pytest.approx(expected, rel=1e-4)


def test_query_map_orientation_non_square() -> None:
    """One-hot attention from each query to itself lights exactly grid cell (r, c) of an H x W map."""
    h, w, prefix = 3, 5, 5
    attn = with_prefix(torch.eye(h * w).double()[None, None].expand(2, 4, -1, -1), prefix)
    for r, c in [(0, 0), (0, 4), (2, 1), (1, 3)]:
        m = query_map(attn, (h, w), prefix, query_index(r, c, (h, w)))
        assert m.shape == (2, 4, h, w)
        expected = torch.zeros(h, w)
        expected[r, c] = 1.0
        torch.testing.assert_close(m, expected.expand(2, 4, h, w), atol=1e-6, rtol=0)


def test_query_map_cls_row() -> None:
    h, w = 3, 5
    attn = torch.rand(3, 1 + h * w, 1 + h * w)  # (heads, N, N): leading dims are free
    attn[:, 0, 1:] = 0.0
    attn[:, 0, 1 + 2 * w + 1] = 0.5  # CLS looks at patch (2, 1) and at itself
    attn[:, 0, 0] = 0.5
    m = query_map(attn, (h, w), 1, None)
    assert m.shape == (3, h, w)
    assert torch.all(m[:, 2, 1] == 1.0) and m.sum().item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="prefix"):
        query_map(attn[:, 1:, 1:], (h, w), 0, None)


def test_query_map_rejects_bad_arguments() -> None:
    attn = torch.rand(1, 1, 13, 13)
    with pytest.raises(ValueError):
        query_map(attn, (3, 4), 1, 12)
    with pytest.raises(ValueError):
        query_map(attn, (4, 4), 1, 0)  # 13 tokens are not 1 + 16
    with pytest.raises(AnalysisArgumentError):
        query_index(3, 0, (3, 4))
    with pytest.raises(ValueError):
        mean_attention_distance(attn, (3, 3), 16, 1)


def test_head_mean_and_half_precision() -> None:
    attn = with_prefix(box(3, 4)[None, None].expand(2, 3, -1, -1), 1)
    assert head_mean(attn).shape == (2, 13, 13)
    full = mean_attention_distance(attn, (3, 4), 16, 1)
    half = mean_attention_distance(attn.half(), (3, 4), 16, 1)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=2e-3, atol=0)


def _random_attentions(layers: int, b: int, heads: int, n: int, seed: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(b, heads, n, n, generator=g), -1) for _ in range(layers)]


def test_rollout_rows_sum_to_one() -> None:
    attns = _random_attentions(4, 2, 3, 1 + 12)
    fusions: list[HeadFusion] = ["mean", "max", "min"]
    for fusion in fusions:
        for discard in (0.0, 0.5):
            r = attention_rollout(attns, 1, head_fusion=fusion, discard_ratio=discard)
            assert r.shape == (2, 13, 13)
            torch.testing.assert_close(r.sum(-1), torch.ones(2, 13))
            assert torch.all(r >= 0)


def test_rollout_by_hand() -> None:
    """Two layers, one head: ((A2 + I) / 2) @ ((A1 + I) / 2), last layer on the left."""
    a1 = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    a2 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    r = attention_rollout([a1[None, None], a2[None, None]], 0)
    eye = torch.eye(3)
    torch.testing.assert_close(r[0], ((a2 + eye) / 2) @ ((a1 + eye) / 2))
    # identity attention everywhere leaves every token on itself
    ident = [torch.eye(5).expand(1, 2, 5, 5) for _ in range(3)]
    torch.testing.assert_close(attention_rollout(ident, 1)[0], torch.eye(5))


def test_rollout_query_map() -> None:
    attns = _random_attentions(3, 2, 2, 5 + 6)
    m = rollout_query_map(attns, (2, 3), 5, None)
    assert m.shape == (2, 2, 3)
    torch.testing.assert_close(m.sum((-2, -1)), torch.ones(2))
    with pytest.raises(ValueError):
        attention_rollout([], 0)


def test_uniform_attention_distance_check_values() -> None:
    """14 x 14 at patch 16: 116.49 px (the mean over all ordered pairs of patch centres, by hand)."""
    from backend.analysis import uniform_attention_distance

    cells = [(r, c) for r in range(14) for c in range(14)]
    by_hand = sum(16 * math.dist(a, b) for a in cells for b in cells) / len(cells) ** 2
    assert uniform_attention_distance((14, 14), 16) == pytest.approx(by_hand, abs=1e-9)
    assert uniform_attention_distance((14, 14), 16) == pytest.approx(116.49, abs=5e-3)
    assert uniform_attention_distance((8, 8), 4) == pytest.approx(16.546, abs=1e-3)
    # a 1 x 2 grid: half the pairs are self (0), half one patch apart
    assert uniform_attention_distance((1, 2), 10) == pytest.approx(5.0)


@pytest.mark.parametrize(("grid", "num_prefix"), [((14, 14), 1), ((8, 8), 1), ((3, 5), 4)])
def test_relative_distance_uniform_is_one_identity_is_zero(grid: tuple[int, int], num_prefix: int) -> None:
    from backend.analysis import relative_attention_distance

    n_p = grid[0] * grid[1]
    uniform = with_prefix(torch.full((1, 1, n_p, n_p), 1.0 / n_p, dtype=torch.float64), num_prefix)
    identity = with_prefix(torch.eye(n_p, dtype=torch.float64)[None, None], num_prefix)
    for patch in (16, 4):
        rel_u = relative_attention_distance(
            mean_attention_distance(uniform, grid, patch, num_prefix), grid, patch
        )
        rel_i = relative_attention_distance(
            mean_attention_distance(identity, grid, patch, num_prefix), grid, patch
        )
        assert rel_u.item() == pytest.approx(1.0, abs=1e-5)
        assert rel_i.item() == pytest.approx(0.0, abs=1e-5)
