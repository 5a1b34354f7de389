"""Pick 2 to 4 models: the runnable ones first, grouped by family; those without weights fold into one compact
"more models" list (name, family, size, licence, the one command that fetches it, from the API's model list),
with a Download button and a progress bar when the server allows downloads. In class mode only the server's
default (preloaded) models are offered."""

from __future__ import annotations

import re
from typing import Any

from dash import ALL, ClientsideFunction, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app.api_client import ApiError
from app.components.common import MDL_CATALOG, MDL_STORE, aria, learn
from app.context import AppContext
from app.figures.style import FAMILIES, FAMILY_LABELS, family_key
from app.state import MAX_MODELS, MIN_MODELS, clean_models, model_id

# The "Try the demo" preset: the shipped demo models (contrastive, masked, hybrid), in this order.
DEMO_MODELS = ("cifar-cl-vit-t4", "cifar-mim-vit-t4", "cifar-hybrid-vit-t4")
_SIZES = {"tiny": "Tiny", "small": "S", "base": "B", "large": "L", "huge": "H", "giant": "g", "gigantic": "G"}
_ARCH = re.compile(r"^(?:vit|deit3?)_(tiny|small|base|large|huge|giant|gigantic)_patch(\d+)_(\d+)")


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
            html.Div("Loading the model list…", id="mdl-status", className="hint", role="status"),
            html.Div(groups, className="model-groups"),
            html.Div(id="mdl-note", className="note", role="status", **aria(live="polite")),
            html.Details(
                [
                    html.Summary("More models (no weights on this server yet)", id="mdl-more-summary"),
                    html.Div(id="mdl-more", className="more-models"),
                ],
                id="mdl-more-wrap",
                className="more-models-wrap",
                style={"display": "none"},
            ),  # fmt: skip
            dcc.Store(id="mdl-pulls", data={}),
            dcc.Store(id="mdl-pulled"),
            learn("models", "Learn: the families"),
        ],
        className="panel",
        id="mdl-panel",
        **aria(labelledby="mdl-heading"),
    )


def label(model: dict[str, Any]) -> str:
    """What a model is, e.g. "ViT-Tiny/4 at 32 px": the size from the architecture's name, the patch and input
    size the API gives (``patch_size``, ``input_size``); without those, what the name says."""
    arch = str(model.get("arch") or "")
    match = _ARCH.match(arch)
    if not match:
        return arch
    size, name_patch, name_px = match.groups()
    patch = int(model.get("patch_size") or name_patch)
    given = model.get("input_size")
    px = int(given[0]) if given else int(name_px) if patch == int(name_patch) else None
    return f"ViT-{_SIZES[size]}/{patch}" + (f" at {px} px" if px else "")


def option(model: dict[str, Any]) -> dict[str, Any]:
    """A checklist option of a runnable model: id, what it is, licence."""
    mid = str(model["id"])
    detail = " · ".join(x for x in (label(model), str(model.get("license") or "")) if x)
    parts: list[Any] = [html.Span(mid, className="model-id")]
    if model.get("loaded"):
        parts.append(html.Span("loaded", className="badge badge-ok"))
    parts.append(html.Span(detail, className="model-detail"))
    title = " — ".join(x for x in (str(model.get("description") or ""), detail) if x)
    return {"label": html.Span(parts, className="model-label", title=title), "value": mid}


def more_row(model: dict[str, Any], downloads: bool) -> html.Li:
    """A model without weights: name, family, size, licence, why, and the command (or a Download button)."""
    mid = str(model["id"])
    size = f"{model['size_mb']:.0f} MB" if model.get("size_mb") else ""
    facts = " · ".join(
        x
        for x in (FAMILY_LABELS[family_key(model.get("family"))], label(model), size, model.get("license"))
        if x
    )
    parts: list[Any] = [
        html.Span(mid, className="model-id"),
        html.Span(facts, className="model-detail"),
        html.Span(
            [str(model.get("unavailable_reason") or ""), " · run ", html.Code(model.get("fetch_command"))],
            className="model-reason",
        ),
    ]
    if downloads:
        parts.append(
            html.Div(
                [
                    html.Button(
                        "Download", id={"type": "mdl-pull", "id": mid}, className="btn btn-small", n_clicks=0
                    ),
                    html.Progress(
                        id={"type": "mdl-progress", "id": mid},
                        max="1",
                        value="0",
                        className="pull-bar",
                        style={"display": "none"},
                        **aria(label=f"download of {mid}"),
                    ),  # fmt: skip
                    html.Span(id={"type": "mdl-pull-msg", "id": mid}, className="hint", role="status"),
                ],
                className="pull-row",
            )
        )
    return html.Li(parts, className="more-model")


def class_models(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The models class mode offers: the server's default ones (``default`` in ``GET /models``)."""
    return [m for m in models if m.get("default")]


def demo_models(catalog: list[dict[str, Any]]) -> list[str]:
    """The demo preset's models: the shipped demo models this server can run, else its default models."""
    runnable = {m["id"]: m for m in catalog if m.get("available")}
    chosen = [m for m in DEMO_MODELS if m in runnable]
    if len(chosen) < MIN_MODELS:
        chosen = [m["id"] for m in catalog if m.get("default") and m.get("available")]
    return chosen[:MAX_MODELS]


def load_catalog(ctx_: AppContext, _path: str | None, _pulled: Any = None) -> Any:
    n = len(FAMILIES)
    try:
        models = ctx_.catalog(fresh=_pulled is not None)
    except ApiError as exc:
        message = html.Span(f"Cannot load the model list: {exc.message}", className="error-text")
        return None, message, *([[]] * n), *([{"display": "none"}] * n), [], {"display": "none"}
    if ctx_.class_mode:
        models = class_models(models)
    runnable = [m for m in models if m.get("available")]
    missing = sorted((m for m in models if not m.get("available")), key=lambda m: str(m["id"]))
    by_family: dict[str, list[dict[str, Any]]] = {f: [] for f in FAMILIES}
    for m in sorted(runnable, key=lambda m: (not m.get("default"), str(m["id"]))):
        by_family[family_key(m.get("family"))].append(m)
    options = [[option(m) for m in by_family[f]] for f in FAMILIES]
    styles = [{} if by_family[f] else {"display": "none"} for f in FAMILIES]
    status = f"{len(runnable)} models ready to run. Pick {MIN_MODELS} to {MAX_MODELS}."
    if ctx_.class_mode:
        status = f"Class mode: the {len(runnable)} preloaded models. Pick {MIN_MODELS} to {MAX_MODELS}."
    catalog = [
        {
            "id": str(m["id"]),
            "family": family_key(m.get("family")),
            "available": bool(m.get("available")),
            "default": bool(m.get("default")),
            "patch_size": m.get("patch_size"),
            "arch": m.get("arch"),
            "label": label(m),
        }
        for m in models
    ]
    more = [html.Ul([more_row(m, ctx_.allow_downloads) for m in missing], className="more-list")]
    return catalog, status, *options, *styles, more, ({} if missing else {"display": "none"})


def choose(*args: Any) -> Any:
    """The ticked models, in the order they were ticked; at most ``MAX_MODELS``."""
    values: list[list[str]] = [clean_models(v) if v else [] for v in args[: len(FAMILIES)]]
    previous = clean_models(args[len(FAMILIES)])
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
    outs = [[m for m in group if m in order] for group in values] if trimmed else [no_update] * len(FAMILIES)
    return order, note, *outs


def start_pull(ctx_: AppContext, _clicks: list[int | None], pulls: dict[str, Any] | None) -> Any:
    """A Download button: ``POST /models/{id}/pull``; the job's id goes to the page, which shows progress."""
    trig = ctx.triggered_id
    if not isinstance(trig, dict) or not (ctx.triggered and ctx.triggered[0].get("value")):
        raise PreventUpdate
    mid = model_id(trig.get("id"))
    if mid is None:
        raise PreventUpdate
    pulls = dict(pulls or {})
    try:
        body = ctx_.client.pull(mid)
    except ApiError as exc:
        pulls[mid] = {"error": exc.message}
        return pulls
    pulls[mid] = {"job": body["job"]["id"]} if "job" in body else {"done": True}
    return pulls


def register(app: Dash, ctx_: AppContext) -> None:
    app.callback(
        Output(MDL_CATALOG, "data"),
        Output("mdl-status", "children"),
        *[Output(check_id(f), "options") for f in FAMILIES],
        *[Output(f"mdl-group-{f}", "style") for f in FAMILIES],
        Output("mdl-more", "children"),
        Output("mdl-more-wrap", "style"),
        Input("url-in", "pathname"),
        Input("mdl-pulled", "data"),
    )(lambda path, pulled: load_catalog(ctx_, path, pulled))
    app.callback(
        Output(MDL_STORE, "data", allow_duplicate=True),
        Output("mdl-note", "children"),
        *[Output(check_id(f), "value", allow_duplicate=True) for f in FAMILIES],
        *[Input(check_id(f), "value") for f in FAMILIES],
        State(MDL_STORE, "data"),
        prevent_initial_call=True,
    )(choose)
    if ctx_.allow_downloads and not ctx_.class_mode:
        app.callback(
            Output("mdl-pulls", "data"),
            Input({"type": "mdl-pull", "id": ALL}, "n_clicks"),
            State("mdl-pulls", "data"),
            prevent_initial_call=True,
        )(lambda clicks, pulls: start_pull(ctx_, clicks, pulls))
        # The page's script follows each job (GET /_vitscope/jobs/<id>) and moves its bar.
        app.clientside_callback(
            ClientsideFunction("vitscope", "followPulls"),
            Output("mdl-pulled", "data"),
            Input("mdl-pulls", "data"),
            prevent_initial_call=True,
        )
