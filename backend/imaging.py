"""Preprocessing: decoded images -> the model's input tensor, with a record of what was done.

Each model is analysed the way it was trained to see (``preprocessing_for``: the one rule of UI, API, CLI):

- "paper": resize the shorter side to ``size / 0.875`` (256 for 224) with bilinear interpolation, centre-crop
  ``size``, scale to [0, 1], normalize with the model's mean/std (ANALYSES.md section 0).
- "model": the model's own eval preprocessing: its card's ``pretrained_cfg_overlay`` (the demo models: 32 px,
  bilinear, crop_pct 1.0, i.e. resize the shorter side to 32 and centre-crop 32) merged into its timm data
  config (interpolation and crop_pct).
- "auto" (the default) picks "model" when the card sets ``crop_pct`` or ``interpolation`` or when the input is
  not the paper's 224 px, else "paper".

Decoding untrusted bytes is ``backend.uploads``' job; this module only sees RGB PIL images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

PreprocessingMode = Literal["auto", "paper", "model"]
PREPROCESSING_MODES: tuple[str, ...] = ("auto", "paper", "model")
PAPER_CROP_PCT = 0.875
PAPER_INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The card keys that define a model's own eval crop (the rest of an overlay, e.g. mean/std, always applies).
CARD_PREPROCESSING_KEYS = ("crop_pct", "interpolation")


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int]
    resize: int  # shorter side before the centre crop
    interpolation: str
    crop: str
    crop_pct: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str  # "paper" or "model": what was done
    # why: "card" (the model card sets its crop), "timm" (not a 224 px model: its timm data config),
    # "paper" (a 224 px model with no card saying otherwise), "requested" (the caller chose the mode)
    source: str = "requested"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """The inverse of ``as_dict`` (records written before ``source`` existed read as "requested")."""
        return cls(
            input_size=(int(d["input_size"][0]), int(d["input_size"][1])),
            resize=int(d["resize"]),
            interpolation=str(d["interpolation"]),
            crop=str(d["crop"]),
            crop_pct=float(d["crop_pct"]),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            mode=str(d["mode"]),
            source=str(d.get("source", "requested")),
        )


def card_overlay(arch_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The preprocessing a model card declares (its ``arch_kwargs["pretrained_cfg_overlay"]``), or ``{}``."""
    overlay = (arch_kwargs or {}).get("pretrained_cfg_overlay") or {}
    return dict(overlay) if isinstance(overlay, Mapping) else {}


def preprocessing_for(
    data_config: Mapping[str, Any],
    mode: PreprocessingMode | str = "auto",
    *,
    card: Mapping[str, Any] | None = None,
) -> Preprocessing:
    """The preprocessing record of a model from its timm data config (``resolve_model_data_config``, which
    already includes the card's overlay) and ``card``, the overlay itself (``card_overlay(arch_kwargs)``).

    ``mode="auto"``: "model" when ``card`` sets ``crop_pct`` or ``interpolation`` ("card") or the input is not
    224 px ("timm"), else "paper" ("paper"). "paper" and "model" force that mode ("requested").
    """
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing mode {mode!r} is not one of {', '.join(PREPROCESSING_MODES)}")
    _, h, w = data_config.get("input_size", (3, PAPER_INPUT_SIZE, PAPER_INPUT_SIZE))
    mean = tuple(float(v) for v in data_config.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in data_config.get("std", IMAGENET_STD))
    source = "requested"
    if mode == "auto":
        if any(key in (card or {}) for key in CARD_PREPROCESSING_KEYS):
            mode, source = "model", "card"
        elif (int(h), int(w)) != (PAPER_INPUT_SIZE, PAPER_INPUT_SIZE):
            mode, source = "model", "timm"
        else:
            mode, source = "paper", "paper"
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
        source=source,
    )


def model_preprocessing(loaded: Any, mode: PreprocessingMode | str = "auto") -> Preprocessing:
    """``preprocessing_for`` of a loaded model (``backend.models.LoadedModel``): its data config and card."""
    return preprocessing_for(loaded.data_config, mode, card=card_overlay(loaded.spec.arch_kwargs))


def resize_for(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """The first step of ``prep``: the shorter side resized to ``prep.resize``. Applied to its own output it
    changes nothing, so a server may shrink a large image once, early, and keep only that."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    resized: Image.Image = TF.resize(
        image, prep.resize, interpolation=InterpolationMode(prep.interpolation), antialias=True
    )
    return resized


def to_model_input(image: Image.Image, prep: Preprocessing) -> Tensor:
    """One RGB image -> (3, H, W) float tensor, resized, centre-cropped and normalized."""
    cropped = TF.center_crop(resize_for(image, prep), list(prep.input_size))
    return TF.normalize(TF.to_tensor(cropped), list(prep.mean), list(prep.std))


def preprocess(images: list[Image.Image], prep: Preprocessing) -> Tensor:
    """A batch of RGB images -> (B, 3, H, W)."""
    if not images:
        raise ValueError("no images to preprocess")
    return torch.stack([to_model_input(im, prep) for im in images])


def model_view(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """The image exactly as the model sees it (resized and cropped, not normalized): draw overlays on this."""
    cropped: Image.Image = TF.center_crop(resize_for(image, prep), list(prep.input_size))
    return cropped
