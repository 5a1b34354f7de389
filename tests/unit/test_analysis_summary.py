"""layer_summary and compute_metrics: averaging order (!), depth axes, the metrics.json schema."""

from __future__ import annotations

import json
import math

import pytest
import torch

from backend.analysis import attention_nmi, compute_metrics, layer_summary, mean_attention_distance
from backend.capture import Trace


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_prefix(patch: torch.Tensor, num_prefix: int, seed: int = 0) -> torch.Tensor:
    """Row-stochastic ``(..., Np, Np)`` patch attention behind arbitrary prefix rows and columns."""
    *lead, n_p, _ = patch.shape
    n = num_prefix + n_p
    full = torch.rand(*lead, n, n, generator=gen(seed), dtype=torch.float64) + 0.05
    full[..., num_prefix:, num_prefix:] = patch.double() * (
        1 + torch.rand(*lead, n_p, 1, generator=gen(seed + 1))
    )
    return (full / full.sum(-1, keepdim=True)).float()


def make_trace(
    attentions: list[torch.Tensor], grid: tuple[int, int], num_prefix: int, channels: int = 8, seed: int = 0
) -> Trace:
    layers = len(attentions)
    b, _, n, _ = attentions[0].shape
    g = gen(seed)
    x_out = [torch.randn(b, n, channels, generator=g) for _ in range(layers + 1)]
    x_attn = [torch.randn(b, n, channels, generator=g) for _ in range(layers)]
    return Trace(
        attentions=attentions,
        x_attn=x_attn,
        x_out=x_out,
        grid=grid,
        patch_size=16,
        num_prefix_tokens=num_prefix,
        model_id="tiny/test",
        preprocessing={"crop": 32},
    )


def test_layer_summary_by_hand() -> None:
    layer1 = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # (B = 2 images, 2 heads)
    layer2 = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    s = layer_summary([layer1, layer2])
    assert s["per_head"] == [[2.0, 4.0], [1.0, 1.0]]  # over images, per head
    assert s["mean"] == [3.0, 1.0]  # then over heads
    assert s["std"] == [pytest.approx(1.5), pytest.approx(1.0)]  # population std of per-image head means
    one_image = layer_summary([torch.tensor([[1.0, 5.0]])])
    assert one_image == {"mean": [3.0], "per_head": [[1.0, 5.0]], "std": [0.0]}
    assert all(isinstance(v, float) for v in one_image["mean"] + one_image["std"] + one_image["per_head"][0])
    with pytest.raises(ValueError):
        layer_summary([])


def test_averaging_order_per_image_then_mean() -> None:
    """Image 0 attends to itself, image 1 to its right neighbour: each has NMI ~1 (a permutation), while the
    image-averaged map (half identity, half shift) has NMI 1 - log 2 / log 16, about 0.75."""
    n_p = 16
    shift = torch.roll(torch.eye(n_p), 1, dims=1)
    attn = with_prefix(torch.stack([torch.eye(n_p), shift])[:, None], 1)  # (2 images, 1 head, 17, 17)
    averaged_first = attention_nmi(attn.mean(0, keepdim=True), 1).item()
    assert averaged_first == pytest.approx(1 - math.log(2) / math.log(n_p), abs=1e-3)

    assert layer_summary([attention_nmi(attn, 1)])["mean"][0] == pytest.approx(1.0, abs=1e-4)
    metrics = compute_metrics(make_trace([attn, attn], (4, 4), 1), "CL")
    assert metrics["nmi"]["mean"] == [pytest.approx(1.0, abs=1e-4)] * 2
    assert metrics["nmi"]["mean"][0] - averaged_first > 0.2


def test_compute_metrics_schema_non_square_registers() -> None:
    layers, b, heads, grid, prefix = 3, 2, 2, (3, 4), 5
    n = prefix + grid[0] * grid[1]
    g = gen(7)
    attentions = [torch.softmax(2 * torch.randn(b, heads, n, n, generator=g), -1) for _ in range(layers)]
    trace = make_trace(attentions, grid, prefix)
    m = compute_metrics(trace, "MIM")
    assert set(m) == {
        "model",
        "family",
        "preprocessing",
        "grid",
        "patch_size",
        "layers",
        "heads",
        "num_images",
        "attention_distance",
        "attention_distance_relative",
        "uniform_attention_distance",
        "nmi",
        "attention_entropy",
        "delta_log_amplitude",
        "delta_log_amplitude_bin",
        "delta_log_amplitude_attn",
        "movement_coherence",
        # beyond the paper (backend/analysis/modern.py; checked in test_analysis_modern.py)
        "token_norm",
        "effective_rank",
        "head_diversity",
        "cls_selectivity",
        "cls_self",
        "positional_share",
    }
    assert (m["model"], m["family"], m["preprocessing"]) == ("tiny/test", "MIM", {"crop": 32})
    assert (m["grid"], m["patch_size"], m["layers"], m["heads"], m["num_images"]) == ([3, 4], 16, 3, 2, 2)
    for key in ("attention_distance", "attention_distance_relative", "nmi", "attention_entropy"):
        assert set(m[key]) == {"mean", "per_head", "std"}
        assert len(m[key]["mean"]) == len(m[key]["std"]) == layers
        assert [len(row) for row in m[key]["per_head"]] == [heads] * layers
    assert m["delta_log_amplitude"]["depth"] == [0, 1, 2, 3]
    assert len(m["delta_log_amplitude"]["value"]) == len(m["delta_log_amplitude"]["std"]) == layers + 1
    assert m["delta_log_amplitude_attn"]["depth"] == [1, 2, 3]
    assert len(m["delta_log_amplitude_attn"]["value"]) == len(m["delta_log_amplitude_attn"]["std"]) == layers
    assert set(m["movement_coherence"]) == {"mean", "std"}
    assert len(m["movement_coherence"]["mean"]) == len(m["movement_coherence"]["std"]) == layers
    text = json.dumps(m, allow_nan=False)  # JSON-ready: plain floats, nothing non-finite
    assert json.loads(text) == m
    # 3 x 4 at patch 16, by hand: the mean over ordered pairs of 16 * the distance between patch centres
    cells = [(r, c) for r in range(3) for c in range(4)]
    uniform = sum(16 * math.dist(a, b) for a in cells for b in cells) / len(cells) ** 2
    assert m["uniform_attention_distance"] == pytest.approx(uniform, rel=1e-12)
    for part in ("mean", "std"):
        assert m["attention_distance_relative"][part] == pytest.approx(
            [v / uniform for v in m["attention_distance"][part]], rel=1e-12
        )
    assert m["delta_log_amplitude_bin"]["index"] == 1  # min((3 + 1) // 2, (4 + 1) // 2) - 1
    # layer k of the summary is block k's attention, averaged per image then head
    for k in range(layers):
        d = mean_attention_distance(attentions[k], grid, 16, prefix)
        assert m["attention_distance"]["mean"][k] == pytest.approx(d.mean().item(), rel=1e-5)
        assert m["attention_distance"]["per_head"][k] == pytest.approx(d.mean(0).tolist(), rel=1e-5)
        assert m["attention_distance"]["std"][k] == pytest.approx(
            d.mean(1).std(correction=0).item(), abs=1e-4
        )


def test_compute_metrics_depth_axes() -> None:
    """Constant tokens put -19.094 exactly where they are; block k's movement runs x_out[k-1] -> x_attn[k]."""
    grid, prefix, n = (14, 14), 1, 197
    attn = with_prefix(torch.eye(196)[None, None].expand(2, 1, -1, -1), prefix)
    trace = make_trace([attn] * 3, grid, prefix, channels=4)
    trace.x_out[2] = torch.ones(2, n, 4)  # output of block 2
    shift = torch.randn(1, 1, 4, generator=gen(9))
    trace.x_attn[0] = trace.x_out[0] + shift  # block 1 moves all tokens together
    trace.x_attn[2] = trace.x_out[2] + shift  # block 3 too; block 2 moves them at random
    trace.x_out[1] = 1 + trace.x_out[1]
    trace.x_attn[1] = torch.ones(2, n, 4)  # ... onto constant tokens
    m = compute_metrics(trace, "CL")
    constant = math.log(1e-6) - math.log(196)
    assert m["delta_log_amplitude"]["value"][2] == pytest.approx(constant, abs=1e-4)
    assert m["delta_log_amplitude"]["std"][2] == pytest.approx(0.0, abs=1e-6)
    assert all(v > constant + 5 for i, v in enumerate(m["delta_log_amplitude"]["value"]) if i != 2)
    assert m["delta_log_amplitude_attn"]["value"][1] == pytest.approx(constant, abs=1e-4)
    coherence = m["movement_coherence"]["mean"]
    assert coherence[0] == pytest.approx(1.0, abs=1e-5)
    assert coherence[2] == pytest.approx(1.0, abs=1e-5)
    assert coherence[1] < 0.5
    assert m["attention_distance"]["mean"] == [pytest.approx(0.0, abs=1e-4)] * 3


def test_compute_metrics_half_precision_and_bad_traces() -> None:
    grid, prefix = (2, 3), 1
    g = gen(11)
    attentions = [torch.softmax(torch.randn(2, 2, 7, 7, generator=g), -1) for _ in range(2)]
    trace = make_trace(attentions, grid, prefix)
    full = compute_metrics(trace, "CL")
    half = Trace(
        attentions=[a.half() for a in trace.attentions],
        x_attn=[x.half() for x in trace.x_attn],
        x_out=[x.half() for x in trace.x_out],
        grid=grid,
        patch_size=16,
        num_prefix_tokens=prefix,
    )
    half_m = compute_metrics(half, "CL")
    assert half_m["nmi"]["mean"] == pytest.approx(full["nmi"]["mean"], abs=2e-3)
    bad = make_trace(attentions, grid, prefix)
    bad.x_out.pop()
    with pytest.raises(ValueError):
        compute_metrics(bad, "CL")
    with pytest.raises(ValueError):
        compute_metrics(make_trace(attentions, (3, 3), prefix), "CL")


def test_summaries_of_batches_concatenated_equal_the_summary_of_one_batch() -> None:
    from backend.analysis.summary import PerImage, per_image_values, summarize
    from backend.capture import Trace

    torch.manual_seed(3)
    grid, prefix, layers, heads, b, c = (4, 4), 1, 2, 2, 5, 8
    n = prefix + grid[0] * grid[1]
    whole = Trace(
        attentions=[torch.softmax(torch.randn(b, heads, n, n), -1) for _ in range(layers)],
        x_attn=[torch.randn(b, n, c) for _ in range(layers)],
        x_out=[torch.randn(b, n, c) for _ in range(layers + 1)],
        grid=grid,
        patch_size=8,
        num_prefix_tokens=prefix,
        model_id="m",
    )

    def part(sl: slice) -> Trace:
        return Trace(
            [a[sl] for a in whole.attentions],
            [x[sl] for x in whole.x_attn],
            [x[sl] for x in whole.x_out],
            grid,
            8,
            prefix,
            "m",
        )

    merged = PerImage.concat([per_image_values(part(slice(0, 2))), per_image_values(part(slice(2, 5)))])
    meta = dict(model="m", family="cl", preprocessing={}, grid=grid, patch_size=8)
    split = summarize(merged, **meta)  # type: ignore[arg-type]
    single = compute_metrics(whole, "cl")
    assert split["num_images"] == 5
    for key in ("attention_distance", "attention_distance_relative", "nmi", "attention_entropy"):
        assert split[key]["mean"] == pytest.approx(single[key]["mean"], rel=1e-9)
        assert split[key]["std"] == pytest.approx(single[key]["std"], rel=1e-9, abs=1e-12)
    assert split["delta_log_amplitude"]["value"] == pytest.approx(single["delta_log_amplitude"]["value"])
