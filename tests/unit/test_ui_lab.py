"""The small pure parts of the Patch features panel and the curve click (app/components/lab.py, curves.py)."""

from __future__ import annotations

from typing import Any

import pytest

from app.components.curves import clicked_block
from app.components.lab import (
    clean_pair,
    clicked_query,
    lab_side,
    move_sentence,
    perturb_body,
    sim_title,
)
from app.figures.moves import Move, changes_of, largest_moves, moves_figure
from app.metrics import DISTANCE_RELATIVE, curve_change
from app.state import Query

META = {"models": {"a": {"grid": [8, 8], "layers": 4}, "b": {"grid": [14, 14], "layers": 12}}}


def test_clicked_block_reads_the_points_x_within_the_slider() -> None:
    assert clicked_block({"points": [{"x": 3, "y": 0.5}]}, 12) == 3
    assert clicked_block({"points": [{"x": 0}]}, 12) == 1  # the embedding (delta panel): block 1
    assert clicked_block({"points": [{"x": 30}]}, 12) == 12
    assert clicked_block({"points": [{"y": 1}]}, 12) is None
    assert clicked_block(None, 12) is None


def test_clicked_query_names_the_patch_of_the_clicked_models_grid() -> None:
    click = {"points": [{"curveNumber": 1, "x": 13, "y": 0}]}
    q = clicked_query(click, META, ["a", "b"])
    assert q == Query.at_patch(0, 13, (14, 14)) and q is not None and q.index((14, 14)) == 13
    assert q.index((8, 8)) == 7  # the same place on the other model's grid
    assert (
        clicked_query({"points": [{"curveNumber": 0, "x": 8, "y": 0}]}, META, ["a", "b"]) is None
    )  # off grid
    assert clicked_query({"points": [{"curveNumber": 5, "x": 1, "y": 1}]}, META, ["a"]) is None
    assert clicked_query({"points": []}, META, ["a"]) is None


def test_perturb_body_sends_only_what_the_kind_takes() -> None:
    assert perturb_body("low_pass", 1.5, 0.2, 32) == {"kind": "low_pass", "side": 32, "cutoff": 1.5}
    want = {"kind": "band_noise", "side": 224, "freq": 2.0, "eps": 0.2}
    assert perturb_body("band_noise", 2.0, 0.2, 224) == want


def test_lab_side_is_the_smallest_side_the_models_read() -> None:
    meta = {
        "models": {
            "big": {"resize": 256, "input_size": [224, 224]},
            "cifar": {"resize": None, "input_size": [32, 32]},
            "tiny": {"resize": 8, "input_size": [8, 8]},
        }
    }
    assert lab_side(meta) == (16, "tiny")  # clamped to the API's 16..1024
    del meta["models"]["tiny"]
    assert lab_side(meta) == (32, "cifar")
    assert lab_side({"models": {}}) == (224, None) and lab_side(None) == (224, None)


def _metrics(distance: list[float], nmi: list[float], delta: list[float]) -> dict[str, Any]:
    """A metrics object with the moved curves (the API's shapes), one image (std 0)."""
    return {
        "attention_distance_relative": {"mean": distance, "std": [0.0] * len(distance), "per_head": None},
        "nmi": {"mean": nmi, "std": [0.0] * len(nmi), "per_head": None},
        "delta_log_amplitude": {"depth": list(range(len(delta))), "value": delta, "std": [0.0] * len(delta)},
    }


def test_what_moved_is_the_copy_minus_the_source_depth_by_depth() -> None:
    source = {
        "a": _metrics([0.5, 0.9], [0.3, 0.1], [-2.0, -2.5, -3.0]),
        "b": _metrics([0.4, 0.8], [0.2, 0.2], [-1.0, -1.0, -1.0]),
        "gone": _metrics([0.5, 0.5], [0.1, 0.1], [0.0, 0.0, 0.0]),  # not read on the copy: left out
    }
    copy = {
        "a": _metrics([0.75, 0.9], [0.3, 0.35], [-2.0, -1.5, -3.5]),
        "b": _metrics([0.4, 0.2], [0.2, 0.1], [-1.0, -1.25, float("nan")]),
    }
    changes = changes_of(source, copy)
    assert list(changes) == ["a", "b"]
    assert changes["a"]["attention_distance_relative"].mean == [0.25, 0.0]
    assert changes["a"]["attention_distance_relative"].x == [1, 2]  # blocks
    assert changes["a"]["nmi"].mean == pytest.approx([0.0, 0.25])
    assert changes["a"]["delta_log_amplitude"].x == [0, 1, 2]  # depths from the embedding
    assert changes["a"]["delta_log_amplitude"].mean == [0.0, 1.0, -0.5]
    moves = {m.spec.key: m for m in largest_moves(changes)}
    assert moves["attention_distance_relative"] == Move("b", DISTANCE_RELATIVE, 2, pytest.approx(-0.6))
    assert (moves["nmi"].model, moves["nmi"].depth, moves["nmi"].change) == ("a", 2, pytest.approx(0.25))
    assert (moves["delta_log_amplitude"].model, moves["delta_log_amplitude"].depth) == ("a", 1)  # NaN skipped
    said = move_sentence(moves["delta_log_amplitude"])
    assert (
        said == "Δ log amplitude (high frequency): a moved the most, +1 at depth 1 (perturbed minus source)."
    )
    assert "-0.6 × uniform attention at block 2" in move_sentence(moves["attention_distance_relative"])


def test_what_moved_leaves_out_a_curve_of_other_depths_and_draws_the_rest() -> None:
    deeper = _metrics([0.5, 0.9, 0.9], [0.3, 0.1, 0.1], [-2.0, -2.5, -3.0, -3.0])
    assert (
        curve_change(_metrics([0.5, 0.9], [0.3, 0.1], [-2.0, -2.5, -3.0]), deeper, DISTANCE_RELATIVE) is None
    )
    assert changes_of({"a": _metrics([1.0], [1.0], [1.0, 1.0])}, {"a": deeper}) == {}
    changes = changes_of({"a": _metrics([0.5], [0.1], [0.0, 1.0])}, {"a": _metrics([0.7], [0.1], [0.0, 0.5])})
    fig = moves_figure(changes, colours={"a": "#1c62c4"}, families={"a": "cl"}, subtitle="x")
    lines = [(t.xaxis, list(t.x), list(t.y)) for t in fig.data]
    assert lines == [("x", [1], [pytest.approx(0.2)]), ("x2", [1], [0.0]), ("x3", [0, 1], [0.0, -0.5])]
    assert fig.layout.meta["curves"] == ["attention_distance_relative", "nmi", "delta_log_amplitude"]


def test_a_similarity_title_says_raw_or_centred_and_the_mean_to_the_other_patches() -> None:
    body = {"query": 1, "centred": False, "map": [[0.5, 1.0], [0.25, 0.75]]}
    assert (
        sim_title("m", body)
        == "m · cosine to the chosen patch<br>raw tokens · mean to the other patches 0.50"
    )
    centred = sim_title("m", {**body, "centred": True, "map": [[-0.5, 1.0], [0.0, 0.2]]})
    assert centred.endswith("<br>centred tokens · mean to the other patches -0.10")
    assert sim_title("m", {"query": 0, "map": [[1.0]]}) == "m · cosine to the chosen patch<br>raw tokens"


def test_the_lab_pair_from_the_browser_is_two_image_ids_or_nothing() -> None:
    a, b = "a" * 64, "b" * 64
    assert clean_pair({"source": a, "perturbed": b, "name": "x"}) == (a, b)
    assert clean_pair({"source": a, "perturbed": "../jobs?"}) is None
    assert clean_pair({"source": a}) is None and clean_pair("nope") is None and clean_pair(None) is None
