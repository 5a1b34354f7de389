"""Per-layer curves (A2 distance, A3 NMI, attention entropy, A4 delta log amplitude), models overlaid.

One colour per model (family-coded), the std over images as a band when the curves are for a set, and the
current layer marked by a vertical line in every panel (``layout.shapes``, one per panel, in panel order).
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures.style import DASHES, base_layout, family_key, rgba
from app.metrics import METRICS, read_curve

LAYER_LINE = dict(color="#e03131", width=1.5, dash="dot")


def layer_marker_shapes(layer: int | None, n_panels: int = len(METRICS)) -> list[dict[str, Any]]:
    if layer is None:
        return []
    shapes = []
    for i in range(n_panels):
        axis = "" if i == 0 else str(i + 1)
        shapes.append(
            dict(
                type="line",
                xref=f"x{axis}",
                yref=f"y{axis} domain",
                x0=layer,
                x1=layer,
                y0=0,
                y1=1,
                line=LAYER_LINE,
                layer="below",
            )
        )
    return shapes


def curves_figure(
    per_model: dict[str, dict[str, Any]],
    *,
    colours: dict[str, str],
    families: dict[str, str],
    layer: int | None,
    subtitle: str,
) -> go.Figure:
    titles = [spec.title + (f" ({spec.unit})" if spec.unit else "") for spec in METRICS]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.09, vertical_spacing=0.16)
    for model, metrics in per_model.items():
        colour = colours.get(model, "#444")
        dash = DASHES[family_key(families.get(model))]
        for i, spec in enumerate(METRICS):
            curve = read_curve(metrics, spec)
            if curve is None:
                continue
            row, col = divmod(i, 2)
            if curve.std and any(s > 0 for s in curve.std):
                upper = [m + s for m, s in zip(curve.mean, curve.std, strict=True)]
                lower = [m - s for m, s in zip(curve.mean, curve.std, strict=True)]
                fig.add_trace(
                    go.Scatter(
                        x=curve.x + curve.x[::-1],
                        y=upper + lower[::-1],
                        fill="toself",
                        fillcolor=rgba(colour, 0.15),
                        line=dict(width=0),
                        hoverinfo="skip",
                        showlegend=False,
                        legendgroup=model,
                        name=f"{model} ± std",
                    ),
                    row=row + 1,
                    col=col + 1,
                )
            fig.add_trace(
                go.Scatter(
                    x=curve.x,
                    y=curve.mean,
                    mode="lines+markers",
                    line=dict(color=colour, width=2, dash=dash),
                    marker=dict(size=5, color=colour),
                    name=model,
                    legendgroup=model,
                    showlegend=i == 0,
                    hovertemplate=f"{model}<br>depth %{{x}}<br>{spec.title}: %{{y:.4g}}<extra></extra>",
                ),
                row=row + 1,
                col=col + 1,
            )
    fig.update_xaxes(title_text="block", dtick=1, showgrid=True, gridcolor="#eef0f4", zeroline=False)
    fig.update_xaxes(title_text="depth (0 = embedding)", row=2, col=2)
    fig.update_yaxes(showgrid=True, gridcolor="#eef0f4", zeroline=False)
    fig.update_annotations(font_size=12)
    fig.update_layout(
        **base_layout(margin=dict(l=48, r=16, t=72, b=48)),
        title=dict(text=f"Per-layer curves<br><sup>{subtitle}</sup>", x=0.01, font=dict(size=14)),
        shapes=layer_marker_shapes(layer),
        legend=dict(orientation="h", yanchor="bottom", y=1.06, x=1, xanchor="right"),
        height=560,
        hovermode="closest",
        meta=dict(layer=layer, models=list(per_model)),
    )
    return fig
