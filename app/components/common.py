"""Small pieces every panel uses: the Learn note, the export bar, error text, shared store ids."""

from __future__ import annotations

from typing import Any

from dash import ClientsideFunction, Dash, Input, Output, State, dcc, html

from app.context import help_text
from app.figures.style import graph_config

# Shared state (dcc.Store ids), created once by app.main.
IMG_STORE = "img-store"  # {"ids": [sha...], "names": {sha: name}, "active": sha | None}
MDL_CATALOG = "mdl-catalog"  # the API's model list
MDL_STORE = "mdl-store"  # selected model ids, in column order
META_STORE = "an-meta"  # {"image", "models": {id: shape + family}, "errors": {id: message}}
QUERY_STORE = "ctl-query"  # "cls" | {"y": frac, "x": frac}
URL_READY = "url-ready"  # True once the permalink has been read


def aria(**attrs: str) -> dict[str, Any]:
    """ARIA attributes for a Dash component: ``aria(label="x")`` -> ``{"aria-label": "x"}``."""
    return {f"aria-{k}": v for k, v in attrs.items()}


# The Learn notes that end with what the selected models show (computed from their numbers): note -> the id
# of that part, filled by a callback (curves and attention: app.components.claims; spectrum and modern:
# their panels).
LIVE_NOTES: dict[str, str] = {
    "curves": "crv-live",
    "spectrum": "spc-live",
    "attention": "att-live",
    "modern": "mod-live",
}


def learn(name: str, summary: str = "Learn: what this shows and what the paper found") -> html.Details:
    """The teaching note ``help/<name>.md`` (what the paper found, with its setting), and for the notes in
    ``LIVE_NOTES`` a part below it with what the selected models show."""
    children: list[Any] = [html.Summary(summary), dcc.Markdown(help_text(name), className="learn-text")]
    if name in LIVE_NOTES:
        children += [
            html.H4("What your models show", className="learn-live-title"),
            html.Div(id=LIVE_NOTES[name], className="learn-live"),
        ]
    return html.Details(children, className="learn")


def disclosure(prefix: str, label: str, children: list[Any], *, class_name: str = "subpanel") -> html.Div:
    """A button that shows and hides a part of the page; ``{prefix}-open`` (a store) says whether it is open.

    (``html.Details`` does not report its ``open`` state back to Dash, so panels computed on demand use this.)
    """
    return html.Div(
        [
            html.Button(
                ["▸ ", label],
                id=f"{prefix}-toggle",
                className="disclosure",
                n_clicks=0,
                **aria(expanded="false", controls=f"{prefix}-body"),
            ),
            html.Div(children, id=f"{prefix}-body", style={"display": "none"}),
            dcc.Store(id=f"{prefix}-open", data=False),
            dcc.Store(id=f"{prefix}-label", data=label),
        ],
        className=class_name,
    )


def register_disclosure(app: Dash, prefix: str, label: str) -> None:
    """Open and close a ``disclosure`` in the browser (no round trip)."""
    del label  # the disclosure's own store holds it
    app.clientside_callback(
        ClientsideFunction("vitscope", "disclose"),
        Output(f"{prefix}-body", "style"),
        Output(f"{prefix}-toggle", "aria-expanded"),
        Output(f"{prefix}-open", "data"),
        Output(f"{prefix}-toggle", "children"),
        Input(f"{prefix}-toggle", "n_clicks"),
        State(f"{prefix}-label", "data"),
        prevent_initial_call=True,
    )


def export_bar(prefix: str, *, label: str) -> html.Div:
    """PNG and SVG of the panel's figures (drawn by Plotly in the browser) and its numbers as JSON and CSV."""
    return html.Div(
        [
            html.Span("Export", className="export-label"),
            html.Button("PNG", id=f"{prefix}-exp-png", className="btn btn-small", title=f"{label} as PNG"),
            html.Button("SVG", id=f"{prefix}-exp-svg", className="btn btn-small", title=f"{label} as SVG"),
            html.Button(
                "JSON", id=f"{prefix}-exp-json", className="btn btn-small", title=f"numbers of {label}"
            ),
            html.Button(
                "CSV", id=f"{prefix}-exp-csv", className="btn btn-small", title=f"numbers of {label}"
            ),
            dcc.Download(id=f"{prefix}-download"),
            dcc.Store(id=f"{prefix}-exp-done"),
        ],
        className="export-bar",
        role="group",
        **aria(label=f"Export {label}"),
    )


def error_text(message: str | None, **kwargs: Any) -> html.Div | None:
    if not message:
        return None
    return html.Div(message, className="error-text", role="alert", **kwargs)


def error_list(errors: list[str]) -> html.Div | None:
    """One alert holding every error message, or nothing."""
    if not errors:
        return None
    return html.Div([html.Div(e) for e in errors], className="error-text", role="alert")


def register_image_export(app: Dash, prefix: str) -> None:
    """PNG / SVG export of every figure in ``<prefix>-panel``, drawn by Plotly in the browser and named by
    each figure's ``layout.meta.filename`` (written by ``app.figures``; the page's script keeps an attention
    map's current when it redraws a clicked query)."""
    app.clientside_callback(
        ClientsideFunction("vitscope", "exportImages"),
        Output(f"{prefix}-exp-done", "data"),
        Input(f"{prefix}-exp-png", "n_clicks"),
        Input(f"{prefix}-exp-svg", "n_clicks"),
        State(f"{prefix}-panel", "id"),
        prevent_initial_call=True,
    )


def loading(child: Any, **kwargs: Any) -> dcc.Loading:
    """A spinner that appears only for work slower than a moment, keeping the old view visible under it."""
    return dcc.Loading(
        child,
        type="circle",
        delay_show=250,
        overlay_style={"visibility": "visible", "opacity": 0.55, "filter": "blur(0.5px)"},
        color="#1c62c4",
        **kwargs,
    )


def radio_group(id_: str, label: str, options: list[tuple[str, str]], value: str) -> html.Div:
    """A labelled row of radio buttons (``options`` as (value, label)), reachable by keyboard as one group."""
    return html.Div(
        [
            html.Span(label, className="ctl-label", id=f"{id_}-label"),
            dcc.RadioItems(
                id=id_,
                options=[{"label": text, "value": val} for val, text in options],
                value=value,
                inline=True,
                className="radio",
            ),
        ],
        className="panel-tools",
        role="group",
        **aria(labelledby=f"{id_}-label"),
    )


def panel_graph(id_: str, height: int, filename: str) -> dcc.Loading:
    """An empty graph of a fixed height behind a loading indicator; exports are named ``filename``."""
    return loading(
        dcc.Graph(
            id=id_,
            figure={"data": [], "layout": {"height": height}},
            style={"height": f"{height}px"},
            responsive=True,
            config=graph_config(filename),
        )
    )
