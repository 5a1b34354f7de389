"""Compare attention: one column per model with the map of the chosen query over the image, and a small
multiples view of every head of the layer.

The click path is the hot one (benchmark ``bench/ui.py``): a click sets the query in the browser, then one
callback fetches the maps of all columns at once (in parallel, LRU-cached) and sends back a ``Patch`` that
only replaces the numbers, the query marker and the title, not the image.
"""

from __future__ import annotations

import csv
import io
import json
import re
from functools import partial
from typing import Any

import flask
from dash import Dash, Input, Output, Patch, State, ctx, dcc, html, no_update
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
from app.context import MAX_COLUMNS, AppContext
from app.figures.attention import attention_figure, heads_figure, patch_update
from app.figures.style import FAMILY_LABELS, family_key, graph_config, model_colours
from app.images import decode, model_view, to_data_uri
from app.metrics import ModelShape
from app.state import Query, head_param

SLOTS = range(MAX_COLUMNS)
HEADS_LABEL = "All heads of this layer (small multiples)"
EMPTY_FIGURE: dict[str, Any] = {
    "data": [],
    "layout": {"height": 120, "xaxis": {"visible": False}, "yaxis": {"visible": False}},
}
_ID = re.compile(r"^[0-9a-f]{64}$")


def _json_error(status: int, code: str, message: str) -> Any:
    response = flask.jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def layout() -> html.Section:
    columns = [
        html.Div(
            [
                loading(
                    dcc.Graph(
                        id=f"att-graph-{i}",
                        figure={"data": [], "layout": {"height": 360}},
                        config=graph_config(f"vitscope-attention-{i}"),
                        className="att-graph",
                        style={"height": "360px"},
                        responsive=True,
                    )
                ),
                html.Div(id=f"att-msg-{i}", className="col-msg"),
            ],
            id=f"att-col-{i}",
            className="att-col",
            style={"display": "none"},
        )
        for i in SLOTS
    ]
    heads = [
        html.Div(
            loading(
                dcc.Graph(
                    id=f"att-heads-graph-{i}",
                    figure={"data": [], "layout": {}},
                    config=graph_config(f"vitscope-heads-{i}"),
                )
            ),
            id=f"att-heads-col-{i}",
            className="heads-col",
            style={"display": "none"},
        )
        for i in SLOTS
    ]
    return html.Section(
        [
            html.Div(
                [html.H2("3 · Attention", id="att-heading"), export_bar("att", label="the attention maps")],
                className="panel-head",
            ),
            html.Div(id="att-empty", className="hint"),
            dcc.Store(id="att-drawn", data=[None] * MAX_COLUMNS),
            dcc.Store(id="att-opacity-done"),
            dcc.Store(id="att-heads-req"),
            html.Div(columns, className="att-grid", id="att-grid"),
            learn("attention"),
            disclosure(
                "att-heads",
                HEADS_LABEL,
                [html.Div(heads, className="heads-grid"), learn("heads", "Learn: reading the heads")],
            ),
        ],
        className="panel",
        id="att-panel",
        **aria(labelledby="att-heading"),
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


def title_of(model: str, family: str, colour: str | None = None) -> str:
    dot = f'<span style="color:{colour}">●</span> ' if colour else ""
    return f"{dot}<b>{model}</b> · {FAMILY_LABELS[family_key(family)]}"


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client

    def image_uri(image_id: str, shape: ModelShape) -> str:
        key = (
            "view",
            image_id,
            *map(str, shape.input_size),
            str(shape.resize),
            str(shape.crop_pct),
            shape.interpolation,
        )
        return ctx_.uris.get(
            key, lambda: to_data_uri(model_view(decode(client.image_bytes(image_id)[0]), shape))
        )

    @app.callback(
        *[Output(f"att-graph-{i}", "figure") for i in SLOTS],
        *[Output(f"att-col-{i}", "style") for i in SLOTS],
        *[Output(f"att-msg-{i}", "children") for i in SLOTS],
        Output("att-empty", "children"),
        Output("att-drawn", "data"),
        Input(META_STORE, "data"),
        Input("ctl-layer", "value"),
        Input("ctl-head", "value"),
        State(QUERY_STORE, "data"),
        State("ctl-opacity", "value"),
        State(MDL_STORE, "data"),
        State("att-drawn", "data"),
    )
    def draw(
        meta: dict[str, Any] | None,
        layer: int,
        head: Any,
        query_raw: Any,
        opacity: float | None,
        models: list[str] | None,
        drawn_raw: list[str | None] | None,
    ) -> Any:
        """New image or models: whole figures. New layer or head: a Patch of the numbers only.

        A new query never comes here: the page's script (``vitscope.showQuery``) fetches the maps of the
        new query through ``/_vitscope/attention`` and redraws them in place, without a Dash round trip.
        """
        n = len(SLOTS)
        drawn: list[str | None] = (list(drawn_raw or []) + [None] * n)[:n]
        models = [m for m in (models or []) if m][:n]
        image = (meta or {}).get("image")
        shapes: dict[str, Any] = (meta or {}).get("models", {})
        errors: dict[str, str] = (meta or {}).get("errors", {})
        if not image or not models:
            hint = (
                "Add an image and pick models to compare." if not image else "Pick 2 to 4 models to compare."
            )
            hidden = [{"display": "none"}] * n
            return *([no_update] * n), *hidden, *([None] * n), hint, [None] * n
        full = ctx.triggered_id in (None, META_STORE)
        query = Query.from_store(query_raw)
        opacity = 0.6 if opacity is None else float(opacity)

        figures: list[Any] = [no_update] * n
        styles: list[Any] = [{"display": "none"}] * n
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
            styles[i] = {}
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
            amap = res.get("map") or []
            rc = query.patch(grid)
            common = dict(
                title=title, amap=amap, grid=grid, patch=shape.patch_size, layer=use_layer, head=h, rc=rc,
                opacity=opacity, image=image, model=m,
            )  # fmt: skip
            if full or drawn[i] != m:
                drawn[i] = m
                try:
                    uri = image_uri(image, shape)
                except (ApiError, OSError, ValueError) as exc:
                    uri = None
                    msgs[i] = error_text(f"cannot show the image: {exc}")
                figures[i] = attention_figure(image_uri=uri, **common)
            else:
                figures[i] = patch_update(Patch(), **common)
        for i in range(len(models), n):
            drawn[i] = None
        if not full:
            styles = [no_update] * n
        return *figures, *styles, *msgs, None, drawn

    @app.server.route("/_vitscope/attention")
    def attention_proxy() -> Any:
        """One attention map for the page's script (same origin as the page, wherever the API lives)."""
        args = flask.request.args
        image, model = args.get("image", ""), args.get("model", "")
        try:
            layer = int(args.get("layer", ""))
        except ValueError:
            return _json_error(400, "bad_request", "layer must be a whole number (1-based block)")
        head = head_param(args.get("head", "mean"))
        raw_query = args.get("query", "cls")
        query: int | str = int(raw_query) if raw_query.isdigit() else "cls"
        if not _ID.match(image) or not model:
            return _json_error(400, "bad_request", "image (sha256 hex) and model are required")
        try:
            body = client.attention(image, model, layer, head, query)
        except ApiError as exc:
            return _json_error(exc.status or 502, exc.code, exc.message)
        return flask.jsonify(body)

    @app.callback(
        *[Output(f"att-heads-graph-{i}", "figure") for i in SLOTS],
        *[Output(f"att-heads-col-{i}", "style") for i in SLOTS],
        Input("att-heads-req", "data"),
        State(MDL_STORE, "data"),
    )
    def draw_heads(req: dict[str, Any] | None, models: list[str] | None) -> Any:
        n = len(SLOTS)
        if not req:
            raise PreventUpdate
        meta, layer, query_raw = req.get("meta"), int(req.get("layer") or 1), req.get("query")
        image = (meta or {}).get("image")
        shapes: dict[str, Any] = (meta or {}).get("models", {})
        models = [m for m in (models or []) if m in shapes][:n]
        figures: list[Any] = [no_update] * n
        styles: list[Any] = [{"display": "none"}] * n
        if not image:
            return *figures, *styles
        query = Query.from_store(query_raw)
        plans = []
        for m in models:
            use_layer, _h, _note = column_request(shapes[m], layer, "mean")
            grid = (int(shapes[m]["grid"][0]), int(shapes[m]["grid"][1]))
            plans.append((m, use_layer, grid))
        results = client.parallel(
            [
                partial(client.attention_heads, image, m, ly, query.index(g), int(shapes[m]["heads"]))
                for m, ly, g in plans
            ]
        )
        for i, ((m, ly, grid), res) in enumerate(zip(plans, results, strict=True)):
            styles[i] = {}
            if isinstance(res, ApiError):
                figures[i] = {"data": [], "layout": {"title": {"text": f"{m}: {res.message}"}, "height": 120}}
                continue
            figures[i] = heads_figure(
                title=f"{title_of(m, shapes[m].get('family', 'other'))} · block {ly}",
                maps=res,
                grid=grid,
                patch=int(shapes[m]["patch_size"]),
                rc=query.patch(grid),
            )
        return *figures, *styles

    register_disclosure(app, "att-heads", HEADS_LABEL)
    app.clientside_callback(
        "function() { return window.vitscope.headsRequest.apply(null, arguments); }",
        Output("att-heads-req", "data"),
        Input("att-heads-open", "data"),
        Input(META_STORE, "data"),
        Input("ctl-layer", "value"),
        Input(QUERY_STORE, "data"),
    )

    app.clientside_callback(
        "function(opacity) { return window.vitscope.setOpacity(opacity); }",
        Output("att-opacity-done", "data"),
        Input("ctl-opacity", "value"),
        prevent_initial_call=True,
    )

    # Export: PNG/SVG drawn by Plotly in the browser; the numbers from the API (cached).
    register_image_export(app, "att")

    @app.callback(
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
    )
    def export_numbers(
        _j: Any,
        _c: Any,
        meta: dict[str, Any] | None,
        layer: int,
        head: Any,
        query_raw: Any,
        models: list[str] | None,
        images: dict[str, Any] | None,
    ) -> Any:
        image = (meta or {}).get("image")
        shapes = (meta or {}).get("models", {})
        if not image or not shapes:
            raise PreventUpdate
        query = Query.from_store(query_raw)
        out: dict[str, Any] = {
            "image": image,
            "image_name": (images or {}).get("names", {}).get(image),
            "query": query.to_param(),
            "models": {},
        }
        for m in [m for m in models or [] if m in shapes]:
            use_layer, h, _ = column_request(shapes[m], layer, head)
            grid = (int(shapes[m]["grid"][0]), int(shapes[m]["grid"][1]))
            try:
                res = client.attention(image, m, use_layer, h, query.index(grid))
            except ApiError as exc:
                out["models"][m] = {"error": exc.message}
                continue
            out["models"][m] = {
                "layer": use_layer,
                "head": h,
                "query": query.index(grid),
                "grid": list(grid),
                "patch_size": shapes[m]["patch_size"],
                "map": res.get("map"),
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
