"""preprocessing_for: each model's own eval preprocessing (card / timm data config) or the paper's rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.imaging import (
    Preprocessing,
    card_overlay,
    model_preprocessing,
    preprocess,
    preprocessing_for,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = {
    "input_size": (3, 32, 32),
    "interpolation": "bilinear",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "crop_pct": 1.0,
}
TIMM_224 = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.9}


@pytest.mark.parametrize("name", ["cifar-cl-vit-t4", "cifar-mim-vit-t4", "cifar-hybrid-vit-t4"])
def test_demo_cards_say_32_px_no_crop(name: str) -> None:
    card = json.loads((ROOT / "demo_models" / f"{name}.json").read_text())
    overlay = card_overlay(card["arch_kwargs"])
    assert overlay["crop_pct"] == 1.0 and overlay["interpolation"] == "bilinear"
    prep = preprocessing_for(DEMO_CONFIG, card=overlay)
    assert (prep.mode, prep.source, prep.resize, prep.crop_pct) == ("model", "card", 32, 1.0)
    assert prep.input_size == (32, 32) and prep.interpolation == "bilinear"


def test_the_rule() -> None:
    # a 224 px model with no card saying otherwise: the paper's resize 256 bilinear, crop 224
    paper = preprocessing_for(TIMM_224)
    assert (paper.mode, paper.source, paper.resize) == ("paper", "paper", 256)
    assert paper.interpolation == "bilinear"
    # mean/std in a card do not change the crop
    assert preprocessing_for(TIMM_224, card={"mean": (0.5, 0.5, 0.5)}).mode == "paper"
    # a 224 px model whose card sets its crop: the card (merged into the timm config by timm)
    card = preprocessing_for(TIMM_224, card={"crop_pct": 0.9})
    assert (card.mode, card.source, card.resize, card.interpolation) == ("model", "card", 248, "bicubic")
    # not a 224 px model, no card: its timm data config
    timm = preprocessing_for({"input_size": (3, 64, 64), "crop_pct": 0.9, "interpolation": "bicubic"})
    assert (timm.mode, timm.source, timm.resize) == ("model", "timm", 71)
    # asked for: that mode (the demo model through the paper's rule: resize 36, crop 32)
    forced = preprocessing_for(DEMO_CONFIG, "paper", card={"crop_pct": 1.0})
    assert (forced.mode, forced.source, forced.resize) == ("paper", "requested", 36)
    assert preprocessing_for(TIMM_224, "model").resize == 248
    with pytest.raises(ValueError, match="auto, paper, model"):
        preprocessing_for(TIMM_224, "native")


def test_record_round_trips_and_old_records_read() -> None:
    prep = preprocessing_for(DEMO_CONFIG, card={"crop_pct": 1.0})
    assert Preprocessing.from_dict(prep.as_dict()) == prep
    old = {k: v for k, v in prep.as_dict().items() if k != "source"}
    assert Preprocessing.from_dict(old).source == "requested"


def test_a_32px_image_reaches_a_demo_model_unchanged() -> None:
    """CIFAR-sized input with the card's rule is only normalized; the paper's rule resamples it (36, crop)."""
    rng = np.random.default_rng(0)
    arr = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(arr)
    native = preprocess([image], preprocessing_for(DEMO_CONFIG, card={"crop_pct": 1.0}))[0]
    want = (torch.from_numpy(arr).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(native, want, atol=1e-6, rtol=0)
    paper = preprocess([image], preprocessing_for(DEMO_CONFIG, "paper"))[0]
    assert paper.shape == (3, 32, 32) and (paper - want).abs().mean() > 0.1


def test_model_preprocessing_reads_the_loaded_card() -> None:
    from backend.models import load_model

    loaded = load_model("cifar-mim-vit-t4", "cpu")
    prep = model_preprocessing(loaded)
    assert (prep.mode, prep.source, prep.resize, prep.crop_pct) == ("model", "card", 32, 1.0)
    assert model_preprocessing(loaded, "paper").resize == 36
