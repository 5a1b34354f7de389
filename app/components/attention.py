"""Compare attention: one column per model with the map of the chosen query over the image, and a small
multiples view of every head of the layer.

Columns are made from the chosen models (pattern-matching ids ``{"type": "att-graph", "index": i}``, as many
as ``app.state.MAX_MODELS`` allows). The click path is the hot one (benchmark ``bench/ui.py``): a click sets
the query in the browser, whose script fetches the new maps through ``/_vitscope/attention`` (``app.proxy``)
and redraws them in place; the figure's ``layout.meta`` says what each map shows (the geometry the script
reads). A new layer or head comes here and goes back as a ``Patch`` of the numbers only, not the image.
"""

from __future__ import annotations

import csv
import io
import json
from functools import partial
from typing import Any

from dash import ALL, ClientsideFunction, Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app.api_client import ApiError
from app.components.common import (
    IMG_STORE,
    MDL_STORE,
    META_STORE,
    QUERY_STORE,
    aria,
    disclosure,
    error_text,
    export_bar,
    learn,
    loading,
    register_disclosure,
    register_image_export,
)
from app.context import AppContext
from app.exports import attention_name
from app.figures.attention import attention_figure, heads_figure, patch_update
from app.figures.style import family_key, graph_config, model_colours
from app.images import decode, model_view, to_data_uri
from app.metrics import ModelShape
from app.state import DEFAULT_OPACITY, Query, clean_images, clean_models, head_param

HEADS_LABEL = "All heads of this layer (small multiples)"
EMPTY_FIGURE: dict[str, Any] = {
    "data": [],
    "layout": {"height": 120, "xaxis": {"visible": False}, "yaxis": {"visible": False}},
}
COLS = "att-cols"  # the models the columns were made for, in order


def graph_id(kind: str, index: Any) -> dict[str, Any]:
    """A column's component id; ``index`` is its position (or ``ALL`` in a callback)."""
    return {"type": kind, "index": index}


def layout() -> html.Section:
    return html.Section(
        [
            html.Div(
                [html.H2("3 · Attention", id="att-heading"), export_bar("att", label="the attention maps")],
                className="panel-head",
            ),
            html.Div(
                "Add an image and pick models to compare.", id="att-empty", className="hint", role="status"
            ),
            dcc.Store(id=COLS, data=[]),
            dcc.Store(id="att-drawn", data=[]),
            dcc.Store(id="att-opacity-done"),
            dcc.Store(id="att-heads-req"),
            dcc.Store(id="att-boxes-done"),
            html.Div([], className="att-grid", id="att-grid"),
            learn("attention"),
            disclosure(
                "att-heads",
                HEADS_LABEL,
                [
                    html.Div([], className="heads-grid", id="att-heads-grid"),
                    learn("heads", "Learn: reading the heads"),
                ],
            ),
        ],
        className="panel",
        id="att-panel",
        **aria(labelledby="att-heading"),
    )


def column(i: int) -> html.Div:
    return html.Div(
        [
            loading(
                dcc.Graph(
                    id=graph_id("att-graph", i),
                    figure={"data": [], "layout": {"height": 360}},
                    config=graph_config(None),  # named by the export bar
                    className="att-graph",
                    style={"height": "360px"},
                    responsive=True,
                )
            ),
            html.Div("Computing…", id=graph_id("att-msg", i), className="col-msg", role="status"),
        ],
        className="att-col",
    )


def heads_column(i: int) -> html.Div:
    return html.Div(
        loading(
            dcc.Graph(
                id=graph_id("att-heads-graph", i),
                figure={"data": [], "layout": {}},
                config=graph_config(None),
            )
        ),
        className="heads-col",
    )


def shape_of(meta: dict[str, Any]) -> ModelShape:
    return ModelShape(
        layers=int(meta["layers"]),
        heads=int(meta["heads"]),
        grid=(int(meta["grid"][0]), int(meta["grid"][1])),
        patch_size=int(meta["patch_size"]),
        input_size=(int(meta["input_size"][0]), int(meta["input_size"][1])),
        resize=meta.get("resize"),
        crop_pct=meta.get("crop_pct"),
        interpolation=str(meta.get("interpolation") or "bilinear"),
    )


def column_request(meta: dict[str, Any], layer: int, head: Any) -> tuple[int, int | str, str]:
    """Clamp the shared layer and head to what one model has; a note says when they were clamped."""
    notes = []
    layers, heads = int(meta["layers"]), int(meta["heads"])
    use_layer = min(max(1, int(layer or layers)), layers)
    if use_layer != layer:
        notes.append(f"this model has {layers} blocks: showing block {use_layer}")
    h = head_param(head)
    if isinstance(h, int) and h >= heads:
        notes.append(f"this model has {heads} heads: showing their mean")
        h = "mean"
    return use_layer, h, "; ".join(notes)


# Short family names for the columns' titles: four columns at 1280 px leave about 280 px for one.
SHORT_FAMILY = {
    "cl": "CL", "mim": "MIM", "hybrid": "CL+MIM", "supervised": "supervised", "baseline": "random init",
    "other": "",
}  # fmt: skip


def title_of(model: str, family: str, colour: str | None = None) -> str:
    dot = f'<span style="color:{colour}">●</span> ' if colour else ""
    short = SHORT_FAMILY[family_key(family)]
    return f"{dot}<b>{model}</b>" + (f" · {short}" if short else "")


def image_uri(ctx_: AppContext, image_id: str, shape: ModelShape) -> str:
    preprocessing = (*map(str, shape.input_size), str(shape.resize), str(shape.crop_pct), shape.interpolation)
    key = ("view", image_id, *preprocessing)
    return ctx_.uris.get(
        key, lambda: to_data_uri(model_view(decode(ctx_.client.image_bytes(image_id)[0]), shape))
    )


# -- columns: one per chosen model ---------------------------------------------------------------------
def columns(models_raw: Any, shown: list[str] | None) -> Any:
    """Make the columns (and the small multiples' places) for the chosen models; the maps come in ``draw``."""
    models = clean_models(models_raw)
    if models == (shown or []):
        raise PreventUpdate
    return [column(i) for i in range(len(models))], [heads_column(i) for i in range(len(models))], models


# -- the maps ------------------------------------------------------------------------------------------
def draw(
    ctx_: AppContext,
    meta: dict[str, Any] | None,
    models_raw: list[str] | None,
    layer: int,
    head: Any,
    query_raw: Any,
    opacity: float | None,
    drawn_raw: list[str | None] | None,
) -> Any:
    """New image or models: whole figures. New layer or head: a Patch of the numbers only.

    A new query never comes here: the page's script (``vitscope.queryControl``) fetches the maps of the new
    query through ``/_vitscope/attention`` and redraws them in place, without a Dash round trip.
    """
    client = ctx_.client
    models = clean_models(models_raw)
    n = len(ctx.outputs_list[0]) if ctx.outputs_list else len(models)
    models = models[:n]
    drawn: list[str | None] = (list(drawn_raw or []) + [None] * n)[:n]
    image = (meta or {}).get("image")
    shapes: dict[str, Any] = (meta or {}).get("models", {})
    errors: dict[str, str] = (meta or {}).get("errors", {})
    if not image or not models or (meta or {}).get("for") != models:
        if not image:
            hint = "Add an image above (or press “Try the demo”) to see where each model looks."
        elif len(models) < 2:
            hint = "Pick 2 to 4 models to compare (one map per model)."
        else:
            hint = "Computing the maps of the chosen models…"
        return [no_update] * n, [None] * n, hint, [None] * n
    full = ctx.triggered_id in (None, META_STORE, COLS) or drawn != models
    query = Query.from_store(query_raw)
    opacity = DEFAULT_OPACITY if opacity is None else float(opacity)

    figures: list[Any] = [no_update] * n
    msgs: list[Any] = [None] * n
    requests: list[tuple[int, int | str, int | str, tuple[int, int], str] | None] = []
    for m in models:
        if m not in shapes:
            requests.append(None)
            continue
        use_layer, h, note = column_request(shapes[m], layer, head)
        grid = (int(shapes[m]["grid"][0]), int(shapes[m]["grid"][1]))
        requests.append((use_layer, h, query.index(grid), grid, note))
    calls = [
        partial(client.attention, image, m, r[0], r[1], r[2])
        for m, r in zip(models, requests, strict=True)
        if r is not None
    ]
    results = iter(client.parallel(calls))
    colours = model_colours(models, {m: shapes.get(m, {}).get("family", "other") for m in models})
    for i, (m, req) in enumerate(zip(models, requests, strict=True)):
        family = shapes.get(m, {}).get("family", "other")
        title = title_of(m, family, colours.get(m))
        if req is None:
            msgs[i] = error_text(errors.get(m, "no data for this model"))
            figures[i] = EMPTY_FIGURE
            drawn[i] = None
            continue
        use_layer, h, _q, grid, note = req
        res = next(results)
        if isinstance(res, ApiError):
            msgs[i] = error_text(res.message)
            if full or drawn[i] != m:
                figures[i] = EMPTY_FIGURE
                drawn[i] = None
            continue
        msgs[i] = html.Div(note, className="note") if note else None
        shape = shape_of(shapes[m])
        common = dict(
            title=title, amap=res["map"], grid=grid, patch=shape.patch_size, layer=use_layer, head=h,
            rc=query.patch(grid), opacity=opacity, image=image, model=m,
        )  # fmt: skip
        if full or drawn[i] != m:
            drawn[i] = m
            try:
                uri = image_uri(ctx_, image, shape)
            except (ApiError, OSError, ValueError) as exc:
                uri = None
                msgs[i] = error_text(f"cannot show the image: {exc}")
            figures[i] = attention_figure(image_uri=uri, **common)
        else:
            figures[i] = patch_update(Patch(), **common)
    return figures, msgs, None, drawn


def draw_heads(ctx_: AppContext, req: dict[str, Any] | None, models_raw: list[str] | None) -> Any:
    """Every head of the layer, per model, while the small multiples are open."""
    if not req:
        raise PreventUpdate
    n = len(ctx.outputs_list or [])  # one output, ALL: the list of the columns' graphs
    meta, layer, query_raw = req.get("meta"), int(req.get("layer") or 1), req.get("query")
    image = (meta or {}).get("image")
    shapes: dict[str, Any] = (meta or {}).get("models", {})
    models = clean_models(models_raw)[:n]
    figures: list[Any] = [no_update] * n
    if not image:
        return figures
    query = Query.from_store(query_raw)
    plans = []
    for i, m in enumerate(models):
        if m not in shapes:
            figures[i] = EMPTY_FIGURE
            continue
        use_layer, _h, _note = column_request(shapes[m], layer, "mean")
        plans.append((i, m, use_layer, (int(shapes[m]["grid"][0]), int(shapes[m]["grid"][1]))))
    client = ctx_.client
    results = client.parallel(
        [partial(client.attention_heads, image, m, ly, query.index(g)) for _i, m, ly, g in plans]
    )
    for (i, m, ly, grid), res in zip(plans, results, strict=True):
        if isinstance(res, ApiError):
            figures[i] = {"data": [], "layout": {"title": {"text": f"{m}: {res.message}"}, "height": 120}}
            continue
        figures[i] = heads_figure(
            title=f"{title_of(m, shapes[m].get('family', 'other'))} · block {ly}",
            maps=res,
            grid=grid,
            patch=int(shapes[m]["patch_size"]),
            rc=query.patch(grid),
            filename=attention_name(m, ly, "all", query.index(grid), grid),
        )
    return figures


def export_numbers(
    ctx_: AppContext,
    meta: dict[str, Any] | None,
    layer: int,
    head: Any,
    query_raw: Any,
    models_raw: list[str] | None,
    images_raw: dict[str, Any] | None,
) -> Any:
    """The maps' numbers as JSON or CSV (the button that fired says which)."""
    image = (meta or {}).get("image")
    shapes = (meta or {}).get("models", {})
    if not image or not shapes:
        raise PreventUpdate
    query = Query.from_store(query_raw)
    out: dict[str, Any] = {
        "image": image,
        "image_name": clean_images(images_raw)["names"].get(image),
        "query": query.to_param(),
        "models": {},
    }
    for m in [m for m in clean_models(models_raw) if m in shapes]:
        use_layer, h, _ = column_request(shapes[m], layer, head)
        grid = (int(shapes[m]["grid"][0]), int(shapes[m]["grid"][1]))
        try:
            res = ctx_.client.attention(image, m, use_layer, h, query.index(grid))
        except ApiError as exc:
            out["models"][m] = {"error": exc.message}
            continue
        out["models"][m] = {
            "layer": use_layer,
            "head": h,
            "query": query.index(grid),
            "grid": list(grid),
            "patch_size": shapes[m]["patch_size"],
            "map": res["map"],
        }
    if ctx.triggered_id == "att-exp-json":
        return dcc.send_string(json.dumps(out, indent=1), "vitscope-attention.json")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "layer", "head", "query", "row", "col", "attention"])
    for m, d in out["models"].items():
        for r, row in enumerate(d.get("map") or []):
            for c, v in enumerate(row):
                writer.writerow([m, d["layer"], d["head"], d["query"], r, c, v])
    return dcc.send_string(buf.getvalue(), "vitscope-attention.csv")


def register(app: Dash, ctx_: AppContext) -> None:
    app.callback(
        Output("att-grid", "children"),
        Output("att-heads-grid", "children"),
        Output(COLS, "data"),
        Input(MDL_STORE, "data"),
        State(COLS, "data"),
    )(columns)
    app.callback(
        Output(graph_id("att-graph", ALL), "figure"),
        Output(graph_id("att-msg", ALL), "children"),
        Output("att-empty", "children"),
        Output("att-drawn", "data"),
        Input(META_STORE, "data"),
        Input(COLS, "data"),
        Input("ctl-layer", "value"),
        Input("ctl-head", "value"),
        State(QUERY_STORE, "data"),
        State("ctl-opacity", "value"),
        State("att-drawn", "data"),
    )(
        lambda meta, cols, layer, head, query, opacity, drawn: draw(
            ctx_, meta, cols, layer, head, query, opacity, drawn
        )
    )
    app.callback(
        Output(graph_id("att-heads-graph", ALL), "figure"),
        Input("att-heads-req", "data"),
        State(COLS, "data"),
    )(lambda req, models: draw_heads(ctx_, req, models))
    register_disclosure(app, "att-heads", HEADS_LABEL)
    app.clientside_callback(
        ClientsideFunction("vitscope", "headsRequest"),
        Output("att-heads-req", "data"),
        Input("att-heads-open", "data"),
        Input(META_STORE, "data"),
        Input("ctl-layer", "value"),
        Input(QUERY_STORE, "data"),
    )
    app.clientside_callback(
        ClientsideFunction("vitscope", "setOpacity"),
        Output("att-opacity-done", "data"),
        Input("ctl-opacity", "drag_value"),
        prevent_initial_call=True,
    )
    register_image_export(app, "att")
    app.callback(
        Output("att-download", "data"),
        Input("att-exp-json", "n_clicks"),
        Input("att-exp-csv", "n_clicks"),
        State(META_STORE, "data"),
        State("ctl-layer", "value"),
        State("ctl-head", "value"),
        State(QUERY_STORE, "data"),
        State(MDL_STORE, "data"),
        State(IMG_STORE, "data"),
        prevent_initial_call=True,
    )(lambda _j, _c, *state: export_numbers(ctx_, *state))
