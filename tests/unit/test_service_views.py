"""The views' parameters: one parser for the routes and the fast lane, canonical keys, the model's ranges."""

from __future__ import annotations

from typing import Any

import pytest

from backend.errors import BadRequest
from backend.service.bundle import ModelInfo
from backend.service.views import (
    MAX_PNG_SIDE,
    AttentionView,
    ImageView,
    MetricsView,
    SpectrumView,
    hot_key,
    store_key,
)


def info(size: int = 224, grid: int = 14, prefix: int = 1, layers: int = 12, heads: int = 12) -> ModelInfo:
    prep: dict[str, Any] = {"input_size": [size, size], "mean": [0.5] * 3}
    return ModelInfo("m", "cl", "vit", "digest", prep, layers, heads, (grid, grid), size // grid, prefix,
                     768, 1, has_cls=prefix > 0)  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ({}, AttentionView(1, "mean", None, False, "json")),
        ({"layer": "02", "head": "007", "query": "0010"}, AttentionView(2, "7", 10, False, "json")),
        ({"rollout": "true", "query": "3"}, AttentionView(1, "mean", 3, True, "json")),
        ({"format": "png", "scale": "4"}, AttentionView(1, "mean", None, False, "png", 4)),
        ({"format": "npy", "scale": "4"}, AttentionView(1, "mean", None, False, "npy", 1)),  # png only
    ],
)
def test_the_fast_lane_and_the_route_build_the_same_view(raw: dict[str, str], want: AttentionView) -> None:
    assert AttentionView.from_query(raw) == want
    route = AttentionView.parse(
        int(raw.get("layer", "1")),
        raw.get("head", "mean"),
        raw.get("query", "cls"),
        raw.get("rollout") == "true",
        raw.get("format", "json"),
        int(raw.get("scale", "1")),
    )
    assert route == want


@pytest.mark.parametrize(
    "raw",
    [
        {"head": "MEAN"},  # the route's pattern refuses it (422): the lane must not answer it
        {"query": " 3"},
        {"rollout": "1"},
        {"rollout": "true", "head": "0"},
        {"layer": "0"},
        {"layer": "-1"},
        {"format": "gif"},
        {"scale": "0"},
        {"scale": "17"},
    ],
)
def test_what_the_parser_refuses(raw: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        AttentionView.from_query(raw)


def test_ranges_of_the_model() -> None:
    m = info(layers=2, heads=3, grid=4, size=64)
    AttentionView(2, "2", 15).check(m)
    for bad, word in [
        (AttentionView(3), "layer"),
        (AttentionView(1, "3"), "head"),
        (AttentionView(1, query=16), "query"),
        (AttentionView(1, fmt="png", scale=MAX_PNG_SIDE // 64 + 1), "scale"),
    ]:
        with pytest.raises(BadRequest, match=word):
            bad.check(m)
    AttentionView(1, fmt="png", scale=MAX_PNG_SIDE // 64).check(m)
    with pytest.raises(BadRequest, match="CLS"):
        AttentionView(1).check(info(prefix=0))
    SpectrumView("out", 0).check(m)
    with pytest.raises(BadRequest, match="depth"):
        SpectrumView("attn", 0).check(m)
    with pytest.raises(BadRequest, match="state"):
        SpectrumView.from_query({"state": "x"})


def test_keys_hold_every_canonical_parameter() -> None:
    m = info()
    views: list[ImageView] = [
        MetricsView(),
        AttentionView(1),
        AttentionView(2),
        AttentionView(1, "0"),
        AttentionView(1, "all"),
        AttentionView(1, query=0),
        AttentionView(1, rollout=True),
        AttentionView(1, fmt="png"),
        AttentionView(1, fmt="png", scale=2),
        SpectrumView("out", 1),
        SpectrumView("attn", 1),
        SpectrumView("out", 1, "npy"),
    ]
    assert len({hot_key(v, "a" * 64, m) for v in views}) == len(views)
    assert len({store_key(v, "a" * 64, m) for v in views}) == len(views)
    # Scale 1 keeps the key the view had before scale existed (stored entries stay valid).
    assert AttentionView(1, fmt="png", scale=1).key_parts() == (1, "mean", "None", 0, "png")


def test_the_foreground_threshold_is_parsed_on_its_grid() -> None:
    from backend.errors import BadRequest
    from backend.service.patch_views import foreground_threshold

    assert foreground_threshold(False, None) is None and foreground_threshold(True, None) == 0.0
    assert foreground_threshold(True, 0.15) == 0.15 and foreground_threshold(True, 0.1 + 0.2) == 0.3
    assert str(foreground_threshold(True, -0.0)) == "0.0"  # one key for -0.0 and 0.0
    assert foreground_threshold(True, -2.95) == -2.95
    with pytest.raises(BadRequest, match="not a multiple of 0.05"):
        foreground_threshold(True, 0.013)
    with pytest.raises(BadRequest, match="add mask=true"):
        foreground_threshold(False, 0.5)
