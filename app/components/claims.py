"""The "Does it reproduce the paper?" strip above the curves, and the curves' Learn note's "What your models
show": each of the paper's claims held or not held for the selected models, with the numbers behind it, from
the API's claims report (``GET /claims``). The words come from ``app.claims``."""

from __future__ import annotations

from functools import partial
from typing import Any

from dash import Dash, Input, Output, State, html

from app.api_client import ApiClient, ApiError
from app.claims import (
    PAPER_FINDINGS,
    attention_sentence,
    claim_line,
    roles,
    what_models_show,
    why_different,
)
from app.components.common import IMG_STORE, LIVE_NOTES, MDL_CATALOG, MDL_STORE, META_STORE, aria, loading
from app.context import AppContext

STRIP_ID = "crv-claims"
LIVE_ID = LIVE_NOTES["curves"]
TITLE = "Does it reproduce the paper?"


def layout() -> Any:
    """The strip, behind a loading indicator (a set's claims need every image's metrics with every model)."""
    return loading(
        html.Div(
            strip(None, "Add an image and pick models: the paper's claims are checked here."),
            id=STRIP_ID,
            className="claims-strip",
            role="region",
            **aria(live="polite", label=TITLE),
        )
    )


def fetch(
    client: ApiClient, images: dict[str, Any] | None, picked: dict[str, str], scope: str, shown: str | None
) -> dict[str, Any]:
    """The claims report for the set (scope ``set`` with two or more images) or the shown image."""
    ids = list((images or {}).get("ids", []))
    if scope == "set" and len(ids) > 1:
        return client.claims(picked, set_id=client.create_set(ids))
    return client.claims(picked, image=str(shown))


def strip(report: dict[str, Any] | None, note: str | None = None) -> list[Any]:
    """The strip's children: a title with the tally, one row per claim, and ``note`` (why not checked,
    or how the models differ from the paper's)."""
    head: list[Any] = [html.Span(TITLE, className="claims-title")]
    rows: list[Any] = []
    if report:
        n = int(report.get("images", 0))
        over = f" on the mean over {n} images" if n > 1 else " on this image"
        head.append(
            html.Span(f"{report['held']} of {report['total']} claims held{over}", className="claims-tally")
        )
        for c in report.get("claims", []):
            line = claim_line(c)
            rows.append(
                html.Li(
                    [
                        html.Span(line.verdict, className="claim-verdict"),
                        html.Span(line.statement, className="claim-statement"),
                        html.Span(line.numbers, className="claim-numbers"),
                        html.Span(line.images, className="claim-images") if line.images else None,
                    ],
                    className=f"claim claim-{line.id} " + ("claim-held" if line.held else "claim-not-held"),
                )
            )
    children: list[Any] = [html.Div(head, className="claims-head")]
    if rows:
        children.append(html.Ul(rows, className="claims-list"))
    if note:
        children.append(html.P(note, className="claims-note"))
    return children


def live(report: dict[str, Any] | None, why: str | None) -> list[Any] | None:
    """The Learn note's part for the selected models: per claim, the paper's finding, then theirs."""
    if not report:
        return None
    items = [
        html.Li([html.Span(PAPER_FINDINGS.get(str(c["id"]), "") + " "), html.Strong(what_models_show(c))])
        for c in report.get("claims", [])
    ]
    out: list[Any] = [html.Ul(items)]
    if why:
        out.append(html.P(why))
    return out


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client

    @app.callback(
        Output(STRIP_ID, "children"),
        Output(LIVE_ID, "children"),
        Input(META_STORE, "data"),
        Input("crv-scope", "value"),
        State(IMG_STORE, "data"),
        State(MDL_STORE, "data"),
        State(MDL_CATALOG, "data"),
    )
    def check(
        meta: dict[str, Any] | None,
        scope: str,
        images: dict[str, Any] | None,
        models: list[str] | None,
        catalog: list[dict[str, Any]] | None,
    ) -> Any:
        if not meta or not meta.get("image") or not models:
            return strip(None, "Add an image and pick models: the paper's claims are checked here."), None
        families = {m["id"]: str(m.get("family", "")) for m in catalog or []}
        picked = roles([m for m in models if m in meta.get("models", {})], families)
        if picked is None:
            return (
                strip(
                    None, "Pick a CL and a MIM model (and a hybrid, if you like) to check the paper's claims."
                ),
                None,
            )
        try:
            report = fetch(client, images, picked, scope, meta.get("image"))
        except ApiError as exc:
            return strip(None, f"The claims could not be checked: {exc.message}"), None
        try:  # the API's own words about each model (how it was trained), for "why" below
            descriptions = {str(m["id"]): str(m.get("description") or "") for m in ctx_.catalog()}
        except ApiError:
            descriptions = {}
        why = why_different(report, meta.get("models", {}), descriptions)
        return strip(report, why), live(report, why)

    @app.callback(
        Output(LIVE_NOTES["attention"], "children"),
        Input(META_STORE, "data"),
        Input("ctl-layer", "value"),
    )
    def attention_live(meta: dict[str, Any] | None, layer: int | None) -> Any:
        """The attention note's live part: the shown image's NMI and distance at the shown block."""
        shapes = (meta or {}).get("models", {})
        if not meta or not meta.get("image") or not shapes:
            return None
        models = list(shapes)
        results = client.parallel([partial(client.metrics, str(meta["image"]), m) for m in models])
        per_model = {m: r for m, r in zip(models, results, strict=True) if not isinstance(r, ApiError)}
        families = {m: str(s.get("family", "")) for m, s in shapes.items()}
        text = attention_sentence(per_model, int(layer or 1), families)
        return html.P(text) if text else None
