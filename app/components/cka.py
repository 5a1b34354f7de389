"""Model similarity: linear CKA between every depth of two of the selected models, over the set of shown
images (``POST /sets``, then ``GET /sets/{id}/cka``, a job), raw or calibrated by its permutation null.
Computed only while the disclosure is open (it reads every image's tokens at every depth of both models)."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from app.api_client import ApiClient, ApiError
from app.components.common import (
    IMG_STORE,
    MDL_STORE,
    aria,
    disclosure,
    learn,
    panel_graph,
    radio_group,
    register_disclosure,
)
from app.context import AppContext
from app.figures.cka import SCALES, cka_figure, null_summary
from app.state import clean_models

CKA_LABEL = "Compare two models' representations depth by depth (CKA, computed on demand)"
EMPTY = {"data": [], "layout": {"height": 460}}


def layout() -> html.Section:
    return html.Section(
        [
            html.Div([html.H2("Model similarity (CKA)", id="cka-heading")], className="panel-head"),
            disclosure(
                "cka",
                CKA_LABEL,
                [
                    html.Div(
                        [
                            html.Label(["Model A ", dcc.Dropdown(id="cka-model-a", clearable=False)]),
                            html.Label(["Model B ", dcc.Dropdown(id="cka-model-b", clearable=False)]),
                        ],
                        className="panel-tools-row cka-models",
                    ),
                    radio_group("cka-scale", "Show", list(SCALES), "raw"),
                    html.Div(id="cka-msg"),
                    panel_graph("cka-graph", 460, "vitscope_cka"),
                    learn("cka", "Learn: what CKA is and why it has a null"),
                ],
                class_name="",
            ),
        ],
        className="panel",
        id="cka-panel",
        **aria(labelledby="cka-heading"),
    )


def model_choices(selected: list[str], a: str | None, b: str | None) -> tuple[str | None, str | None]:
    """Models A and B among the selected ones: the current choices while selected, else the first two; B is
    another model than A whenever two are selected (one selected model made both A, and B stayed on it once a
    second one came)."""
    keep_a = a if a in selected else (selected[0] if selected else None)
    rest = [m for m in selected if m != keep_a]
    keep_b = b if b in rest else (rest[0] if rest else keep_a)
    return keep_a, keep_b


def missing(image_ids: list[str], selected: list[str]) -> str | None:
    """What the heat map needs and does not have yet, in words (None: it can be computed)."""
    if len(image_ids) < 2:
        return f"CKA compares representations across images: add 2 or more images (now {len(image_ids)})."
    if len(selected) < 2:
        return f"CKA compares two models: select 2 or more models (now {len(selected)})."
    return None


def null_note(body: dict[str, Any]) -> str:
    """The permutation null's mean, as the API computed it (the numbers behind the calibrated map)."""
    mean, low, high = null_summary(body)
    return (
        f"{len(body['images'])} images. With the images of model B shuffled ({body['permutations']} "
        f"permutations, seed {body['seed']}), CKA is {mean:.3f} on average over the depth pairs "
        f"({low:.3f} to {high:.3f}): the null's mean. Calibrated = CKA − that mean, pair by pair."
    )


def fetch(client: ApiClient, image_ids: list[str], a: str, b: str) -> dict[str, Any]:
    """The API's CKA of models ``a`` and ``b`` on the set of ``image_ids`` (ApiError in words)."""
    set_id = client.create_set(image_ids)
    return client.cka(set_id, a, b)


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client
    register_disclosure(app, "cka", CKA_LABEL)

    @app.callback(
        Output("cka-model-a", "options"),
        Output("cka-model-a", "value"),
        Output("cka-model-b", "options"),
        Output("cka-model-b", "value"),
        Input(MDL_STORE, "data"),
        State("cka-model-a", "value"),
        State("cka-model-b", "value"),
    )
    def choose(models: Any, a: str | None, b: str | None) -> Any:
        selected = clean_models(models)
        options = [{"label": m, "value": m} for m in selected]
        keep_a, keep_b = model_choices(selected, a, b)
        return options, keep_a, options, keep_b

    @app.callback(
        Output("cka-graph", "figure"),
        Output("cka-msg", "children"),
        Input("cka-open", "data"),
        Input(IMG_STORE, "data"),
        Input("cka-model-a", "value"),
        Input("cka-model-b", "value"),
        Input("cka-scale", "value"),
        State(MDL_STORE, "data"),
    )
    def draw(is_open: bool, images: Any, a: str | None, b: str | None, scale: str, models: Any) -> Any:
        if not is_open:
            raise PreventUpdate
        ids = [str(i) for i in (images or {}).get("ids", [])]
        selected = clean_models(models)
        need = missing(ids, selected)
        if need or not a or not b:
            return EMPTY, html.Div(need or "Choose models A and B.", className="hint")
        try:
            body = fetch(client, ids, a, b)
        except ApiError as exc:
            return EMPTY, html.Div(f"CKA of {a} and {b}: {exc.message}", className="error-text")
        return cka_figure(body, scale), html.Div(null_note(body), className="hint")
