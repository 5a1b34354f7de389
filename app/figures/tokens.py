"""A5: 2D projections (PCA or t-SNE) of the patch tokens of an image set at one layer, coloured by image."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from app.figures.style import base_layout

IMAGE_COLOURS = qualitative.Dark24


def read_points(body: dict[str, Any]) -> tuple[list[float], list[float], list[int]]:
    """Accept ``points: [[x, y], ...]`` or ``x``/``y`` lists, with ``image``/``image_index`` per point."""
    pts = body.get("points", body.get("coords", body.get("coordinates")))
    xs: list[float]
    ys: list[float]
    if isinstance(pts, list) and pts and isinstance(pts[0], dict):
        xs = [float(p["x"]) for p in pts]
        ys = [float(p["y"]) for p in pts]
        idx = [int(p.get("image", p.get("image_index", 0))) for p in pts]
        return xs, ys, idx
    if isinstance(pts, list):
        xs = [float(p[0]) for p in pts]
        ys = [float(p[1]) for p in pts]
    else:
        xs = [float(v) for v in body.get("x", [])]
        ys = [float(v) for v in body.get("y", [])]
    idx_raw = body.get("image_index", body.get("image", body.get("images_index", body.get("labels"))))
    idx = (
        [int(v) for v in idx_raw] if isinstance(idx_raw, list) and len(idx_raw) == len(xs) else [0] * len(xs)
    )
    return xs, ys, idx


def tokens_figure(
    per_model: dict[str, dict[str, Any]], *, image_names: list[str], titles: dict[str, str], subtitle: str
) -> go.Figure:
    models = list(per_model)
    n = max(1, len(models))
    fig = make_subplots(
        rows=1, cols=n, subplot_titles=[titles.get(m, m) for m in models], horizontal_spacing=0.04
    )
    for i, m in enumerate(models):
        xs, ys, idx = read_points(per_model[m])
        for k in sorted(set(idx)):
            sel = [j for j, v in enumerate(idx) if v == k]
            name = image_names[k] if k < len(image_names) else f"image {k}"
            fig.add_trace(
                go.Scatter(
                    x=[xs[j] for j in sel],
                    y=[ys[j] for j in sel],
                    mode="markers",
                    marker=dict(size=4, color=IMAGE_COLOURS[k % len(IMAGE_COLOURS)], opacity=0.75),
                    name=name,
                    legendgroup=f"img{k}",
                    showlegend=i == 0,
                    hovertemplate=f"{name}<extra>{m}</extra>",
                ),
                row=1,
                col=i + 1,
            )
    fig.update_xaxes(showticklabels=False, zeroline=False, showgrid=False)
    fig.update_yaxes(showticklabels=False, zeroline=False, showgrid=False)
    fig.update_annotations(font_size=12)
    fig.update_layout(
        **base_layout(margin=dict(l=16, r=16, t=72, b=16)),
        title=dict(text=f"Patch tokens in 2D<br><sup>{subtitle}</sup>", x=0.01, font=dict(size=14)),
        legend=dict(orientation="h", y=-0.05, yanchor="top"),
        height=420,
        meta=dict(models=models),
    )
    return fig
