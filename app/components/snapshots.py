"""Training snapshots: how each selected model's curves moved during its training.

A model trained with ``vitscope train --snapshot-epochs 25,50,...`` carries the analyses of each snapshot in
its card; ``GET /models`` hands them on (``snapshots``). One line per (model, snapshot), darker = later, so a
user can watch CL and MIM drift apart over training. Models without snapshots are named, not drawn.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, dcc, html
from plotly.subplots import make_subplots

from app.api_client import ApiError
from app.components.common import MDL_STORE
from app.context import AppContext
from app.figures.style import base_layout, graph_config, model_colours, rgba
from app.state import clean_models

PANELS = (
    ("attention_distance_relative", "Attention distance (x uniform)", "block", 1),
    ("nmi", "NMI (query, key)", "block", 1),
    ("delta_log_amplitude", "Δ log amplitude", "depth (0 = embedding)", 0),
)


def layout() -> html.Details:
    return html.Details(
        [
            html.Summary("Training snapshots: how the selected models changed while they trained"),
            html.P(id="snap-msg", className="hint"),
            dcc.Graph(
                id="snap-graph",
                figure={"data": [], "layout": {"height": 40}},
                config=graph_config("vitscope_training_snapshots"),
            ),  # fmt: skip
        ],
        id="snap-panel",
        className="learn",
    )


def snapshot_figure(snapshots: dict[str, list[dict[str, Any]]], families: dict[str, str]) -> go.Figure:
    """One subplot per curve; per model one line per snapshot, more opaque the later the epoch."""
    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[title for _, title, _, _ in PANELS])
    colours = model_colours(list(snapshots), families)
    for model, snaps in snapshots.items():
        for k, snap in enumerate(snaps):
            alpha = 0.3 + 0.7 * (k + 1) / len(snaps)
            for col, (key, _, _, first) in enumerate(PANELS, start=1):
                values = snap[key]
                fig.add_trace(
                    go.Scatter(
                        x=list(range(first, first + len(values))),
                        y=values,
                        mode="lines",
                        name=f"{model} · epoch {snap['epoch']:g}",
                        legendgroup=f"{model}-{k}",
                        showlegend=col == 1,
                        line={"color": rgba(colours[model], alpha)},
                    ),
                    row=1,
                    col=col,
                )
    for col, (_, _, axis, _) in enumerate(PANELS, start=1):
        fig.update_xaxes(title_text=axis, row=1, col=col)
    fig.update_layout(**base_layout(height=320, legend={"orientation": "h", "y": -0.3}))
    return fig


def draw(ctx_: AppContext, selected: Any) -> tuple[Any, str]:
    models = clean_models(selected)
    try:
        catalog = {str(m["id"]): m for m in ctx_.catalog()}
    except ApiError as exc:
        return {"data": [], "layout": {"height": 40}}, f"Cannot load the model list: {exc.message}"
    having = {m: catalog[m]["snapshots"] for m in models if catalog.get(m, {}).get("snapshots")}
    without = [m for m in models if m not in having]
    note = (
        f"No training snapshots for {', '.join(without)}: only models trained with "
        "`vitscope train --snapshot-epochs` carry them."
        if without
        else ""
    )
    if not having:
        return {"data": [], "layout": {"height": 40}}, note
    families = {m: str(catalog[m].get("family")) for m in having}
    return snapshot_figure(having, families), note


def register(app: Dash, ctx_: AppContext) -> None:
    app.callback(Output("snap-graph", "figure"), Output("snap-msg", "children"), Input(MDL_STORE, "data"))(
        lambda selected: draw(ctx_, selected)
    )
