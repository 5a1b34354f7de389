"""Compare frequency responses: the 2D log-amplitude spectrum of each model's tokens at the chosen depth
(``GET /images/{id}/spectrum``), all on one colour scale, and below it the same answers' Δ log amplitude along
the half-diagonal, a line per model."""

from __future__ import annotations

from functools import partial
from typing import Any

from dash import Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from app.api_client import ApiClient, ApiError
from app.claims import spectrum_sentence
from app.components.common import (
    IMG_STORE,
    LIVE_NOTES,
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
from app.exports import spectrum_delta_name, spectrum_files, spectrum_name
from app.figures.spectrum import delta_figure, spectrum_figure
from app.figures.style import model_colours
from app.state import clean_models

STATE_LABELS = {"out": "block output x_out", "attn": "after attention x_attn"}


def layout() -> html.Section:
    return html.Section(
        [
            html.Div(
                [html.H2("5 · Frequency response", id="spc-heading"), export_bar("spc", label="the spectra")],
                className="panel-head",
            ),
            radio_group("spc-state", "Tokens", [(k, v) for k, v in STATE_LABELS.items()], "out"),
            html.Div(id="spc-msg"),
            panel_graph("spc-graph", 380, "vitscope-spectrum"),
            panel_graph("spc-delta-graph", 340, "vitscope-spectrum-delta"),
            learn("spectrum"),
        ],
        className="panel",
        id="spc-panel",
        **aria(labelledby="spc-heading"),
    )


def fetch(
    client: ApiClient, meta: dict[str, Any], layer: int, state: str, models: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, int], list[str]]:
    """Each model's spectrum answer at ``layer`` (clipped to its depth: ``map``, the half-diagonal ``delta``
    and ``high_frequency_delta``): ``(answers, depths, errors)``."""
    image = meta["image"]
    shapes = meta.get("models", {})
    models = [m for m in models if m in shapes]
    depths = {m: min(max(1, int(layer or 1)), int(shapes[m]["layers"])) for m in models}
    results = client.parallel([partial(client.spectrum, image, m, depths[m], state) for m in models])
    spectra, errors = {}, []
    for m, res in zip(models, results, strict=True):
        if isinstance(res, ApiError):
            errors.append(f"{m}: {res.message}")
        else:
            spectra[m] = res
    return spectra, depths, errors


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client

    @app.callback(
        Output("spc-graph", "figure"),
        Output("spc-delta-graph", "figure"),
        Output("spc-msg", "children"),
        Output(LIVE_NOTES["spectrum"], "children"),
        Input(META_STORE, "data"),
        Input("ctl-layer", "value"),
        Input("spc-state", "value"),
        State(MDL_STORE, "data"),
    )
    def draw(meta: dict[str, Any] | None, layer: int, state: str, models: list[str] | None) -> Any:
        if not meta or not meta.get("image") or not models:
            return (
                {"data": [], "layout": {"height": 380}},
                {"data": [], "layout": {"height": 340}},
                html.Div("Spectra appear once there is an image and a model.", className="hint"),
                None,
            )
        chosen = clean_models(models)
        spectra, depths, errors = fetch(client, meta, layer, state, chosen)
        titles = {m: f"{m} · depth {depths[m]}" for m in spectra}
        fig = spectrum_figure(
            spectra,
            titles=titles,
            subtitle=f"{STATE_LABELS.get(state, state)}, block {layer}; centre = zero frequency; "
            "one shared colour scale; the square marks the bin Δ log amplitude reads",
            filename=spectrum_name(state, layer),
        )
        families = {m: str(s.get("family", "")) for m, s in meta.get("models", {}).items()}
        delta = delta_figure(
            spectra,
            colours=model_colours(chosen, families),  # as the other panels colour them
            families=families,
            titles={m: f"{m} · depth {depths[m]}" for m in spectra},
            subtitle=f"{STATE_LABELS.get(state, state)}, block {layer} (the maps above); delta(m) = "
            "L(m, m) − L(0, 0), so bin 0 is 0; ◇ marks the last bin",
            filename=spectrum_delta_name(state, layer),
        )
        live = spectrum_sentence(spectra, families, depths)
        return fig, delta, error_list(errors), html.P(live) if live else None

    register_image_export(app, "spc")

    @app.callback(
        Output("spc-download", "data"),
        Input("spc-exp-json", "n_clicks"),
        Input("spc-exp-csv", "n_clicks"),
        State(META_STORE, "data"),
        State("ctl-layer", "value"),
        State("spc-state", "value"),
        State(MDL_STORE, "data"),
        State(IMG_STORE, "data"),
        prevent_initial_call=True,
    )
    def export_numbers(
        _j: Any,
        _c: Any,
        meta: dict[str, Any] | None,
        layer: int,
        state: str,
        models: list[str] | None,
        images: dict[str, Any] | None,
    ) -> Any:
        if not meta or not meta.get("image") or not models:
            raise PreventUpdate
        spectra, depths, errors = fetch(client, meta, layer, state, clean_models(models))
        files = spectrum_files(
            spectra, depths=depths, state=state, layer=layer, image=meta["image"], errors=errors
        )
        f = files[0] if ctx.triggered_id == "spc-exp-json" else files[1]
        return dcc.send_string(str(f.data), f.path)
