"""The URL holds the view (images, active image, models, layer, head, query; see ``app.state``).

Reading: once, when the page opens (and the model list is known, to tick the right family boxes). Writing: in
the browser with ``history.replaceState`` (``frontend_assets/vitscope.js``), so moving a slider neither
reloads the page nor floods the back button.
"""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app.components.common import IMG_STORE, MDL_CATALOG, MDL_STORE, QUERY_STORE, URL_READY
from app.components.models import check_id
from app.context import AppContext
from app.figures.style import FAMILIES, family_key
from app.state import ViewState


def layout() -> html.Div:
    return html.Div([dcc.Location(id="url-in", refresh=False), dcc.Store(id=URL_READY, data=False)])


def register(app: Dash, ctx_: AppContext) -> None:
    del ctx_

    @app.callback(
        Output(IMG_STORE, "data", allow_duplicate=True),
        Output(MDL_STORE, "data", allow_duplicate=True),
        *[Output(check_id(f), "value", allow_duplicate=True) for f in FAMILIES],
        Output("ctl-layer", "value"),
        Output("ctl-head", "value"),
        Output(QUERY_STORE, "data", allow_duplicate=True),
        Output(URL_READY, "data"),
        Output("url-note", "children"),
        Input("url-in", "search"),
        Input(MDL_CATALOG, "data"),
        State(URL_READY, "data"),
        prevent_initial_call="initial_duplicate",
    )
    def restore(search: str | None, catalog: list[dict[str, Any]] | None, ready: bool | None) -> Any:
        if ready:
            raise PreventUpdate
        state = ViewState.from_search(search)
        n_out = 2 + len(FAMILIES) + 3
        if not state.images and not state.models and state.layer is None:
            return *([no_update] * n_out), True, no_update
        if catalog is None and state.models:
            raise PreventUpdate  # wait for the model list
        known = {m["id"]: m for m in catalog or []}
        models = [m for m in state.models if m in known and known[m].get("available", True)]
        dropped = [m for m in state.models if m not in models]
        groups: list[list[str]] = [
            [m for m in models if family_key(known[m].get("family")) == f] for f in FAMILIES
        ]
        images = (
            {
                "ids": state.images,
                "names": {},
                "active": state.images[min(state.active, len(state.images) - 1)],
            }
            if state.images
            else no_update
        )
        note = (
            html.Div(f"The link names models this server cannot run: {', '.join(dropped)}.", className="note")
            if dropped
            else None
        )
        return (
            images,
            models,
            *groups,
            state.layer if state.layer is not None else no_update,
            state.head,
            state.query.to_store(),
            True,
            note,
        )

    app.clientside_callback(
        "function() { return window.vitscope.writeUrl.apply(null, arguments); }",
        Output("ctl-permalink", "value"),
        Input(IMG_STORE, "data"),
        Input(MDL_STORE, "data"),
        Input("ctl-layer", "value"),
        Input("ctl-head", "value"),
        Input(QUERY_STORE, "data"),
        Input(URL_READY, "data"),
    )
