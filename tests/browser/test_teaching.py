"""What the page teaches, in headless Chromium against the real server with the shipped demo models: the
"Does it reproduce the paper?" strip agrees with the API's claims, the paper's curves are overlaid (relative
where grids differ), exports are named after what they show, and "Export all panels" writes the zip.

The first visit loads the "Try the demo" preset (cue-conflict images, the CL, MIM and hybrid demo models).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from app.claims import claim_line
from tests.browser.chrome import Browser
from tests.browser.conftest import SCREENSHOTS
from tests.browser.helpers import att_col, click_patch, heatmap, screenshot, view, wait_for
from tests.browser.serverproc import Server

pytestmark = pytest.mark.browser

DEMO = {"cl": "cifar-cl-vit-t4", "mim": "cifar-mim-vit-t4", "hybrid": "cifar-hybrid-vit-t4"}
PAPER_CL = "paper: MoCo v3 ViT-B/16, ImageNet"
PAPER_MIM = "paper: SimMIM ViT-B/16, ImageNet"

CURVES_JS = """
const gd = document.querySelector('#crv-graph .js-plotly-plot');
if (!gd || !gd.data || !gd.data.length) return null;
return JSON.stringify({traces: gd.data.map(t => ({name: t.name, xaxis: t.xaxis, y: t.y, x: t.x,
                                                  dash: t.line ? t.line.dash : null})),
                       meta: gd.layout.meta});
"""


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def page(server: Server, chromium_ok: None, downloads: Path) -> Iterator[WebDriver]:
    """A first visit: the demo preset drawn, the claims checked."""
    b = Browser(width=1440, height=1000, download_dir=downloads)
    d = b.driver
    try:
        d.get(server.url + "/")
        wait_for(lambda: len(d.find_elements(By.CSS_SELECTOR, "#crv-claims .claim")) == 4, "4 claims", 400)
        # The address bar is written by its own callback: the strip can be drawn before it.
        wait_for(lambda: "images=" in d.current_url, "the demo view in the address bar", 60)
        yield d
    finally:
        b.close()


def downloaded(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000  # Chromium writes <name>.crdownload until done


def curves(d: WebDriver) -> dict[str, Any] | None:
    raw = d.execute_script(CURVES_JS)
    return json.loads(raw) if raw else None


def test_first_visit_checks_the_papers_claims_on_the_demo_models(server: Server, page: WebDriver) -> None:
    d = page
    state = view(d)
    assert state.models == list(DEMO.values()) and len(state.images) > 1
    set_id = httpx.post(f"{server.api}/sets", json={"images": state.images}, timeout=30).json()["id"]
    api = httpx.get(f"{server.api}/claims", params={**DEMO, "set": set_id}, timeout=300).json()
    rows = {
        li.get_attribute("class"): li.text
        for li in d.find_elements(By.CSS_SELECTOR, "#crv-claims .claim")
    }  # fmt: skip
    assert len(api["claims"]) == 4
    for claim in api["claims"]:
        line = claim_line(claim)
        cls = f"claim claim-{claim['id']} " + ("claim-held" if claim["held"] else "claim-not-held")
        assert cls in rows, f"{claim['id']}: the page says the opposite of the API ({rows})"
        text = rows[cls]
        assert text.startswith("held" if claim["held"] else "not held")
        assert line.numbers in text, "the numbers behind the verdict are on the strip"
        assert f"holds on {claim['images_held']} of {claim['images']} images" in text
    tally = d.find_element(By.CSS_SELECTOR, "#crv-claims .claims-tally").text
    assert tally == f"{api['held']} of {api['total']} claims held on the mean over {api['images']} images"
    note = d.find_element(By.CSS_SELECTOR, "#crv-claims").text
    if not api["all_held"]:
        assert "32 × 32 px input, 8 × 8 grid" in note and "Small models on 32 px images" in note
    # The Learn note: the paper's finding, then what these models show, one sentence per claim.
    d.execute_script("document.querySelector('#crv-panel details.learn').open = true")
    live = wait_for(lambda: d.find_element(By.ID, "crv-live").text, "the Learn note's live part")
    assert live.count("as in the paper") == api["held"]
    assert live.count("unlike the paper") == api["total"] - api["held"]
    assert "MoCo v3 reaches 113.5 px in block 12" in live, "the paper's own numbers, with its setting"
    d.execute_script("document.getElementById('crv-panel').scrollIntoView()")
    screenshot(d, SCREENSHOTS, "20-claims-strip", full_page=False)


def test_the_papers_curves_are_overlaid_on_the_relative_scale(server: Server, page: WebDriver) -> None:
    d = page
    fig = wait_for(lambda: curves(d), "the curves")
    reference = httpx.get(f"{server.api}/reference", timeout=30).json()
    moco = {s["metric"]: s for s in reference["series"] if s["id"].startswith("mocov3-b16.")}
    assert fig["meta"]["scale"] == "relative", "demo models on 8 x 8 next to the paper's 14 x 14"
    paper = [t for t in fig["traces"] if t["name"] == PAPER_CL]
    assert {t["xaxis"] for t in paper} == {"x", "x2", "x4"} and all(t["dash"] == "dash" for t in paper)
    distance = next(t for t in paper if t["xaxis"] == "x")
    assert distance["y"] == pytest.approx(moco["attention_distance"]["values_relative"])
    assert next(t for t in paper if t["xaxis"] == "x2")["y"] == pytest.approx(moco["nmi"]["values"])
    assert [t["xaxis"] for t in fig["traces"] if t["name"] == PAPER_MIM] == ["x4"]
    assert any(t["name"].startswith("uniform attention") and t["y"] == [1, 1] for t in fig["traces"])
    # Without the overlay every curve is on 8 x 8: pixels, each model's uniform level a faint line.
    d.execute_script("document.querySelector('#crv-paper input[type=checkbox]').click()")
    fig = wait_for(lambda: (f := curves(d)) and f["meta"]["scale"] == "px" and f, "the curves in pixels")
    assert not [t for t in fig["traces"] if t["name"].startswith("paper:")]
    image = view(d).images[0]
    for model in DEMO.values():
        metrics = httpx.get(
            f"{server.api}/images/{image}/metrics", params={"model": model}, timeout=60
        ).json()
        u = metrics["uniform_attention_distance"]
        name = f"{model}: uniform attention on its 8 × 8 grid = {u:.2f} px"
        level = [t for t in fig["traces"] if t["name"] == name]
        assert level and level[0]["y"] == pytest.approx([u, u]), f"{model}'s uniform level"
    d.execute_script("document.querySelector('#crv-paper input[type=checkbox]').click()")
    wait_for(lambda: (f := curves(d)) and f["meta"]["scale"] == "relative", "the overlay back")


def test_the_attention_note_gives_the_shown_blocks_numbers(server: Server, page: WebDriver) -> None:
    d = page
    layer = wait_for(lambda: heatmap(d, att_col(0)), "the maps")["meta"]["layer"]
    d.execute_script("document.querySelector('#att-panel details.learn').open = true")
    live = wait_for(lambda: d.find_element(By.ID, "att-live").text, "the attention note's live part")
    image = view(d).images[view(d).active]
    for model in DEMO.values():
        metrics = httpx.get(
            f"{server.api}/images/{image}/metrics", params={"model": model}, timeout=60
        ).json()
        nmi = metrics["nmi"]["mean"][layer - 1]
        assert f"{model} (block {layer}): NMI {nmi:.3f}" in live, live


def three_maps(d: WebDriver, query: int) -> list[dict[str, Any]] | None:
    """The three demo models' attention maps once all show patch ``query`` (row-major on their 8 x 8 grid)."""
    drawn = [heatmap(d, att_col(i)) for i in range(3)]
    return drawn if all(m and m["meta"]["query"] == query for m in drawn) else None  # type: ignore[misc]


def test_panel_png_names_say_model_block_head_and_query(page: WebDriver, downloads: Path) -> None:
    d = page
    wait_for(lambda: heatmap(d, att_col(0)), "the first attention map")
    click_patch(d, att_col(0), 2, 5)
    drawn = wait_for(partial(three_maps, d, 2 * 8 + 5), "the three maps for query patch (2, 5)")
    d.execute_script("document.getElementById('att-exp-png').click()")
    for m in drawn:
        meta = m["meta"]
        name = f"vitscope_{meta['model']}_block{meta['layer']}_head-mean_query-r2c5.png"
        path = downloads / name
        wait_for(partial(downloaded, path), name, timeout=60)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(downloads.glob("vitscope-att-graph*")), "no panel-id names any more"


def test_export_all_panels_writes_the_zip(page: WebDriver, downloads: Path) -> None:
    d = page
    wait_for(lambda: heatmap(d, att_col(0)), "the maps")
    r, c = 3, 4  # a patch query of its own (run alone, the page shows CLS)
    click_patch(d, att_col(0), r, c)
    layer = wait_for(partial(three_maps, d, r * 8 + c), "the three maps for query patch (3, 4)")[0]["meta"][
        "layer"
    ]
    d.execute_script("document.getElementById('exp-all-button').click()")
    path = wait_for(lambda: next(iter(downloads.glob("vitscope-export*.zip")), None), "the zip", timeout=180)
    zf = zipfile.ZipFile(io.BytesIO(wait_for(lambda: path.read_bytes(), "the whole zip")))
    names = zf.namelist()
    assert names[0] == "README.txt"
    for model in DEMO.values():
        stem = f"figures/vitscope_{model}_block{layer}_head-mean_query-r{r}c{c}"
        assert {stem + ".png", stem + ".svg"} <= set(names), stem
    n_images = len(view(d).images)
    assert f"figures/vitscope_curves_set-of-{n_images}-images.svg" in names
    assert any(n.startswith("figures/vitscope_spectrum_out_block") and n.endswith(".png") for n in names)
    assert f"figures/vitscope_spectrum-delta_out_block{layer}.svg" in names, "the Δ lines under the maps"
    parts = ("attention", "claims", f"curves_set-of-{n_images}-images", f"spectrum_out_block{layer}",
             f"beyond-the-paper_set-of-{n_images}-images")  # fmt: skip
    for part in parts:
        assert {f"numbers/vitscope_{part}.json", f"numbers/vitscope_{part}.csv"} <= set(names), part
    assert "numbers/paper_reference.json" in names
    readme = zf.read("README.txt").decode()
    assert all(n in readme for n in names[1:]), "README.txt says what every file is"
    assert "preprocessing of cifar-cl-vit-t4: input_size [32, 32]" in readme
    png = next(n for n in names if n.endswith(".png"))
    assert zf.read(png)[:8] == b"\x89PNG\r\n\x1a\n"
    svg = next(n for n in names if n.endswith(".svg"))
    assert b"<svg" in zf.read(svg)[:200]
    curves_json = json.loads(zf.read(f"numbers/vitscope_curves_set-of-{n_images}-images.json"))
    assert set(curves_json["models"]) == set(DEMO.values())
    assert "attention_distance_relative" in curves_json["models"][DEMO["cl"]]
    modern_json = json.loads(zf.read(f"numbers/vitscope_beyond-the-paper_set-of-{n_images}-images.json"))
    assert set(modern_json["models"]) == set(DEMO.values())
    assert modern_json["models"][DEMO["mim"]]["positional_share"][
        "value"
    ]  # a set statistic: the set's curves
    claims_json = json.loads(zf.read("numbers/vitscope_claims.json"))
    assert claims_json["models"] == DEMO and len(claims_json["claims"]) == 4
