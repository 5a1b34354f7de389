"""The small pure parts of the Patch features panel and the curve click (app/components/lab.py, curves.py)."""

from __future__ import annotations

from app.components.curves import clicked_block
from app.components.lab import clicked_query, lab_side, perturb_body
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
