"""The analyses of a trained (or snapshot) encoder: vitscope's own capture and ``compute_metrics``.

The weights go through the catalogue's loading steps (the timm build of the card's arch and kwargs, timm's
checkpoint filter, a strict load, the capture-ready eval instance), so what is analysed is exactly what a user
who registers the file would see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from backend.analysis.summary import PerImage, per_image_values, summarize
from backend.capture import capture
from backend.models.catalog import spec_from_card
from backend.models.converters import convert_timm, load_strict, read_checkpoint
from backend.models.loading import build_model, prepare_for_capture
from backend.training.probe import preprocess_for_card


@torch.no_grad()
def analyse_weights(
    weights: Path,
    card: dict[str, Any],
    images: torch.Tensor,
    device: torch.device,
    data: str = "",
    batch_size: int = 64,
) -> dict[str, Any]:
    """``compute_metrics`` of the encoder in ``weights`` (timm keys) on uint8 ``images``, batch by batch."""
    spec = spec_from_card({**card, "weights": Path(weights).name}, Path(weights).with_suffix(".json"))
    model = build_model(spec.arch, spec.arch_kwargs)
    load_strict(model, convert_timm(read_checkpoint(Path(weights))), "timm", spec.arch)
    model = prepare_for_capture(model.float()).to(device)
    prep = preprocess_for_card(card)
    record = {
        "data": data,
        "input_size": prep.size,
        "resize": "none" if images.shape[-1] == prep.size else f"bilinear to {prep.size} px",
        "mean": list(prep.mean),
        "std": list(prep.std),
    }
    parts: list[PerImage] = []
    grid: tuple[int, int] = (0, 0)
    patch = 0
    for chunk in images.split(batch_size):
        trace = capture(model, prep(chunk.to(device)), model_id=spec.id, preprocessing=record)
        parts.append(per_image_values(trace))
        grid, patch = trace.grid, trace.patch_size
    return summarize(
        PerImage.concat(parts),
        model=spec.id,
        family=spec.family,
        preprocessing=record,
        grid=grid,
        patch_size=patch,
    )
