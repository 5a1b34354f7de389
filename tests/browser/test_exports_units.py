"""The page's exports without a browser: file names, each panel's JSON/CSV, the export-all zip and README."""

from __future__ import annotations

import base64
import csv
import io
import json
import zipfile
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from app.exports import (
    ExportFile,
    attention_files,
    attention_name,
    build_zip,
    claims_files,
    curves_files,
    decode_data_url,
    figure_files,
    figure_name,
    query_label,
    spectrum_files,
    tokens_files,
)
from app.figures.attention import attention_figure
from tests.browser.test_ui_units import SHA, metrics_object


def test_attention_file_names_say_model_layer_head_and_query() -> None:
    assert attention_name("cifar-cl-vit-t4", 12, "mean", "cls", [8, 8]) == (
        "vitscope_cifar-cl-vit-t4_block12_head-mean_query-cls"
    )
    # patch 27 on an 8 x 8 grid is row 3, column 3; on 14 x 14 it is row 1, column 13
    assert attention_name("m", 3, 2, 27, [8, 8]) == "vitscope_m_block3_head2_query-r3c3"
    assert query_label(27, [14, 14]) == "query-r1c13"
    assert attention_name("org/odd model:v1", 1, "all", 0, (2, 2)) == (
        "vitscope_org-odd-model-v1_block1_all-heads_query-r0c0"
    )


def test_tokens_csv_has_token_index_row_and_col() -> None:
    body = {
        "grid": [8, 8],
        "coords": [[0.5, -1.0], [2.0, 3.0], [4.0, 5.0]],
        "image_index": [0, 0, 1],
        "token_index": [0, 27, 63],
    }
    files = tokens_files(
        {"m": body}, layers={"m": 6}, layer=6, method="pca", image_ids=[SHA, "b" * 64], errors=[]
    )
    assert [f.path for f in files] == ["vitscope_tokens_pca_block6.json", "vitscope_tokens_pca_block6.csv"]
    rows = list(csv.DictReader(io.StringIO(str(files[1].data))))
    assert [r["token_index"] for r in rows] == ["0", "27", "63"]
    assert (rows[1]["row"], rows[1]["col"]) == ("3", "3") and (rows[2]["row"], rows[2]["col"]) == ("7", "7")
    assert rows[2]["image"] == "b" * 64 and rows[0]["x"] == "0.5"
    assert json.loads(str(files[0].data))["embeddings"]["m"]["token_index"] == [0, 27, 63]


def test_curves_and_spectrum_numbers() -> None:
    files = curves_files(
        {"a": metrics_object(layers=2, heads=2)}, scope="image", subtitle="one image: cat", images=[SHA],
        errors=[],
    )  # fmt: skip
    assert files[0].path == "vitscope_curves_one-image.json"
    rows = list(csv.DictReader(io.StringIO(str(files[1].data))))
    assert {r["metric"] for r in rows} >= {"attention_distance", "nmi", "delta_log_amplitude"}
    assert len([r for r in rows if r["metric"] == "nmi"]) == 2 * (1 + 2), "mean + each head per block"
    spec = spectrum_files(
        {"a": {"map": [[0.0, 1.0], [2.0, 3.0]], "delta": [0.0], "high_frequency_delta": 0.0}},
        depths={"a": 4},
        state="out",
        layer=4,
        image=SHA,
        errors=[],
    )
    rows = list(csv.DictReader(io.StringIO(str(spec[1].data))))
    assert len(rows) == 4 and rows[0]["cycles_y"] == "-1" and rows[3]["cycles_x"] == "0"
    assert rows[3]["log_amplitude"] == "3.0"


def test_data_urls_from_plotly_decode() -> None:
    png = b"\x89PNG\r\n\x1a\n fake"
    assert decode_data_url("data:image/png;base64," + base64.b64encode(png).decode()) == png
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><text>Δ 50%</text></svg>'
    assert decode_data_url("data:image/svg+xml," + quote(svg)) == svg.encode()
    with pytest.raises(ValueError):
        decode_data_url("https://example.org/x.png")


def test_export_all_zip_holds_figures_numbers_and_a_readme() -> None:
    png = "data:image/png;base64," + base64.b64encode(b"png-bytes").decode()
    svg = "data:image/svg+xml," + quote("<svg/>")
    figures = figure_files(
        [
            {"name": "vitscope_m_block1_head-mean_query-cls", "title": "Attention", "png": png, "svg": svg},
            {"name": "vitscope_m_block1_head-mean_query-cls", "title": "Attention", "png": png, "svg": svg},
        ]
    )
    amap = {"image": SHA, "model": "m", "grid": [2, 2], "patch_size": 4, "layer": 1, "head": "mean",
            "query": "cls", "map": [[0.1, 0.2], [0.3, 0.4]]}  # fmt: skip
    files = figures + attention_files([amap]) + [ExportFile("extra.txt", "x", "an extra file")]
    blob = build_zip(files, {"models": ["m"], "layer": 1}, at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    zf = zipfile.ZipFile(io.BytesIO(blob))
    names = zf.namelist()
    assert names[0] == "README.txt"
    assert "figures/vitscope_m_block1_head-mean_query-cls.png" in names
    assert "figures/vitscope_m_block1_head-mean_query-cls-2.svg" in names, "a second figure of one name"
    assert "numbers/vitscope_attention.csv" in names and "numbers/extra.txt" in names
    assert zf.read("figures/vitscope_m_block1_head-mean_query-cls.png") == b"png-bytes"
    rows = list(csv.DictReader(io.StringIO(zf.read("numbers/vitscope_attention.csv").decode())))
    assert [r["attention"] for r in rows] == ["0.1", "0.2", "0.3", "0.4"] and rows[2]["row"] == "1"
    readme = zf.read("README.txt").decode()
    for name in names[1:]:
        assert name in readme, f"README names {name}"
    assert "2026-01-02 03:04:05 UTC" in readme and "models: m" in readme
    assert "renormalized to sum 1" in readme, "README says how the maps were computed"


def test_figure_names_come_from_the_figures_meta() -> None:
    fig = attention_figure(image=SHA, model="cifar-cl-vit-t4", title="t", image_uri=None,
                           amap=[[0.25, 0.25], [0.25, 0.25]], grid=(2, 2), patch=4, layer=3, head="mean",
                           rc=(1, 0), opacity=0.5)  # fmt: skip
    assert fig.layout.meta["filename"] == "vitscope_cifar-cl-vit-t4_block3_head-mean_query-r1c0"
    assert figure_name(fig.layout.meta, "att") == "vitscope_cifar-cl-vit-t4_block3_head-mean_query-r1c0"
    assert figure_name({"filename": "vitscope_curves_one-image"}, "crv-graph") == "vitscope_curves_one-image"
    assert figure_name(None, "spc-graph") == "vitscope_spc-graph"
    assert figure_name({"filename": "../x y"}, "f") == "x-y", "a name from the browser is made safe"


def test_figure_readme_text_is_plain_and_says_what_a_map_shows() -> None:
    png = "data:image/png;base64," + base64.b64encode(b"p").decode()
    meta = {"model": "m", "layer": 4, "head": "mean", "query": 10, "grid": [8, 8]}
    title = '<span style="color:#1c62c4">●</span> <b>m</b> · CL'
    [f] = figure_files([{"name": "x", "title": title, "meta": meta, "png": png}])
    assert f.path == "figures/x.png" and "<" not in f.about and f.about.startswith("m · CL (A1: ")
    assert "query r1c2" in f.about and "block 4, mean of heads" in f.about
    [r] = figure_files([{"name": "y", "title": title, "meta": {**meta, "rollout": True}, "png": png}])
    assert "attention rollout of query r1c2 through block 4" in r.about and "A1" not in r.about


def test_attention_numbers_say_which_maps_are_rollouts() -> None:
    amap = {"image": SHA, "model": "m", "grid": [1, 2], "patch_size": 4, "layer": 3, "head": "mean",
            "query": "cls", "map": [[0.5, 0.5]]}  # fmt: skip
    numbers, table = attention_files([amap, {**amap, "rollout": True}])
    rows = list(
        csv.DictReader(io.StringIO(table.data.decode() if isinstance(table.data, bytes) else table.data))
    )
    assert [r["rollout"] for r in rows] == ["False", "False", "True", "True"]
    assert "attention rollout through that block" in numbers.about


def test_claims_export_has_a_row_per_claim_and_role() -> None:
    report = {
        "claims": [
            {"id": "distance", "held": True, "values": {"cl": 16.0, "mim": 14.0},
             "models": {"cl": "c", "mim": "m"}, "unit": "px", "where": "blocks 7-12", "images": 3,
             "images_held": 3},
            {"id": "fourier", "held": False, "values": {"cl": -2.66, "mim": -3.24},
             "models": {"cl": "c", "mim": "m"}, "unit": "", "where": "depths 1-12", "images": 3,
             "images_held": 0},
        ]
    }  # fmt: skip
    js, table = claims_files(report)
    assert js.path == "vitscope_claims.json" and json.loads(str(js.data)) == report
    rows = list(csv.DictReader(io.StringIO(str(table.data))))
    assert [(r["claim"], r["held"], r["role"], r["model"]) for r in rows] == [
        ("distance", "True", "cl", "c"), ("distance", "True", "mim", "m"),
        ("fourier", "False", "cl", "c"), ("fourier", "False", "mim", "m"),
    ]  # fmt: skip
    assert rows[3]["value"] == "-3.24" and rows[3]["images_held"] == "0"
