"""Compare per-layer curves (A2 distance, A3 NMI, entropy, A4 delta log amplitude), the models overlaid.

For one image: ``GET /images/{id}/metrics``; for the whole set (two or more images): ``POST /sets`` then
``GET /sets/{id}/metrics`` (mean over images with a std band). Moving the layer slider only moves the marker
(a ``Patch`` of the shapes).
"""

from __future__ import annotations

import csv
import io
import json
from functools import partial
from typing import Any

from dash import Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app.api_client import ApiError
from app.components.common import (
    IMG_STORE,
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
from app.context import AppContext
from app.figures.curves import curves_figure, layer_marker_shapes
from app.figures.style import model_colours
from app.metrics import metrics_table


def layout() -> html.Section:
    return html.Section(
        [
            html.Div(
                [html.H2("4 · Per-layer curves", id="crv-heading"), export_bar("crv", label="the curves")],
                className="panel-head",
            ),
            radio_group(
                "crv-scope",
                "Curves for",
                [("image", "the shown image"), ("set", "the whole set (mean ± std)")],
                "set",
            ),
            html.Div(id="crv-msg"),
            panel_graph("crv-graph", 560, "vitscope-curves"),
            learn("curves"),
        ],
        className="panel",
        id="crv-panel",
        **aria(labelledby="crv-heading"),
    )


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client

    def fetch(
        meta: dict[str, Any], scope: str, images: dict[str, Any] | None, models: list[str]
    ) -> tuple[dict[str, dict[str, Any]], list[str], str]:
        ids = list((images or {}).get("ids", []))
        image = meta.get("image")
        errors: list[str] = []
        if scope == "set" and len(ids) > 1:
            try:
                set_id = client.create_set(ids)
            except ApiError as exc:
                return {}, [f"cannot make a set of the {len(ids)} images: {exc.message}"], ""
            results = client.parallel([partial(client.set_metrics, set_id, m) for m in models])
            subtitle = f"mean over {len(ids)} images, band = ± 1 std over images"
        else:
            results = client.parallel([partial(client.metrics, str(image), m) for m in models])
            name = (images or {}).get("names", {}).get(image) or str(image)[:12]
            subtitle = f"one image: {name}"
        per_model = {}
        for m, res in zip(models, results, strict=True):
            if isinstance(res, ApiError):
                errors.append(f"{m}: {res.message}")
            else:
                per_model[m] = res
        return per_model, errors, subtitle

    @app.callback(
        Output("crv-graph", "figure"),
        Output("crv-msg", "children"),
        Input(META_STORE, "data"),
        Input("crv-scope", "value"),
        Input("ctl-layer", "value"),
        State(IMG_STORE, "data"),
        State(MDL_STORE, "data"),
        State(MDL_CATALOG, "data"),
    )
    def draw(
        meta: dict[str, Any] | None,
        scope: str,
        layer: int,
        images: dict[str, Any] | None,
        models: list[str] | None,
        catalog: list[dict[str, Any]] | None,
    ) -> Any:
        if ctx.triggered_id == "ctl-layer":
            p = Patch()
            p["layout"]["shapes"] = layer_marker_shapes(layer)
            p["layout"]["meta"] = {"layer": layer, "models": [m for m in models or [] if m]}
            return p, no_update
        models = [m for m in models or [] if m]
        if not meta or not meta.get("image") or not models:
            return {"data": [], "layout": {"height": 560}}, html.Div(
                "Curves appear once there is an image and a model.", className="hint"
            )
        families = {m["id"]: m.get("family", "other") for m in catalog or []}
        per_model, errors, subtitle = fetch(meta, scope, images, models)
        fig = curves_figure(
            per_model,
            colours=model_colours(models, families),
            families=families,
            layer=layer,
            subtitle=subtitle,
        )
        msg = error_list(errors)
        return fig, msg

    register_image_export(app, "crv")

    @app.callback(
        Output("crv-download", "data"),
        Input("crv-exp-json", "n_clicks"),
        Input("crv-exp-csv", "n_clicks"),
        State(META_STORE, "data"),
        State("crv-scope", "value"),
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
        per_model, errors, subtitle = fetch(meta, scope, images, list(models))
        if ctx.triggered_id == "crv-exp-json":
            doc = {
                "scope": subtitle,
                "images": (images or {}).get("ids", []),
                "models": per_model,
                "errors": errors,
            }
            return dcc.send_string(json.dumps(doc, indent=1), "vitscope-curves.json")
        rows = metrics_table(per_model)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["model", "metric", "depth", "head", "value", "std"])
        writer.writeheader()
        writer.writerows(rows)
        return dcc.send_string(buf.getvalue(), "vitscope-curves.csv")
