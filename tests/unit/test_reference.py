"""The paper's reference curves shipped as package data: the file, its sources, the relative scale."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest

from backend.reference import paper_reference, paper_series, reference_families, reference_metrics

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_file_is_the_specs_digitization_with_a_source_per_series() -> None:
    shipped = json.loads((ROOT / "backend/reference/paper_reference.json").read_text())
    doc = paper_reference()
    assert [s["id"] for s in doc["series"]] == [s["id"] for s in shipped["series"]]
    assert len(doc["series"]) == 10
    for s in doc["series"]:
        assert s["source"].strip(), s["id"]
        assert len(s["x_values"]) == len(s["values"]), s["id"]
    assert doc["grid"] == [14, 14] and doc["patch_size"] == 16 and doc["input_size"] == 224
    assert "Imagenette" in doc["series"][0]["source"]


def test_package_build_includes_the_json() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "backend*" in config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "*.json" in config["tool"]["setuptools"]["package-data"]["*"]
    assert (ROOT / "backend/reference/__init__.py").is_file()  # a package, so find_packages sees it


def test_relative_distance_divides_by_the_14x14_uniform_distance() -> None:
    # independent: the mean over all ordered pairs of 14 x 14 patch centres of 16 * euclidean distance
    cells = [(r, c) for r in range(14) for c in range(14)]
    uniform = sum(16 * math.dist(a, b) for a in cells for b in cells) / len(cells) ** 2
    doc = paper_reference()
    assert doc["uniform_attention_distance"] == pytest.approx(116.4922, abs=1e-4)
    assert uniform == pytest.approx(116.49222696, abs=1e-6)
    cl = paper_series("mocov3-b16.attention_distance")
    assert cl["values_relative"] == pytest.approx([v / uniform for v in cl["values"]], abs=1e-4)
    assert cl["values_relative"][-1] == pytest.approx(113.50 / uniform, abs=1e-4)
    assert "values_relative" not in paper_series("mocov3-b16.nmi")


def test_filters_and_copies() -> None:
    assert reference_metrics() == ["attention_distance", "nmi", "delta_log_amplitude", "linear_probe_top1"]
    assert reference_families() == ["cl", "mim"]
    mim = paper_reference("delta_log_amplitude", "mim")["series"]
    assert {s["id"] for s in mim} == {
        "simmim-b16.delta_log_amplitude",
        "mae-b16.delta_log_amplitude.encoder",
        "mae-b16.delta_log_amplitude.decoder",
    }
    paper_reference()["series"].clear()  # callers get copies: the cached document stays whole
    assert len(paper_reference()["series"]) == 10
    with pytest.raises(KeyError):
        paper_series("nope")


def test_distance_scale_rule() -> None:
    from backend.reference import distance_scale

    demo, paper = ((8, 8), 4), ((14, 14), 16)
    assert distance_scale([demo, demo], with_paper=False) == "px"
    assert distance_scale([demo, demo]) == "relative"  # next to the paper's 14 x 14 curves
    assert distance_scale([paper, paper]) == "px"
    assert distance_scale([((14, 14), 14), paper], with_paper=False) == "relative"  # same grid, other patch
    assert distance_scale([], with_paper=False) == "px"


def test_the_rule_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, backend.reference; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
