"""The batched build: every analysis runs once over a captured batch, and each image's slice is what the same
analyses give on that image alone (the service's results do not depend on what else shared its batch)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from backend.analysis import attention_rollout, compute_metrics, log_amplitude_spectrum
from backend.capture import Trace, capture
from backend.models.loading import build_model
from backend.service.bundle import ModelInfo, build_bundles, per_batch

KWARGS: dict[str, Any] = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2,
                          "mlp_ratio": 2.0}  # fmt: skip


@pytest.fixture(scope="module")
def batch() -> tuple[ModelInfo, Trace]:
    torch.manual_seed(0)
    model = build_model("vit_tiny_patch16_224", KWARGS).eval()
    with torch.inference_mode():
        trace = capture(
            model, torch.randn(3, 3, 32, 32), model_id="tiny", preprocessing={"input_size": [32, 32]}
        )
    info = ModelInfo("tiny", "cl", "vit", "d", {"input_size": [32, 32]}, 2, 2, trace.grid, 8, 1, 32, 1)
    return info, trace


def one(trace: Trace, i: int) -> Trace:
    def cut(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [x[i : i + 1] for x in xs]

    return dataclasses.replace(
        trace, attentions=cut(trace.attentions), x_attn=cut(trace.x_attn), x_out=cut(trace.x_out)
    )


def close(got: Any, want: Any) -> None:
    if isinstance(want, dict):
        assert set(got) == set(want)
        for k in want:
            close(got[k], want[k])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            close(g, w)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    else:
        assert got == want


def test_each_image_of_a_batch_gets_what_it_would_get_alone(batch: tuple[ModelInfo, Trace]) -> None:
    info, trace = batch
    bundles = build_bundles(info, trace)
    assert len(bundles) == 3
    for i, b in enumerate(bundles):
        alone = one(trace, i)
        close(b.metrics, compute_metrics(alone, "cl"))
        want_att = np.stack([a[0].half().numpy() for a in alone.attentions])
        np.testing.assert_array_equal(b.attention, want_att)
        for k in range(2):
            roll = attention_rollout(alone.attentions[: k + 1], 1)[0].half().numpy()
            np.testing.assert_allclose(b.rollout[k].astype(np.float32), roll.astype(np.float32), atol=1e-3)
        spec = log_amplitude_spectrum(torch.cat(alone.x_out), trace.grid, 1).numpy()
        np.testing.assert_allclose(b.spectrum["out"], spec, rtol=1e-5, atol=1e-5)
        assert b.tokens.shape == (3, 16, 32)
    assert bundles[0].metrics != bundles[1].metrics  # slices of different images, not one image repeated


def test_per_batch_builds_once_per_batch_and_kind(batch: tuple[ModelInfo, Trace]) -> None:
    _, trace = batch
    builds: list[str] = []

    def build(kind: str) -> Any:
        def run(t: Trace) -> list[str]:
            builds.append(kind)
            return [f"{kind}{i}" for i in range(t.batch_size)]

        return per_batch(kind, run)

    a, b = build("a"), build("b")
    # One batch: requests of two kinds interleaved, as the runner calls them (index order).
    assert [a(None, trace, 0), b(None, trace, 1), a(None, trace, 2)] == ["a0", "b1", "a2"]
    assert builds == ["a", "b"]
    assert a(None, trace, 0) == "a0" and builds == ["a", "b", "a"]  # the next batch builds again
