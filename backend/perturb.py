"""Frequency lab: an image low-passed, high-passed or with band noise added (the A8 filters of
``backend.training.noise``), to be stored as an ordinary image.

Pixels are RGB in [0, 1]; frequencies are ``max(|wy|, |wx|)`` in radians per pixel (0..pi) of the image
after it is resized so its shorter side is ``side`` px (bicubic, antialiased, as the preprocessing's resize):
what a model reading that size sees, not the frequencies of a large original.

- ``low_pass``: only the frequencies ``<= cutoff`` are kept (``cutoff = 0``: the mean colour).
- ``high_pass``: the frequencies ``<= cutoff`` are removed and the zero frequency (each channel's mean) is
  put back, so the picture stays in range; ``low_pass + high_pass = x + mean`` for the same cutoff.
- ``band_noise``: ``eps * sign(N(0, 1))`` per pixel and channel, filtered to the square ring
  ``|r - freq| <= half_width`` (A8; ``eps`` in pixel units: A8's normalized units are ``eps / std``, about
  4.4 eps with the ImageNet std), seeded, added.

The result is clipped to [0, 1] and rounded to 8 bits (a PNG); ``clipped`` says which share was clipped.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from backend.errors import BadRequest
from backend.training.noise import band_filter, band_noise

if TYPE_CHECKING:
    from PIL import Image

KINDS = ("low_pass", "high_pass", "band_noise")
MIN_SIDE, MAX_SIDE = 16, 1024
# The resized frame's pixels at most (a 1:4 panorama at 1024 px): bounds the FFT's memory (~130 MB).
MAX_PIXELS = 4 * MAX_SIDE * MAX_SIDE
MAX_SEED = 2**31 - 1
_PASS_ONLY = ("cutoff",)
_NOISE_ONLY = ("freq", "half_width", "eps", "seed")


@dataclass(frozen=True)
class Perturbation:
    """One perturbation in canonical form: the parameters its kind does not use are ``None``."""

    kind: str
    side: int = 224
    cutoff: float | None = None
    freq: float | None = None
    half_width: float | None = None
    eps: float | None = None
    seed: int | None = None

    @classmethod
    def parse(
        cls,
        kind: str,
        side: int = 224,
        cutoff: float | None = None,
        freq: float | None = None,
        half_width: float | None = None,
        eps: float | None = None,
        seed: int | None = None,
    ) -> Perturbation:
        """Check every value (``BadRequest`` saying what is allowed); defaults: cutoff 1.0, half-width 0.2
        (A8's), eps 0.1, seed 0; ``freq`` is required for band noise."""
        if kind not in KINDS:
            raise BadRequest(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise BadRequest(
                f"side {side} is out of range: use {MIN_SIDE}..{MAX_SIDE} (px, the shorter side)"
            )
        given = {"cutoff": cutoff, "freq": freq, "half_width": half_width, "eps": eps, "seed": seed}
        unused = _NOISE_ONLY if kind != "band_noise" else _PASS_ONLY
        extra = [name for name in unused if given[name] is not None]
        if extra:
            uses = "cutoff" if kind != "band_noise" else "freq, half_width, eps and seed"
            raise BadRequest(f"{kind} takes {uses}; {', '.join(extra)} does not apply to it")
        if kind != "band_noise":
            c = _in_range("cutoff", 1.0 if cutoff is None else cutoff, 0.0, math.pi)
            return cls(kind, side, cutoff=c)
        if freq is None:
            raise BadRequest("band_noise needs freq: the ring's centre in radians per pixel, 0..pi")
        f = _in_range("freq", freq, 0.0, math.pi)
        hw = _in_range("half_width", 0.2 if half_width is None else half_width, 0.0, math.pi, open_low=True)
        e = _in_range("eps", 0.1 if eps is None else eps, 0.0, 1.0, open_low=True)
        s = 0 if seed is None else seed
        if not 0 <= s <= MAX_SEED:
            raise BadRequest(f"seed {s} is out of range: use 0..{MAX_SEED}")
        return cls(kind, side, freq=f, half_width=hw, eps=e, seed=s)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _in_range(name: str, value: float, lo: float, hi: float, open_low: bool = False) -> float:
    v = float(value)
    ok = math.isfinite(v) and (lo < v if open_low else lo <= v) and v <= hi
    if not ok:
        low = f"over {lo:g}" if open_low else f"{lo:g}"
        raise BadRequest(f"{name} {value} is out of range: use {low} .. {hi:g}" + _UNITS.get(name, ""))
    return v


_UNITS = {
    "cutoff": " (radians per pixel; pi = the highest frequency)",
    "freq": " (radians per pixel)",
    "half_width": " (radians per pixel; A8 uses 0.2)",
    "eps": " (pixel units: images are in [0, 1])",
}


def apply(x: Tensor, p: Perturbation) -> Tensor:
    """``x`` (3, H, W) float in [0, 1] -> the perturbed image, not yet clipped."""
    x = x.float()  # band_filter works in float32
    if p.kind == "low_pass":
        assert p.cutoff is not None
        return band_filter(x, 0.0, p.cutoff).to(x.dtype)
    if p.kind == "high_pass":
        assert p.cutoff is not None
        low = band_filter(x, 0.0, p.cutoff).to(x.dtype)
        return x - low + x.mean(dim=(-2, -1), keepdim=True)
    assert p.eps is not None and p.freq is not None and p.half_width is not None and p.seed is not None
    gen = torch.Generator().manual_seed(p.seed)
    noise = band_noise(tuple(x.shape), p.eps, p.freq, p.half_width, generator=gen)
    return x + noise.to(x.dtype)


class Perturbed(NamedTuple):
    png: bytes
    width: int
    height: int
    clipped: float  # share of pixel values (all channels) over half an 8-bit step outside [0, 1]


def perturb_image(image: Image.Image, p: Perturbation) -> Perturbed:
    """The image resized (shorter side ``p.side``), perturbed, clipped and rounded, as PNG bytes."""
    import numpy as np
    from PIL import Image as PILImage
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    w, h = image.size
    scale = p.side / min(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if nw * nh > MAX_PIXELS:
        raise BadRequest(
            f"the image resized to a shorter side of {p.side} px is {nw}x{nh} ({nw * nh:,} pixels); at most "
            f"{MAX_PIXELS:,} are allowed: choose a smaller side"
        )
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = TF.resize(rgb, [nh, nw], interpolation=InterpolationMode.BICUBIC, antialias=True)
    x = TF.to_tensor(resized)
    y = apply(x, p)
    half = 0.5 / 255  # beyond half an 8-bit step: clipped, not merely rounded
    clipped = float(((y < -half) | (y > 1 + half)).double().mean())
    arr = (y.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(arr), "RGB").save(buf, format="PNG")
    return Perturbed(buf.getvalue(), nw, nh, clipped)
