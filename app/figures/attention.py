"""A1 figures: the attention map of one query over the model-input image, and all heads of a layer.

Coordinates are pixels of the model input: the heatmap's cell (row, col) is centred at
``((col + 0.5) * P, (row + 0.5) * P)`` and covers ``[row*P, (row+1)*P) x [col*P, (col+1)*P)``
(ANALYSES.md A1, drawing note), the y axis points down like the image's rows. ``layout.meta`` carries what the
map shows (image, model, grid, patch, layer, head, query, rollout): the page's script redraws a new query from
it without a Dash round trip.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.exports import attention_name
from app.figures.style import MAP_COLORSCALE, base_layout

QUERY_LINE = dict(color="#22d3ee", width=2.5)


def patch_heatmap(amap: Any, patch: int, **kwargs: Any) -> go.Heatmap:
    """A grid map drawn in input pixels: cell (row, col) covers [row*P, (row+1)*P) x [col*P, (col+1)*P)."""
    return go.Heatmap(
        z=amap,
        x0=patch / 2,
        dx=patch,
        y0=patch / 2,
        dy=patch,
        colorscale=MAP_COLORSCALE,
        zsmooth=False,
        **kwargs,
    )


def query_shape(
    rc: tuple[int, int] | None, patch: int, xref: str = "x", yref: str = "y"
) -> list[dict[str, Any]]:
    if rc is None:
        return []
    r, c = rc
    return [
        dict(
            type="rect",
            xref=xref,
            yref=yref,
            x0=c * patch,
            x1=(c + 1) * patch,
            y0=r * patch,
            y1=(r + 1) * patch,
            line=QUERY_LINE,
            fillcolor="rgba(0,0,0,0)",
            layer="above",
        )
    ]


def describe(
    layer: int, head: int | str, rc: tuple[int, int] | None, grid: tuple[int, int], rollout: bool = False
) -> str:
    head_text = "mean of heads" if str(head) == "mean" else f"head {head}"
    query_text = "CLS query" if rc is None else f"query patch ({rc[0]}, {rc[1]}) = #{rc[0] * grid[1] + rc[1]}"
    what = f"rollout to block {layer}" if rollout else f"block {layer} · {head_text}"
    return f"{what} · {query_text}"


def _meta(
    image: str,
    model: str,
    grid: tuple[int, int],
    patch: int,
    layer: int,
    head: int | str,
    rc: tuple[int, int] | None,
    rollout: bool,
) -> dict[str, Any]:
    query = _query_meta(rc, grid[1])
    return dict(
        image=image,
        model=model,
        grid=list(grid),
        patch=patch,
        layer=layer,
        head=str(head),
        query=query,
        rollout=rollout,
        filename=attention_name(model, layer, head, query, grid, rollout),
    )


def attention_figure(
    *,
    image: str,
    model: str,
    title: str,
    image_uri: str | None,
    amap: list[list[float]],
    grid: tuple[int, int],
    patch: int,
    layer: int,
    head: int | str,
    rc: tuple[int, int] | None,
    opacity: float,
    rollout: bool = False,
) -> go.Figure:
    h, w = grid
    fig = go.Figure(
        patch_heatmap(
            amap,
            patch,
            opacity=opacity,
            showscale=True,
            colorbar=dict(thickness=8, len=0.8, tickfont=dict(size=10), outlinewidth=0),
            hovertemplate="x %{x:.0f} px, y %{y:.0f} px<br>attention %{z:.4g}<extra>click to query</extra>",
            name=model,
        )
    )
    images = []
    if image_uri:
        images.append(
            dict(
                source=image_uri,
                xref="x",
                yref="y",
                x=0,
                y=0,
                sizex=w * patch,
                sizey=h * patch,
                sizing="stretch",
                layer="below",
                xanchor="left",
                yanchor="top",
            )
        )
    fig.update_layout(
        **base_layout(margin=dict(l=8, r=8, t=52, b=8)),
        title=dict(
            text=f"{title}<br><sup>{describe(layer, head, rc, grid, rollout)}</sup>",
            x=0.02,
            font=dict(size=13),
        ),
        images=images,
        shapes=query_shape(rc, patch),
        xaxis=dict(range=[0, w * patch], visible=False, constrain="domain", fixedrange=True),
        yaxis=dict(range=[h * patch, 0], visible=False, scaleanchor="x", constrain="domain", fixedrange=True),
        meta=_meta(image, model, grid, patch, layer, head, rc, rollout),
        uirevision=model,
        height=360,
        dragmode=False,
    )
    return fig


def _query_meta(rc: tuple[int, int] | None, w: int) -> int | str:
    return "cls" if rc is None else rc[0] * w + rc[1]


def patch_update(
    patch_obj: Any,
    *,
    title: str,
    amap: list[list[float]],
    grid: tuple[int, int],
    patch: int,
    layer: int,
    head: int | str,
    rc: tuple[int, int] | None,
    opacity: float,
    image: str,
    model: str,
    rollout: bool = False,
) -> Any:
    """Fill a ``dash.Patch`` of an attention figure with a new map: only the numbers travel."""
    patch_obj["data"][0]["z"] = amap
    patch_obj["data"][0]["opacity"] = opacity
    patch_obj["layout"]["shapes"] = query_shape(rc, patch)
    patch_obj["layout"]["title"]["text"] = f"{title}<br><sup>{describe(layer, head, rc, grid, rollout)}</sup>"
    patch_obj["layout"]["meta"] = _meta(image, model, grid, patch, layer, head, rc, rollout)
    return patch_obj


def heads_figure(
    *,
    title: str,
    maps: list[list[list[float]]],
    grid: tuple[int, int],
    patch: int,
    rc: tuple[int, int] | None,
    filename: str | None = None,
) -> go.Figure:
    """Small multiples: every head of one layer for the same query, each on its own colour scale.
    ``filename``: what an export of it is called (``app.exports.attention_name`` with head ``all``)."""
    n = max(1, len(maps))
    cols = min(n, 4 if n <= 8 else 6)
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"head {i}" for i in range(n)],
        horizontal_spacing=0.02,
        vertical_spacing=0.06 if rows > 1 else 0.0,
    )
    h, w = grid
    shapes: list[dict[str, Any]] = []
    for i, amap in enumerate(maps):
        r, c = divmod(i, cols)
        fig.add_trace(
            patch_heatmap(
                amap,
                patch,
                showscale=False,
                hovertemplate=f"head {i}<br>attention %{{z:.4g}}<extra></extra>",
            ),
            row=r + 1,
            col=c + 1,
        )
        axis = "" if i == 0 else str(i + 1)
        shapes += query_shape(rc, patch, xref=f"x{axis}", yref=f"y{axis}")
    fig.update_xaxes(visible=False, range=[0, w * patch], constrain="domain", fixedrange=True)
    fig.update_yaxes(visible=False, range=[h * patch, 0], constrain="domain", fixedrange=True)
    for i in range(n):
        axis = "" if i == 0 else str(i + 1)
        fig.layout[f"yaxis{axis}"].scaleanchor = f"x{axis}"
    fig.update_annotations(font_size=10)
    fig.update_layout(
        **base_layout(margin=dict(l=4, r=4, t=44, b=4)),
        title=dict(text=title, x=0.02, font=dict(size=13)),
        shapes=shapes,
        height=max(220, 120 * rows + 60),
        dragmode=False,
        meta=dict(filename=filename) if filename else None,
    )
    return fig
