"""A4 step 5: the centred 2D log-amplitude spectrum per model at one depth, on one shared colour scale.

Axes are in cycles per image (the frequency index after ``fftshift``: column ``c`` of a width-``W`` map is
``c - W // 2`` cycles across the image), so models with different grids read alike.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures.style import SPECTRUM_COLORSCALE, base_layout


def frequencies(n: int) -> list[int]:
    """Centred frequency of each row/column after fftshift, in cycles per image (``2 pi k / n`` rad/patch)."""
    return [i - n // 2 for i in range(n)]


def delta_bin_shape(m: int, axis: str) -> dict[str, Any]:
    """A square around the half-diagonal bin (m, m) cycles per image (rows go down: +m is below centre)."""
    return dict(
        type="rect",
        xref=f"x{axis}",
        yref=f"y{axis}",
        x0=m - 0.5,
        x1=m + 0.5,
        y0=m - 0.5,
        y1=m + 0.5,
        line=dict(color="#e03131", width=2),
        fillcolor="rgba(0,0,0,0)",
    )


def spectrum_figure(
    answers: dict[str, dict[str, Any]],
    *,
    titles: dict[str, str],
    subtitle: str,
    filename: str = "vitscope_spectrum",
) -> go.Figure:
    """``answers``: the API's spectrum answer per model (``map``, ``delta`` per half-diagonal bin, and
    ``high_frequency_delta``, the last bin's, which the curves plot)."""
    spectra = {m: a["map"] for m, a in answers.items()}
    models = list(spectra)
    bins = {m: len(a["delta"]) - 1 for m, a in answers.items() if a.get("delta")}  # the bin the curve reads
    shapes = [
        delta_bin_shape(bins[m], "" if i == 0 else str(i + 1)) for i, m in enumerate(models) if m in bins
    ]
    subplot_titles = [
        titles.get(m, m)
        + (
            f"<br><sup>Δ at bin ({bins[m]}, {bins[m]}): {answers[m]['high_frequency_delta']:.3f}</sup>"
            if m in bins and isinstance(answers[m].get("high_frequency_delta"), int | float)
            else ""
        )
        for m in models
    ]
    n = max(1, len(models))
    fig = make_subplots(rows=1, cols=n, subplot_titles=subplot_titles, horizontal_spacing=0.04)
    values = [v for m in models for row in spectra[m] for v in row if v is not None and math.isfinite(v)]
    zmin, zmax = (min(values), max(values)) if values else (0.0, 1.0)
    for i, m in enumerate(models):
        z = spectra[m]
        h, w = len(z), len(z[0]) if z else 0
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=frequencies(w),
                y=frequencies(h),
                coloraxis="coloraxis",
                zsmooth=False,
                hovertemplate=f"{m}<br>%{{x}} cycles/image across, %{{y}} down (of {w} × {h})"
                "<br>log amplitude %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
    fig.update_xaxes(title_text="cycles per image (x)", constrain="domain", fixedrange=True)
    fig.update_yaxes(constrain="domain", fixedrange=True, autorange="reversed")
    for i in range(n):
        axis = "" if i == 0 else str(i + 1)
        fig.layout[f"yaxis{axis}"].scaleanchor = f"x{axis}"
    fig.update_yaxes(title_text="cycles per image (y)", row=1, col=1)
    fig.update_annotations(font_size=12)
    fig.update_layout(
        **base_layout(margin=dict(l=48, r=16, t=100, b=48)),  # room for the subtitle and the panels' Δ lines
        title=dict(text=f"2D log-amplitude spectrum<br><sup>{subtitle}</sup>", x=0.01, font=dict(size=14)),
        coloraxis=dict(
            colorscale=SPECTRUM_COLORSCALE,
            cmin=zmin,
            cmax=zmax,
            colorbar=dict(title=dict(text="log |F|", side="right"), thickness=10),
        ),
        height=380,
        shapes=shapes,
        meta=dict(models=models, zmin=zmin, zmax=zmax, filename=filename),
    )
    return fig
