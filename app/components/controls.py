"""The controls every view shares: layer, head (or mean), query (a patch or CLS), overlay opacity, permalink.

The shapes of the chosen models (depth, heads, grid) come from their metrics for the shown image
(``GET /images/{id}/metrics``), fetched here once per (image, model) and kept in the ``an-meta`` store; the
slider and the head menu follow them.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from dash import ALL, ClientsideFunction, Dash, Input, Output, State, dcc, html

from app.api_client import ApiError
from app.components.common import IMG_STORE, MDL_CATALOG, MDL_STORE, META_STORE, QUERY_STORE, aria
from app.context import AppContext
from app.metrics import read_shape
from app.state import DEFAULT_OPACITY, clean_images, clean_models

DEFAULT_LAYERS = 12


def layout() -> html.Div:
    return html.Div(
        [
            html.Div(
                [
                    html.Label(
                        "Layer (block)", htmlFor="ctl-layer", className="ctl-label", id="ctl-layer-label"
                    ),
                    dcc.Slider(
                        id="ctl-layer",
                        min=1,
                        max=DEFAULT_LAYERS,
                        step=1,
                        value=DEFAULT_LAYERS,
                        marks={i: str(i) for i in range(1, DEFAULT_LAYERS + 1)},
                        updatemode="mouseup",
                        className="ctl-slider",
                    ),
                ],
                className="ctl ctl-layer",
            ),
            html.Div(
                [
                    html.Label("Head", htmlFor="ctl-head", className="ctl-label"),
                    dcc.Dropdown(
                        id="ctl-head",
                        options=[{"label": "mean of heads", "value": "mean"}],
                        value="mean",
                        clearable=False,
                        searchable=False,
                        className="ctl-dropdown",
                    ),
                ],
                className="ctl ctl-head",
            ),
            html.Div(
                [
                    html.Span("Query", className="ctl-label", id="ctl-query-label"),
                    html.Div(
                        [
                            html.Button(
                                "CLS",
                                id="ctl-cls",
                                className="btn btn-small",
                                n_clicks=0,
                                title="Use the CLS token as the query",
                            ),
                            html.Label("row", htmlFor="ctl-row", className="ctl-mini"),
                            dcc.Input(
                                id="ctl-row",
                                type="number",
                                min=0,
                                step=1,
                                debounce=True,
                                className="ctl-num",
                                placeholder="–",
                            ),
                            html.Label("col", htmlFor="ctl-col", className="ctl-mini"),
                            dcc.Input(
                                id="ctl-col",
                                type="number",
                                min=0,
                                step=1,
                                debounce=True,
                                className="ctl-num",
                                placeholder="–",
                            ),
                        ],
                        className="ctl-query",
                        role="group",
                        **aria(labelledby="ctl-query-label"),
                    ),
                    html.Div("or click a patch on a map", id="ctl-query-hint", className="hint hint-small"),
                ],
                className="ctl",
            ),
            html.Div(
                [
                    html.Label("Overlay opacity", htmlFor="ctl-opacity", className="ctl-label"),
                    dcc.Slider(
                        id="ctl-opacity",
                        min=0,
                        max=1,
                        step=0.05,
                        value=DEFAULT_OPACITY,
                        marks={0: "0", 0.5: "0.5", 1: "1"},
                        className="ctl-slider",
                        updatemode="mouseup",  # the permalink; the maps follow drag_value live
                    ),
                ],
                className="ctl ctl-opacity",
            ),
            html.Div(
                [
                    html.Label("Permalink", htmlFor="ctl-permalink", className="ctl-label"),
                    html.Div(
                        [
                            dcc.Input(
                                id="ctl-permalink", type="text", readOnly=True, className="ctl-link", value=""
                            ),
                            dcc.Clipboard(
                                target_id="ctl-permalink",
                                className="btn btn-small clip",
                                title="Copy the link to this view",
                            ),
                        ],
                        className="ctl-link-row",
                    ),
                ],
                className="ctl ctl-permalink",
            ),
        ],
        className="controls",
        id="ctl-bar",
        role="toolbar",
        **aria(label="View controls"),
    )


def model_shapes(
    ctx_: AppContext, store: dict[str, Any] | None, models_raw: list[str] | None, catalog: list[dict] | None
) -> Any:
    """The shapes (depth, heads, grid, preprocessing) of the chosen models for the shown image."""
    client = ctx_.client
    image = clean_images(store)["active"]
    models = clean_models(models_raw)
    families = {m["id"]: m.get("family", "other") for m in catalog or []}
    patches = {m["id"]: m.get("patch_size") for m in catalog or []}
    meta: dict[str, Any] = {"image": image, "for": models, "models": {}, "errors": {}}
    if image and models:
        ask = []
        for m in models:
            try:
                refused = ctx_.refusal(image, m)
            except ApiError as exc:
                refused = exc.message
            if refused:
                meta["errors"][m] = refused
            else:
                ask.append(m)
        results = client.parallel([partial(client.metrics, image, m) for m in ask])
        for m, res in zip(ask, results, strict=True):
            if isinstance(res, ApiError):
                meta["errors"][m] = res.message
                continue
            shape = read_shape(res, patches.get(m))
            meta["models"][m] = {
                "layers": shape.layers,
                "heads": shape.heads,
                "grid": list(shape.grid),
                "patch_size": shape.patch_size,
                "input_size": list(shape.input_size),
                "resize": shape.resize,
                "crop_pct": shape.crop_pct,
                "interpolation": shape.interpolation,
                "family": families.get(m, res.get("family", "other")),
            }
    shapes = meta["models"].values()
    layers = max((s["layers"] for s in shapes), default=DEFAULT_LAYERS)
    heads = max((s["heads"] for s in shapes), default=0)
    step = 1 if layers <= 16 else 2 if layers <= 32 else 4
    marks = {i: str(i) for i in range(1, layers + 1) if i == 1 or i == layers or i % step == 0}
    head_options = [{"label": "mean of heads", "value": "mean"}] + [
        {"label": f"head {h}", "value": str(h)} for h in range(heads)
    ]
    return meta, layers, marks, head_options


def register(app: Dash, ctx_: AppContext) -> None:
    app.callback(
        Output(META_STORE, "data"),
        Output("ctl-layer", "max"),
        Output("ctl-layer", "marks"),
        Output("ctl-head", "options"),
        Input(IMG_STORE, "data"),
        Input(MDL_STORE, "data"),
        State(MDL_CATALOG, "data"),
    )(lambda store, models, catalog: model_shapes(ctx_, store, models, catalog))
    # Query: a click on any map, the row/col boxes or the CLS button (in the browser, no round trip). The
    # boxes name a patch of the first column's grid; they follow each redraw of the maps (syncBoxes).
    app.clientside_callback(
        ClientsideFunction("vitscope", "queryControl"),
        Output(QUERY_STORE, "data"),
        Output("ctl-row", "value"),
        Output("ctl-col", "value"),
        Input({"type": "att-graph", "index": ALL}, "clickData"),
        Input("ctl-cls", "n_clicks"),
        Input("ctl-row", "value"),
        Input("ctl-col", "value"),
        Input(QUERY_STORE, "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ClientsideFunction("vitscope", "syncBoxes"),
        Output("ctl-row", "value", allow_duplicate=True),
        Output("ctl-col", "value", allow_duplicate=True),
        Output("ctl-query-hint", "children"),
        Input({"type": "att-graph", "index": ALL}, "figure"),
        State(QUERY_STORE, "data"),
        prevent_initial_call=True,
    )
