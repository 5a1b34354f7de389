"""The token-norm map of one model (``GET /images/{id}/token_norms``): each patch token's L2 norm at one depth
in the patch grid (input pixels, as the attention maps), the high-norm outliers outlined."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from app.figures.attention import patch_heatmap
from app.figures.style import base_layout

OUTLIER_LINE = dict(color="#22d3ee", width=2, dash="dot")


def outlier_shapes(outliers: list[int], grid: tuple[int, int], patch: int) -> list[dict[str, Any]]:
    """A dotted outline around each outlier patch (row-major indices of ``grid``)."""
    shapes = []
    for index in outliers:
        r, c = divmod(int(index), grid[1])
        shapes.append(
            dict(
                type="rect",
                x0=c * patch,
                x1=(c + 1) * patch,
                y0=r * patch,
                y1=(r + 1) * patch,
                line=OUTLIER_LINE,
                fillcolor="rgba(0,0,0,0)",
                layer="above",
            )
        )
    return shapes


def norms_figure(*, title: str, body: dict[str, Any], patch: int, filename: str) -> go.Figure:
    """``body``: the API's token-norm answer (``map``, ``grid``, ``layer``, ``median``, ``outliers``, ...)."""
    h, w = (int(v) for v in body["grid"])
    n_out, factor = len(body["outliers"]), body["outlier_factor"]
    fig = go.Figure(
        patch_heatmap(
            body["map"],
            patch,
            showscale=True,
            colorbar=dict(thickness=8, len=0.8, tickfont=dict(size=10), outlinewidth=0, title="norm"),
            hovertemplate="x %{x:.0f} px, y %{y:.0f} px<br>L2 norm %{z:.4g}<extra></extra>",
            name=str(body["model"]),
        )
    )
    fig.update_layout(
        **base_layout(margin=dict(l=8, r=8, t=52, b=8)),
        title=dict(
            text=f"{title} · block {body['layer']}<br><sup>median {body['median']:.3g} · "
            f"{n_out}/{h * w} patches > {factor:g}× median</sup>",
            x=0.02,
            font=dict(size=13),
        ),
        shapes=outlier_shapes(body["outliers"], (h, w), patch),
        xaxis=dict(range=[0, w * patch], visible=False, constrain="domain", fixedrange=True),
        yaxis=dict(range=[h * patch, 0], visible=False, scaleanchor="x", constrain="domain", fixedrange=True),
        meta=dict(model=body["model"], layer=body["layer"], filename=filename),
        height=320,
        dragmode=False,
    )
    return fig
