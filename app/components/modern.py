"""Beyond the paper: the per-layer analyses newer than Park et al. (docs/MODERN.md), models overlaid.

It reads the same metrics objects as the curves panel (``GET /images/{id}/metrics``, or ``POST /sets`` then
``GET /sets/{id}/metrics``, through ``curves.fetch``), which the API client keeps, so this panel adds no API
call. Moving the layer slider only moves the marker (a ``Patch``); a click on a curve's point shows that block
everywhere, as on the curves panel.
"""

from __future__ import annotations

import math
from typing import Any

from dash import Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app.components.common import (
    IMG_STORE,
    LIVE_NOTES,
    MDL_CATALOG,
    MDL_STORE,
    META_STORE,
    aria,
    error_list,
    export_bar,
    learn,
    panel_graph,
    radio_group,
    register_image_export,
)
from app.components.curves import clicked_block, fetch
from app.context import AppContext
from app.exports import modern_files, modern_name
from app.figures.curves import layer_marker_shapes
from app.figures.modern import HEIGHT, modern_figure
from app.figures.style import model_colours
from app.metrics import LOG2, TOKEN_NORM_STATS, ModernSpec, modern_panels, outlier_factor, read_modern
from app.state import clean_models


def layout() -> html.Section:
    return html.Section(
        [
            html.Div(
                [
                    html.H2("Beyond the paper", id="mod-heading"),
                    export_bar("mod", label="the analyses beyond the paper"),
                ],
                className="panel-head",
            ),
            html.P(
                "Analyses that came after the paper, per layer: how large the tokens are and how many "
                "stand out, how many directions they span, how alike the heads attend, what the CLS token "
                "looks at, how much of a token is its position, how attention moves the tokens (A6), and the "
                "high-frequency change after attention beside the block output. Click a point to show that "
                "block everywhere.",
                className="hint",
            ),
            html.Div(
                [
                    radio_group(
                        "mod-scope",
                        "Curves for",
                        [("image", "the shown image"), ("set", "the whole set (mean ± std)")],
                        "set",
                    ),
                    radio_group("mod-norm", "Token norm", [(k, v) for k, v in TOKEN_NORM_STATS], "mean"),
                ],
                className="panel-tools-row",
            ),
            html.Div(id="mod-msg"),
            panel_graph("mod-graph", HEIGHT, "vitscope-beyond-the-paper"),
            learn("modern", "Learn: what these measure"),
        ],
        className="panel",
        id="mod-panel",
        **aria(labelledby="mod-heading"),
    )


def _finite(curve_x: list[int], values: list[float]) -> list[tuple[int, float]]:
    return [(x, v) for x, v in zip(curve_x, values, strict=True) if math.isfinite(v)]


def what_they_show(per_model: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence per model of numbers read off the curves on screen (nothing else is said)."""
    factor = outlier_factor(per_model) or 4.0
    out = []
    for model, metrics in per_model.items():
        parts = []
        if rank := read_modern(metrics, ModernSpec("effective_rank")):
            pts = _finite(rank.x, rank.mean)
            if pts:
                parts.append(
                    f"effective rank {pts[0][1]:.1f} at depth {pts[0][0]} and {pts[-1][1]:.1f} at depth "
                    f"{pts[-1][0]}"
                )
        if share := read_modern(metrics, ModernSpec("token_norm", "outlier_fraction")):
            pts = _finite(share.x, share.mean)
            if pts:
                depth, top = max(pts, key=lambda p: p[1])
                over = " (mean over images)" if int(metrics.get("num_images") or 1) > 1 else ""
                parts.append(
                    f"the largest share of patch tokens above {factor:g} × the median norm is "
                    f"{top:.1%}{over}, at depth {depth}"
                    if top > 0
                    else f"no patch token above {factor:g} × the median norm at any depth"
                )
        if div := read_modern(metrics, ModernSpec("head_diversity")):
            vals = [v for _, v in _finite(div.x, div.mean)]
            if vals:
                parts.append(
                    f"head diversity {min(vals):.3f} to {max(vals):.3f} nats (log 2 = {LOG2:.3f}: disjoint)"
                )
        if own := read_modern(metrics, ModernSpec("cls_self")):
            pts = _finite(own.x, own.mean)
            if pts:
                parts.append(f"CLS attends to itself with weight {pts[-1][1]:.3f} in block {pts[-1][0]}")
        elif metrics.get("cls_self", 0) is None:
            parts.append("no CLS token")
        if parts:
            out.append(f"{model}: " + "; ".join(parts) + ".")
    return out


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client

    @app.callback(
        Output("ctl-layer", "value", allow_duplicate=True),
        Input("mod-graph", "clickData"),
        State("ctl-layer", "max"),
        State("ctl-layer", "value"),
        prevent_initial_call=True,
    )
    def pick_layer(click: dict[str, Any] | None, top: int | None, current: int | None) -> Any:
        """A click on any curve's point shows that block everywhere (the slider, every panel)."""
        block = clicked_block(click, top)
        if block is None or block == current:
            raise PreventUpdate
        return block

    @app.callback(
        Output("mod-graph", "figure"),
        Output("mod-msg", "children"),
        Output(LIVE_NOTES["modern"], "children"),
        Input(META_STORE, "data"),
        Input("mod-scope", "value"),
        Input("ctl-layer", "value"),
        Input("mod-norm", "value"),
        State(IMG_STORE, "data"),
        State(MDL_STORE, "data"),
        State(MDL_CATALOG, "data"),
    )
    def draw(
        meta: dict[str, Any] | None,
        scope: str,
        layer: int,
        norm_stat: str,
        images: dict[str, Any] | None,
        models: list[str] | None,
        catalog: list[dict[str, Any]] | None,
    ) -> Any:
        if ctx.triggered_id == "ctl-layer":
            p = Patch()
            p["layout"]["shapes"] = layer_marker_shapes(layer, len(modern_panels()))
            p["layout"]["meta"]["layer"] = layer
            return p, no_update, no_update
        models = clean_models(models)
        if not meta or not meta.get("image") or not models:
            hint = html.Div("These curves appear once there is an image and a model.", className="hint")
            return {"data": [], "layout": {"height": HEIGHT}}, hint, None
        families = {m["id"]: m.get("family", "other") for m in catalog or []}
        per_model, errors, subtitle = fetch(client, meta, scope, images, models)
        fig = modern_figure(
            per_model,
            colours=model_colours(models, families),
            families=families,
            layer=layer,
            subtitle=subtitle,
            norm_stat=norm_stat,
            filename=modern_name(scope, len((images or {}).get("ids", []))),
        )
        live = [html.P(s) for s in what_they_show(per_model)] or None
        return fig, error_list(errors), live

    register_image_export(app, "mod")

    @app.callback(
        Output("mod-download", "data"),
        Input("mod-exp-json", "n_clicks"),
        Input("mod-exp-csv", "n_clicks"),
        State(META_STORE, "data"),
        State("mod-scope", "value"),
        State(IMG_STORE, "data"),
        State(MDL_STORE, "data"),
        prevent_initial_call=True,
    )
    def export_numbers(
        _j: Any,
        _c: Any,
        meta: dict[str, Any] | None,
        scope: str,
        images: dict[str, Any] | None,
        models: list[str] | None,
    ) -> Any:
        if not meta or not meta.get("image") or not models:
            raise PreventUpdate
        per_model, errors, subtitle = fetch(client, meta, scope, images, clean_models(models))
        files = modern_files(
            per_model, scope=scope, subtitle=subtitle, images=(images or {}).get("ids", []), errors=errors
        )
        f = files[0] if ctx.triggered_id == "mod-exp-json" else files[1]
        return dcc.send_string(str(f.data), f.path)
