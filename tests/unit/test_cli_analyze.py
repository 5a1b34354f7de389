"""`vitscope analyze` end to end: real images, random-vit-s16 and a checkpoint imported through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import backend.cli

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VITSCOPE_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


def cue_conflict_images(n: int) -> list[Path]:
    folder = SHARED_DATA / "cue_conflict" / "cat"
    assert folder.is_dir(), f"the shared test images are expected at {folder} (see ../shared/data/README.md)"
    return sorted(folder.glob("*.png"))[:n]


def mocov3_release_file(path: Path) -> dict[str, torch.Tensor]:
    """A MoCo v3 `.pth.tar` with the release's key layout around a tiny ViT (WEIGHTS.md 3.3)."""
    torch.manual_seed(1)
    encoder = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **TINY).state_dict()
    state = {f"module.base_encoder.{k}": v for k, v in encoder.items()}
    state |= {f"module.momentum_encoder.{k}": v.clone() for k, v in encoder.items()}
    state["module.base_encoder.head.0.weight"] = torch.randn(64, 32)
    state["module.predictor.0.weight"] = torch.randn(64, 64)
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": state}, path)
    return encoder


def test_analyze_writes_metrics_and_figures_for_random_and_imported_models(tmp_path: Path) -> None:
    encoder = mocov3_release_file(tmp_path / "vit-tiny-300ep.pth.tar")
    status = backend.cli.main(
        [
            "models",
            "import",
            str(tmp_path / "vit-tiny-300ep.pth.tar"),
            "--format",
            "mocov3",
            "--arch",
            "vit_small_patch16_224",
            "--arch-kwargs",
            json.dumps(TINY),
            "--as",
            "tiny-mocov3",
            "--family",
            "cl",
        ]
    )
    assert status == 0
    images = cue_conflict_images(3)
    out = tmp_path / "out"
    status = backend.cli.main(
        [
            "analyze",
            *map(str, images),
            "--models",
            "random-vit-s16,tiny-mocov3",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "2",
        ]
    )
    assert status == 0
    document = json.loads((out / "metrics.json").read_text())
    assert document["images"] == [str(p) for p in images]
    random, imported = document["models"]
    assert (random["model"], random["family"], random["untrained"]) == ("random-vit-s16", "baseline", True)
    assert (imported["model"], imported["family"]) == ("tiny-mocov3", "cl")
    assert random["grid"] == [14, 14] and random["patch_size"] == 16 and random["layers"] == 12
    assert imported["grid"] == [2, 2] and imported["layers"] == 2
    for m in (random, imported):
        assert m["num_images"] == 3  # two batches (2 + 1) merged before averaging
    # The 224 px model gets the paper's rule; the 32 px import (no card crop) its own timm data config.
    paper = random["preprocessing"]
    assert (paper["mode"], paper["source"], paper["interpolation"], paper["crop_pct"]) == (
        "paper",
        "paper",
        "bilinear",
        0.875,
    )
    assert (imported["preprocessing"]["mode"], imported["preprocessing"]["source"]) == ("model", "timm")
    for m in (random, imported):
        for key in ("attention_distance", "nmi", "attention_entropy"):
            assert len(m[key]["mean"]) == m["layers"] and len(m[key]["per_head"][0]) == m["heads"]
        assert m["delta_log_amplitude"]["depth"] == list(range(m["layers"] + 1))
    # Random weights attend almost uniformly: the distance is near the uniform value (116.49 px on 14x14).
    assert all(100 < d < 125 for d in random["attention_distance"]["mean"])
    # The imported weights are the ones in the release file, not a random init.
    from backend.models import load_model

    loaded = load_model("tiny-mocov3")
    torch.testing.assert_close(
        loaded.model.state_dict()["blocks.0.attn.qkv.weight"], encoder["blocks.0.attn.qkv.weight"]
    )
    for name in ("curves.png", "spectra.png", "attention_random-vit-s16.png", "attention_tiny-mocov3.png"):
        assert (out / name).stat().st_size > 5000, name


def test_analyze_rejects_missing_inputs_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = backend.cli.main(
        ["analyze", str(tmp_path / "nope.png"), "--models", "random-vit-s16", "--out", str(tmp_path)]
    )
    assert status == 2
    assert "is neither an image file, a folder nor a .tar shard" in capsys.readouterr().err
    status = backend.cli.main(
        ["analyze", str(cue_conflict_images(1)[0]), "--models", "no-such-model", "--out", str(tmp_path)]
    )
    assert status == 2
    assert "no-such-model" in capsys.readouterr().err
