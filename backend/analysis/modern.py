"""The analyses beyond the paper, per image, from one Trace, and their part of ``metrics.json``.

``modern_values`` computes token norms, effective rank, head diversity and the CLS metrics per image (and
head), plus the summed statistics of the positional share; batches concatenate (``ModernValues.concat``) and
``summarize_modern`` averages over images afterwards, like ``summary.summarize`` (ANALYSES.md section 0).
Definitions: representation.py, heads.py; docs/MODERN.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from backend.analysis._common import AnalysisArgumentError
from backend.analysis.heads import cls_selectivity, cls_self, head_diversity
from backend.analysis.representation import (
    OUTLIER_FACTOR,
    TOKEN_NORM_STATS,
    PositionSums,
    effective_rank,
    positional_share,
    token_norms,
)

if TYPE_CHECKING:
    from backend.capture import Trace


@dataclass
class ModernValues:
    """Per-image values, the image axis second as in ``summary.PerImage``: ``token_norm`` ``(L + 1, B, 4)``
    (last axis: TOKEN_NORM_STATS), ``effective_rank`` ``(L + 1, B)``, ``head_diversity`` ``(L, B)`` (None
    with one head), ``cls_selectivity`` / ``cls_self`` ``(L, B, heads)`` or None without a CLS token.
    ``positions``: the set sums of the positional share (None for a slice of one image)."""

    token_norm: Tensor
    effective_rank: Tensor
    head_diversity: Tensor | None
    cls_selectivity: Tensor | None
    cls_self: Tensor | None
    positions: PositionSums | None
    outlier_factor: float = OUTLIER_FACTOR

    @property
    def num_images(self) -> int:
        return int(self.effective_rank.shape[1])

    def cpu(self) -> ModernValues:
        """Float64 CPU copies (one transfer per tensor), for slicing per image without device syncs."""

        def host(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.double().cpu()

        token_norm, rank = host(self.token_norm), host(self.effective_rank)
        assert token_norm is not None and rank is not None
        positions = self.positions
        if positions is not None:
            positions = PositionSums(positions.count, positions.total.cpu(), positions.square.cpu())
        return ModernValues(
            token_norm=token_norm,
            effective_rank=rank,
            head_diversity=host(self.head_diversity),
            cls_selectivity=host(self.cls_selectivity),
            cls_self=host(self.cls_self),
            positions=positions,
            outlier_factor=self.outlier_factor,
        )

    def select(self, i: int) -> ModernValues:
        """Image ``i`` alone (what ``modern_values`` gives on that image's trace)."""
        one = slice(i, i + 1)
        return ModernValues(
            token_norm=self.token_norm[:, one],
            effective_rank=self.effective_rank[:, one],
            head_diversity=None if self.head_diversity is None else self.head_diversity[:, one],
            cls_selectivity=None if self.cls_selectivity is None else self.cls_selectivity[:, one],
            cls_self=None if self.cls_self is None else self.cls_self[:, one],
            positions=None,
            outlier_factor=self.outlier_factor,
        )

    @staticmethod
    def concat(parts: Sequence[ModernValues]) -> ModernValues:
        if not parts:
            raise AnalysisArgumentError("ModernValues.concat needs at least one part")
        factors = {p.outlier_factor for p in parts}
        if len(factors) != 1:
            raise AnalysisArgumentError(
                f"parts were computed with different outlier factors {sorted(factors)}"
            )

        def cat(name: str, dim: int) -> Tensor | None:
            values = [getattr(p, name) for p in parts]
            if any(v is None for v in values):
                return None
            return torch.cat(values, dim=dim)

        token_norm, rank, diversity = cat("token_norm", 1), cat("effective_rank", 1), cat("head_diversity", 1)
        assert token_norm is not None and rank is not None
        sums = [p.positions for p in parts if p.positions is not None]
        return ModernValues(
            token_norm=token_norm,
            effective_rank=rank,
            head_diversity=diversity,
            cls_selectivity=cat("cls_selectivity", 1),
            cls_self=cat("cls_self", 1),
            positions=PositionSums.add(sums) if len(sums) == len(parts) else None,
            outlier_factor=factors.pop(),
        )


@torch.no_grad()
def modern_values(
    trace: Trace, outlier_factor: float = OUTLIER_FACTOR, positions: bool = True
) -> ModernValues:
    """Every analysis of this module per image (and head), on the trace's device; one loop over layers.
    ``positions=False`` leaves out the batch's positional sums (for callers that keep images apart)."""
    prefix = trace.num_prefix_tokens
    states = trace.x_out  # depths 0..L
    diversity = None
    if trace.num_heads > 1:
        diversity = torch.stack([head_diversity(a, prefix) for a in trace.attentions])
    selectivity = self_attn = None
    if trace.has_cls:
        selectivity = torch.stack([cls_selectivity(a, prefix) for a in trace.attentions])
        self_attn = torch.stack([cls_self(a, prefix) for a in trace.attentions]).float()
    return ModernValues(
        token_norm=token_norms(states, prefix, outlier_factor).movedim(0, -1),
        effective_rank=effective_rank(states, prefix),
        head_diversity=diversity,
        cls_selectivity=selectivity,
        cls_self=self_attn,
        positions=PositionSums.of(states, prefix) if positions else None,
        outlier_factor=float(outlier_factor),
    )


def _over_images(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(D, B, ...)`` -> mean and population std over images, the trailing axes first: ``(..., D)``."""
    x = x.double().movedim(1, -1)
    return x.mean(-1).movedim(0, -1), x.std(-1, correction=0).movedim(0, -1)


def _curve(depth: list[int], mean: Tensor, std: Tensor) -> dict[str, Any]:
    return {"depth": depth, "value": mean.tolist(), "std": std.tolist()}


def summarize_modern(values: ModernValues) -> dict[str, Any]:
    """The ``metrics.json`` entries of these analyses: means over images (then heads), population std over
    images. ``cls_selectivity`` / ``cls_self`` are None without a CLS token, ``head_diversity`` with one head,
    ``positional_share`` for fewer than 2 images."""
    from backend.analysis.summary import layer_summary  # summary imports this module

    n_layers = int(values.token_norm.shape[0]) - 1
    depths, blocks = list(range(n_layers + 1)), list(range(1, n_layers + 1))
    norm_mean, norm_std = _over_images(values.token_norm)
    rank_mean, rank_std = _over_images(values.effective_rank)
    share = None if values.positions is None else positional_share(values.positions)
    token_norm: dict[str, Any] = {"depth": depths, "outlier_factor": values.outlier_factor}
    for k, name in enumerate(TOKEN_NORM_STATS):
        token_norm[name] = {"value": norm_mean[k].tolist(), "std": norm_std[k].tolist()}
    return {
        "token_norm": token_norm,
        "effective_rank": _curve(depths, rank_mean, rank_std),
        "head_diversity": None
        if values.head_diversity is None
        else _curve(blocks, *_over_images(values.head_diversity)),
        "cls_selectivity": None
        if values.cls_selectivity is None
        else layer_summary(list(values.cls_selectivity)),
        "cls_self": None if values.cls_self is None else layer_summary(list(values.cls_self)),
        "positional_share": None if share is None else {"depth": depths, "value": share.tolist()},
    }
