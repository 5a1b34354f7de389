"""A trained model's training snapshots reach ``GET /models`` (and the UI's snapshot figure) as curves per
epoch, taken from the analyses its card holds (``vitscope train --snapshot-epochs`` writes them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from app.components.snapshots import PANELS, snapshot_figure
from backend.analysis import compute_metrics
from backend.capture import capture
from backend.models.loading import build_model
from tests.integration.test_api import (
    TINY,
    TINY_KWARGS,
    running,
    settings_for,
    use_models_cache,
    write_tiny_model,
)

pytestmark = pytest.mark.integration


def metrics_of(seed: int) -> dict:
    """The real metrics object of a tiny ViT on random pixels (what a snapshot's analysis records)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("vit_tiny_patch16_224", TINY_KWARGS).eval()
        pixels = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        return compute_metrics(capture(model, pixels, model_id=TINY), "cl")


@pytest.fixture
def snap_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[dict]]:
    folder = tmp_path / "models_cache"
    write_tiny_model(folder)
    card_path = folder / "imported" / f"{TINY}.json"
    card = json.loads(card_path.read_text())
    snaps = [
        {
            "epoch": 50,
            "step": 500,
            "images_seen": 5000,
            "weights": "s50.safetensors",
            "metrics": metrics_of(2),
        },
        {
            "epoch": 25,
            "step": 250,
            "images_seen": 2500,
            "weights": "s25.safetensors",
            "metrics": metrics_of(1),
        },
        {"epoch": 5, "step": 50, "images_seen": 500, "weights": "s5.safetensors"},  # not analysed: left out
    ]
    card["training"] = {"snapshots": snaps}
    card_path.write_text(json.dumps(card))
    use_models_cache(monkeypatch, folder)
    return folder, snaps


async def test_models_list_carries_each_analysed_snapshot_by_epoch(
    snap_models: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    _, snaps = snap_models
    async with running(settings_for(tmp_path), wait_ready=False) as api:
        r = await api.client.get(f"/api/v1/models/{TINY}")
        assert r.status_code == 200, r.text
        got = r.json()["snapshots"]
        listing = (await api.client.get("/api/v1/models")).json()["models"]
    assert [s["epoch"] for s in got] == [25.0, 50.0], "analysed snapshots only, oldest first"
    for out, snap in zip(got, [snaps[1], snaps[0]], strict=True):
        m = snap["metrics"]
        assert out["images_seen"] == snap["images_seen"]
        assert out["attention_distance_relative"] == m["attention_distance_relative"]["mean"]
        assert out["nmi"] == m["nmi"]["mean"]
        assert out["delta_log_amplitude"] == m["delta_log_amplitude"]["value"]
        assert len(out["nmi"]) == m["layers"] and len(out["delta_log_amplitude"]) == m["layers"] + 1
    assert next(x for x in listing if x["id"] == TINY)["snapshots"] == got
    assert all(x["snapshots"] == [] for x in listing if x["id"] != TINY), "models without a card have none"

    fig = snapshot_figure({TINY: got}, {TINY: "cl"})
    assert len(fig.data) == len(got) * len(PANELS), "one line per snapshot and curve"
    first, last = fig.data[0], fig.data[-len(PANELS)]
    assert list(first.y) == got[0]["attention_distance_relative"] and list(first.x) == [1, 2]
    assert first.line.color != last.line.color, "later snapshots drawn stronger"
    delta = fig.data[len(PANELS) - 1]
    assert list(delta.x) == [0, 1, 2] and list(delta.y) == got[0]["delta_log_amplitude"]
