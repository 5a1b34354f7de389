"""Per-layer probes, kNN and the frequency-band noise filter (A7, A8) on tiny synthetic sets."""

from __future__ import annotations

import math

import pytest
import torch

from backend.training.data import ImageSet
from backend.training.encoder import build_encoder
from backend.training.noise import band_filter, band_mask, band_noise, frequency_radius
from backend.training.probe import (
    Preprocess,
    fit_linear_probes,
    knn_accuracy,
    layer_features,
    plot_probes,
    run_probes,
)

TINY_ARCH = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 0}
PREP = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def colour_images(n: int, seed: int) -> ImageSet:
    """Three classes told apart by their dominant colour, under strong pixel noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    base = torch.tensor([[170.0, 80, 80], [80, 170, 80], [80, 80, 170]])[labels]
    x = base[:, :, None, None] + 60 * torch.randn(n, 3, 32, 32, generator=g)
    return ImageSet(x.clamp(0, 255).to(torch.uint8), labels, ["red", "green", "blue"], f"colours-{seed}")


def test_layer_features_match_the_block_outputs() -> None:
    torch.manual_seed(0)
    model = build_encoder("vit_tiny_patch16_224", TINY_ARCH).eval()
    x = torch.randn(3, 3, 32, 32)
    feats = layer_features(model, x)
    assert feats.shape == (3, 3, 32)  # depths 0..2, images, channels
    tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    assert torch.allclose(feats[0], tokens[:, 1:].mean(1), atol=1e-5)
    for k, block in enumerate(model.blocks, start=1):
        tokens = block(tokens)
        assert torch.allclose(feats[k], tokens[:, 1:].mean(1), atol=1e-5)


def test_probes_beat_chance_on_an_easy_set(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_encoder("vit_tiny_patch16_224", TINY_ARCH)  # even a random encoder keeps the colour
    result = run_probes(
        model,
        colour_images(60, 0),
        colour_images(30, 1),
        PREP,
        torch.device("cpu"),
        knn_k=5,
        noise_eps=(0.5,),
        noise_freqs=3,
        noise_images=12,
        batch_size=32,
    )
    assert result["chance"] == pytest.approx(100 / 3)
    assert result["linear"]["depth"] == [0, 1, 2] and len(result["linear"]["top1"]) == 3
    assert min(result["linear"]["top1"]) > 70
    assert result["knn"]["top1"] > 70 and result["knn"]["depth"] == 2
    noise = result["noise"]
    assert noise["freq"] == pytest.approx([0, math.pi / 2, math.pi], abs=1e-4)
    assert len(noise["drop"]) == 1 and len(noise["drop"][0]) == 3 and noise["images"] == 12
    assert plot_probes({"tiny": result}, tmp_path / "p.png").stat().st_size > 1000


def test_linear_probe_and_knn_on_separable_features() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    centres = torch.randn(3, 8, generator=g) * 3
    feats = centres[labels] + torch.randn(90, 8, generator=g)
    layered = torch.stack([torch.randn(90, 8, generator=g), feats])  # depth 0: noise, depth 1: signal
    probes = fit_linear_probes(layered[:, :60], labels[:60], 3)
    acc = probes.accuracy(layered[:, 60:], labels[60:])
    assert acc[1] > 90 and acc[0] < 70
    assert knn_accuracy(feats[:60], labels[:60], feats[60:], labels[60:], 3, k=5) > 90


@pytest.mark.parametrize("freq", [0.0, 1.0, math.pi / 2, 2.5, math.pi])
def test_noise_filter_keeps_only_the_requested_band(freq: float) -> None:
    g = torch.Generator().manual_seed(0)
    noise = band_noise((4, 3, 32, 32), 0.5, freq, 0.2, g)
    assert noise.dtype == torch.float32 and noise.shape == (4, 3, 32, 32)
    spec = torch.fft.fftshift(torch.fft.fft2(noise), dim=(-2, -1)).abs()
    inside = band_mask(32, 32, freq, 0.2)
    assert inside.any()
    assert spec[..., ~inside].max() < 1e-4 * spec[..., inside].max()  # nothing outside the ring
    r = frequency_radius(32, 32)
    kept = r[inside]
    assert kept.min() >= freq - 0.2 - 1e-6 and kept.max() <= freq + 0.2 + 1e-6
    # Inside the ring the sign noise is unchanged: filtering twice is filtering once.
    assert torch.allclose(band_filter(noise, freq, 0.2), noise, atol=1e-5)


def test_sign_noise_amplitude_and_full_band() -> None:
    g = torch.Generator().manual_seed(0)
    full = band_noise((2, 3, 16, 16), 0.3, math.pi / 2, 10.0, g)  # a ring wide enough to keep everything
    assert torch.allclose(full.abs(), torch.full_like(full, 0.3), atol=1e-5)
