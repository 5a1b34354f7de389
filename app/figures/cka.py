"""Linear CKA between every depth of two models on a set (``GET /sets/{id}/cka``) as a depth x depth map."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from app.exports import PREFIX, slug
from app.figures.style import base_layout

SCALES = (("raw", "raw CKA (0..1)"), ("calibrated", "calibrated: CKA − the null's mean"))


def cka_name(model_a: str, model_b: str, scale: str) -> str:
    return f"{PREFIX}_cka_{slug(model_a)}_vs_{slug(model_b)}_{slug(scale)}"


def null_summary(body: dict[str, Any]) -> tuple[float, float, float]:
    """The permutation null's mean CKA: its mean over every depth pair, and its smallest and largest."""
    values = [float(v) for row in body["null_mean"] for v in row]
    return sum(values) / len(values), min(values), max(values)


def cka_figure(body: dict[str, Any], scale: str) -> go.Figure:
    """Rows: model A's depths, columns: model B's (0 = the embedding). ``raw`` on a fixed 0..1 colour scale;
    ``calibrated`` (``cka - null_mean``, can be negative) on a scale symmetric about 0 up to its largest
    magnitude. Each cell's hover gives raw, null mean and calibrated."""
    a, b = str(body["model_a"]), str(body["model_b"])
    z = body["calibrated"] if scale == "calibrated" else body["cka"]
    cells = [
        [[raw, null, cal] for raw, null, cal in zip(r, n, c, strict=True)]
        for r, n, c in zip(body["cka"], body["null_mean"], body["calibrated"], strict=True)
    ]
    if scale == "calibrated":
        top = max((abs(float(v)) for row in z for v in row), default=0.0) or 1.0
        colour: dict[str, Any] = dict(colorscale="RdBu_r", zmin=-top, zmax=top)
        bar = "CKA − null mean"
    else:
        colour = dict(colorscale="Viridis", zmin=0.0, zmax=1.0)
        bar = "CKA"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(body["depth_b"]),
            y=list(body["depth_a"]),
            customdata=cells,
            colorbar=dict(title=dict(text=bar)),
            hovertemplate="model A depth %{y}, model B depth %{x}<br>CKA %{customdata[0]:.3f}, "
            "null mean %{customdata[1]:.3f}, calibrated %{customdata[2]:.3f}<extra></extra>",
            name=scale,
            **colour,
        )
    )
    fig.update_xaxes(title_text=f"model B depth ({b})", dtick=1, constrain="domain")
    fig.update_yaxes(title_text=f"model A depth ({a})", dtick=1, scaleanchor="x", constrain="domain")
    title = "Linear CKA" if scale == "raw" else "Linear CKA, calibrated by its permutation null"
    fig.update_layout(
        **base_layout(margin=dict(l=60, r=16, t=56, b=48)),
        title=dict(
            text=f"{title}<br><sup>{a} (A) vs {b} (B), {len(body['images'])} images</sup>",
            x=0.01,
            font=dict(size=14),
        ),
        height=460,
        meta=dict(filename=cka_name(a, b, scale), models=[a, b], scale=scale),
    )
    return fig
