"""The two stages of a batch: ``prepare_batch`` (read, decode, preprocess: CPU only, no model) and ``Worker``
(the models on one device: capture + the per-image analyses of ``backend.analysis.summary``).

Both are plain Python so that the local engine calls them in-process and the Ray engine runs
``prepare_batch`` as a task and ``Worker`` as an actor: one implementation, the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from backend.analysis import head_mean, log_amplitude_spectrum, query_map
from backend.analysis.cka import image_means
from backend.analysis.modern import ModernValues, modern_values
from backend.analysis.representation import PositionSums
from backend.analysis.summary import PerImage, per_image_values
from backend.capture import Trace, capture, grid_and_patch
from backend.engine.sources import ImageRef
from backend.errors import BadImage, VitscopeError
from backend.imaging import Preprocessing, model_preprocessing, preprocess
from backend.uploads import decode_image, image_id


@dataclass
class BatchMeta:
    """What the driver needs of a prepared batch: the readable images and why the others were skipped."""

    index: list[int]  # position in the submitted batch of each readable image
    paths: list[str]
    sha256: list[str]
    skipped: list[tuple[str, str]]  # (path, reason)


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model, as the summary and the outputs describe it."""

    model: str
    family: str
    untrained: bool
    weights_digest: str
    preprocessing: Preprocessing
    grid: tuple[int, int]
    patch_size: int


def prepare_batch(
    refs: Sequence[ImageRef], preprocessings: Sequence[Preprocessing]
) -> tuple[BatchMeta, list[np.ndarray]]:
    """Read and decode ``refs``; one ``(B, 3, H, W)`` float32 array per preprocessing (an unreadable image
    is skipped, with the reason, never fatal)."""
    meta = BatchMeta([], [], [], [])
    images = []
    for i, ref in enumerate(refs):
        try:
            data = ref.read()
            decoded = decode_image(data)
        except (OSError, BadImage) as exc:
            meta.skipped.append((ref.path, str(exc)))
            continue
        meta.index.append(i)
        meta.paths.append(ref.path)
        meta.sha256.append(image_id(data))
        images.append(decoded.image)
    if not images:
        return meta, []
    return meta, [preprocess(images, prep).numpy() for prep in preprocessings]


def _to_host(values: PerImage) -> PerImage:
    """Float64 CPU copies (lossless for float32 values; what the store writes)."""
    return PerImage(**{f.name: getattr(values, f.name).double().cpu() for f in dataclasses.fields(values)})


class Worker:
    """The models of one run on one device. ``analyze`` takes a prepared batch and returns, per model, the
    rows it analysed and their per-image values."""

    def __init__(
        self, model_ids: Sequence[str], device: str, mode: str, download: bool, threads: int | None = None
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.models: dict[str, Any] = {}
        self.infos: dict[str, ModelInfo] = {}
        # A Ray actor whose __init__ raises dies and Ray keeps only the text: keep the error for describe(),
        # so that it reaches the driver as itself (its message says how to get the weights).
        self.error: VitscopeError | None = None
        try:
            self._load(model_ids, mode, download)
        except VitscopeError as exc:
            self.error = exc

    def _load(self, model_ids: Sequence[str], mode: str, download: bool) -> None:
        from backend.models import load_model

        for model_id in model_ids:
            loaded = load_model(model_id, self.device, download=download)
            prep = model_preprocessing(loaded, mode)
            probe = torch.empty(1, 3, *prep.input_size)
            grid, patch = grid_and_patch(loaded.model, probe)
            self.models[model_id] = loaded.model
            self.infos[model_id] = ModelInfo(
                model_id, loaded.spec.family, loaded.spec.untrained, loaded.weights_digest, prep, grid, patch
            )

    def describe(self) -> tuple[str, dict[str, ModelInfo]]:
        if self.error is not None:
            raise self.error
        return str(self.device), self.infos

    def preprocessings(self) -> list[Preprocessing]:
        """The distinct preprocessings of the models, in the order ``prepare_batch`` returns arrays."""
        return list(dict.fromkeys(info.preprocessing for info in self.infos.values()))

    def _trace(self, model_id: str, pixels: list[np.ndarray], rows: list[int] | None = None) -> Trace:
        info = self.infos[model_id]
        batch = torch.from_numpy(pixels[self.preprocessings().index(info.preprocessing)])
        if rows is not None:
            batch = batch[rows]
        return capture(
            self.models[model_id],
            batch.to(self.device),
            model_id=model_id,
            preprocessing=info.preprocessing.as_dict(),
        )

    def analyze(
        self, meta: BatchMeta, pixels: list[np.ndarray], wanted: Sequence[frozenset[str]]
    ) -> dict[str, tuple[list[int], PerImage, ModernValues]]:
        """Per model: the rows of ``meta`` it analysed (images it still ``wanted``) and their values."""
        out: dict[str, tuple[list[int], PerImage, ModernValues]] = {}
        for model_id in self.models:
            rows = [k for k, i in enumerate(meta.index) if model_id in wanted[i]]
            if rows:
                trace = self._trace(model_id, pixels, rows)
                out[model_id] = (rows, _to_host(per_image_values(trace)), modern_values(trace).cpu())
        return out

    def set_data(self, pixels: list[np.ndarray]) -> dict[str, tuple[np.ndarray, PositionSums]]:
        """Per model, what the set statistics need of a batch (``backend.engine.set_stats``): each image's
        mean patch token per depth ``(D, B, C)`` (CKA) and the batch's position sums (positional share)."""
        out = {}
        for model_id in self.models:
            trace = self._trace(model_id, pixels)
            p = trace.num_prefix_tokens
            sums = PositionSums.add(PositionSums.per_image(trace.x_out, p))
            host = PositionSums(sums.count, sums.total.cpu(), sums.square.cpu())
            out[model_id] = (image_means(trace.x_out, p).cpu().numpy(), host)
        return out

    def figure_data(self, pixels: list[np.ndarray]) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
        """Per model: the first image's attention maps (``attention_maps``) and the batch's mean spectra."""
        out = {}
        for model_id in self.models:
            trace = self._trace(model_id, pixels)
            spectra = torch.stack(
                [log_amplitude_spectrum(z, trace.grid, trace.num_prefix_tokens).mean(0) for z in trace.x_out]
            )
            out[model_id] = (attention_maps(trace), spectra.cpu().numpy())
        return out


def attention_maps(trace: Trace) -> dict[str, tuple[tuple[int, int] | None, np.ndarray]]:
    """Head-mean maps of the first image for the centre patch, an off-centre patch and CLS, at every layer."""
    h, w = trace.grid
    queries: dict[str, tuple[int, int] | None] = {"centre": (h // 2, w // 2), "corner": (h // 4, w // 4)}
    if trace.has_cls:
        queries["CLS"] = None
    maps = {}
    for label, cell in queries.items():
        q = None if cell is None else cell[0] * w + cell[1]
        stack = torch.stack(
            [query_map(head_mean(a[:1]), trace.grid, trace.num_prefix_tokens, q)[0] for a in trace.attentions]
        )
        maps[label] = (cell, stack.cpu().numpy())
    return maps
