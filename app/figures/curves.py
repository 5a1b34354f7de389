"""Per-layer curves (A2 distance, A3 NMI, attention entropy, A4 delta log amplitude), models overlaid.

One colour per model (family-coded), the std over images as a band when the curves are for a set, and the
current layer marked by a vertical line in every panel (``layout.shapes``, one per panel, in panel order).
The distance panel is in pixels or relative to uniform attention (``scale``); each model's uniform-attention
level is a faint dotted line there. The paper's published curves (``reference``) are overlaid dashed.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures.style import DASHES, base_layout, family_key, rgba
from app.metrics import (
    DISTANCE_RELATIVE,
    METRICS,
    DistanceScale,
    ReferenceCurve,
    grid_of,
    panel_specs,
    read_curve,
    reference_curves,
    uniform_distance,
)

LAYER_LINE = dict(color="#e03131", width=1.5, dash="dot")
# The paper's curves: dashed, no markers, greyed family hues of middle lightness (readable on the light and
# the dark theme): grey-blue for its CL model (MoCo v3), grey-orange for its MIM model (SimMIM).
REFERENCE_COLOURS = {"cl": "#5f7da8", "mim": "#b3845c"}


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


def _uniform_trace(x: list[int], level: float, colour: str, text: str) -> go.Scatter:
    return go.Scatter(
        x=[min(x), max(x)],
        y=[level, level],
        mode="lines",
        line=dict(color=rgba(colour, 0.45), width=1, dash="dot"),
        hovertemplate=f"{text}<extra></extra>",
        showlegend=False,
        name=text,
    )


def _reference_trace(ref: ReferenceCurve, first: bool) -> go.Scatter:
    return go.Scatter(
        x=ref.x,
        y=ref.y,
        mode="lines",
        line=dict(color=REFERENCE_COLOURS.get(ref.family, "#495057"), width=1.6, dash="dash"),
        name=ref.label,
        legendgroup=ref.label,
        showlegend=first,
        hovertemplate=f"{ref.label}<br>%{{x}}: %{{y:.4g}}<br>{ref.source}<extra></extra>",
    )


def curves_figure(
    per_model: dict[str, dict[str, Any]],
    *,
    colours: dict[str, str],
    families: dict[str, str],
    layer: int | None,
    subtitle: str,
    scale: DistanceScale = "px",
    reference: dict[str, Any] | None = None,
    delta_label: str | None = None,
    filename: str = "vitscope_curves",
) -> go.Figure:
    """``reference``: the API's ``/reference`` document (None: no overlay); ``delta_label`` says which
    frequency bin the delta log amplitude panel reads (e.g. "3/4 π on 8 × 8")."""
    specs = panel_specs(scale)
    titles = [spec.title + (f" ({spec.unit})" if spec.unit else "") for spec in specs]
    if delta_label:
        titles[3] += f"<br><sup>{delta_label}</sup>"
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.09, vertical_spacing=0.16)
    for model, metrics in per_model.items():
        colour = colours.get(model, "#444")
        dash = DASHES[family_key(families.get(model))]
        for i, spec in enumerate(specs):
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
            if i == 0 and scale == "px" and (u := uniform_distance(metrics)) is not None:
                h, w = grid_of(metrics)
                text = f"{model}: uniform attention on its {h} × {w} grid = {u:.2f} px"
                fig.add_trace(_uniform_trace(curve.x, u, colour, text), row=1, col=1)
    refs_shown: set[str] = set()
    for i, spec in enumerate(specs):
        row, col = divmod(i, 2)
        for ref in reference_curves(reference, spec):
            fig.add_trace(_reference_trace(ref, ref.label not in refs_shown), row=row + 1, col=col + 1)
            refs_shown.add(ref.label)
    if scale == "relative" and per_model:
        xs = [x for m in per_model.values() if (c := read_curve(m, DISTANCE_RELATIVE)) for x in c.x] or [1]
        fig.add_trace(_uniform_trace(xs, 1.0, "#868e96", "uniform attention (every grid) = 1"), row=1, col=1)
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
        meta=dict(
            layer=layer, models=list(per_model), scale=scale, reference=sorted(refs_shown), filename=filename
        ),
    )
    return fig
