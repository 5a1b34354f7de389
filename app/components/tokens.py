"""Tokens (A5): PCA or t-SNE of the patch tokens of the image set at the chosen block, one colour per image
(``POST /sets``, then ``GET /sets/{id}/embeddings``), and under it the same answers' singular values as a
log-y curve per model. Computed only while the panel is open: t-SNE takes seconds."""

from __future__ import annotations

from functools import partial
from typing import Any

from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app.api_client import ApiClient, ApiError
from app.components.common import (
    IMG_STORE,
    MDL_STORE,
    META_STORE,
    aria,
    disclosure,
    error_list,
    export_bar,
    learn,
    panel_graph,
    radio_group,
    register_disclosure,
    register_image_export,
)
from app.context import AppContext
from app.exports import singular_values_name, tokens_files, tokens_name
from app.figures.style import model_colours
from app.figures.tokens import singular_values_figure, tokens_figure
from app.state import clean_models

TOKENS_LABEL = "Show the patch tokens of the set in 2D (computed on demand)"


def layout() -> html.Section:
    return html.Section(
        [
            html.Div(
                [html.H2("6 · Tokens", id="tok-heading"), export_bar("tok", label="the token projections")],
                className="panel-head",
            ),
            disclosure(
                "tok",
                TOKENS_LABEL,
                [
                    radio_group(
                        "tok-method",
                        "Projection",
                        [("pca", "PCA (fast)"), ("tsne", "t-SNE (perplexity 20, seconds)")],
                        "pca",
                    ),
                    html.Div(id="tok-msg"),
                    panel_graph("tok-graph", 420, "vitscope-tokens"),
                    panel_graph("tok-sv-graph", 340, "vitscope-singular-values"),
                    learn("tokens"),
                ],
                class_name="",
            ),
        ],
        className="panel",
        id="tok-panel",
        **aria(labelledby="tok-heading"),
    )


def fetch(
    client: ApiClient,
    meta: dict[str, Any],
    images: dict[str, Any],
    layer: int,
    method: str,
    models: list[str],
) -> tuple[dict[str, dict[str, Any]], dict[str, int], list[str]]:
    """Each model's 2D token projection of the set at ``layer``: ``(per_model, layers, errors)``; ApiError
    when the set cannot be made."""
    ids = list(images.get("ids", []))
    shapes = meta.get("models", {})
    models = [m for m in models if m in shapes]
    set_id = client.create_set(ids)
    layers = {m: min(max(1, int(layer or 1)), int(shapes[m]["layers"])) for m in models}
    results = client.parallel([partial(client.embeddings, set_id, m, layers[m], method) for m in models])
    out, errors = {}, []
    for m, res in zip(models, results, strict=True):
        if isinstance(res, ApiError):
            errors.append(f"{m}: {res.message}")
        else:
            out[m] = res
    return out, layers, errors


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client
    register_disclosure(app, "tok", TOKENS_LABEL)

    @app.callback(
        Output("tok-graph", "figure"),
        Output("tok-sv-graph", "figure"),
        Output("tok-msg", "children"),
        Input("tok-open", "data"),
        Input(META_STORE, "data"),
        Input("ctl-layer", "value"),
        Input("tok-method", "value"),
        State(IMG_STORE, "data"),
        State(MDL_STORE, "data"),
    )
    def draw(
        is_open: bool,
        meta: dict[str, Any] | None,
        layer: int,
        method: str,
        images: dict[str, Any] | None,
        models: list[str] | None,
    ) -> Any:
        if not is_open:
            raise PreventUpdate
        ids = (images or {}).get("ids", [])
        if not meta or not ids or not models:
            return no_update, no_update, html.Div("Add images and pick models first.", className="hint")
        chosen = clean_models(models)
        try:
            per_model, layers, errors = fetch(client, meta, images or {}, layer, method, chosen)
        except ApiError as exc:
            return (
                no_update,
                no_update,
                html.Div(f"cannot make a set of the images: {exc.message}", className="error-text"),
            )
        names_map = (images or {}).get("names", {})
        names = [names_map.get(i) or i[:8] for i in ids]
        titles = {m: f"{m} · block {layers[m]}" for m in per_model}
        fig = tokens_figure(
            per_model,
            image_names=names,
            titles=titles,
            subtitle=f"{'PCA' if method == 'pca' else 't-SNE'} of block-output patch tokens "
            f"(x_out, prefix dropped), {len(ids)} image(s), one colour per image",
            filename=tokens_name(method, layer),
        )
        families = {m: str(s.get("family", "")) for m, s in meta.get("models", {}).items()}
        spectra = singular_values_figure(
            per_model,
            colours=model_colours(chosen, families),  # as the other panels colour them
            families=families,
            titles=titles,
            subtitle="each image's raw block-output patch tokens (x_out, prefix dropped, not centred) as a "
            "patches × channels matrix; σ<sub>i</sub> / σ<sub>1</sub> per image, "
            f"mean over {len(ids)} image(s)",
            filename=singular_values_name(layer),
        )
        hint = (
            None
            if len(ids) > 1
            else html.Div("Add more images: the clusters tell images apart.", className="hint")
        )
        msg = error_list(errors) or hint
        return fig, spectra, msg

    register_image_export(app, "tok")

    @app.callback(
        Output("tok-download", "data"),
        Input("tok-exp-json", "n_clicks"),
        Input("tok-exp-csv", "n_clicks"),
        State(META_STORE, "data"),
        State("ctl-layer", "value"),
        State("tok-method", "value"),
        State(IMG_STORE, "data"),
        State(MDL_STORE, "data"),
        prevent_initial_call=True,
    )
    def export_numbers(
        _j: Any,
        _c: Any,
        meta: dict[str, Any] | None,
        layer: int,
        method: str,
        images: dict[str, Any] | None,
        models: list[str] | None,
    ) -> Any:
        if not meta or not (images or {}).get("ids") or not models:
            raise PreventUpdate
        try:
            per_model, layers, errors = fetch(client, meta, images or {}, layer, method, clean_models(models))
        except ApiError as exc:
            per_model, layers, errors = {}, {}, [exc.message]
        files = tokens_files(
            per_model,
            layers=layers,
            layer=layer,
            method=method,
            image_ids=(images or {}).get("ids", []),
            errors=errors,
        )
        f = files[0] if ctx.triggered_id == "tok-exp-json" else files[1]
        return dcc.send_string(str(f.data), f.path)
