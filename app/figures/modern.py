"""The "Beyond the paper" figure: token norms, high-norm tokens, effective rank, head diversity, the CLS
token's selectivity and self-attention, positional share, movement coherence (A6) and Δ log amplitude after
attention beside the block output, models overlaid on a 3 x 3 grid.

Styled like the curves figure (one colour per model, a dash per family, the std over images as a band, the
current layer marked in every plot). A model whose metrics hold null for a plot (no CLS token, one head, one
image) gets a note there saying why, never a line; ``layout.meta.notes`` holds the same, per plot.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures.curves import layer_marker_shapes
from app.figures.style import DASHES, base_layout, family_key, rgba
from app.metrics import (
    DELTA_ATTN,
    LOG2,
    Curve,
    modern_missing,
    modern_panels,
    outlier_factor,
    read_modern,
)

HEIGHT = 860
COLS = 3
NOTE_COLOUR = "#6c757d"


def _axis(i: int) -> str:
    return "" if i == 0 else str(i + 1)


def _band(curve: Curve, colour: str, model: str) -> go.Scatter | None:
    if not curve.std or not any(s > 0 for s in curve.std):
        return None
    upper = [m + s for m, s in zip(curve.mean, curve.std, strict=True)]
    lower = [m - s for m, s in zip(curve.mean, curve.std, strict=True)]
    return go.Scatter(
        x=curve.x + curve.x[::-1],
        y=upper + lower[::-1],
        fill="toself",
        fillcolor=rgba(colour, 0.12),
        line=dict(width=0),
        hoverinfo="skip",
        showlegend=False,
        legendgroup=model,
        name=f"{model} ± std",
    )


def _note(i: int, lines: list[str], alone: bool) -> dict[str, Any]:
    """Text inside plot ``i``: at its centre when nothing is drawn there, else at its top left."""
    axis = _axis(i)
    return dict(
        text="<br>".join(lines),
        xref=f"x{axis} domain",
        yref=f"y{axis} domain",
        x=0.5 if alone else 0.02,
        y=0.5 if alone else 0.98,
        xanchor="center" if alone else "left",
        yanchor="middle" if alone else "top",
        showarrow=False,
        align="left",
        font=dict(size=11, color=NOTE_COLOUR),
    )


def _ceiling(xs: list[int]) -> go.Scatter:
    return go.Scatter(
        x=[min(xs), max(xs)],
        y=[LOG2, LOG2],
        mode="lines",
        line=dict(color="#868e96", width=1, dash="dot"),
        name="log 2",
        hovertemplate="log 2 = 0.693: heads attend to disjoint patches<extra></extra>",
        showlegend=False,
    )


def modern_figure(
    per_model: dict[str, dict[str, Any]],
    *,
    colours: dict[str, str],
    families: dict[str, str],
    layer: int | None,
    subtitle: str,
    norm_stat: str = "mean",
    filename: str = "vitscope_beyond_the_paper",
) -> go.Figure:
    """``per_model``: each model's metrics object (``GET /images/{id}/metrics`` or ``/sets/{id}/metrics``)."""
    panels = modern_panels(norm_stat)
    factor = outlier_factor(per_model)
    titles = []
    for panel in panels:
        unit = panel.unit.replace("the factor", f"{factor:g}") if factor is not None else panel.unit
        titles.append(panel.title + (f"<br><sup>{unit}</sup>" if unit else ""))
    rows = -(-len(panels) // COLS)
    fig = make_subplots(
        rows=rows, cols=COLS, subplot_titles=titles, horizontal_spacing=0.07, vertical_spacing=0.13
    )
    fig.update_annotations(font_size=12)  # the titles (the notes added below keep their own size)
    notes: dict[str, dict[str, str]] = {}
    for i, panel in enumerate(panels):
        row, col = divmod(i, COLS)
        drawn: list[int] = []
        missing: dict[str, str] = {}
        for model, metrics in per_model.items():
            colour = colours.get(model, "#495057")
            dash = DASHES[family_key(families.get(model))]
            for spec in panel.curves:
                curve = read_modern(metrics, spec)
                name = f"{model} · {spec.label}" if spec.label else model
                if curve is None:
                    missing[name] = modern_missing(metrics, spec)
                    continue
                if (band := _band(curve, colour, model)) is not None:
                    fig.add_trace(band, row=row + 1, col=col + 1)
                attn = spec is DELTA_ATTN
                fig.add_trace(
                    go.Scatter(
                        x=curve.x,
                        y=curve.mean,
                        mode="lines+markers",
                        line=dict(color=colour, width=1.3 if attn else 2, dash=dash),
                        marker=dict(
                            size=6 if attn else 5, color=colour, symbol="diamond-open" if attn else "circle"
                        ),
                        name=model,
                        legendgroup=model,
                        showlegend=i == 0,
                        meta=dict(panel=panel.key, curve=spec.label or spec.key),
                        hovertemplate=f"{name}<br>{'depth' if panel.depth_axis else 'block'} %{{x}}<br>"
                        f"{panel.title}: %{{y:.4g}}<extra></extra>",
                    ),
                    row=row + 1,
                    col=col + 1,
                )
                drawn += curve.x
        if panel.key == "head_diversity" and drawn:
            fig.add_trace(_ceiling(drawn), row=row + 1, col=col + 1)
        if missing:
            notes[panel.key] = missing
            lines = [f"{name}: {why}" for name, why in missing.items()]
            fig.add_annotation(_note(i, lines, alone=not drawn))
        fig.update_xaxes(
            title_text="depth (0 = embedding)" if panel.depth_axis else "block", row=row + 1, col=col + 1
        )
        if panel.key == "outlier_fraction":  # a share: from 0, in percent (all 0 is common)
            fig.update_yaxes(rangemode="tozero", tickformat=".1%", row=row + 1, col=col + 1)
    fig.update_xaxes(dtick=1, showgrid=True, gridcolor="#eef0f4", zeroline=False, title_font_size=11)
    fig.update_yaxes(showgrid=True, gridcolor="#eef0f4", zeroline=False)
    fig.update_layout(
        **base_layout(margin=dict(l=48, r=16, t=96, b=48)),
        title=dict(text=f"Beyond the paper<br><sup>{subtitle}</sup>", x=0.01, font=dict(size=14)),
        shapes=layer_marker_shapes(layer, len(panels)),
        legend=dict(orientation="h", yanchor="bottom", y=1.05, x=1, xanchor="right"),
        height=HEIGHT,
        hovermode="closest",
        meta=dict(
            layer=layer,
            models=list(per_model),
            norm_stat=norm_stat,
            panels=[p.key for p in panels],
            notes=notes,
            filename=filename,
        ),
    )
    return fig
