"""The frequency lab's "what moved" figure: per model, the perturbed image's per-layer curves minus the
source image's, depth by depth (relative attention distance, NMI, Δ log amplitude), with a zero line, and the
largest move of each curve, which the lab states in words. Both images' metrics are the API's, read as the
curves panel reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures.style import DASHES, base_layout, family_key
from app.metrics import MOVED_CURVES, Curve, MetricSpec, curve_change


@dataclass(frozen=True)
class Move:
    """The largest change of one curve of one model: at ``depth`` (the curve's x), by ``change``."""

    model: str
    spec: MetricSpec
    depth: int
    change: float


def changes_of(
    source: dict[str, dict[str, Any]], perturbed: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Curve]]:
    """Per model present in both, per moved curve both images carry: perturbed minus source."""
    out: dict[str, dict[str, Curve]] = {}
    for model, before in source.items():
        after = perturbed.get(model)
        if after is None:
            continue
        curves = {s.key: c for s in MOVED_CURVES if (c := curve_change(before, after, s)) is not None}
        if curves:
            out[model] = curves
    return out


def largest_moves(changes: dict[str, dict[str, Curve]]) -> list[Move]:
    """Per moved curve, the model and depth with the largest absolute change (NaN depths skipped)."""
    moves: list[Move] = []
    for spec in MOVED_CURVES:
        best: Move | None = None
        for model, curves in changes.items():
            curve = curves.get(spec.key)
            if curve is None:
                continue
            for x, v in zip(curve.x, curve.mean, strict=True):
                if not math.isnan(v) and (best is None or abs(v) > abs(best.change)):
                    best = Move(model, spec, x, v)
        if best is not None:
            moves.append(best)
    return moves


def moves_figure(
    changes: dict[str, dict[str, Curve]],
    *,
    colours: dict[str, str],
    families: dict[str, str],
    subtitle: str,
    filename: str = "vitscope_frequency_lab_moves",
) -> go.Figure:
    titles = [s.title + (f" ({s.unit})" if s.unit else "") for s in MOVED_CURVES]  # the title says "minus"
    fig = make_subplots(rows=1, cols=len(MOVED_CURVES), subplot_titles=titles, horizontal_spacing=0.08)
    for model, curves in changes.items():
        colour = colours.get(model, "#444")
        for i, spec in enumerate(MOVED_CURVES):
            curve = curves.get(spec.key)
            if curve is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=curve.x,
                    y=curve.mean,
                    mode="lines+markers",
                    line=dict(color=colour, width=2, dash=DASHES[family_key(families.get(model))]),
                    marker=dict(size=5, color=colour),
                    name=model,
                    legendgroup=model,
                    showlegend=i == 0,
                    hovertemplate=f"{model}<br>{'depth' if spec.depth_from_zero else 'block'} %{{x}}<br>"
                    "perturbed − source: %{y:+.4g}<extra></extra>",
                ),
                row=1,
                col=i + 1,
            )
    for i, spec in enumerate(MOVED_CURVES):
        fig.add_hline(y=0, line=dict(color="#868e96", width=1, dash="dot"), row=1, col=i + 1)
        fig.update_xaxes(
            title_text="depth (0 = embedding)" if spec.depth_from_zero else "block", row=1, col=i + 1
        )
    fig.update_xaxes(dtick=1, showgrid=True, gridcolor="#eef0f4", zeroline=False)
    fig.update_yaxes(showgrid=True, gridcolor="#eef0f4", zeroline=False)
    fig.update_annotations(font_size=12)
    fig.update_layout(
        **base_layout(margin=dict(l=48, r=16, t=84, b=48)),
        title=dict(
            text=f"What moved: perturbed minus source<br><sup>{subtitle}</sup>", x=0.01, font=dict(size=14)
        ),
        legend=dict(orientation="h", yanchor="bottom", y=1.12, x=1, xanchor="right"),
        height=340,
        hovermode="closest",
        meta=dict(models=list(changes), curves=[s.key for s in MOVED_CURVES], filename=filename),
    )
    return fig
