"""A4 (relative log amplitude) against ANALYSES.md's check values and constructed spectra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.analysis import (
    delta_bin,
    half_diagonal_bins,
    half_diagonal_delta,
    half_diagonal_frequencies,
    high_frequency_delta,
    log_amplitude_spectrum,
)

LOG_EPS = math.log(1e-6)


def tokens(grid_values: torch.Tensor, num_prefix: int, prefix_value: float = 1e3) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B, prefix + H * W, C)`` row-major, behind huge prefix tokens (to be dropped)."""
    b, h, w, c = grid_values.shape
    prefix = torch.full((b, num_prefix, c), prefix_value, dtype=grid_values.dtype)
    return torch.cat([prefix, grid_values.reshape(b, h * w, c)], dim=1)


def diagonal_wave(h: int, w: int, m: int, channels: int, amplitude: float = 1.0) -> torch.Tensor:
    """``1 + amplitude * cos(2 pi m (r / H + c / W))``, float64: energy at DC and at +-(m, m) only."""
    r = torch.arange(h, dtype=torch.float64)[:, None]
    c = torch.arange(w, dtype=torch.float64)[None, :]
    wave = 1 + amplitude * torch.cos(2 * math.pi * m * (r / h + c / w))
    return wave[None, :, :, None].expand(1, h, w, channels)


def test_iid_normal_is_about_plus_035() -> None:
    """Check value: i.i.d. standard normal tokens, 16 x 196 x 768, give about +0.35 at every m >= 1.

    (In theory log(2) / 2 = 0.3466: a complex Gaussian bin against the real Gaussian zero-frequency bin.)
    """
    g = torch.Generator().manual_seed(0)
    z = tokens(torch.randn(16, 14, 14, 768, generator=g), num_prefix=1)
    delta = half_diagonal_delta(log_amplitude_spectrum(z, (14, 14), 1))
    assert delta.shape == (16, 7)
    assert torch.all(delta[:, 0] == 0)
    mean = delta.mean(0)  # over images: delta is linear in the per-image spectrum
    for m in range(1, 7):
        assert mean[m].item() == pytest.approx(0.35, abs=0.04), m
    hf = high_frequency_delta(z, (14, 14), 1)
    assert hf.shape == (16,)
    torch.testing.assert_close(hf, delta[:, 6])


def test_constant_tokens() -> None:
    """Check value: constant tokens give log(1e-6) - log(196) = -19.094 at every m >= 1."""
    z = tokens(torch.ones(2, 14, 14, 768), num_prefix=1)
    delta = half_diagonal_delta(log_amplitude_spectrum(z, (14, 14), 1))
    expected = LOG_EPS - math.log(196 + 1e-6)
    assert expected == pytest.approx(-19.094, abs=5e-4)
    torch.testing.assert_close(delta[:, 1:], torch.full((2, 6), expected), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        high_frequency_delta(z, (14, 14), 1), torch.full((2,), expected), atol=1e-4, rtol=0
    )


def test_last_bin_is_m_6_not_nyquist() -> None:
    """Energy at DC and (6, 6) only: delta(6) = log(98) - log(196) = -log 2; the other bins hold nothing."""
    z = tokens(diagonal_wave(14, 14, 6, 4), num_prefix=1)
    spec = log_amplitude_spectrum(z, (14, 14), 1)
    assert spec.shape == (1, 14, 14)
    assert spec[0, 7, 7].item() == pytest.approx(math.log(196), abs=1e-6)  # zero frequency at the centre
    delta = half_diagonal_delta(spec)[0]
    empty = LOG_EPS - math.log(196)
    torch.testing.assert_close(
        delta,
        torch.tensor([0, empty, empty, empty, empty, empty, -math.log(2)], dtype=torch.float64),
        atol=1e-3,
        rtol=0,
    )
    assert high_frequency_delta(z, (14, 14), 1).item() == pytest.approx(-math.log(2), abs=1e-3)


def test_nyquist_energy_is_left_out() -> None:
    """1 + checkerboard has energy at DC and Nyquist only: the plotted bin (m = 6) must see none of it."""
    r, c = torch.meshgrid(torch.arange(14), torch.arange(14), indexing="ij")
    board = (1 + (-1.0) ** (r + c)).double()[None, :, :, None]
    hf = high_frequency_delta(tokens(board, 1), (14, 14), 1).item()
    assert hf == pytest.approx(LOG_EPS - math.log(196), abs=1e-3)


def test_log_before_averaging_over_channels() -> None:
    """Two channels, (6, 6) amplitudes 98 and 0.98, DC 196: the mean of logs, not the log of the mean."""
    wave = torch.cat([diagonal_wave(14, 14, 6, 1, 1.0), diagonal_wave(14, 14, 6, 1, 0.01)], dim=-1)
    hf = high_frequency_delta(tokens(wave, 0), (14, 14), 0).item()
    assert hf == pytest.approx(
        (math.log(0.5) + math.log(0.005)) / 2, abs=1e-3
    )  # -2.996, not log(0.2525) = -1.376


def test_non_square_grid_orientation_and_registers() -> None:
    """A wave along rows only (4 x 6 grid, 5 register tokens): energy at (+-1, 0), none at (0, +-1)."""
    h, w = 4, 6
    r = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    z = tokens((1 + torch.cos(2 * math.pi * r / h))[None, :, :, None].expand(3, h, w, 2), num_prefix=5)
    spec = log_amplitude_spectrum(z, (h, w), 5)
    assert spec.shape == (3, h, w)
    assert spec[0, h // 2 + 1, w // 2].item() == pytest.approx(math.log(h * w / 2), abs=1e-6)
    assert spec[0, h // 2 - 1, w // 2].item() == pytest.approx(math.log(h * w / 2), abs=1e-6)
    assert spec[0, h // 2, w // 2 + 1].item() == pytest.approx(LOG_EPS, abs=1e-3)
    delta = half_diagonal_delta(spec)
    assert delta.shape == (3, min(h, w) // 2)
    assert len(half_diagonal_frequencies((h, w))) == 2
    assert half_diagonal_frequencies((h, w))[1] == pytest.approx((2 * math.pi / h, 2 * math.pi / w))


def test_odd_grid_and_half_precision() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 1 + 25, 8, generator=g)
    delta = half_diagonal_delta(log_amplitude_spectrum(z, (5, 5), 1))
    assert delta.shape == (2, 3)  # the paper's (h + 1) // 2 bins: frequencies 0, 1, 2 of 5
    hf16 = high_frequency_delta(z.half(), (5, 5), 1)
    assert hf16.dtype == torch.float32
    torch.testing.assert_close(hf16, delta[:, -1], atol=5e-3, rtol=0)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError):
        log_amplitude_spectrum(torch.zeros(1, 10, 4), (3, 3), 0)
    with pytest.raises(ValueError):
        half_diagonal_delta(torch.zeros(1, 1, 5))


@pytest.mark.parametrize(("grid", "num_prefix"), [((6, 10), 5), ((7, 7), 1), ((2, 3), 0)])
def test_high_frequency_delta_equals_the_fft_map(grid: tuple[int, int], num_prefix: int) -> None:
    """The two-coefficient path against the full FFT map (random tokens plus a wave at the last bin)."""
    h, w = grid
    g = torch.Generator().manual_seed(3)
    m = half_diagonal_bins(grid) - 1
    values = torch.randn(3, h, w, 16, generator=g, dtype=torch.float64) + diagonal_wave(h, w, m, 16, 5.0)
    z = tokens(values, num_prefix)
    expected = half_diagonal_delta(log_amplitude_spectrum(z, grid, num_prefix))[:, -1]
    torch.testing.assert_close(high_frequency_delta(z, grid, num_prefix), expected)
    torch.testing.assert_close(high_frequency_delta(z.float(), grid, num_prefix), expected.float())


def paper_fourier_delta(latent: np.ndarray) -> np.ndarray:
    """The paper's code (naver-ai/cl-vs-mim, fourier analysis), in numpy: ``(B, N, C)`` patch tokens of a
    square grid -> the relative log amplitudes along the half-diagonal, ``latent - latent[0]``."""
    b, n, c = latent.shape
    h = w = int(math.sqrt(n))
    x = latent.reshape(b, h, w, c).transpose(0, 3, 1, 2)  # b (h w) c -> b c h w
    f = np.log(np.abs(np.fft.fft2(x)) + 1e-6)
    f = np.roll(f, shift=(int(h / 2), int(w / 2)), axis=(2, 3)).mean(axis=(0, 1))
    diag = np.diag(f)[int(h / 2) :]
    return diag - diag[0]


@pytest.mark.parametrize("side", [7, 8, 14, 5])
def test_half_diagonal_follows_the_papers_code(side: int) -> None:
    """Random tokens on odd and even grids: the bins (``(h + 1) // 2``) and the values of the paper's code."""
    rng = np.random.default_rng(side)
    latent = rng.standard_normal((4, side * side, 32))
    want = paper_fourier_delta(latent)
    assert len(want) == (side + 1) // 2 == half_diagonal_bins((side, side))
    z = tokens(torch.from_numpy(latent.reshape(4, side, side, 32)), num_prefix=1)
    got = half_diagonal_delta(log_amplitude_spectrum(z, (side, side), 1)).mean(0)  # linear after the log
    np.testing.assert_allclose(got.numpy(), want, atol=1e-9)
    hf = high_frequency_delta(z, (side, side), 1).mean().item()
    assert hf == pytest.approx(float(want[-1]), abs=1e-9)


def test_7x7_check_value_reads_the_last_odd_bin() -> None:
    """7 x 7 random tokens: the paper reads frequency 3 (the 4th bin), not 2 (what min(h, w) // 2 kept)."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((16, 49, 192))
    want = paper_fourier_delta(latent)
    z = tokens(torch.from_numpy(latent.reshape(16, 7, 7, 192)), num_prefix=1)
    got = high_frequency_delta(z, (7, 7), 1).mean().item()
    assert got == pytest.approx(float(want[3]), abs=1e-9)
    assert abs(got - float(want[2])) > 1e-3  # the old bin is a different number
    assert delta_bin((7, 7))["index"] == 3


def test_delta_bin_says_which_bin_and_frequency() -> None:
    eight = delta_bin((8, 8))
    assert eight["index"] == 3 and eight["cycles_per_image"] == [3, 3]
    assert eight["radians_per_patch"] == pytest.approx([3 * math.pi / 4] * 2)
    assert eight["label"] == "bin 3: 3 cycles per image, 3/4 pi per patch, 8x8 grid"
    fourteen = delta_bin((14, 14))
    assert fourteen["index"] == 6 and "6/7 pi per patch, 14x14" in fourteen["label"]
    assert "6/7 pi per patch" in delta_bin((7, 7))["label"]
    odd = delta_bin((4, 6))  # bins = min(2, 3): m = 1 steps 2 pi / 4 along rows, 2 pi / 6 along columns
    assert odd["index"] == 1 and "(1/2 pi, 1/3 pi) per patch" in odd["label"]
    with pytest.raises(ValueError):
        half_diagonal_bins((1, 5))
