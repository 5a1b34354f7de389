"""The address bar holds the view (``app.state.ViewState``): images and their names, models, layer, head,
query, the second query, the rollout toggle, opacity, the spectrum's tokens, the projection and the open
panels.

Reading (``restore``): when the page opens, on Back and Forward (``dcc.Location`` hears ``popstate``), and for
the "Try the demo" preset (on the first visit, and on its button). Writing: the server turns the view into its
query string (``ViewState.to_search``, the one definition); the page's script (``vitscope.writeUrl``) puts
it in the history, one entry per view change (``pushState``), so Back and Forward step through the views.
"""

from __future__ import annotations

from typing import Any

from dash import ClientsideFunction, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app.components.attention import QUERY2_STORE, ROLLOUT, is_rollout, rollout_value
from app.components.common import IMG_STORE, MDL_CATALOG, MDL_STORE, QUERY_STORE, URL_READY
from app.components.images import demo_images
from app.components.models import check_id, demo_models
from app.context import AppContext
from app.figures.style import FAMILIES, family_key
from app.state import DEFAULT_OPACITY, PANELS, Query, ViewState, clean_images, clean_models

SEARCH_STORE = "url-search"  # the view's query string, as the server writes it
VISITED = "url-visited"  # in the browser's localStorage: the demo preset loads only on the first visit
# Disclosures the link can open: (panel name in the link, the disclosure's prefix).
DISCLOSURES = (("heads", "att-heads"), ("tokens", "tok"), ("norms", "att-norms"))
assert tuple(p for p, _ in DISCLOSURES) == PANELS
# What the view is made of, in the order ``view_of`` takes it.
VIEW_STATES = (
    State(IMG_STORE, "data"),
    State(MDL_STORE, "data"),
    State("ctl-layer", "value"),
    State("ctl-head", "value"),
    State(QUERY_STORE, "data"),
    State(QUERY2_STORE, "data"),
    State(ROLLOUT, "value"),
    State("ctl-opacity", "value"),
    State("spc-state", "value"),
    State("tok-method", "value"),
    *[State(f"{prefix}-open", "data") for _, prefix in DISCLOSURES],
)


def layout() -> html.Div:
    return html.Div(
        [
            dcc.Location(id="url-in", refresh=False),
            dcc.Store(id=URL_READY, data=False),
            dcc.Store(id=SEARCH_STORE),
            dcc.Store(id=VISITED, storage_type="local"),
        ]
    )


def view_of(
    images_raw: Any,
    models_raw: Any,
    layer: int | None,
    head: Any,
    query: Any,
    query2: Any,
    rollout: Any,
    opacity: float | None,
    spectrum: str | None,
    projection: str | None,
    *open_flags: bool | None,
) -> ViewState:
    """The view the page shows, from its stores and controls."""
    images = clean_images(images_raw)
    ids = images["ids"]
    names = [images["names"].get(i, "") for i in ids]
    state = ViewState.from_search(
        ViewState(
            images=ids,
            names=names if any(names) else [],
            active=ids.index(images["active"]) if images["active"] in ids else 0,
            models=clean_models(models_raw),
            layer=int(layer) if layer is not None else None,
            head=str(head if head is not None else "mean"),
            query=Query.from_store(query),
            query2=Query.second(query2),
            rollout=is_rollout(rollout),
            opacity=round(float(opacity if opacity is not None else DEFAULT_OPACITY), 2),
            spectrum=spectrum or "out",
            projection=projection or "pca",
            panels=[p for (p, _), flag in zip(DISCLOSURES, open_flags, strict=True) if flag],
        ).to_search()
    )  # through the query string: exactly what a reader of the link gets
    return state


def restore(
    ctx_: AppContext,
    search: str | None,
    catalog: list[dict[str, Any]] | None,
    _demo_clicks: int | None,
    visited: bool | None,
    ready: bool | None,
    *toggles_and_view: Any,
) -> Any:
    """The view from the address (on opening, Back/Forward) or the demo preset (first visit, its button)."""
    toggle_clicks = toggles_and_view[: len(DISCLOSURES)]
    trigger = ctx.triggered_id
    state = ViewState.from_search(search)
    if ready and trigger == MDL_CATALOG:
        raise PreventUpdate  # the model list was read again (after a download): the view stays
    if ready and trigger == "url-in" and state == view_of(*toggles_and_view[len(DISCLOSURES) :]):
        raise PreventUpdate  # the address caught up with the view (vitscope.writeUrl)
    # The demo preset: on its button, or on a first visit to the bare address (a link always wins).
    demo = trigger == "img-demo" or (not visited and not (search or "").strip("?"))
    n_out = 2 + len(FAMILIES) + 11 + len(DISCLOSURES)
    if not demo and not state.images and not state.models and state.layer is None:
        return *([no_update] * (n_out - 3)), True, no_update, True
    if catalog is None:
        raise PreventUpdate  # wait for the model list
    known = {m["id"]: m for m in catalog}
    note: Any = None
    if demo:
        image_store, errors = demo_images(ctx_)
        models = demo_models(catalog)
        state = ViewState(images=image_store["ids"], models=models)
        if errors:
            note = html.Div(["Some demo images could not be added: ", "; ".join(errors)], className="note")
    else:
        image_store = {
            "ids": state.images,
            "names": {i: n for i, n in zip(state.images, state.names, strict=False) if n},
            "active": state.images[min(state.active, len(state.images) - 1)] if state.images else None,
        }
        models = [m for m in state.models if m in known and known[m].get("available", True)]
        allowed = ctx_.allowed_models() if ctx_.class_mode else None
        if allowed is not None:
            models = [m for m in models if m in allowed]
        dropped = [m for m in state.models if m not in models]
        if dropped:
            note = html.Div(
                f"The link names models this server cannot run: {', '.join(dropped)}.", className="note"
            )
    groups = [[m for m in models if family_key(known[m].get("family")) == f] for f in FAMILIES]
    toggles = [
        (clicks or 0) + 1 if ((clicks or 0) % 2 == 1) != (panel in state.panels) else no_update
        for (panel, _), clicks in zip(DISCLOSURES, toggle_clicks, strict=True)
    ]
    return (
        clean_images(image_store),
        models,
        *groups,
        state.layer if state.layer is not None else no_update,
        state.head,
        state.query.to_store(),
        None if state.query2 is None else state.query2.to_store(),
        rollout_value(state.rollout),
        state.opacity,
        state.spectrum,
        state.projection,
        *toggles,
        True,
        note,
        True,
    )


def register(app: Dash, ctx_: AppContext) -> None:
    app.callback(
        Output(IMG_STORE, "data", allow_duplicate=True),
        Output(MDL_STORE, "data", allow_duplicate=True),
        *[Output(check_id(f), "value", allow_duplicate=True) for f in FAMILIES],
        Output("ctl-layer", "value"),
        Output("ctl-head", "value"),
        Output(QUERY_STORE, "data", allow_duplicate=True),
        Output(QUERY2_STORE, "data", allow_duplicate=True),
        Output(ROLLOUT, "value"),
        Output("ctl-opacity", "value"),
        Output("spc-state", "value"),
        Output("tok-method", "value"),
        *[Output(f"{prefix}-toggle", "n_clicks") for _, prefix in DISCLOSURES],
        Output(URL_READY, "data"),
        Output("url-note", "children"),
        Output(VISITED, "data"),
        Input("url-in", "search"),
        Input(MDL_CATALOG, "data"),
        Input("img-demo", "n_clicks"),
        State(VISITED, "data"),
        State(URL_READY, "data"),
        *[State(f"{prefix}-toggle", "n_clicks") for _, prefix in DISCLOSURES],
        *VIEW_STATES,
        prevent_initial_call="initial_duplicate",
    )(lambda *args: restore(ctx_, *args))

    def search_of(ready: bool | None, *view: Any) -> str:
        if not ready:
            raise PreventUpdate
        return view_of(*view).to_search()

    app.callback(
        Output(SEARCH_STORE, "data"),
        Input(URL_READY, "data"),
        *[Input(s.component_id, s.component_property) for s in VIEW_STATES],
    )(search_of)
    app.clientside_callback(
        ClientsideFunction("vitscope", "writeUrl"),
        Output("ctl-permalink", "value"),
        Input(SEARCH_STORE, "data"),
        prevent_initial_call=True,
    )
