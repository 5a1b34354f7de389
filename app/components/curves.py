"""Compare per-layer curves (A2 distance, A3 NMI, entropy, A4 delta log amplitude), the models overlaid.

For one image: ``GET /images/{id}/metrics``; for the whole set (two or more images): ``POST /sets`` then
``GET /sets/{id}/metrics`` (mean over images with a std band). Moving the layer slider only moves the marker
(a ``Patch`` of the shapes). The paper's curves (``GET /reference``) are overlaid; the distance panel is on
the relative scale where the curves' grids differ (``app.metrics.distance_scale``). A click on a curve's point
shows that block everywhere (it sets the layer slider).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from dash import Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app.api_client import ApiClient, ApiError
from app.components import claims
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
from app.exports import curves_files, curves_name
from app.figures.curves import curves_figure, layer_marker_shapes
from app.figures.style import model_colours
from app.metrics import SCALE_CHOICES, curve_grids, delta_bin_label, distance_scale
from app.state import clean_models

PAPER_OPTION = "paper"


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
            html.Div(
                [
                    radio_group("crv-distance", "Distance", list(SCALE_CHOICES), "auto"),
                    dcc.Checklist(
                        id="crv-paper",
                        options=[
                            {
                                "label": "overlay the paper's curves (ViT-B/16, ImageNet, dashed)",
                                "value": PAPER_OPTION,
                            }
                        ],
                        value=[PAPER_OPTION],
                        inline=True,
                        className="radio",
                    ),
                ],
                className="panel-tools-row",
            ),
            claims.layout(),
            html.Div(id="crv-msg"),
            panel_graph("crv-graph", 560, "vitscope-curves"),
            learn("curves"),
        ],
        className="panel",
        id="crv-panel",
        **aria(labelledby="crv-heading"),
    )


def fetch(
    client: ApiClient,
    meta: dict[str, Any],
    scope: str,
    images: dict[str, Any] | None,
    models: list[str],
) -> tuple[dict[str, dict[str, Any]], list[str], str]:
    """Each model's metrics object for the shown image or the set: ``(per_model, errors, subtitle)``."""
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


def fetch_reference(client: ApiClient, wanted: list[str] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The paper's curves when the overlay is ticked, else None; an error in words if the API has none."""
    if PAPER_OPTION not in (wanted or []):
        return None, []
    try:
        return client.reference(), []
    except ApiError as exc:
        return None, [f"the paper's curves: {exc.message}"]


def clicked_block(click: dict[str, Any] | None, top: int | None) -> int | None:
    """The block a click on a curve's point names (its ``x``), within the slider's ``1..top``; depth 0 (the
    embedding, on the delta panel) reads as block 1. None when the click holds no point."""
    points = (click or {}).get("points") or []
    if not points:
        return None
    try:
        x = int(round(float(points[0]["x"])))
    except (KeyError, TypeError, ValueError):
        return None
    return min(max(1, x), int(top or x or 1))


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client
    claims.register(app, ctx_)

    @app.callback(
        Output("ctl-layer", "value", allow_duplicate=True),
        Input("crv-graph", "clickData"),
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
        Output("crv-graph", "figure"),
        Output("crv-msg", "children"),
        Input(META_STORE, "data"),
        Input("crv-scope", "value"),
        Input("ctl-layer", "value"),
        Input("crv-distance", "value"),
        Input("crv-paper", "value"),
        State(IMG_STORE, "data"),
        State(MDL_STORE, "data"),
        State(MDL_CATALOG, "data"),
    )
    def draw(
        meta: dict[str, Any] | None,
        scope: str,
        layer: int,
        scale_choice: str,
        paper: list[str] | None,
        images: dict[str, Any] | None,
        models: list[str] | None,
        catalog: list[dict[str, Any]] | None,
    ) -> Any:
        if ctx.triggered_id == "ctl-layer":
            p = Patch()
            p["layout"]["shapes"] = layer_marker_shapes(layer)
            p["layout"]["meta"]["layer"] = layer
            return p, no_update
        models = clean_models(models)
        if not meta or not meta.get("image") or not models:
            return {"data": [], "layout": {"height": 560}}, html.Div(
                "Curves appear once there is an image and a model.", className="hint"
            )
        families = {m["id"]: m.get("family", "other") for m in catalog or []}
        per_model, errors, subtitle = fetch(client, meta, scope, images, models)
        reference, ref_errors = fetch_reference(client, paper)
        fig = curves_figure(
            per_model,
            colours=model_colours(models, families),
            families=families,
            layer=layer,
            subtitle=subtitle,
            scale=distance_scale(scale_choice, curve_grids(per_model, reference)),
            reference=reference,
            delta_label=delta_bin_label(per_model),
            filename=curves_name(scope, len((images or {}).get("ids", []))),
        )
        msg = error_list(errors + ref_errors)
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
        per_model, errors, subtitle = fetch(client, meta, scope, images, clean_models(models))
        files = curves_files(
            per_model, scope=scope, subtitle=subtitle, images=(images or {}).get("ids", []), errors=errors
        )
        f = files[0] if ctx.triggered_id == "crv-exp-json" else files[1]
        return dcc.send_string(str(f.data), f.path)
