"""The spectrum panel's Δ log amplitude lines and the tokens panel's singular-value curves without a browser:
what each figure draws is the API answer's numbers, arranged, and the panels' exports carry them.

(Beside the browser tests because ``tests/browser`` holds everything of the UI; no browser needed.)
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import pytest

from app.exports import spectrum_files, tokens_files
from app.figures.spectrum import DELTA_AXIS, delta_figure, delta_points
from app.figures.tokens import singular_value_curve, singular_values_figure
from tests.browser.test_ui_units import SHA


def spectrum_answer(h: int, w: int, delta: list[float], last: float) -> dict[str, Any]:
    """An answer shaped like ``GET /images/{id}/spectrum``'s: frequencies (2 pi m / H, 2 pi m / W)."""
    return {
        "grid": [h, w],
        "map": [[float(10 * r + c) for c in range(w)] for r in range(h)],
        "delta": delta,
        "frequencies": [[2 * math.pi * m / h, 2 * math.pi * m / w] for m in range(len(delta))],
        "high_frequency_delta": last,
    }


ANSWERS = {
    "cl-8": spectrum_answer(8, 8, [0.0, -1.25, -2.5, -3.75], -3.7501),
    "mim-14": spectrum_answer(14, 14, [0.0, -0.5, -0.75, -1.0, -1.5, -1.75, -2.0], -2.0002),
}


def traces(fig: Any, curve: str) -> dict[str, Any]:
    return {t.meta["model"]: t for t in fig.data if t.meta["curve"] == curve}


def test_delta_lines_are_the_answers_delta_at_their_frequencies_over_pi() -> None:
    fig = delta_figure(
        ANSWERS,
        colours={"cl-8": "#1c62c4", "mim-14": "#d9480f"},
        families={"cl-8": "cl", "mim-14": "mim"},
        titles={"cl-8": "cl-8 · depth 2"},
        subtitle="s",
        filename="vitscope_spectrum-delta_out_block2",
    )
    lines, last = traces(fig, "delta"), traces(fig, "last-bin")
    assert list(lines) == list(last) == ["cl-8", "mim-14"]
    assert list(lines["cl-8"].x) == pytest.approx([0.0, 0.25, 0.5, 0.75]), "2 pi m / 8 as a fraction of pi"
    assert list(lines["mim-14"].x) == pytest.approx([2 * m / 14 for m in range(7)])
    for m, a in ANSWERS.items():
        assert list(lines[m].y) == a["delta"]
        # the marked point is the last bin, at the answer's high_frequency_delta (what the depth curve reads)
        assert list(last[m].x) == pytest.approx([a["frequencies"][-1][1] / math.pi])
        assert list(last[m].y) == [a["high_frequency_delta"]]
    assert lines["cl-8"].name == "cl-8 · depth 2" and lines["mim-14"].line.dash == "dash"
    assert lines["cl-8"].line.color == last["cl-8"].marker.color == "#1c62c4"
    assert [t.showlegend for t in last.values()] == [True, False], "one legend entry for the marker"
    assert fig.layout.xaxis.title.text == DELTA_AXIS and "π radians per patch" in DELTA_AXIS
    assert fig.layout.meta["filename"] == "vitscope_spectrum-delta_out_block2"


def test_delta_points_of_a_grid_that_is_not_square_take_the_column_frequency() -> None:
    a = spectrum_answer(4, 8, [0.0, -1.0], -1.0)
    assert [v for p in delta_points(a) for v in p] == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.5, -1.0])


def test_singular_value_curves_are_the_answers_means_on_a_log_axis() -> None:
    per_model = {
        "cl": {"singular_values_mean": [1.0, 0.05, 0.01], "singular_values_largest": [41.5, 39.25]},
        "mim": {"singular_values_mean": [1.0, 0.5, 0.25, 0.125], "singular_values_largest": [12.0, 13.0]},
    }
    fig = singular_values_figure(
        per_model,
        colours={"cl": "#1c62c4", "mim": "#d9480f"},
        families={"cl": "cl", "mim": "mim"},
        titles={"cl": "cl · block 3", "mim": "mim · block 3"},
        subtitle="s",
        filename="vitscope_singular-values_block3",
    )
    drawn = {t.meta["model"]: t for t in fig.data}
    assert list(drawn) == ["cl", "mim"]
    for m, body in per_model.items():
        assert list(drawn[m].x) == list(range(1, len(body["singular_values_mean"]) + 1))
        assert list(drawn[m].y) == body["singular_values_mean"]
    assert "41.5, 39.25" in drawn["cl"].hovertemplate, "each image's raw largest singular value"
    assert fig.layout.yaxis.type == "log" and fig.layout.meta["filename"] == "vitscope_singular-values_block3"
    assert singular_value_curve({"singular_values_mean": []}) == ([], [])


def test_spectrum_csv_puts_delta_on_the_half_diagonal_cells() -> None:
    a = ANSWERS["cl-8"]
    files = spectrum_files({"cl-8": a}, depths={"cl-8": 2}, state="out", layer=2, image=SHA, errors=[])
    rows = list(csv.DictReader(io.StringIO(str(files[1].data))))
    assert len(rows) == 64
    on = [r for r in rows if r["half_diagonal_bin"] != ""]
    assert [(r["cycles_y"], r["cycles_x"], r["half_diagonal_bin"]) for r in on] == [
        (str(m), str(m), str(m)) for m in range(4)
    ]
    assert [float(r["delta"]) for r in on] == a["delta"]
    assert all(r["delta"] == "" for r in rows if r["half_diagonal_bin"] == "")
    doc = json.loads(str(files[0].data))
    assert doc["spectra"]["cl-8"]["frequencies"] == a["frequencies"]


def test_tokens_json_carries_the_singular_values() -> None:
    body = {
        "grid": [2, 2],
        "coords": [[0.0, 1.0]] * 4,
        "image_index": [0] * 4,
        "token_index": [0, 1, 2, 3],
        "singular_values_normalized": [[1.0, 0.5]],
        "singular_values_mean": [1.0, 0.5],
        "singular_values_largest": [7.5],
    }
    files = tokens_files({"m": body}, layers={"m": 1}, layer=1, method="pca", image_ids=[SHA], errors=[])
    doc = json.loads(str(files[0].data))
    assert doc["embeddings"]["m"]["singular_values_mean"] == [1.0, 0.5]
    assert doc["embeddings"]["m"]["singular_values_largest"] == [7.5]
    assert "singular_values_normalized" in files[0].about
