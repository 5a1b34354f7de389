"""A5: 2D projections (PCA or t-SNE) of the patch tokens of an image set at one layer, coloured by image, and
the singular values of those tokens as a log-y curve per model."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from app.figures.style import DASHES, base_layout, family_key

SV_AXIS = "σ<sub>i</sub> / σ<sub>1</sub> (log)"

IMAGE_COLOURS = qualitative.Dark24


def token_points(body: dict[str, Any]) -> list[tuple[int, int, float, float]]:
    """``(image_index, token_index, x, y)`` of every point of the API's embeddings answer (``coords``,
    ``image_index``, ``token_index``: the patch's row-major index on the model's grid)."""
    return [
        (int(i), int(t), float(p[0]), float(p[1]))
        for i, t, p in zip(body["image_index"], body["token_index"], body["coords"], strict=True)
    ]


def image_id(body: dict[str, Any], index: int) -> str:
    """The id of the set's ``index``-th image in the API's embeddings answer (``images``)."""
    images = body.get("images") or []
    return str(images[index]) if index < len(images) else ""


def tokens_figure(
    per_model: dict[str, dict[str, Any]],
    *,
    image_names: list[str],
    titles: dict[str, str],
    subtitle: str,
    filename: str = "vitscope_tokens",
) -> go.Figure:
    models = list(per_model)
    n = max(1, len(models))
    fig = make_subplots(
        rows=1, cols=n, subplot_titles=[titles.get(m, m) for m in models], horizontal_spacing=0.04
    )
    for i, m in enumerate(models):
        points = token_points(per_model[m])
        w = int((per_model[m].get("grid") or [1, 1])[1]) or 1
        for k in sorted({p[0] for p in points}):
            sel = [p for p in points if p[0] == k]
            name = image_names[k] if k < len(image_names) else f"image {k}"
            fig.add_trace(
                go.Scatter(
                    x=[p[2] for p in sel],
                    y=[p[3] for p in sel],
                    # patch index, row, col, image id, model: the page's script outlines that patch on the
                    # model's attention map when it shows that image
                    customdata=[[p[1], p[1] // w, p[1] % w, image_id(per_model[m], k), m] for p in sel],
                    mode="markers",
                    marker=dict(size=4, color=IMAGE_COLOURS[k % len(IMAGE_COLOURS)], opacity=0.75),
                    name=name,
                    legendgroup=f"img{k}",
                    showlegend=i == 0,
                    hovertemplate=f"{name}<br>patch #%{{customdata[0]}} (row %{{customdata[1]}}, "
                    f"col %{{customdata[2]}})<extra>{m}</extra>",
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
        meta=dict(models=models, filename=filename),
    )
    return fig


def singular_value_curve(body: dict[str, Any]) -> tuple[list[int], list[float]]:
    """``(i, sigma_i / sigma_1)`` of the API's embeddings answer: ``singular_values_mean`` (the mean over the
    set's images of each image's singular values divided by its largest), ``i`` from 1 (the largest)."""
    values = [float(v) for v in body["singular_values_mean"]]
    return list(range(1, len(values) + 1)), values


def singular_values_figure(
    per_model: dict[str, dict[str, Any]],
    *,
    colours: dict[str, str],
    families: dict[str, str],
    titles: dict[str, str],
    subtitle: str,
    filename: str = "vitscope_singular_values",
) -> go.Figure:
    """A log-y line per model of its embeddings answer's normalized singular values; the hover names each
    image's raw largest singular value (``singular_values_largest``)."""
    fig = go.Figure()
    models = list(per_model)
    for m in models:
        body = per_model[m]
        x, y = singular_value_curve(body)
        if not x:
            continue
        name = titles.get(m, m)
        largest = ", ".join(f"{float(v):.4g}" for v in body.get("singular_values_largest") or [])
        colour = colours.get(m, "#495057")
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                line=dict(color=colour, width=2, dash=DASHES[family_key(families.get(m))]),
                marker=dict(size=4, color=colour),
                name=name,
                meta=dict(model=m, layer=body.get("layer"), method=body.get("method")),
                hovertemplate=f"{name}<br>σ<sub>%{{x}}</sub> / σ<sub>1</sub> = %{{y:.4g}} (mean over images)"
                f"<br>σ<sub>1</sub> per image: {largest}<extra></extra>",
            )
        )
    fig.update_xaxes(
        title_text="i: index of the singular value σ<sub>i</sub> (1 = the largest)", zeroline=False
    )
    fig.update_yaxes(title_text=SV_AXIS, type="log", exponentformat="power")
    fig.update_layout(
        **base_layout(margin=dict(l=64, r=16, t=72, b=48)),
        title=dict(
            text=f"Singular values of the patch tokens<br><sup>{subtitle}</sup>", x=0.01, font=dict(size=14)
        ),
        legend=dict(orientation="h", y=-0.22, yanchor="top"),
        height=340,
        meta=dict(models=models, filename=filename),
    )
    return fig
