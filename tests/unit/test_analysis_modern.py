"""Check values of the analyses beyond the paper, on constructed tensors whose answers are known by hand:
token norms, effective rank (RankMe), head diversity, CLS selectivity / self-attention, positional share and
linear CKA with its permutation null; and how they enter metrics.json."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import Tensor

from backend.analysis import AnalysisArgumentError
from backend.analysis.cka import cka_matrix, cka_with_null, image_means, linear_cka, permutations
from backend.analysis.heads import cls_selectivity, cls_self, head_diversity
from backend.analysis.modern import ModernValues, modern_values, summarize_modern
from backend.analysis.representation import (
    PositionSums,
    effective_rank,
    positional_share,
    positional_share_of,
    token_norms,
)
from backend.capture import Trace

LOG2 = math.log(2)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_norms(norms: Sequence[float], channels: int = 5, seed: int = 0) -> Tensor:
    """``(len(norms), channels)`` tokens with these L2 norms in random directions."""
    d = torch.randn(len(norms), channels, generator=gen(seed), dtype=torch.float64)
    return d / d.norm(dim=-1, keepdim=True) * torch.tensor(norms, dtype=torch.float64)[:, None]


def states_of(*images: Tensor, prefix: Tensor | None = None) -> Tensor:
    """``(B, N, C)`` from per-image patch tokens ``(Np, C)``, with prefix tokens in front."""
    x = torch.stack(images)
    if prefix is not None:
        x = torch.cat([prefix.expand(x.shape[0], -1, -1), x], 1)
    return x


# ------------------------------------------------------------------------------------------- token norms
def test_token_norms_mean_p99_max_and_outliers() -> None:
    cls = torch.full((1, 1, 5), 1e3, dtype=torch.float64)  # a huge prefix token must not count
    depth0 = states_of(with_norms([1] * 7 + [100]), prefix=cls)
    depth1 = states_of(with_norms([1, 2, 3, 4, 5, 6, 7, 8], seed=1), prefix=cls)
    out = token_norms([depth0, depth1], num_prefix=1)
    assert out.shape == (4, 2, 1)
    # mean, p99 (linear: 0.99 * 7 = 6.93 between the 7th and 8th sorted norm), max, fraction > 4 x median
    assert out[:, 0, 0].tolist() == pytest.approx([107 / 8, 1 + 0.93 * 99, 100, 1 / 8], rel=1e-12)
    assert out[:, 1, 0].tolist() == pytest.approx([4.5, 7.93, 8, 0], rel=1e-12)
    # the factor is a parameter: 1.5 x median 4.5 = 6.75 -> the norms 7 and 8
    assert token_norms([depth1], 1, outlier_factor=1.5)[3, 0, 0].item() == 0.25


def test_outliers_use_the_true_median_of_an_even_count() -> None:
    # median of 1, 2, 3, 4 is 2.5: 1.4 x 2.5 = 3.5 leaves one token above (the lower median 2 would give two)
    x = states_of(with_norms([1, 2, 3, 4]))
    assert token_norms([x], 0, outlier_factor=1.4)[3, 0, 0].item() == 0.25
    with pytest.raises(AnalysisArgumentError, match="outlier_factor"):
        token_norms([x], 0, outlier_factor=0)


# ------------------------------------------------------------------------------------------- effective rank
def rankme(s: Sequence[float]) -> float:
    p = [v / sum(s) + 1e-7 for v in s]
    return math.exp(-sum(v * math.log(v) for v in p))


def test_effective_rank_from_known_singular_values() -> None:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen(2), dtype=torch.float64))  # a rotation of channels
    two = torch.tensor([[3.0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float64) @ q  # s = 3, 1, 0
    equal = torch.cat([torch.eye(3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)]) @ q
    rank_one = torch.outer(torch.tensor([1.0, -2, 0.5, 3], dtype=torch.float64), q[0])
    out = effective_rank([states_of(two, equal), states_of(rank_one, two)], num_prefix=0)
    assert out.shape == (2, 2)
    # s from the Gram matrix's eigenvalues: a zero singular value comes out as about 1e-8 x the largest
    assert out[0].tolist() == pytest.approx([rankme([3, 1, 0]), rankme([1, 1, 1])], rel=1e-6)
    assert out[1, 0].item() == pytest.approx(rankme([1, 0, 0]), rel=1e-6)
    assert rankme([1, 1, 1]) == pytest.approx(3, rel=1e-5) and rankme([1, 0, 0]) == pytest.approx(1, rel=1e-5)


def test_effective_rank_of_float32_tokens_as_captured() -> None:
    # A float32 Gram matrix rounds at ~1e-7 of its largest entry: its zero eigenvalues come out ~1e-7 x the
    # largest, singular values ~3e-4 x the largest, and a rank-one matrix of 196 tokens reads ~1.08, not 1.
    u = torch.randn(196, 1, generator=gen(5))
    v = torch.randn(1, 768, generator=gen(6))
    rank_one = (u @ v).float()
    full = torch.randn(196, 768, generator=gen(7))
    out = effective_rank([torch.stack([rank_one, full])], num_prefix=0)[0]
    exact = effective_rank([torch.stack([rank_one, full]).double()], num_prefix=0)[0]
    assert out[0].item() == pytest.approx(1.0, abs=1e-3)
    assert out.tolist() == pytest.approx(exact.tolist(), rel=1e-6)


# ------------------------------------------------------------------------------------------- heads
def attention(rows: Any) -> Tensor:
    """``(1, heads, N, N)`` from per-head ``N x N`` rows (any non-negative rows: they are renormalized)."""
    a = torch.tensor(rows, dtype=torch.float64)[None]
    return a / a.sum(-1, keepdim=True)


def test_head_diversity_zero_log2_and_a_partial_overlap() -> None:
    # prefix 1 (its column is dropped, rows renormalized over the 2 patches)
    left = [[1, 1, 0], [0.5, 0.5, 0], [3, 2, 0]]  # every patch query: all on patch 0
    right = [[1, 0, 1], [0.2, 0, 0.8], [1, 0, 4]]  # all on patch 1
    assert head_diversity(attention([left, left]), 1).item() == pytest.approx(0, abs=1e-12)
    assert head_diversity(attention([left, right]), 1).item() == pytest.approx(LOG2, rel=1e-12)
    # three heads, pairs (0,1) equal, (0,2) and (1,2) disjoint: mean 2/3 log 2
    assert head_diversity(attention([left, left, right]), 1).item() == pytest.approx(2 / 3 * LOG2, rel=1e-12)
    # P = (1/2, 1/2), Q = (1, 0): JS = H(3/4, 1/4) - (log 2 + 0) / 2
    half = [[1, 1, 1], [0, 1, 1], [9, 1, 1]]
    js = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) - LOG2 / 2
    assert head_diversity(attention([half, left]), 1).item() == pytest.approx(js, rel=1e-12)
    with pytest.raises(AnalysisArgumentError, match="2 heads"):
        head_diversity(attention([left]), 1)


def test_head_diversity_of_random_attention_is_the_pairwise_mean_per_image() -> None:
    # every pair and query one by one, from the definition; images kept apart
    attn = torch.softmax(3 * torch.randn(3, 5, 7, 7, generator=gen(4), dtype=torch.float64), -1)
    p = attn[..., 1:, 1:] + 1e-32
    p = p / p.sum(-1, keepdim=True)

    def entropy(x: Tensor) -> Tensor:
        return -(x * x.log()).sum(-1)

    by_hand = [
        torch.stack([entropy((p[b, h] + p[b, g]) / 2) - (entropy(p[b, h]) + entropy(p[b, g])) / 2
                     for h in range(5) for g in range(h + 1, 5)]).mean().item()
        for b in range(3)
    ]  # fmt: skip
    assert head_diversity(attn, 1).tolist() == pytest.approx(by_hand, rel=1e-12)
    assert head_diversity(attn.float(), 1).tolist() == pytest.approx(by_hand, rel=1e-5)


def test_cls_selectivity_and_cls_self() -> None:
    # N = 1 CLS + 4 patches; the CLS row is row 0
    uniform = [[2, 1, 1, 1, 1]] + [[1] * 5] * 4
    two = [[6, 2, 2, 0, 0]] + [[1] * 5] * 4  # half on each of two patches after renormalizing
    one = [[1, 0, 0, 3, 0]] + [[1] * 5] * 4
    a = attention([uniform, two, one])
    assert cls_selectivity(a, 1)[0].tolist() == pytest.approx([1, 0.5, 0], abs=1e-12)
    assert cls_self(a, 1)[0].tolist() == pytest.approx([2 / 6, 6 / 10, 1 / 4], rel=1e-12)
    with pytest.raises(AnalysisArgumentError, match="no CLS token"):
        cls_selectivity(a, 0)


# ------------------------------------------------------------------------------------------- positional share
def test_positional_share_of_position_plus_image_codes() -> None:
    # z[i, t] = pos[t] + img[i] (+ an offset): between = n * sum pos'^2 = 8, total = 8 + T * sum img'^2 = 40
    pos = torch.tensor([1.0, -1, 1, -1], dtype=torch.float64)
    img = torch.tensor([2.0, -2], dtype=torch.float64)
    z = (1000 + pos[None, :, None] + img[:, None, None]).expand(2, 4, 3)
    share = positional_share_of([z, pos[None, :, None].expand(2, 4, 3)], num_prefix=0)
    assert share is not None
    assert share.tolist() == pytest.approx([8 / 40, 1.0], rel=1e-9)
    assert positional_share_of([img[:, None, None].expand(2, 4, 3)], 0).tolist() == [0.0]  # type: ignore[union-attr]
    assert positional_share_of([z[:1]], 0) is None  # one image: undefined


def test_position_sums_of_batches_add_up_to_the_whole() -> None:
    x = torch.randn(5, 7, 4, generator=gen(3), dtype=torch.float64)
    whole = positional_share(PositionSums.of([x], 1))
    parts = PositionSums.add([PositionSums.of([x[:2]], 1), PositionSums.of([x[2:]], 1)])
    assert whole is not None and parts.count == 5
    assert positional_share(parts).tolist() == pytest.approx(whole.tolist(), rel=1e-12)  # type: ignore[union-attr]
    singles = PositionSums.per_image([x], 1)
    assert [p.count for p in singles] == [1] * 5
    assert positional_share(PositionSums.add(singles)).tolist() == pytest.approx(whole.tolist(), rel=1e-12)  # type: ignore[union-attr]
    # float32 tokens (the captured dtype): each image's sums are exact, added up in float64
    x32 = x.float()
    exact = positional_share(PositionSums.of([x32], 1))
    added = PositionSums.add(PositionSums.per_image([x32], 1))
    assert added.total.dtype == torch.float64
    running = PositionSums.zeros_like(singles[0])
    for part in PositionSums.per_image([x32], 1):
        running.accumulate(part)
    assert running.count == 5 and torch.equal(running.total, added.total)
    assert positional_share(added).tolist() == pytest.approx(exact.tolist(), rel=1e-12)  # type: ignore[union-attr]
    mu = x[:, 1:].mean((0, 1))
    by_hand = 5 * (x[:, 1:].mean(0) - mu).square().sum() / (x[:, 1:] - mu).square().sum()
    assert whole.item() == pytest.approx(by_hand.item(), rel=1e-12)


# ------------------------------------------------------------------------------------------- CKA
def test_linear_cka_check_values() -> None:
    x = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float64)
    # X^T X = 2 I (||.|| = 2 sqrt 2), Y = X[:, :1]: Y^T Y = 2, ||Y^T X||^2 = 4 -> 4 / (2 sqrt 2 * 2)
    assert linear_cka(x, x[:, :1]).item() == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    r, _ = torch.linalg.qr(torch.randn(2, 2, generator=gen(4), dtype=torch.float64))
    assert linear_cka(x, 3 * x @ r + 5).item() == pytest.approx(1, rel=1e-12)  # rotation, scale, shift
    assert linear_cka(x, torch.ones(4, 3, dtype=torch.float64)).item() == 0.0  # constant: no variance
    columns = torch.stack([x[:, :1], x[:, 1:]])  # two "depths": orthogonal columns, CKA 0 between them
    assert cka_matrix(columns, columns).flatten().tolist() == pytest.approx([1, 0, 0, 1], abs=1e-12)
    with pytest.raises(AnalysisArgumentError, match="same images"):
        cka_matrix(x[None], x[None, :3])


def test_cka_null_is_the_cka_of_seeded_row_shuffles() -> None:
    x = torch.randn(2, 12, 6, generator=gen(5), dtype=torch.float64)
    y = torch.randn(3, 12, 4, generator=gen(6), dtype=torch.float64)
    res = cka_with_null(x, y, count=20, seed=0)
    assert res.cka.shape == (2, 3) and res.null.shape == (20, 2, 3)
    perms = permutations(12, 20, 0)
    for k in (0, 7, 19):
        for a in range(2):
            for b in range(3):
                assert res.null[k, a, b].item() == pytest.approx(
                    linear_cka(x[a], y[b][perms[k]]).item(), rel=1e-10
                )
    assert torch.allclose(res.calibrated, res.cka - res.null.mean(0), rtol=0, atol=1e-15)
    assert torch.equal(cka_with_null(x, y).null, res.null)  # seeded: the same every time
    same = cka_with_null(x, x)
    assert (
        torch.diagonal(same.cka).tolist() == pytest.approx([1, 1])
        and (same.calibrated.diagonal() > 0.3).all()
    )


def test_image_means_drop_the_prefix() -> None:
    x = torch.arange(2 * 3 * 2, dtype=torch.float64).view(2, 3, 2)
    assert image_means([x], 1)[0].tolist() == [[3.0, 4.0], [9.0, 10.0]]


# ------------------------------------------------------------------------------------------- metrics.json
def make_trace(b: int, has_cls: bool, seed: int = 0) -> Trace:
    layers, heads, grid, prefix = 2, 3, (2, 3), 2
    n, g = prefix + grid[0] * grid[1], gen(seed)
    return Trace(
        attentions=[torch.softmax(torch.randn(b, heads, n, n, generator=g), -1) for _ in range(layers)],
        x_attn=[torch.randn(b, n, 4, generator=g) for _ in range(layers)],
        x_out=[torch.randn(b, n, 4, generator=g) for _ in range(layers + 1)],
        grid=grid,
        patch_size=8,
        num_prefix_tokens=prefix,
        cls_token=has_cls,
    )


def test_summary_per_image_then_mean_slices_and_batches() -> None:
    trace = make_trace(4, has_cls=True)
    values = modern_values(trace)
    m = summarize_modern(values)
    assert json.loads(json.dumps(m, allow_nan=False)) == m
    assert m["token_norm"]["depth"] == m["effective_rank"]["depth"] == [0, 1, 2]
    assert m["head_diversity"]["depth"] == [1, 2] and m["token_norm"]["outlier_factor"] == 4.0
    norms = token_norms(trace.x_out, 2)
    assert m["token_norm"]["p99"]["value"] == pytest.approx(norms[1].mean(-1).tolist(), rel=1e-6)
    assert m["token_norm"]["max"]["std"] == pytest.approx(norms[2].std(-1, correction=0).tolist(), rel=1e-5)
    sel = torch.stack([cls_selectivity(a, 2) for a in trace.attentions])  # (L, B, heads)
    assert m["cls_selectivity"]["mean"] == pytest.approx(sel.mean((1, 2)).tolist(), rel=1e-6)
    assert m["positional_share"]["value"] == pytest.approx(positional_share_of(trace.x_out, 2).tolist())  # type: ignore[union-attr]
    # image i alone = the slice of the batch; two halves concatenated = the whole
    alone = modern_values(make_single(trace, 1))
    assert torch.allclose(values.select(1).token_norm, alone.token_norm, atol=1e-6)
    assert summarize_modern(values.select(1))["positional_share"] is None
    halves = ModernValues.concat(
        [modern_values(make_single(trace, 0, 2)), modern_values(make_single(trace, 2, 4))]
    )
    again = summarize_modern(halves)
    assert again["positional_share"]["value"] == pytest.approx(m["positional_share"]["value"], rel=1e-9)
    assert again["effective_rank"]["value"] == pytest.approx(m["effective_rank"]["value"], rel=1e-6)


def test_no_cls_token_gives_null_cls_metrics() -> None:
    m = summarize_modern(modern_values(make_trace(2, has_cls=False)))
    assert m["cls_selectivity"] is None and m["cls_self"] is None
    assert m["head_diversity"] is not None and m["positional_share"] is not None


def make_single(trace: Trace, start: int, stop: int | None = None) -> Trace:
    part = slice(start, start + 1 if stop is None else stop)
    return Trace(
        attentions=[a[part] for a in trace.attentions],
        x_attn=[x[part] for x in trace.x_attn],
        x_out=[x[part] for x in trace.x_out],
        grid=trace.grid,
        patch_size=trace.patch_size,
        num_prefix_tokens=trace.num_prefix_tokens,
        cls_token=trace.cls_token,
    )
