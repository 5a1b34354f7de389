from __future__ import annotations

from typing import Any

import pytest

import backend
from backend.cache import keys

BASE: dict[str, Any] = dict(
    image_id="a" * 64,
    model_id="dino-vit-s16",
    weights_digest="w1",
    preprocessing={"size": 224, "mean": [0.5]},
)


def test_key_shape_and_determinism() -> None:
    k = keys.attention_key(**BASE, layer=3)
    assert k.startswith("vitscope:attn:") and len(k.split(":")[-1]) == 64
    assert k == keys.attention_key(**BASE, layer=3)
    # preprocessing is hashed with sorted keys: insertion order does not matter
    pre = {"mean": [0.5], "size": 224}
    assert k == keys.attention_key(**{**BASE, "preprocessing": pre}, layer=3)


@pytest.mark.parametrize(
    "change",
    [
        {"image_id": "b" * 64},
        {"model_id": "mae-vit-b16"},
        {"weights_digest": "w2"},
        {"preprocessing": {"size": 256, "mean": [0.5]}},
        {"preprocessing": {"size": 224, "mean": [0.5], "crop": 0.875}},
    ],
)
def test_each_part_changes_the_key(change: dict[str, Any]) -> None:
    assert keys.attention_key(**BASE, layer=1) != keys.attention_key(**{**BASE, **change}, layer=1)


def test_extra_parts_and_kinds_change_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    found = {
        keys.attention_key(**BASE, layer=1),
        keys.attention_key(**BASE, layer=2),
        keys.metrics_key(**BASE),
        keys.spectrum_key(**BASE, state="out", depth=1),
        keys.spectrum_key(**BASE, state="attn", depth=1),
        keys.spectrum_key(**BASE, state="out", depth=2),
        keys.tokens_key(**BASE, state="out", layer=1),
        keys.tokens_key(**BASE, state="attn", layer=1),
    }
    assert len(found) == 8
    before = keys.metrics_key(**BASE)
    monkeypatch.setattr(keys, "ANALYSIS_VERSION", backend.ANALYSIS_VERSION + "-next")
    assert keys.metrics_key(**BASE) != before


def test_set_ids() -> None:
    ids = ["a" * 64, "b" * 64]
    assert keys.set_id(ids) == keys.set_id(list(ids)) != keys.set_id(ids[::-1])
    assert keys.set_key(keys.set_id(ids)) == f"vitscope:set:{keys.set_id(ids)}"
    assert keys.image_key("c" * 64) == "vitscope:image:" + "c" * 64
