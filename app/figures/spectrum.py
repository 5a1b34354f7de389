"""A4: the centred 2D log-amplitude spectrum per model at one depth, on one shared colour scale (step 5), and
Δ log amplitude along the half-diagonal (steps 6-7) as a line per model.

The maps' axes are in cycles per image (the frequency index after ``fftshift``: column ``c`` of a width-``W``
map is ``c - W // 2`` cycles across the image), so models with different grids read alike; the line plot's
axis is in radians per patch as a fraction of pi (the API's ``frequencies`` / pi), for the same reason.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures.style import DASHES, SPECTRUM_COLORSCALE, base_layout, family_key

DELTA_AXIS = "frequency along the half-diagonal (× π radians per patch)"
LAST_BIN = "last bin: the value the depth curve plots"


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


def delta_points(answer: dict[str, Any]) -> list[tuple[float, float, float]]:
    """``(column frequency / pi, row frequency / pi, delta)`` of each half-diagonal bin of the API's spectrum
    answer (``frequencies`` in radians per patch, ``delta``); the two frequencies differ only on a grid that
    is not square, where x is the column's (the maps' x axis)."""
    return [
        (float(f[1]) / math.pi, float(f[0]) / math.pi, float(d))
        for f, d in zip(answer["frequencies"], answer["delta"], strict=True)
    ]


def delta_figure(
    answers: dict[str, dict[str, Any]],
    *,
    colours: dict[str, str],
    families: dict[str, str],
    titles: dict[str, str],
    subtitle: str,
    filename: str = "vitscope_spectrum_delta",
) -> go.Figure:
    """Δ log amplitude ``delta(m)`` along the half-diagonal, one line per model (``answers``: the API's
    spectrum answer per model, the ones the maps show), the last bin marked with the answer's
    ``high_frequency_delta``: the depth curve's value at this depth."""
    fig = go.Figure()
    models = list(answers)
    for i, m in enumerate(models):
        a = answers[m]
        points = delta_points(a)
        if not points:
            continue
        colour = colours.get(m, "#495057")
        name = titles.get(m, m)
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[2] for p in points],
                customdata=[[k, p[1]] for k, p in enumerate(points)],
                mode="lines+markers",
                line=dict(color=colour, width=2, dash=DASHES[family_key(families.get(m))]),
                marker=dict(size=5, color=colour),
                name=name,
                legendgroup=m,
                meta=dict(model=m, curve="delta", state=a.get("state"), depth=a.get("depth")),
                hovertemplate=f"{name}<br>bin %{{customdata[0]}}: %{{x:.3f}} π rad/patch across, "
                "%{customdata[1]:.3f} π down<br>Δ log amplitude %{y:.3f}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[points[-1][0]],
                y=[float(a["high_frequency_delta"])],
                mode="markers",
                marker=dict(size=13, color=colour, symbol="diamond-open", line=dict(width=2)),
                name=LAST_BIN,
                legendgroup="last-bin",
                legendrank=2000,  # after the models' lines (default rank 1000)
                showlegend=i == 0,
                meta=dict(model=m, curve="last-bin", state=a.get("state"), depth=a.get("depth")),
                hovertemplate=f"{name}<br>{LAST_BIN}<br>bin {len(points) - 1}: %{{x:.3f}} π rad/patch"
                "<br>Δ log amplitude %{y:.3f}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text=DELTA_AXIS, range=[-0.03, 1.03], zeroline=False)
    fig.update_yaxes(title_text="Δ log amplitude", zeroline=True)
    fig.update_layout(
        **base_layout(margin=dict(l=56, r=16, t=72, b=48)),
        title=dict(
            text=f"Δ log amplitude along the half-diagonal<br><sup>{subtitle}</sup>",
            x=0.01,
            font=dict(size=14),
        ),
        legend=dict(orientation="h", y=-0.22, yanchor="top"),
        height=340,
        meta=dict(models=models, filename=filename),
    )
    return fig
