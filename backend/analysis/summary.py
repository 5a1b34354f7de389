"""Per-model summary of every layer: the ``metrics.json`` object, from one Trace.

Averaging order (ANALYSES.md section 0, (!)): every metric is computed per image and per head, then averaged
over images, then over heads. Standard deviations are population std over images (0 for one image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from backend.analysis._common import AnalysisArgumentError, as_float, check_tokens
from backend.analysis.attention import attention_metrics, pixel_distances
from backend.analysis.spectrum import high_frequency_delta
from backend.analysis.tokens import movement_coherence

if TYPE_CHECKING:  # only the type: importing capture would pull in model code
    from backend.capture import Trace


def _mean_std(values: Tensor) -> tuple[Tensor, Tensor]:
    """``(L, B)`` -> mean and population std over images, each ``(L,)``."""
    return values.mean(-1), values.std(-1, correction=0)


def _stack_summary(stacked: Tensor) -> dict[str, Any]:
    """``(L, B, heads)`` -> ``{"mean": [L], "per_head": [L][heads], "std": [L]}``, one copy to the CPU."""
    if stacked.dim() != 3 or 0 in stacked.shape:
        raise AnalysisArgumentError(
            f"expected per-layer (B, heads) values, got stacked shape {tuple(stacked.shape)}"
        )
    stacked = stacked.double()
    per_head = stacked.mean(1)  # over images first
    mean = per_head.mean(-1)  # then over heads
    std = stacked.mean(2).std(1, correction=0)  # spread over images of the head-averaged value
    flat = torch.cat([mean, std, per_head.flatten()]).cpu().tolist()
    n_layers, n_heads = per_head.shape
    return {
        "mean": flat[:n_layers],
        "per_head": [
            flat[2 * n_layers + i * n_heads : 2 * n_layers + (i + 1) * n_heads] for i in range(n_layers)
        ],
        "std": flat[n_layers : 2 * n_layers],
    }


def layer_summary(per_image_head: Sequence[Tensor]) -> dict[str, Any]:
    """One ``(B, heads)`` tensor per layer -> ``{"mean": [L], "per_head": [L][heads], "std": [L]}``.

    ``mean``: over images, then heads; ``per_head``: over images per head; ``std``: population std over
    images of the head-averaged value. Plain Python floats, ready for JSON.
    """
    if not per_image_head:
        raise AnalysisArgumentError("layer_summary needs at least one layer")
    shapes = {tuple(t.shape) for t in per_image_head}
    if len(shapes) != 1:
        raise AnalysisArgumentError(f"every layer must have the same (B, heads) shape, got {sorted(shapes)}")
    return _stack_summary(torch.stack([as_float(t) for t in per_image_head]))


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


@torch.no_grad()
def compute_metrics(trace: Trace, family: str) -> dict[str, Any]:
    """The per-model ``metrics.json`` object: A2, A3, attention entropy, A4 and the A6 scalar, per layer.

    Vectorized over images and heads (one loop over layers); every value is computed per image (and head) and
    only then averaged. Depth axes: ``delta_log_amplitude`` on ``x_out[0..L]`` (depth 0 = the embedding),
    ``delta_log_amplitude_attn`` on the post-attention states of blocks ``1..L``, ``movement_coherence`` of
    block ``k`` from ``x_out[k-1]`` to ``x_attn[k]``.
    """
    _check_trace(trace)
    prefix = trace.num_prefix_tokens
    grid = (int(trace.grid[0]), int(trace.grid[1]))
    n_layers = trace.num_layers

    distance, nmi, entropy = [], [], []
    dist_px: Tensor | None = None
    for attn in trace.attentions:
        if dist_px is None:
            dist_px = pixel_distances(grid, trace.patch_size, attn.device, as_float(attn).dtype)
        layer = attention_metrics(attn, grid, trace.patch_size, prefix, dist_px)
        distance.append(layer.distance)
        nmi.append(layer.nmi)
        entropy.append(layer.entropy)

    hf_out = torch.stack([high_frequency_delta(z, grid, prefix) for z in trace.x_out])  # (L + 1, B)
    hf_attn = torch.stack([high_frequency_delta(z, grid, prefix) for z in trace.x_attn])  # (L, B)
    moves = torch.stack(
        [movement_coherence(trace.x_out[k], trace.x_attn[k], prefix) for k in range(n_layers)]
    )  # (L, B)

    def mean_std(values: Tensor) -> tuple[list[float], list[float]]:
        mean, std = _mean_std(values.double())
        both = torch.cat([mean, std]).cpu().tolist()
        return both[: len(mean)], both[len(mean) :]

    out_mean, out_std = mean_std(hf_out)
    attn_mean, attn_std = mean_std(hf_attn)
    move_mean, move_std = mean_std(moves)
    return {
        "model": trace.model_id,
        "family": family,
        "preprocessing": trace.preprocessing,
        "grid": [grid[0], grid[1]],
        "patch_size": int(trace.patch_size),
        "layers": n_layers,
        "heads": trace.num_heads,
        "num_images": trace.batch_size,
        "attention_distance": _stack_summary(torch.stack(distance)),
        "nmi": _stack_summary(torch.stack(nmi)),
        "attention_entropy": _stack_summary(torch.stack(entropy)),
        "delta_log_amplitude": {"depth": list(range(n_layers + 1)), "value": out_mean, "std": out_std},
        "delta_log_amplitude_attn": {
            "depth": list(range(1, n_layers + 1)),
            "value": attn_mean,
            "std": attn_std,
        },
        "movement_coherence": {"mean": move_mean, "std": move_std},
    }
