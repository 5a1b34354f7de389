"""Pick 2 to 4 models, grouped by family; a model without weights is shown disabled with the reason and the
command that fetches or imports it (both from the API's model list). In class mode only the server's default
(preloaded) models are offered."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app.api_client import ApiError
from app.components.common import MDL_CATALOG, MDL_STORE, aria, learn
from app.context import AppContext
from app.figures.style import FAMILIES, FAMILY_LABELS, family_key
from app.state import MAX_MODELS, MIN_MODELS


def check_id(family: str) -> str:
    return f"mdl-check-{family}"


def layout() -> html.Section:
    groups = [
        html.Fieldset(
            [
                html.Legend(FAMILY_LABELS[f]),
                dcc.Checklist(
                    id=check_id(f),
                    options=[],
                    value=[],
                    className="model-list",
                    labelClassName="model-option",
                    inputClassName="model-input",
                ),
            ],
            id=f"mdl-group-{f}",
            className=f"model-group family-{f}",
            style={"display": "none"},
        )
        for f in FAMILIES
    ]
    return html.Section(
        [
            html.H2("2 · Models", id="mdl-heading"),
            html.Div(id="mdl-status", className="hint", role="status"),
            html.Div(groups, className="model-groups"),
            html.Div(id="mdl-note", className="note", role="status", **aria(live="polite")),
            learn("models", "Learn: the families"),
        ],
        className="panel",
        id="mdl-panel",
        **aria(labelledby="mdl-heading"),
    )


def _reason(model: dict[str, Any]) -> tuple[str, str]:
    """Why a model cannot run, and the command that fixes it, as the API words them (with fallbacks)."""
    reason = ""
    for key in ("unavailable_reason", "reason", "message", "status_message"):
        if isinstance(model.get(key), str) and model[key]:
            reason = model[key]
            break
    command = ""
    for key in ("fetch_command", "command", "fetch", "how_to_fetch", "install_command"):
        if isinstance(model.get(key), str) and model[key]:
            command = model[key]
            break
    if not reason:
        reason = "no weights on this server"
    if not command:
        command = f"vitscope models pull {model['id']}"
    return reason, command


def option(model: dict[str, Any]) -> dict[str, Any]:
    """A checklist option: id, architecture, licence; unavailable ones disabled, with why and the command."""
    mid = str(model["id"])
    arch = str(model.get("arch") or "")
    patch = model.get("patch_size")
    available = bool(model.get("available", True))
    licence = str(model.get("license") or model.get("licence") or "")
    detail = " · ".join(x for x in (arch, f"patch {patch}" if patch else "", licence) if x)
    parts: list[Any] = [html.Span(mid, className="model-id")]
    if model.get("loaded"):
        parts.append(html.Span("loaded", className="badge badge-ok"))
    if available:
        parts.append(html.Span(detail, className="model-detail"))
    title = " — ".join(x for x in (str(model.get("description") or ""), detail) if x)
    if not available:
        reason, command = _reason(model)
        title = f"{reason}. {title}"
        parts.append(
            html.Span(
                [
                    html.Span("unavailable", className="badge badge-off"),
                    f" {reason}: run ",
                    html.Code(command),
                ],
                className="model-reason",
            )
        )
    return {
        "label": html.Span(parts, className="model-label", title=title),
        "value": mid,
        "disabled": not available,
    }


def class_models(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The models class mode offers: the server's default ones (``default`` in ``GET /models``); from an API
    that does not say, the available ones."""
    if any("default" in m for m in models):
        return [m for m in models if m.get("default")]
    return [m for m in models if m.get("available", True)]


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client

    @app.callback(
        Output(MDL_CATALOG, "data"),
        Output("mdl-status", "children"),
        *[Output(check_id(f), "options") for f in FAMILIES],
        *[Output(f"mdl-group-{f}", "style") for f in FAMILIES],
        Input("url-in", "pathname"),
    )
    def load_catalog(_path: str | None) -> Any:
        try:
            models = client.models()
        except ApiError as exc:
            hidden = [{"display": "none"}] * len(FAMILIES)
            message = html.Span(f"Cannot load the model list: {exc.message}", className="error-text")
            return None, message, *([[]] * len(FAMILIES)), *hidden
        if ctx_.class_mode:
            models = class_models(models)
        by_family: dict[str, list[dict[str, Any]]] = {f: [] for f in FAMILIES}
        for m in models:
            by_family[family_key(m.get("family"))].append(m)
        for f in FAMILIES:  # available first, then by id
            by_family[f].sort(key=lambda m: (not m.get("available", True), str(m["id"])))
        options = [[option(m) for m in by_family[f]] for f in FAMILIES]
        styles = [{} if by_family[f] else {"display": "none"} for f in FAMILIES]
        n_avail = sum(1 for m in models if m.get("available", True))
        status = f"{n_avail} of {len(models)} models ready to run. Pick {MIN_MODELS} to {MAX_MODELS}."
        if ctx_.class_mode:
            status = f"Class mode: the {len(models)} preloaded models. Pick {MIN_MODELS} to {MAX_MODELS}."
        catalog = [
            {
                "id": str(m["id"]),
                "family": family_key(m.get("family")),
                "available": bool(m.get("available", True)),
                "patch_size": m.get("patch_size"),
                "arch": m.get("arch"),
            }
            for m in models
        ]
        return catalog, status, *options, *styles

    @app.callback(
        Output(MDL_STORE, "data", allow_duplicate=True),
        Output("mdl-note", "children"),
        *[Output(check_id(f), "value", allow_duplicate=True) for f in FAMILIES],
        *[Input(check_id(f), "value") for f in FAMILIES],
        State(MDL_STORE, "data"),
        prevent_initial_call=True,
    )
    def choose(*args: Any) -> Any:
        values: list[list[str]] = [list(v or []) for v in args[: len(FAMILIES)]]
        previous: list[str] = list(args[len(FAMILIES)] or [])
        checked = [m for group in values for m in group]
        if not ctx.triggered_id:
            raise PreventUpdate
        order = [m for m in previous if m in checked] + [m for m in checked if m not in previous]
        note = ""
        trimmed = False
        if len(order) > MAX_MODELS:
            dropped = order[MAX_MODELS:]
            order = order[:MAX_MODELS]
            note = f"At most {MAX_MODELS} models side by side: {', '.join(dropped)} left out."
            trimmed = True
        elif len(order) < MIN_MODELS:
            note = f"Pick {MIN_MODELS - len(order)} more model(s) to compare ({MIN_MODELS} to {MAX_MODELS})."
        outs = (
            [[m for m in group if m in order] for group in values] if trimmed else [no_update] * len(FAMILIES)
        )
        return order, note, *outs
