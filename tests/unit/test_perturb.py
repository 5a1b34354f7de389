"""Frequency lab perturbations (backend/perturb.py): check values on constructed images with known spectra."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from backend.errors import BadRequest
from backend.perturb import MAX_PIXELS, Perturbation, apply, perturb_image
from backend.training.noise import frequency_radius

N = 32
LOW_K, HIGH_K = 2, 12  # cycles per 32 px: 0.39 and 2.36 radians per pixel


def _waves() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A constant, a low and a high cosine along x, one per channel scale; (3, N, N) each."""
    xs = torch.arange(N, dtype=torch.float32)
    low = 0.2 * torch.cos(2 * math.pi * LOW_K * xs / N).expand(3, N, N)
    high = 0.1 * torch.cos(2 * math.pi * HIGH_K * xs / N).expand(3, N, N)
    const = torch.tensor([0.3, 0.5, 0.6], dtype=torch.float32)[:, None, None].expand(3, N, N)
    return const, low, high


def test_low_and_high_pass_split_known_cosines() -> None:
    const, low, high = _waves()
    x = const + low + high
    lp = apply(x, Perturbation.parse("low_pass", cutoff=1.0))
    hp = apply(x, Perturbation.parse("high_pass", cutoff=1.0))
    torch.testing.assert_close(lp, const + low, atol=1e-6, rtol=0)
    torch.testing.assert_close(hp, const + high, atol=1e-6, rtol=0)  # the mean colour stays
    torch.testing.assert_close(lp + hp, x + const, atol=1e-6, rtol=0)
    # cutoff above the high wave keeps everything / removes all but the mean
    torch.testing.assert_close(apply(x, Perturbation.parse("low_pass", cutoff=math.pi)), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(apply(x, Perturbation.parse("low_pass", cutoff=0.0)), const, atol=1e-6, rtol=0)
    torch.testing.assert_close(apply(x, Perturbation.parse("high_pass", cutoff=0.0)), x, atol=1e-6, rtol=0)


def test_band_noise_lives_in_its_ring_and_is_seeded() -> None:
    x = torch.full((3, N, N), 0.5, dtype=torch.float32)
    p = Perturbation.parse("band_noise", freq=1.5, half_width=0.2, eps=0.1, seed=7)
    noise = apply(x, p) - x
    spec = torch.fft.fftshift(torch.fft.fft2(noise), dim=(-2, -1)).abs()
    ring = (frequency_radius(N, N) - 1.5).abs() <= 0.2 + 1e-9
    assert float(spec[:, ~ring].max()) < 1e-5  # nothing outside the ring
    assert float(spec[:, ring].mean()) > 0.1  # and something inside it
    assert abs(float(noise.mean())) < 1e-7  # the ring holds no zero frequency
    # white noise of variance eps^2 keeps the ring's share of its power: std = eps * sqrt(ring / N^2)
    share = float(ring.double().mean())
    assert float(noise.std()) == pytest.approx(0.1 * math.sqrt(share), rel=0.1)
    torch.testing.assert_close(apply(x, p), apply(x, p), atol=0, rtol=0)
    other = apply(x, Perturbation.parse("band_noise", freq=1.5, seed=8))
    assert float((other - x - noise).abs().max()) > 1e-3


def test_parse_canonical_form_and_clear_errors() -> None:
    assert Perturbation.parse("low_pass").as_dict() == {"kind": "low_pass", "side": 224, "cutoff": 1.0}
    assert Perturbation.parse("band_noise", freq=2).as_dict() == {
        "kind": "band_noise",
        "side": 224,
        "freq": 2.0,
        "half_width": 0.2,
        "eps": 0.1,
        "seed": 0,
    }
    bad = [
        ({"kind": "blur"}, "not one of low_pass, high_pass, band_noise"),
        ({"kind": "low_pass", "cutoff": 4.0}, "cutoff 4.0 is out of range: use 0 .. 3.14159"),
        ({"kind": "high_pass", "cutoff": float("nan")}, "cutoff nan is out of range"),
        ({"kind": "low_pass", "eps": 0.1}, "low_pass takes cutoff; eps does not apply"),
        (
            {"kind": "band_noise", "freq": 1.0, "cutoff": 1.0},
            "band_noise takes freq, half_width, eps and seed",
        ),
        ({"kind": "band_noise"}, "band_noise needs freq"),
        ({"kind": "band_noise", "freq": 1.0, "eps": 0.0}, "eps 0.0 is out of range: use over 0 .. 1"),
        ({"kind": "band_noise", "freq": 1.0, "half_width": 0.0}, "half_width 0.0 is out of range"),
        ({"kind": "band_noise", "freq": 1.0, "seed": -1}, "seed -1 is out of range"),
        ({"kind": "low_pass", "side": 8}, "side 8 is out of range: use 16..1024"),
    ]
    for kwargs, message in bad:
        with pytest.raises(BadRequest, match=None) as info:
            Perturbation.parse(**kwargs)  # type: ignore[arg-type]
        assert message in str(info.value), (kwargs, str(info.value))


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_perturb_image_resizes_clips_and_encodes() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((48, 80, 3)) * 255).astype(np.uint8))
    keep = perturb_image(image, Perturbation.parse("low_pass", side=48, cutoff=math.pi))
    assert (keep.width, keep.height, keep.clipped) == (80, 48, 0.0)
    np.testing.assert_array_equal(_decode(keep.png), np.asarray(image))  # same size: the pixels themselves
    small = perturb_image(image, Perturbation.parse("low_pass", side=24, cutoff=0.0))
    assert (small.width, small.height) == (40, 24)
    flat = _decode(small.png).reshape(-1, 3)
    assert (flat.max(0) - flat.min(0)).max() <= 1  # only the mean colour is left
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    noisy = perturb_image(white, Perturbation.parse("band_noise", side=32, freq=2.0, eps=0.5))
    out = _decode(noisy.png)
    assert 0.3 < noisy.clipped < 0.7  # the noise has mean 0: about half of it goes over white
    assert out.min() < 200 and out.max() == 255
    with pytest.raises(BadRequest, match="at most 4,194,304 are allowed"):
        perturb_image(Image.new("RGB", (5000, 16)), Perturbation.parse("low_pass", side=1024))
    assert MAX_PIXELS == 4 * 1024 * 1024
