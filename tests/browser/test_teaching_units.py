"""What the page teaches, without a browser: the distance scale rule, the paper's overlay, uniform levels."""

from __future__ import annotations

import copy
from typing import Any

from app.figures.curves import curves_figure
from app.figures.spectrum import spectrum_figure
from app.figures.style import model_colours
from app.figures.tokens import tokens_figure
from app.metrics import (
    DISTANCE_RELATIVE,
    METRICS,
    curve_grids,
    delta_bin_label,
    distance_scale,
    paper_label,
    read_curve,
    reference_curves,
)
from tests.browser.test_ui_units import metrics_object

REFERENCE: dict[str, Any] = {
    "grid": [14, 14],
    "patch_size": 16,
    "uniform_attention_distance": 116.4922,
    "series": [
        {"id": "mocov3-b16.attention_distance", "model": "MoCo v3 ViT-B/16 (CL)", "family": "cl",
         "metric": "attention_distance", "x_values": [1, 2, 3], "values": [110.4, 89.2, 73.1],
         "values_relative": [0.9478, 0.7657, 0.6275], "source": "notebook"},
        {"id": "mocov3-b16.delta_log_amplitude.notebook", "model": "MoCo v3 ViT-B/16 (CL)", "family": "cl",
         "metric": "delta_log_amplitude", "x_values": [0, 1, 2, 3], "values": [-2.7, -3.3, -3.3, -3.2],
         "source": "notebook"},
        {"id": "mocov3-b16.delta_log_amplitude", "model": "MoCo v3 ViT-B/16 (CL)", "family": "cl",
         "metric": "delta_log_amplitude", "x_values": [0, 1, 2, 3], "values": [-2.9, -3.2, -3.1, -3.1],
         "source": "Fig. 9"},
        {"id": "simmim-b16.delta_log_amplitude", "model": "SimMIM ViT-B/16 (MIM)", "family": "mim",
         "metric": "delta_log_amplitude", "x_values": [0, 1, 2, 3], "values": [-2.0, -2.1, -2.3, -2.2],
         "source": "Fig. 9"},
    ],
}  # fmt: skip


def small_model(uniform: float = 16.55) -> dict[str, Any]:
    """A 32 px model on an 8 x 8 grid, with its relative distance and uniform level."""
    m = metrics_object(layers=3, heads=2)
    m["grid"], m["patch_size"] = [8, 8], 4
    m["uniform_attention_distance"] = uniform
    dist = m["attention_distance"]
    m["attention_distance_relative"] = {
        "mean": [v / uniform for v in dist["mean"]],
        "std": [v / uniform for v in dist["std"]],
        "per_head": [[v / uniform for v in row] for row in dist["per_head"]],
    }
    return m


def test_distance_scale_is_relative_exactly_when_grids_differ() -> None:
    same = {"a": small_model(), "b": small_model()}
    assert curve_grids(same, None) == {(8, 8, 4)}
    assert distance_scale("auto", curve_grids(same, None)) == "px"
    assert distance_scale("auto", curve_grids(same, REFERENCE)) == "relative", "8 x 8 next to the paper"
    mixed = {"a": small_model(), "b": metrics_object()}  # 8 x 8 and 14 x 14
    assert distance_scale("auto", curve_grids(mixed, None)) == "relative"
    assert distance_scale("px", curve_grids(mixed, REFERENCE)) == "px", "the user's choice wins"
    assert distance_scale("relative", {(14, 14, 16)}) == "relative"
    patch14 = {"a": metrics_object(), "b": {**metrics_object(), "patch_size": 14}}  # 14 x 14 at 16 and at 14
    assert distance_scale("auto", curve_grids(patch14, None)) == "relative", "same grid, other pixels"


def test_reference_curves_pick_the_papers_main_series() -> None:
    delta = reference_curves(REFERENCE, METRICS[3])
    assert [c.label for c in delta] == [
        "paper: MoCo v3 ViT-B/16, ImageNet",
        "paper: SimMIM ViT-B/16, ImageNet",
    ]
    assert delta[0].y[0] == -2.9 and delta[0].source == "Fig. 9", "Fig. 9, not the notebook duplicate"
    assert reference_curves(REFERENCE, METRICS[0])[0].y == [110.4, 89.2, 73.1]
    assert reference_curves(REFERENCE, DISTANCE_RELATIVE)[0].y == [0.9478, 0.7657, 0.6275]
    assert reference_curves(REFERENCE, METRICS[1]) == [] and reference_curves(None, METRICS[0]) == []
    assert paper_label({"model": "SimMIM ViT-B/16 (MIM)"}) == "paper: SimMIM ViT-B/16, ImageNet"


def traces(fig: Any, name_part: str) -> list[Any]:
    return [t for t in fig.data if name_part in (t.name or "")]


def test_curves_overlay_the_paper_dashed_on_the_relative_scale() -> None:
    per_model = {"cl": small_model(), "mim": small_model()}
    families = {"cl": "cl", "mim": "mim"}
    colours = model_colours(list(per_model), families)
    fig = curves_figure(per_model, colours=colours, families=families, layer=2, subtitle="s",
                        scale="relative", reference=REFERENCE)  # fmt: skip
    moco = traces(fig, "paper: MoCo v3 ViT-B/16, ImageNet")
    assert len(moco) == 2, "distance and delta log amplitude (the paper gives no NMI of SimMIM here)"
    assert all(t.line.dash == "dash" for t in moco)
    assert sum(bool(t.showlegend) for t in moco) == 1, "one legend entry per paper model"
    assert list(moco[0].y) == [0.9478, 0.7657, 0.6275] and moco[0].xaxis == "x"
    assert len(traces(fig, "paper: SimMIM")) == 1 and traces(fig, "paper: SimMIM")[0].xaxis == "x4"
    model_dist = [t for t in fig.data if t.name == "cl" and t.xaxis == "x"][0]
    relative = read_curve(per_model["cl"], DISTANCE_RELATIVE)
    assert relative is not None and list(model_dist.y) == relative.mean
    uniform = traces(fig, "uniform attention")
    assert len(uniform) == 1 and list(uniform[0].y) == [1.0, 1.0], "one level for every grid"
    assert fig.layout.meta["scale"] == "relative"
    assert "× uniform attention" in fig.layout.annotations[0].text


def test_curves_in_pixels_draw_each_models_uniform_level() -> None:
    per_model = {"small": small_model(16.55), "big": copy.deepcopy(small_model(116.49))}
    per_model["big"]["grid"] = [14, 14]
    families = {"small": "cl", "big": "mim"}
    fig = curves_figure(per_model, colours=model_colours(list(per_model), families), families=families,
                        layer=None, subtitle="s", scale="px", reference=None)  # fmt: skip
    levels = {t.name: list(t.y) for t in traces(fig, "uniform attention")}
    assert levels == {
        "small: uniform attention on its 8 × 8 grid = 16.55 px": [16.55, 16.55],
        "big: uniform attention on its 14 × 14 grid = 116.49 px": [116.49, 116.49],
    }
    assert all(t.line.dash == "dot" and "0.45" in t.line.color for t in traces(fig, "uniform attention"))
    assert not traces(fig, "paper:"), "no overlay unless asked"
    assert "(pixels)" in fig.layout.annotations[0].text


def test_spectrum_marks_the_bin_the_delta_reads() -> None:
    z8 = [[float(r * 8 + c) for c in range(8)] for r in range(8)]
    z7 = [[0.0] * 7 for _ in range(7)]
    fig = spectrum_figure(
        {
            "small": {"map": z8, "delta": [0.0, -1.0, -2.0, -3.25], "high_frequency_delta": -3.25},
            "odd": {"map": z7, "delta": [0.0, -1.0, -2.0, -2.5], "high_frequency_delta": -2.5},
        },
        titles={},
        subtitle="",
    )
    assert list(fig.data[0].x) == [-4, -3, -2, -1, 0, 1, 2, 3], "cycles per image on 8 x 8"
    assert list(fig.data[1].x) == [-3, -2, -1, 0, 1, 2, 3], "and on 7 x 7 (the paper's (h+1)//2 bins)"
    first, second = fig.layout.shapes
    assert (first.x0, first.x1, first.y0, first.y1, first.xref) == (2.5, 3.5, 2.5, 3.5, "x")
    assert (second.x0, second.xref) == (2.5, "x2"), "bin 3 of 4 on 7 x 7 as well"
    assert "Δ at bin (3, 3): -3.250" in fig.layout.annotations[0].text


def test_delta_bin_label_names_the_bin_once_or_per_model() -> None:
    a, b = small_model(), small_model()
    a["delta_log_amplitude_bin"] = {
        "index": 3,
        "label": "bin 3: 3 cycles per image, 3/4 pi per patch, 8x8 grid",
    }
    b["delta_log_amplitude_bin"] = dict(a["delta_log_amplitude_bin"])
    assert delta_bin_label({"a": a, "b": b}) == "read at bin 3: 3 cycles per image, 3/4 π per patch, 8x8 grid"
    b["delta_log_amplitude_bin"] = {
        "index": 6,
        "label": "bin 6: 6 cycles per image, 6/7 pi per patch, 14x14 grid",
    }
    assert delta_bin_label({"a": a, "b": b}) == (
        "read at a: bin 3: 3 cycles per image, 3/4 π per patch, 8x8 grid; "
        "b: bin 6: 6 cycles per image, 6/7 π per patch, 14x14 grid"
    )
    assert delta_bin_label({"a": metrics_object()}) is None
    families = {"a": "cl", "b": "mim"}
    fig = curves_figure({"a": a, "b": b}, colours=model_colours(["a", "b"], families), families=families,
                        layer=1, subtitle="s", delta_label=delta_bin_label({"a": a}))  # fmt: skip
    assert "3/4 π per patch" in fig.layout.annotations[3].text


def test_token_points_carry_patch_position_image_and_model_for_the_hover() -> None:
    body = {"grid": [8, 8], "images": ["a" * 64, "b" * 64], "coords": [[0.0, 1.0], [2.0, 3.0]],
            "image_index": [0, 1], "token_index": [10, 63]}  # fmt: skip
    fig = tokens_figure({"m": body}, image_names=["cat", "dog"], titles={}, subtitle="")
    first, second = fig.data
    assert [list(c) for c in first.customdata] == [[10, 1, 2, "a" * 64, "m"]]
    assert [list(c) for c in second.customdata] == [[63, 7, 7, "b" * 64, "m"]]
    assert "patch #%{customdata[0]} (row %{customdata[1]}" in first.hovertemplate and first.name == "cat"
