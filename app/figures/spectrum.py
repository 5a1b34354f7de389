"""A4 step 5: the centred 2D log-amplitude spectrum per model at one depth, on one shared colour scale.

Axes are in cycles per image (the frequency index after ``fftshift``: column ``c`` of a width-``W`` map is
``c - W // 2`` cycles across the image), so models with different grids read alike.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures.style import SPECTRUM_COLORSCALE, base_layout


def frequencies(n: int) -> list[int]:
    """Centred frequency of each row/column after fftshift, in cycles per image (``2 pi k / n`` rad/patch)."""
    return [i - n // 2 for i in range(n)]


def spectrum_figure(
    spectra: dict[str, list[list[float]]], *, titles: dict[str, str], subtitle: str
) -> go.Figure:
    models = list(spectra)
    n = max(1, len(models))
    fig = make_subplots(
        rows=1, cols=n, subplot_titles=[titles.get(m, m) for m in models], horizontal_spacing=0.04
    )
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
        **base_layout(margin=dict(l=48, r=16, t=72, b=48)),
        title=dict(text=f"2D log-amplitude spectrum<br><sup>{subtitle}</sup>", x=0.01, font=dict(size=14)),
        coloraxis=dict(
            colorscale=SPECTRUM_COLORSCALE,
            cmin=zmin,
            cmax=zmax,
            colorbar=dict(title=dict(text="log |F|", side="right"), thickness=10),
        ),
        height=380,
        meta=dict(models=models, zmin=zmin, zmax=zmax),
    )
    return fig
