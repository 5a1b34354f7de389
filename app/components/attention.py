"""Compare attention: one column per model with the map of the chosen query over the image (or its attention
rollout through the chosen block), a second row of maps for a second query, a small multiples view of every
head of the layer, and each model's token-norm map (high-norm tokens, the CLS and register tokens' norms).

Columns are made from the chosen models (pattern-matching ids ``{"type": "att-graph", "index": i}``, as many
as ``app.state.MAX_MODELS`` allows). The click path is the hot one (benchmark ``bench/ui.py``): a click sets
the query in the browser, whose script fetches the new maps through ``/_vitscope/attention`` (``app.proxy``)
and redraws them in place; the figure's ``layout.meta`` says what each map shows (the geometry the script
reads). A new layer or head comes here and goes back as a ``Patch`` of the numbers only, not the image.

The second query (``QUERY2_STORE``: None, ``"cls"`` or a place) is set by its row/col boxes and buttons, a
click on a map of the second row, or a Shift+click on a map of the first row (the page's script); its row is
drawn here, whole figures.
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
from app.exports import attention_name, norms_name
from app.figures.attention import attention_figure, heads_figure, patch_update
from app.figures.norms import norms_figure
from app.figures.style import family_key, graph_config, model_colours
from app.images import decode, model_view, to_data_uri
from app.metrics import ModelShape
from app.state import DEFAULT_OPACITY, Query, clean_images, clean_models, head_param

HEADS_LABEL = "All heads of this layer (small multiples)"
NORMS_LABEL = "Token norms at this block (high-norm tokens, CLS and registers)"
ROLLOUT = "att-rollout"  # the toggle: a checklist whose value holds ROLLOUT_ON when the rollout is shown
ROLLOUT_ON = "rollout"
QUERY2_STORE = "att-query2"  # the second query: None (no second row) | "cls" | {"y": frac, "x": frac}
Q2 = "att-q2"  # its controls: -cls, -off, -row, -col
EMPTY_FIGURE: dict[str, Any] = {
    "data": [],
    "layout": {"height": 120, "xaxis": {"visible": False}, "yaxis": {"visible": False}},
}
COLS = "att-cols"  # the models the columns were made for, in order


def graph_id(kind: str, index: Any) -> dict[str, Any]:
    """A column's component id; ``index`` is its position (or ``ALL`` in a callback)."""
    return {"type": kind, "index": index}


def is_rollout(value: Any) -> bool:
    """The toggle's value -> whether the maps show the rollout."""
    return isinstance(value, list) and ROLLOUT_ON in value


def rollout_value(on: bool) -> list[str]:
    return [ROLLOUT_ON] if on else []


def tools() -> html.Div:
    """The rollout toggle and the second query's controls (keyboard: its CLS and Off buttons, row/col)."""
    return html.Div(
        [
            dcc.Checklist(
                id=ROLLOUT,
                options=[
                    {
                        "label": " Attention rollout through the chosen block (heads fused by mean)",
                        "value": ROLLOUT_ON,
                    }
                ],
                value=[],
                className="radio",
            ),  # fmt: skip
            html.Div(
                [
                    html.Span("Second query", className="ctl-label", id=f"{Q2}-label"),
                    html.Button(
                        "CLS",
                        id=f"{Q2}-cls",
                        className="btn btn-small",
                        n_clicks=0,
                        title="Compare with the CLS token's maps",
                    ),
                    html.Label("row", htmlFor=f"{Q2}-row", className="ctl-mini"),
                    dcc.Input(
                        id=f"{Q2}-row",
                        type="number",
                        min=0,
                        step=1,
                        debounce=True,
                        className="ctl-num",
                        placeholder="–",
                    ),
                    html.Label("col", htmlFor=f"{Q2}-col", className="ctl-mini"),
                    dcc.Input(
                        id=f"{Q2}-col",
                        type="number",
                        min=0,
                        step=1,
                        debounce=True,
                        className="ctl-num",
                        placeholder="–",
                    ),
                    html.Button(
                        "Off", id=f"{Q2}-off", className="btn btn-small", n_clicks=0, title="No second query"
                    ),
                    html.Span(
                        "compare with a second query: Shift+click a map above, or click one in its row",
                        id=f"{Q2}-hint",
                        className="hint hint-small",
                    ),
                ],
                className="ctl-query",
                role="group",
                **aria(labelledby=f"{Q2}-label"),
            ),  # fmt: skip
        ],
        className="panel-tools",
    )


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
            tools(),
            dcc.Store(id=COLS, data=[]),
            dcc.Store(id="att-drawn", data=[]),
            dcc.Store(id="att-opacity-done"),
            dcc.Store(id="att-heads-req"),
            dcc.Store(id="att-boxes-done"),
            dcc.Store(id=QUERY2_STORE, data=None),
            html.Div([], className="att-grid", id="att-grid"),
            html.Div(
                [
                    html.H3("Second query", className="att-row-title"),
                    html.Div([], className="att-grid", id="att-grid2"),
                ],
                id="att-row2",
                style={"display": "none"},
            ),
            learn("attention"),
            disclosure(
                "att-heads",
                HEADS_LABEL,
                [
                    html.Div([], className="heads-grid", id="att-heads-grid"),
                    learn("heads", "Learn: reading the heads"),
                ],
            ),
            disclosure(
                "att-norms",
                NORMS_LABEL,
                [
                    html.P(
                        "The L2 norm of each patch token at the output of the chosen block; dotted outlines "
                        "mark the patches above 4 × the image's median patch norm (the high-norm tokens of "
                        "Darcet et al. 2024). Beside each map, the norms of the model's CLS and register "
                        "tokens.",
                        className="hint",
                    ),
                    html.Div([], className="norms-grid", id="att-norms-grid", role="status"),
                ],
            ),
        ],
        className="panel",
        id="att-panel",
        **aria(labelledby="att-heading"),
    )


def column(i: int, kind: str = "att-graph", msg: str = "att-msg") -> html.Div:
    return html.Div(
        [
            loading(
                dcc.Graph(
                    id=graph_id(kind, i),
                    figure={"data": [], "layout": {"height": 360}},
                    config=graph_config(None),  # named by the export bar
                    className="att-graph",
                    style={"height": "360px"},
                    responsive=True,
                )
            ),
            html.Div("Computing…", id=graph_id(msg, i), className="col-msg", role="status"),
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


def column_request(
    meta: dict[str, Any], layer: int, head: Any, rollout: bool = False
) -> tuple[int, int | str, str]:
    """Clamp the shared layer and head to what one model has; a note says when they were clamped. The
    rollout fuses the heads by their mean (the API's rule), whatever head is chosen."""
    notes = []
    layers, heads = int(meta["layers"]), int(meta["heads"])
    use_layer = min(max(1, int(layer or layers)), layers)
    if use_layer != layer:
        notes.append(f"this model has {layers} blocks: showing block {use_layer}")
    h = head_param(head)
    if rollout:
        if h != "mean":
            notes.append("the rollout fuses the heads by their mean")
        h = "mean"
    elif isinstance(h, int) and h >= heads:
        notes.append(f"this model has {heads} heads: showing their mean")
        h = "mean"
    return use_layer, h, "; ".join(notes)


# Short family names for the columns' titles: four columns at 1280 px leave about 280 px for one.
SHORT_FAMILY = {
    "cl": "CL", "mim": "MIM", "hybrid": "CL+MIM", "autoregressive": "AR", "supervised": "supervised",
    "baseline": "random init",
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
    """Make the columns (the second row's and the small multiples' too) for the chosen models; the maps come
    in ``draw``, ``draw_second`` and ``draw_heads``."""
    models = clean_models(models_raw)
    if models == (shown or []):
        raise PreventUpdate
    n = range(len(models))
    return (
        [column(i) for i in n],
        [column(i, "att-graph2", "att-msg2") for i in n],
        [heads_column(i) for i in n],
        models,
    )


# -- the maps ------------------------------------------------------------------------------------------
Request = tuple[int, int | str, int | str, tuple[int, int], str]  # layer, head, API query, grid, note


def requests_of(
    shapes: dict[str, Any], models: list[str], layer: int, head: Any, query: Query, rollout: bool
) -> list[Request | None]:
    """Per model, what to ask the API for (None: no shape for it, its error is in the meta)."""
    out: list[Request | None] = []
    for m in models:
        if m not in shapes:
            out.append(None)
            continue
        use_layer, h, note = column_request(shapes[m], layer, head, rollout)
        grid = (int(shapes[m]["grid"][0]), int(shapes[m]["grid"][1]))
        out.append((use_layer, h, query.index(grid), grid, note))
    return out


def fetch_maps(
    ctx_: AppContext, image: str, models: list[str], requests: list[Request | None], rollout: bool
) -> list[dict[str, Any] | ApiError | None]:
    """The API's maps for the planned requests, at once (None where nothing was asked)."""
    client = ctx_.client
    asked = [(m, r) for m, r in zip(models, requests, strict=True) if r is not None]
    calls = [partial(client.attention, image, m, r[0], r[1], r[2], rollout) for m, r in asked]
    results = iter(client.parallel(calls))
    return [None if r is None else next(results) for r in requests]


def draw(
    ctx_: AppContext,
    meta: dict[str, Any] | None,
    models_raw: list[str] | None,
    layer: int,
    head: Any,
    rollout_raw: Any,
    query_raw: Any,
    opacity: float | None,
    drawn_raw: list[str | None] | None,
) -> Any:
    """New image or models: whole figures. New layer, head or rollout: a Patch of the numbers only.

    A new query never comes here: the page's script (``vitscope.queryControl``) fetches the maps of the new
    query through ``/_vitscope/attention`` and redraws them in place, without a Dash round trip. A map the
    API refuses (a CLS query of a model without CLS) is emptied: its message shows, never an older map.
    """
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
    rollout = is_rollout(rollout_raw)
    opacity = DEFAULT_OPACITY if opacity is None else float(opacity)

    figures: list[Any] = [no_update] * n
    msgs: list[Any] = [None] * n
    requests = requests_of(shapes, models, layer, head, query, rollout)
    results = fetch_maps(ctx_, image, models, requests, rollout)
    colours = model_colours(models, {m: shapes.get(m, {}).get("family", "other") for m in models})
    for i, (m, req, res) in enumerate(zip(models, requests, results, strict=True)):
        if req is None or res is None or isinstance(res, ApiError):
            msgs[i] = error_text(res.message if isinstance(res, ApiError) else errors.get(m, "no data"))
            figures[i] = EMPTY_FIGURE
            drawn[i] = None
            continue
        use_layer, h, _q, grid, note = req
        msgs[i] = html.Div(note, className="note") if note else None
        shape = shape_of(shapes[m])
        common = dict(
            title=title_of(m, shapes[m].get("family", "other"), colours.get(m)), amap=res["map"], grid=grid,
            patch=shape.patch_size, layer=use_layer, head=h, rc=query.patch(grid), opacity=opacity,
            image=image, model=m, rollout=rollout,
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


def draw_second(
    ctx_: AppContext,
    meta: dict[str, Any] | None,
    models_raw: list[str] | None,
    layer: int,
    head: Any,
    rollout_raw: Any,
    query2_raw: Any,
    opacity: float | None,
) -> Any:
    """The second row: every model's map for the second query (whole figures), hidden without one."""
    n = len(ctx.outputs_list[0]) if ctx.outputs_list else 0
    query = Query.second(query2_raw)
    image = (meta or {}).get("image")
    models = clean_models(models_raw)[:n]
    if query is None or not image or not models or (meta or {}).get("for") != models:
        return [EMPTY_FIGURE] * n, [None] * n, {"display": "none"}
    shapes: dict[str, Any] = meta.get("models", {}) if meta else {}
    errors: dict[str, str] = meta.get("errors", {}) if meta else {}
    rollout = is_rollout(rollout_raw)
    requests = requests_of(shapes, models, layer, head, query, rollout)
    results = fetch_maps(ctx_, image, models, requests, rollout)
    colours = model_colours(models, {m: shapes.get(m, {}).get("family", "other") for m in models})
    figures: list[Any] = [EMPTY_FIGURE] * n
    msgs: list[Any] = [None] * n
    for i, (m, req, res) in enumerate(zip(models, requests, results, strict=True)):
        if req is None or res is None or isinstance(res, ApiError):
            msgs[i] = error_text(res.message if isinstance(res, ApiError) else errors.get(m, "no data"))
            continue
        use_layer, h, _q, grid, note = req
        shape = shape_of(shapes[m])
        try:
            uri: str | None = image_uri(ctx_, image, shape)
        except (ApiError, OSError, ValueError) as exc:
            uri = None
            note = f"cannot show the image: {exc}"
        msgs[i] = html.Div(note, className="note") if note else None
        figures[i] = attention_figure(
            title=title_of(m, shapes[m].get("family", "other"), colours.get(m)) + " · 2nd query",
            image_uri=uri, amap=res["map"], grid=grid, patch=shape.patch_size, layer=use_layer, head=h,
            rc=query.patch(grid), opacity=DEFAULT_OPACITY if opacity is None else float(opacity),
            image=image, model=m, rollout=rollout,
        )  # fmt: skip
    return figures, msgs, {}


def first_grid(meta: dict[str, Any] | None) -> tuple[int, int] | None:
    """The grid of the first column's model (the row/col boxes name its patches)."""
    shapes = (meta or {}).get("models", {})
    for m in (meta or {}).get("for") or []:
        if m in shapes:
            return int(shapes[m]["grid"][0]), int(shapes[m]["grid"][1])
    return None


def second_query(
    row: Any,
    col: Any,
    _cls: int | None,
    _off: int | None,
    clicks: list[Any] | None,
    store: Any,
    meta: dict[str, Any] | None,
) -> Any:
    """(row, col, CLS, Off, clicks on the second row, the store, the shapes) -> [store, row, col]: the second
    query from its controls or a click on its row; the boxes follow the store (a permalink, a Shift+click)."""
    trig = ctx.triggered_id
    grid = first_grid(meta)

    def boxes(q: Query | None) -> tuple[Any, Any]:
        rc = q.patch(grid) if q is not None and grid is not None else None
        return (None, None) if rc is None else rc

    if trig == f"{Q2}-off":
        return None, None, None
    if trig == f"{Q2}-cls":
        return "cls", None, None
    if isinstance(trig, dict) and trig.get("type") == "att-graph2":
        i = int(trig.get("index", -1))
        models = (meta or {}).get("for") or []
        shapes = (meta or {}).get("models", {})
        cd = (clicks or [None] * (i + 1))[i] if 0 <= i < len(clicks or []) else None
        if not cd or not cd.get("points") or i >= len(models) or models[i] not in shapes:
            raise PreventUpdate
        shape = shapes[models[i]]
        g, patch = (int(shape["grid"][0]), int(shape["grid"][1])), int(shape["patch_size"])
        point = cd["points"][0]
        r = min(max(0, int(float(point["y"]) // patch)), g[0] - 1)
        c = min(max(0, int(float(point["x"]) // patch)), g[1] - 1)
        q = Query.at_patch(r, c, g)
        return (q.to_store(), *boxes(q))
    if trig in (f"{Q2}-row", f"{Q2}-col"):
        if grid is None:
            raise PreventUpdate
        if row in (None, "") and col in (None, ""):
            return None, None, None
        r = min(max(0, int(float(row))) if row not in (None, "") else grid[0] // 2, grid[0] - 1)
        c = min(max(0, int(float(col))) if col not in (None, "") else grid[1] // 2, grid[1] - 1)
        now = Query.second(store)
        if now is not None and now.patch(grid) == (r, c):
            raise PreventUpdate  # the boxes only caught up with the store
        return (Query.at_patch(r, c, grid).to_store(), r, c)
    return (no_update, *boxes(Query.second(store)))  # set from outside, or new models: the boxes follow


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


def prefix_list(body: dict[str, Any]) -> html.Div:
    """The prefix tokens' norms beside a norm map, each also as a multiple of the median patch norm."""
    median = float(body["median"])
    items = [
        html.Li(
            [
                html.B(str(p["label"])),
                f" {float(p['norm']):.4g}",
                html.Span(
                    f" ({float(p['norm']) / median:.2f} × median)" if median > 0 else "",
                    className="hint-small",
                ),
            ]  # fmt: skip
        )
        for p in body["prefix"]
    ]
    if not items:
        return html.Div("No prefix tokens (no CLS, no registers).", className="hint norms-side")
    return html.Div(
        [html.Div("Prefix tokens", className="ctl-label"), html.Ul(items, className="norms-prefix")],
        className="norms-side",
    )


def draw_norms(ctx_: AppContext, is_open: bool | None, meta: dict[str, Any] | None, layer: int | None) -> Any:
    """Per model, the token-norm map at the chosen block (the output of block K, clamped to each model's
    depth) with its prefix tokens' norms beside it, while the section is open."""
    if not is_open:
        raise PreventUpdate
    image = (meta or {}).get("image")
    shapes: dict[str, Any] = (meta or {}).get("models", {})
    models = [m for m in (meta or {}).get("for") or [] if m in shapes]
    if not image or not models:
        return html.Div("Add an image and pick models to see their token norms.", className="hint")
    layers = {m: min(max(1, int(layer or 1)), int(shapes[m]["layers"])) for m in models}
    client = ctx_.client
    results = client.parallel([partial(client.token_norms, image, m, layers[m]) for m in models])
    colours = model_colours(models, {m: shapes[m].get("family", "other") for m in models})
    cells = []
    for i, (m, res) in enumerate(zip(models, results, strict=True)):
        title = title_of(m, shapes[m].get("family", "other"), colours.get(m))
        if isinstance(res, ApiError):
            cells.append(html.Div([html.B(m), error_text(res.message)], className="norms-col"))
            continue
        fig = norms_figure(
            title=title, body=res, patch=int(shapes[m]["patch_size"]), filename=norms_name(m, layers[m])
        )
        graph = dcc.Graph(
            id=graph_id("att-norms-graph", i),
            figure=fig,
            config=graph_config(None),
            style={"height": "320px"},
        )
        cells.append(html.Div([graph, prefix_list(res)], className="norms-col"))
    return cells


def export_numbers(
    ctx_: AppContext,
    meta: dict[str, Any] | None,
    layer: int,
    head: Any,
    rollout_raw: Any,
    query_raw: Any,
    query2_raw: Any,
    models_raw: list[str] | None,
    images_raw: dict[str, Any] | None,
) -> Any:
    """The maps' numbers (both rows when there is a second query) as JSON or CSV (the button says which)."""
    image = (meta or {}).get("image")
    shapes = (meta or {}).get("models", {})
    if not image or not shapes:
        raise PreventUpdate
    rollout = is_rollout(rollout_raw)
    query, query2 = Query.from_store(query_raw), Query.second(query2_raw)
    out: dict[str, Any] = {
        "image": image,
        "image_name": clean_images(images_raw)["names"].get(image),
        "rollout": rollout,
        "query": query.to_param(),
        "query2": None if query2 is None else query2.to_param(),
    }
    models = [m for m in clean_models(models_raw) if m in shapes]
    rows = [("models", query)] + ([("second_query", query2)] if query2 is not None else [])
    for key, q in rows:
        requests = requests_of(shapes, models, layer, head, q, rollout)
        out[key] = {}
        for m, req, res in zip(
            models, requests, fetch_maps(ctx_, image, models, requests, rollout), strict=True
        ):
            if req is None or res is None or isinstance(res, ApiError):
                out[key][m] = {"error": res.message if isinstance(res, ApiError) else "no data"}
                continue
            out[key][m] = {
                "layer": req[0], "head": req[1], "rollout": rollout, "query": req[2], "grid": list(req[3]),
                "patch_size": shapes[m]["patch_size"], "map": res["map"],
            }  # fmt: skip
    if ctx.triggered_id == "att-exp-json":
        return dcc.send_string(json.dumps(out, indent=1), "vitscope-attention.json")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "layer", "head", "rollout", "query", "row", "col", "attention"])
    for key, _q in rows:
        for m, d in out[key].items():
            for r, row in enumerate(d.get("map") or []):
                for c, v in enumerate(row):
                    writer.writerow([m, d["layer"], d["head"], d["rollout"], d["query"], r, c, v])
    return dcc.send_string(buf.getvalue(), "vitscope-attention.csv")


def register(app: Dash, ctx_: AppContext) -> None:
    app.callback(
        Output("att-grid", "children"),
        Output("att-grid2", "children"),
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
        Input(ROLLOUT, "value"),
        State(QUERY_STORE, "data"),
        State("ctl-opacity", "value"),
        State("att-drawn", "data"),
    )(lambda *args: draw(ctx_, *args))
    app.callback(
        Output(graph_id("att-graph2", ALL), "figure"),
        Output(graph_id("att-msg2", ALL), "children"),
        Output("att-row2", "style"),
        Input(META_STORE, "data"),
        Input(COLS, "data"),
        Input("ctl-layer", "value"),
        Input("ctl-head", "value"),
        Input(ROLLOUT, "value"),
        Input(QUERY2_STORE, "data"),
        State("ctl-opacity", "value"),
    )(lambda *args: draw_second(ctx_, *args))
    app.callback(
        Output(QUERY2_STORE, "data"),
        Output(f"{Q2}-row", "value"),
        Output(f"{Q2}-col", "value"),
        Input(f"{Q2}-row", "value"),
        Input(f"{Q2}-col", "value"),
        Input(f"{Q2}-cls", "n_clicks"),
        Input(f"{Q2}-off", "n_clicks"),
        Input(graph_id("att-graph2", ALL), "clickData"),
        Input(QUERY2_STORE, "data"),
        Input(META_STORE, "data"),
        prevent_initial_call=True,
    )(second_query)
    app.callback(
        Output(graph_id("att-heads-graph", ALL), "figure"),
        Input("att-heads-req", "data"),
        State(COLS, "data"),
    )(lambda req, models: draw_heads(ctx_, req, models))
    register_disclosure(app, "att-heads", HEADS_LABEL)
    app.callback(
        Output("att-norms-grid", "children"),
        Input("att-norms-open", "data"),
        Input(META_STORE, "data"),
        Input("ctl-layer", "value"),
    )(lambda is_open, meta, layer: draw_norms(ctx_, is_open, meta, layer))
    register_disclosure(app, "att-norms", NORMS_LABEL)
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
        State(ROLLOUT, "value"),
        State(QUERY_STORE, "data"),
        State(QUERY2_STORE, "data"),
        State(MDL_STORE, "data"),
        State(IMG_STORE, "data"),
        prevent_initial_call=True,
    )(lambda _j, _c, *state: export_numbers(ctx_, *state))
