"""The CKA panel's readers and figure (app/components/cka.py, app/figures/cka.py) on the API's answer made by
``cka_with_null`` from random representations, and the Patch features panel's PCA readers (app/components/
lab.py) on answers made by ``pca_rgb_set``: what is drawn and said is the answer's numbers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from app.components.cka import missing, model_choices, null_note
from app.components.lab import image_pca, pca_subtitle, pca_title
from app.figures.cka import cka_figure, null_summary
from backend.analysis.cka import CKA_PERMUTATIONS, CKA_SEED, cka_with_null
from backend.analysis.patches import pca_rgb_set


def cka_answer() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 5, 8, generator=g), torch.randn(4, 5, 6, generator=g)
    res = cka_with_null(x, y)
    return {
        "images": [f"{i:064x}" for i in range(5)],
        "model_a": "a",
        "model_b": "b",
        "depth_a": [0, 1, 2],
        "depth_b": [0, 1, 2, 3],
        "permutations": CKA_PERMUTATIONS,
        "seed": CKA_SEED,
        "cka": res.cka.tolist(),
        "null_mean": res.null.mean(0).tolist(),
        "calibrated": res.calibrated.tolist(),
    }


def test_cka_heat_map_draws_the_answers_matrices() -> None:
    body = cka_answer()
    raw = cka_figure(body, "raw")
    (trace,) = raw.data
    assert [list(r) for r in trace.z] == body["cka"] and (trace.zmin, trace.zmax) == (0, 1)
    assert list(trace.x) == [0, 1, 2, 3] and list(trace.y) == [0, 1, 2]
    assert (
        raw.layout.yaxis.title.text == "model A depth (a)"
        and raw.layout.xaxis.title.text == "model B depth (b)"
    )
    assert trace.customdata[2][3] == [body["cka"][2][3], body["null_mean"][2][3], body["calibrated"][2][3]]
    cal = cka_figure(body, "calibrated")
    top = max(abs(v) for row in body["calibrated"] for v in row)
    assert [list(r) for r in cal.data[0].z] == body["calibrated"]
    assert (cal.data[0].zmin, cal.data[0].zmax) == (-top, top)
    assert cal.layout.meta["filename"] == "vitscope_cka_a_vs_b_calibrated"


def test_cka_note_states_the_nulls_mean() -> None:
    body = cka_answer()
    values = torch.tensor(body["null_mean"])
    mean, low, high = null_summary(body)
    assert (mean, low, high) == pytest.approx(
        (values.mean().item(), values.min().item(), values.max().item())
    )
    note = null_note(body)
    assert f"CKA is {mean:.3f} on average over the depth pairs ({low:.3f} to {high:.3f})" in note
    assert note.startswith("5 images. With the images of model B shuffled (20 permutations, seed 0)")


def test_cka_needs_two_images_and_two_models() -> None:
    assert missing(["i"], ["a", "b"]) == (
        "CKA compares representations across images: add 2 or more images (now 1)."
    )
    assert missing(["i", "j"], ["a"]) == "CKA compares two models: select 2 or more models (now 1)."
    assert missing(["i", "j"], ["a", "b"]) is None
    assert model_choices(["a", "b", "c"], None, None) == ("a", "b")
    assert model_choices(["a", "b", "c"], "c", "a") == ("c", "a")  # kept while selected
    assert model_choices(["b", "c"], "a", "c") == ("b", "c")  # a was deselected
    assert model_choices(["c"], "a", "b") == ("c", "c")
    assert model_choices(["a", "b"], "a", "a") == ("a", "b")  # one model made both; a second one is B
    assert model_choices(["a", "b", "c"], "b", "b") == ("b", "a")
    assert model_choices([], "a", "b") == (None, None)


def test_pca_readers_pick_the_shown_images_picture() -> None:
    g = torch.Generator().manual_seed(1)
    tokens = [torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    results = pca_rgb_set(tokens, 0.0)
    body = {
        "fit": "set",
        "images": ["first", "second"],
        "rgb": [r.rgb.reshape(2, 2, 3).tolist() for r in results],
        "foreground": [r.foreground.reshape(2, 2).tolist() for r in results if r.foreground is not None],
        "explained": results[0].explained.tolist(),
    }
    second = image_pca(body, "second")
    assert second["rgb"] == body["rgb"][1] and second["foreground"] == body["foreground"][1]
    own = {"fit": "image", "rgb": body["rgb"][0], "foreground": None, "explained": body["explained"]}
    assert image_pca(own, "first") is own
    kept = sum(sum(row) for row in body["foreground"][1]) / 4
    share = sum(body["explained"])
    assert (
        pca_title("m", 3, second)
        == f"m<br>block 3 · 3 PCs: {share:.0%} of the variance · foreground {kept:.0%}"
    )
    assert pca_title("m", 3, own) == f"m<br>block 3 · 3 PCs: {share:.0%} of the variance"
    assert pca_subtitle("set", False, 2) == "PCA fitted on the whole set (2 images, one colour code)"
    assert pca_subtitle("image", True, 2).startswith("PCA fitted on the foreground patches of this image")
