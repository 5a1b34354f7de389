"""Per-model summary of every layer: the ``metrics.json`` object, from one Trace.

Averaging order (ANALYSES.md section 0, (!)): every metric is computed per image and per head, then averaged
over images, then over heads. Standard deviations are population std over images (0 for one image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from backend.analysis._common import AnalysisArgumentError, check_tokens
from backend.analysis.attention import layers_attention_metrics, uniform_attention_distance
from backend.analysis.modern import modern_values, summarize_modern
from backend.analysis.spectrum import delta_bin, high_frequency_deltas
from backend.analysis.tokens import layers_movement_coherence

if TYPE_CHECKING:  # only the type: importing capture would pull in model code
    from backend.capture import Trace


def _to_host(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Float64 CPU copies of several device tensors in one transfer (one synchronization)."""
    flat = torch.cat([t.double().flatten() for t in tensors]).cpu()
    parts = flat.split([t.numel() for t in tensors])
    return [part.view(t.shape) for part, t in zip(parts, tensors, strict=True)]


def _head_summary(stacked: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(L, B, heads)`` -> mean ``(L,)``, per_head ``(L, heads)``, std ``(L,)`` (see layer_summary)."""
    stacked = stacked.double()
    per_head = stacked.mean(1)  # over images first
    return per_head.mean(-1), per_head, stacked.mean(2).std(1, correction=0)


def _head_dict(mean: Tensor, per_head: Tensor, std: Tensor) -> dict[str, Any]:
    return {"mean": mean.tolist(), "per_head": per_head.tolist(), "std": std.tolist()}


def layer_summary(per_image_head: Sequence[Tensor]) -> dict[str, Any]:
    """One ``(B, heads)`` tensor per layer -> ``{"mean": [L], "per_head": [L][heads], "std": [L]}``.

    ``mean``: over images, then heads; ``per_head``: over images per head; ``std``: population std over
    images of the head-averaged value. Plain Python floats, ready for JSON.
    """
    if not per_image_head:
        raise AnalysisArgumentError("layer_summary needs at least one layer")
    shapes = {tuple(t.shape) for t in per_image_head}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or 0 in next(iter(shapes)):
        raise AnalysisArgumentError(f"every layer must be one non-empty (B, heads) shape, got {shapes}")
    return _head_dict(*_to_host(_head_summary(torch.stack(list(per_image_head)))))


def _check_trace(trace: Trace) -> None:
    n_layers = len(trace.attentions)
    if n_layers < 1 or len(trace.x_attn) != n_layers or len(trace.x_out) != n_layers + 1:
        raise AnalysisArgumentError(
            f"a Trace needs L >= 1 attentions, L x_attn and L + 1 x_out; got {n_layers}, "
            f"{len(trace.x_attn)}, {len(trace.x_out)}"
        )
    b, n, _ = trace.x_out[0].shape
    check_tokens(n, trace.grid, trace.num_prefix_tokens)
    heads = trace.attentions[0].shape[1]
    for state in [*trace.x_attn, *trace.x_out]:
        if state.dim() != 3 or state.shape[:2] != (b, n):
            raise AnalysisArgumentError(f"every state must be ({b}, {n}, C), got {tuple(state.shape)}")
    for attn in trace.attentions:
        if tuple(attn.shape) != (b, heads, n, n):
            raise AnalysisArgumentError(
                f"every attention must be ({b}, {heads}, {n}, {n}), got {tuple(attn.shape)}"
            )


@dataclass
class PerImage:
    """Per-image values of one model over a set, before any averaging: batches concatenate along images.

    ``distance``, ``nmi``, ``entropy``: ``(L, B, heads)``. ``scalars``: ``(3L + 1, B)``, the rows being
    ``delta_log_amplitude`` at depths ``0..L``, ``delta_log_amplitude_attn`` of blocks ``1..L`` and
    ``movement_coherence`` of blocks ``1..L``.
    """

    distance: Tensor
    nmi: Tensor
    entropy: Tensor
    scalars: Tensor

    @property
    def num_layers(self) -> int:
        return int(self.distance.shape[0])

    @property
    def num_images(self) -> int:
        return int(self.distance.shape[1])

    def select(self, i: int) -> PerImage:
        """Image ``i`` alone (what ``per_image_values`` gives on that image's trace)."""
        one = slice(i, i + 1)
        return PerImage(self.distance[:, one], self.nmi[:, one], self.entropy[:, one], self.scalars[:, one])

    def host(self) -> PerImage:
        """Float64 CPU copies (results leave the device once per batch)."""
        return PerImage(*(t.double().cpu() for t in (self.distance, self.nmi, self.entropy, self.scalars)))

    @staticmethod
    def concat(parts: Sequence[PerImage]) -> PerImage:
        if not parts:
            raise AnalysisArgumentError("PerImage.concat needs at least one part")
        return PerImage(
            distance=torch.cat([p.distance for p in parts], dim=1),
            nmi=torch.cat([p.nmi for p in parts], dim=1),
            entropy=torch.cat([p.entropy for p in parts], dim=1),
            scalars=torch.cat([p.scalars for p in parts], dim=1),
        )


@torch.no_grad()
def per_image_values(trace: Trace) -> PerImage:
    """Every metric of ``compute_metrics`` per image (and head), on the trace's device."""
    _check_trace(trace)
    prefix = trace.num_prefix_tokens
    grid = (int(trace.grid[0]), int(trace.grid[1]))
    attention = layers_attention_metrics(trace.attentions, grid, trace.patch_size, prefix)  # (L, B, heads)
    spectrum = high_frequency_deltas([*trace.x_out, *trace.x_attn], grid, prefix)  # (2L + 1, B)
    # (L, B): block k moves x_out[k-1] to x_attn[k]
    moves = layers_movement_coherence(trace.x_out[:-1], trace.x_attn, prefix)
    return PerImage(attention.distance, attention.nmi, attention.entropy, torch.cat([spectrum, moves]))


@torch.no_grad()
def summarize(
    values: PerImage,
    *,
    model: str,
    family: str,
    preprocessing: dict[str, Any],
    grid: tuple[int, int],
    patch_size: int,
) -> dict[str, Any]:
    """The per-model ``metrics.json`` object from per-image values (means over images, then heads)."""
    n_layers = values.num_layers
    scalars = values.scalars.double()
    on_device = [*_head_summary(values.distance), *_head_summary(values.nmi)]
    on_device += [*_head_summary(values.entropy), scalars.mean(-1), scalars.std(-1, correction=0)]
    host = _to_host(on_device)  # everything stays on the device until this one transfer
    image_mean, image_std = host[9].tolist(), host[10].tolist()
    uniform = uniform_attention_distance(grid, patch_size)
    out, attn, move = (
        slice(0, n_layers + 1),
        slice(n_layers + 1, 2 * n_layers + 1),
        slice(2 * n_layers + 1, None),
    )
    return {
        "model": model,
        "family": family,
        "preprocessing": preprocessing,
        "grid": [int(grid[0]), int(grid[1])],
        "patch_size": int(patch_size),
        "layers": n_layers,
        "heads": int(values.distance.shape[2]),
        "num_images": values.num_images,
        "attention_distance": _head_dict(*host[0:3]),
        # distance / the grid's uniform-attention distance: 1 = uniform, 0 = self; comparable across grids
        "attention_distance_relative": _head_dict(*(t / uniform for t in host[0:3])),
        "uniform_attention_distance": uniform,
        "nmi": _head_dict(*host[3:6]),
        "attention_entropy": _head_dict(*host[6:9]),
        "delta_log_amplitude": {
            "depth": list(range(n_layers + 1)),
            "value": image_mean[out],
            "std": image_std[out],
        },
        # the half-diagonal bin both delta_log_amplitude curves read (index, cycles per image, label)
        "delta_log_amplitude_bin": delta_bin(grid),
        "delta_log_amplitude_attn": {
            "depth": list(range(1, n_layers + 1)),
            "value": image_mean[attn],
            "std": image_std[attn],
        },
        "movement_coherence": {"mean": image_mean[move], "std": image_std[move]},
    }


def compute_metrics(trace: Trace, family: str) -> dict[str, Any]:
    """The per-model ``metrics.json`` object: A2, A3, attention entropy, A4 and the A6 scalar, per layer.

    Vectorized over images and heads (one loop over layers); every value is computed per image (and head) and
    only then averaged. Depth axes: ``delta_log_amplitude`` on ``x_out[0..L]`` (depth 0 = the embedding),
    ``delta_log_amplitude_attn`` on the post-attention states of blocks ``1..L``, ``movement_coherence`` of
    block ``k`` from ``x_out[k-1]`` to ``x_attn[k]``. For a set larger than one batch, concatenate the
    ``per_image_values`` of each batch and ``summarize`` once. The analyses beyond the paper (token norms,
    effective rank, head diversity, CLS metrics, positional share) come from ``modern`` (docs/MODERN.md).
    """
    out = summarize(
        per_image_values(trace),
        model=trace.model_id,
        family=family,
        preprocessing=trace.preprocessing,
        grid=trace.grid,
        patch_size=trace.patch_size,
    )
    out.update(summarize_modern(modern_values(trace)))
    return out
