"""Preprocessing: decoded images -> the model's input tensor, with a record of what was done.

Default ("paper"): resize the shorter side to ``size / 0.875`` (256 for 224) with bilinear interpolation,
centre-crop ``size``, scale to [0, 1], normalize with the model's mean/std (ANALYSES.md section 0).
"model": the model's own timm data config (its interpolation and crop_pct). Decoding untrusted bytes is
``backend.uploads``' job; this module only sees RGB PIL images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

PreprocessingMode = Literal["paper", "model"]
PAPER_CROP_PCT = 0.875
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int]
    resize: int  # shorter side before the centre crop
    interpolation: str
    crop: str
    crop_pct: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d


def preprocessing_for(data_config: dict[str, Any], mode: PreprocessingMode = "paper") -> Preprocessing:
    """Build the preprocessing record from a timm data config (``resolve_model_data_config``)."""
    if mode not in ("paper", "model"):
        raise ValueError(f"preprocessing mode {mode!r} is not one of 'paper', 'model'")
    _, h, w = data_config.get("input_size", (3, 224, 224))
    mean = tuple(float(v) for v in data_config.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in data_config.get("std", IMAGENET_STD))
    if mode == "paper":
        crop_pct, interpolation = PAPER_CROP_PCT, "bilinear"
    else:
        crop_pct = float(data_config.get("crop_pct", PAPER_CROP_PCT))
        interpolation = str(data_config.get("interpolation", "bicubic"))
    return Preprocessing(
        input_size=(int(h), int(w)),
        resize=int(math.floor(min(h, w) / crop_pct)),
        interpolation=interpolation,
        crop="center",
        crop_pct=crop_pct,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        mode=mode,
    )


def to_model_input(image: Image.Image, prep: Preprocessing) -> Tensor:
    """One RGB image -> (3, H, W) float tensor, resized, centre-cropped and normalized."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    resized = TF.resize(
        image, prep.resize, interpolation=InterpolationMode(prep.interpolation), antialias=True
    )
    cropped = TF.center_crop(resized, list(prep.input_size))
    return TF.normalize(TF.to_tensor(cropped), list(prep.mean), list(prep.std))


def preprocess(images: list[Image.Image], prep: Preprocessing) -> Tensor:
    """A batch of RGB images -> (B, 3, H, W)."""
    if not images:
        raise ValueError("no images to preprocess")
    return torch.stack([to_model_input(im, prep) for im in images])


def model_view(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """The image exactly as the model sees it (resized and cropped, not normalized): draw overlays on this."""
    resized = TF.resize(
        image.convert("RGB"), prep.resize, interpolation=InterpolationMode(prep.interpolation), antialias=True
    )
    return TF.center_crop(resized, list(prep.input_size))
