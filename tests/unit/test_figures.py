"""The analyze figures: the paper's curves overlaid (dashed, labelled), the relative scale where grids differ,
the delta bin named, attention strips labelled with one colour scale and a colourbar, and the analyses beyond
the paper drawn where present, with a note where a model has none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from backend.analysis import compute_metrics
from backend.capture import Trace
from backend.figures import (
    AttentionPanel,
    attention_figure,
    cka_figure,
    curves_figure,
    distance_scale,
    modern_figure,
    plot_attention,
    plot_cka,
    plot_curves,
    plot_modern,
    plot_spectra,
    spectra_figure,
)
from backend.reference import paper_series

PAPER_CL = "paper: MoCo v3 ViT-B/16, ImageNet"


def metrics_for(
    grid: tuple[int, int], patch: int, family: str, layers: int = 3, seed: int = 0
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    n = 1 + grid[0] * grid[1]
    attn = [torch.softmax(3 * torch.randn(2, 2, n, n, generator=g), -1) for _ in range(layers)]
    states = [torch.randn(2, n, 8, generator=g) for _ in range(2 * layers + 1)]
    trace = Trace(
        attentions=attn,
        x_attn=states[layers + 1 :],
        x_out=states[: layers + 1],
        grid=grid,
        patch_size=patch,
        num_prefix_tokens=1,
        model_id=f"{family}-{grid[0]}",
        preprocessing={},
    )
    return compute_metrics(trace, family)


def lines(ax: Any) -> dict[str, Any]:
    return {line.get_label(): line for line in ax.get_lines()}


def test_grids_differ_relative_scale_with_the_paper_dashed() -> None:
    models = [metrics_for((4, 4), 8, "cl"), metrics_for((14, 14), 16, "mim", seed=1)]
    assert distance_scale(models) == "relative"
    fig = curves_figure(models)
    distance, nmi, _, delta = fig.axes[:4]
    assert "uniform" in distance.get_title() and "px" not in distance.get_title()
    found = lines(distance)
    np.testing.assert_allclose(
        found["cl-4 (cl)"].get_ydata(), models[0]["attention_distance_relative"]["mean"], rtol=1e-12
    )
    paper = found[PAPER_CL]
    assert paper.get_linestyle() == "--"
    np.testing.assert_allclose(
        paper.get_ydata(), paper_series("mocov3-b16.attention_distance")["values_relative"]
    )
    np.testing.assert_allclose(found["uniform attention"].get_ydata(), [1.0, 1.0])
    assert lines(nmi)[PAPER_CL].get_linestyle() == "--"
    assert {"paper: SimMIM ViT-B/16, ImageNet", PAPER_CL} <= set(lines(delta))
    # both grids' bins differ: the title says so instead of naming one
    assert "last half-diagonal bin of each grid" in delta.get_title()


def test_paper_grid_in_pixels_with_each_uniform_level() -> None:
    models = [metrics_for((14, 14), 16, "cl"), metrics_for((14, 14), 16, "mim", seed=2)]
    assert distance_scale(models) == "px"
    distance, *_, delta = curves_figure(models).axes[:4]
    assert "(px)" in distance.get_title()
    found = lines(distance)
    np.testing.assert_allclose(
        found[PAPER_CL].get_ydata(), paper_series("mocov3-b16.attention_distance")["values"]
    )
    uniform = [ln for ln in distance.get_lines() if ln.get_label().startswith("_")]  # axhline: no legend
    assert any(np.allclose(ln.get_ydata(), 116.4922, atol=1e-3) for ln in uniform)
    assert delta.get_title() == "Δ log amplitude, bin 6: 6 cycles per image, 6/7 pi per patch, 14x14 grid"


def test_without_the_paper_one_small_grid_stays_in_pixels() -> None:
    models = [metrics_for((4, 4), 8, "cl"), metrics_for((4, 4), 8, "mim", seed=3)]
    assert distance_scale(models, with_paper=False) == "px"
    assert distance_scale(models) == "relative"  # the paper's 14 x 14 grid is on the axis too
    distance = curves_figure(models, with_paper=False).axes[0]
    assert PAPER_CL not in lines(distance) and "(px)" in distance.get_title()


def test_attention_strip_is_labelled_on_one_scale_with_a_colourbar() -> None:
    rng = np.random.default_rng(0)
    maps = {
        "centre": ((2, 2), rng.random((3, 4, 4)) * 0.3),
        "CLS": (None, rng.random((3, 4, 4)) * 0.9),
    }
    panel = AttentionPanel("m", Image.new("RGB", (32, 32)), 8, (4, 4), maps, image_name="cat-0001.jpg")
    fig = attention_figure(panel)
    assert fig._suptitle is not None and "cat-0001.jpg" in fig._suptitle.get_text()
    overlays = [ax.get_images()[1] for ax in fig.axes[:6]]
    vmax = max(float(m.max()) for _, m in maps.values())
    assert {im.get_clim() for im in overlays} == {(0.0, vmax)}
    assert len(fig.axes) == 7  # 2 queries x 3 layers, and the colourbar
    assert "uniform = 1/16" in fig.axes[-1].get_ylabel()


def test_spectra_share_a_scale_and_mark_the_bin(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    spectra = {"a": rng.normal(size=(4, 8, 8)), "b": rng.normal(size=(3, 7, 7)) + 2}
    fig = spectra_figure(spectra, columns=3)
    clims = {ax.get_images()[0].get_clim() for ax in fig.axes[:6]}
    assert len(clims) == 1
    lo, hi = clims.pop()
    picked = np.concatenate([spectra["a"][[0, 2, 3]].ravel(), spectra["b"][[0, 1, 2]].ravel()])
    assert (lo, hi) == pytest.approx((picked.min(), picked.max()))
    marks = [ax.get_lines()[0].get_xydata()[0].tolist() for ax in (fig.axes[0], fig.axes[3])]
    assert marks == [[3.0, 3.0], [3.0, 3.0]]  # 8x8: bin 3; 7x7: bin (7 + 1) // 2 - 1 = 3
    plot_spectra(spectra, tmp_path / "s.png")
    plot_curves([metrics_for((4, 4), 8, "cl")], tmp_path / "c.png")
    panel = AttentionPanel(
        "m", Image.new("RGB", (32, 32)), 8, (4, 4), {"q": ((0, 0), np.ones((2, 4, 4)) / 16)}
    )
    plot_attention(panel, tmp_path / "a.png")
    for name in ("s.png", "c.png", "a.png"):
        assert Image.open(tmp_path / name).size[0] > 300


def texts(ax: Any) -> str:
    return "\n".join(t.get_text() for t in ax.texts)


def test_modern_figure_draws_the_metrics_numbers(tmp_path: Path) -> None:
    models = [metrics_for((4, 4), 8, "cl"), metrics_for((4, 4), 8, "mim", seed=1)]
    fig = modern_figure(models)
    norm, frac, rank, div, sel, own, share, move, delta = fig.axes[:9]
    for m in models:
        label = f"{m['model']} ({m['family']})"
        ys = [ln.get_ydata().tolist() for ln in norm.get_lines()]
        assert m["token_norm"]["mean"]["value"] in ys and m["token_norm"]["p99"]["value"] in ys
        assert lines(frac)[label].get_ydata().tolist() == m["token_norm"]["outlier_fraction"]["value"]
        assert lines(rank)[label].get_xdata().tolist() == m["effective_rank"]["depth"]
        assert lines(rank)[label].get_ydata().tolist() == m["effective_rank"]["value"]
        assert lines(div)[label].get_ydata().tolist() == m["head_diversity"]["value"]
        assert lines(sel)[label].get_ydata().tolist() == m["cls_selectivity"]["mean"]
        assert lines(own)[label].get_ydata().tolist() == m["cls_self"]["mean"]
        assert lines(share)[label].get_ydata().tolist() == m["positional_share"]["value"]
        assert lines(move)[label].get_xdata().tolist() == [1, 2, 3]
        assert lines(move)[label].get_ydata().tolist() == m["movement_coherence"]["mean"]
        attn = [ln for ln in delta.get_lines() if ln.get_xdata().tolist() == [1, 2, 3]]
        assert m["delta_log_amplitude_attn"]["value"] in [ln.get_ydata().tolist() for ln in attn]
        assert lines(delta)[label].get_ydata().tolist() == m["delta_log_amplitude"]["value"]
    np.testing.assert_allclose(lines(div)["log 2 (disjoint heads)"].get_ydata(), [np.log(2)] * 2)
    assert "4 x median" in frac.get_title() and not any(texts(ax) for ax in fig.axes)
    assert fig._suptitle is not None and "absent" not in fig._suptitle.get_text()
    plot_modern(models, tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").size[0] > 1000


def test_modern_figure_says_which_keys_are_null_or_absent() -> None:
    engine = metrics_for((4, 4), 8, "cl")  # as the dataset engine writes it: no positional share
    engine["positional_share"] = None
    no_cls = metrics_for((4, 4), 8, "mim", seed=1) | {"cls_selectivity": None, "cls_self": None}
    no_cls["head_diversity"] = None
    for m in (engine, no_cls):
        del m["movement_coherence"]
    fig = modern_figure([engine, no_cls])
    _, _, rank, div, sel, own, share, move, _ = fig.axes[:9]
    assert texts(sel) == texts(own) == "mim-4: no CLS token"
    assert texts(div) == "mim-4: one head"
    assert set(lines(sel)) == {"cl-4 (cl)"}  # the other model is still drawn
    assert texts(share) == "cl-4: not computed in this run (a set statistic: --set-images)"  # 2 images, null
    assert set(lines(share)) == {"mim-4 (mim)"}
    assert texts(move) == "cl-4: absent from metrics.json\nmim-4: absent from metrics.json"
    assert not move.get_lines() and move.texts[0].get_position() == (0.5, 0.5)  # nothing drawn: centred
    assert (
        fig._suptitle is not None
        and "absent from metrics.json: movement_coherence" in fig._suptitle.get_text()
    )
    assert not texts(rank)


def test_cka_figure_draws_each_pair_on_one_fixed_scale(tmp_path: Path) -> None:
    pair = {"model_a": "a", "model_b": "b", "cka": [[1.0, 0.5, 0.2], [0.25, 0.75, 0.6]], "permutations": 20,
            "null_mean": [[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]]}  # fmt: skip
    other = {**pair, "model_a": "a", "model_b": "c", "null_mean": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.6]]}
    fig = cka_figure([pair, other], 7)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 2
    assert maps[0].images[0].get_array().tolist() == pair["cka"]  # rows: model A's depths
    assert all(ax.images[0].get_clim() == (0.0, 1.0) for ax in maps)
    assert maps[0].get_title() == "a vs b\nnull mean 0.300" and maps[1].get_title().endswith(
        "null mean 0.100"
    )
    assert "b depth" in maps[0].get_xlabel() and "a depth" in maps[0].get_ylabel()
    assert fig._suptitle is not None and "7 images" in fig._suptitle.get_text()
    plot_cka([pair], 7, tmp_path / "cka.png")
    assert Image.open(tmp_path / "cka.png").size[0] > 300


def test_a_curve_of_a_sample_says_how_many_images() -> None:
    m = metrics_for((4, 4), 8, "cl")
    m["positional_share"] = {**m["positional_share"], "num_images": 3}
    share = modern_figure([m]).axes[6]
    assert share.get_title() == "Positional share (first 3 images)"
    assert modern_figure([metrics_for((4, 4), 8, "cl")]).axes[6].get_title() == "Positional share"
