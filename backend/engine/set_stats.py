"""The set statistics of ``vitscope analyze``: on the first ``--set-images`` analysed images (in dataset
order), each model's positional share and linear CKA between every pair of models, the numbers the API gives
for a set of those images (``/sets/{id}/metrics``' positional share, ``/sets/{id}/cka``).

Per-image rows cannot rebuild them (they need sums over a set of images, and CKA the images' representations
side by side), so they take one more forward pass over the sample per model; recomputed on every run from the
sample alone, so a resumed run writes what a run in one go writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

from backend.errors import BadRequest

if TYPE_CHECKING:  # the command line reads the constants here without numpy or torch
    import numpy as np

    from backend.engine.engines import LocalEngine, RayEngine
    from backend.engine.sources import ImageRef

SET_IMAGES = 256  # the default sample: CKA's null holds 20 shuffled (D, N, N) Gram matrices in turn
MAX_SET_IMAGES = 1024  # as the API's largest set
SAMPLE_RULE = "the first analysed images in dataset order (--set-images)"


def check_set_images(n: int) -> None:
    if n != 0 and not 2 <= n <= MAX_SET_IMAGES:
        raise BadRequest(
            f"--set-images must be 0 (no set statistics) or 2..{MAX_SET_IMAGES}, got {n}: the positional "
            "share and CKA are computed on that many images"
        )


def set_statistics(
    engine: LocalEngine | RayEngine,
    refs: Sequence[ImageRef],
    document: dict[str, Any],
    set_images: int,
    batch_size: int,
) -> None:
    """Fill ``document`` (``metrics.json``): each model's ``positional_share`` and ``set_statistics``
    (``images``, ``rule``, ``cka``: one entry per pair of models); nothing with fewer than 2 images."""
    import numpy as np
    import torch

    from backend.analysis.cka import cka_payload, cka_with_null
    from backend.analysis.representation import PositionSums, positional_share

    analysed = set(document["images"])
    sample = [r for r in refs if r.path in analysed][:set_images]
    if len(sample) < 2:
        return
    images: list[str] = []
    means: dict[str, list[np.ndarray]] = {}
    sums: dict[str, PositionSums] = {}
    for start in range(0, len(sample), batch_size):
        paths, values = engine.set_data(sample[start : start + batch_size])
        images += paths  # those read again (a file changed since may not be)
        for model_id, (batch_means, batch_sums) in values.items():
            means.setdefault(model_id, []).append(batch_means)
            if model_id in sums:
                sums[model_id].accumulate(batch_sums)
            else:
                sums[model_id] = PositionSums.add([batch_sums])  # a float64 accumulator of its own
    if len(images) < 2:
        return
    for metrics in document["models"]:
        share = positional_share(sums[metrics["model"]])
        if share is not None:
            depths = list(range(len(share)))
            metrics["positional_share"] = {
                "depth": depths,
                "value": share.tolist(),
                "num_images": len(images),
            }
    stacked = {m: torch.from_numpy(np.concatenate(parts, axis=1)) for m, parts in means.items()}  # (D, N, C)
    pairs = []
    for a, b in combinations([m["model"] for m in document["models"]], 2):
        pairs.append({"model_a": a, "model_b": b, **cka_payload(cka_with_null(stacked[a], stacked[b]))})
    document["set_statistics"] = {"images": images, "rule": SAMPLE_RULE, "cka": pairs}
