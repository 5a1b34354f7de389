""" "Export all panels": one zip of every drawn figure (PNG and SVG, drawn by Plotly in the browser) and the
numbers behind every panel (JSON and CSV), with a ``README.txt`` saying what each file is and how it was
computed (``app.exports``). The browser sends the figures; the numbers are fetched here, as the panels do."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from dash import ClientsideFunction, Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from app.api_client import ApiError
from app.claims import roles
from app.components import claims, curves, spectrum, tokens
from app.components.attention import QUERY2_STORE, ROLLOUT, is_rollout
from app.components.common import IMG_STORE, MDL_STORE, META_STORE, QUERY_STORE, aria, error_list
from app.context import AppContext
from app.exports import (
    ExportFile,
    attention_files,
    build_zip,
    claims_files,
    curves_files,
    figure_files,
    figure_name,
    modern_files,
    spectrum_files,
    tokens_files,
)
from app.state import Query, clean_models, head_param

ATTENTION_KEYS = ("image", "model", "layer", "head", "query")


def layout() -> html.Div:
    return html.Div(
        [
            html.Button(
                "Export all panels (zip)",
                id="exp-all-button",
                className="btn btn-small",
                title="every figure as PNG and SVG, the numbers as JSON and CSV, and a README",
                n_clicks=0,
            ),
            dcc.Store(id="exp-all-figures"),
            dcc.Download(id="exp-all-download"),
            html.Div(id="exp-all-msg", className="col-msg"),
        ],
        className="export-all",
        role="group",
        **aria(label="Export all panels"),
    )


def describe_preprocessing(prep: Any) -> str:
    if not isinstance(prep, dict):
        return "as the API reports it"
    return ", ".join(f"{k} {v}" for k, v in prep.items())


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client
    app.clientside_callback(
        ClientsideFunction("vitscope", "collectFigures"),
        Output("exp-all-figures", "data"),
        Input("exp-all-button", "n_clicks"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("exp-all-download", "data"),
        Output("exp-all-msg", "children"),
        Input("exp-all-figures", "data"),
        State(META_STORE, "data"),
        State(IMG_STORE, "data"),
        State(MDL_STORE, "data"),
        State("ctl-layer", "value"),
        State("ctl-head", "value"),
        State(QUERY_STORE, "data"),
        State("crv-scope", "value"),
        State("spc-state", "value"),
        State("tok-open", "data"),
        State("tok-method", "value"),
        State(ROLLOUT, "value"),
        State(QUERY2_STORE, "data"),
        State("mod-scope", "value"),
        prevent_initial_call=True,
    )
    def export_all(
        sent: dict[str, Any] | None,
        meta: dict[str, Any] | None,
        images: dict[str, Any] | None,
        models: list[str] | None,
        layer: int,
        head: Any,
        query: Any,
        scope: str,
        state: str,
        tokens_open: bool,
        method: str,
        rollout: Any,
        query2: Any,
        modern_scope: str,
    ) -> Any:
        if not sent:
            raise PreventUpdate
        models = clean_models(models)
        if not meta or not meta.get("image") or not models:
            return None, html.Div("Nothing to export yet: add an image and pick models.", className="hint")
        drawn = list(sent.get("figures") or [])
        files, errors, prep = collect(client, drawn, meta, images or {}, models, layer, scope, state)
        # the "Beyond the paper" curves: the metrics the curves fetch (cached), at that panel's own scope
        per_model, errs, subtitle = curves.fetch(client, meta, modern_scope, images or {}, models)
        ids = list((images or {}).get("ids", []))
        files += modern_files(per_model, scope=modern_scope, subtitle=subtitle, images=ids, errors=errs)
        errors += [e for e in errs if e not in errors]
        if tokens_open:
            try:
                per_model, layers, errs = tokens.fetch(client, meta, images or {}, layer, method, models)
                files += tokens_files(
                    per_model,
                    layers=layers,
                    layer=layer,
                    method=method,
                    image_ids=list((images or {}).get("ids", [])),
                    errors=errs,
                )
                errors += errs
            except ApiError as exc:
                errors.append(f"tokens: {exc.message}")
        names = (images or {}).get("names", {})
        second = Query.second(query2)
        context = {
            "images": [f"{names.get(i) or '(no name)'} ({i})" for i in (images or {}).get("ids", [])],
            "shown image": meta.get("image"),
            "models": models,
            "layer (block)": layer,
            "head": head_param(head),
            "query": _query_text(query, meta, models),
            "attention maps": "the rollout through the block (heads fused by mean)"
            if is_rollout(rollout)
            else "A1",
            "second query": "none" if second is None else _query_text(second.to_store(), meta, models),
            "curves for": scope,
            "beyond-the-paper curves for": modern_scope,
            "spectrum state": state,
            **prep,
        }
        if errors:
            context["not exported (errors)"] = errors
        blob = build_zip(files, context)
        return dcc.send_bytes(blob, "vitscope-export.zip"), error_list(errors)


def _query_text(query: Any, meta: dict[str, Any], models: list[str]) -> str:
    q = Query.from_store(query)
    if q.is_cls:
        return "CLS token"
    shapes = meta.get("models", {})
    parts = []
    for m in models:
        if m in shapes:
            grid = (int(shapes[m]["grid"][0]), int(shapes[m]["grid"][1]))
            rc = q.patch(grid)
            parts.append(f"{m}: patch {rc} of {grid[0]}x{grid[1]}")
    return f"place (y, x) = ({q.y}, {q.x}) of the input; " + "; ".join(parts)


def collect(
    client: Any,
    drawn: list[dict[str, Any]],
    meta: dict[str, Any],
    images: dict[str, Any],
    models: list[str],
    layer: int,
    scope: str,
    state: str,
) -> tuple[list[ExportFile], list[str], dict[str, str]]:
    """The zip's files but the token view: the figures sent by the browser, the attention maps they show,
    the curves, the claims, the spectra and the paper's reference curves; and each model's preprocessing."""
    figures = [{"name": figure_name(f.get("meta"), str(f.get("holder") or "figure")), **f} for f in drawn]
    files = figure_files(figures)
    errors: list[str] = []
    shown = [f["meta"] for f in drawn if all(k in (f.get("meta") or {}) for k in ATTENTION_KEYS)]
    answers = client.parallel(
        [
            partial(
                client.attention,
                m["image"],
                m["model"],
                int(m["layer"]),
                head_param(m["head"]),
                m["query"],
                m.get("rollout") is True,
            )
            for m in shown
        ]
    )
    maps = []
    for m, res in zip(shown, answers, strict=True):
        if isinstance(res, ApiError):
            errors.append(f"attention of {m['model']}: {res.message}")
        else:
            maps.append(res)
    files += attention_files(maps)
    per_model, errs, subtitle = curves.fetch(client, meta, scope, images, models)
    errors += errs
    files += curves_files(
        per_model, scope=scope, subtitle=subtitle, images=list(images.get("ids", [])), errors=errs
    )
    answers_s, depths, errs = spectrum.fetch(client, meta, layer, state, models)
    errors += errs
    files += spectrum_files(
        answers_s, depths=depths, state=state, layer=layer, image=str(meta["image"]), errors=errs
    )
    families = {m: str(v.get("family", "")) for m, v in meta.get("models", {}).items()}
    picked = roles([m for m in models if m in families], families)
    if picked is not None:
        try:
            files += claims_files(claims.fetch(client, images, picked, scope, meta.get("image")))
        except ApiError as exc:
            errors.append(f"claims: {exc.message}")
    reference, errs = curves.fetch_reference(client, [curves.PAPER_OPTION])
    errors += errs
    if reference:
        files.append(
            ExportFile(
                "paper_reference.json",
                json.dumps(reference, indent=1),
                "The paper's published curves overlaid on the page (GET /api/v1/reference): "
                + str(reference.get("about", "")),
            )
        )
    prep = {
        f"preprocessing of {m}": describe_preprocessing(v.get("preprocessing")) for m, v in per_model.items()
    }
    return files, errors, prep
