"""Bring images: drag and drop (several at once), the example gallery, the strip of images in the set.

Every image goes through ``POST /images``; the API's error message for a bad file is shown in words, per file,
and the rest of the page keeps working. The strip picks the image the attention and spectrum views show.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app import gallery
from app.api_client import ApiError
from app.auth import client_address
from app.components.common import IMG_STORE, aria, learn
from app.context import AppContext
from app.images import decode, thumbnail, to_data_uri
from app.state import clean_images, image_id


def empty_images() -> dict[str, Any]:
    return {"ids": [], "names": {}, "active": None}


def layout(ctx_: AppContext) -> html.Section:
    examples = gallery.available()
    gallery_items = [
        html.Button(
            [
                html.Img(src=_gallery_thumb(ctx_, e.key), alt="", className="thumb"),
                html.Span(e.title, className="gallery-title"),
                html.Span(e.credit, className="gallery-credit"),
            ],
            id={"type": "img-gallery", "key": e.key},
            className="gallery-item",
            title=f"Add '{e.title}' ({e.credit})",
            n_clicks=0,
        )
        for e in examples
    ]
    # Class mode: no drop zone, no file picker (vitscope.js hooks its file input to the drop zone only).
    upload: list[Any] = (
        []
        if ctx_.class_mode
        else [
            html.Div(
                [
                    html.Strong("Drop images here"),
                    html.Span(" or "),
                    html.Span("choose files", className="linkish"),
                    html.Div("JPEG, PNG, WebP, BMP, GIF, TIFF · several at once", className="hint"),
                    html.Div(id="img-upload-status", className="hint", role="status"),
                ],
                id="img-upload",
                className="dropzone",
                title="Drop image files here, or press Enter to choose them",
            ),
            dcc.Store(id="img-uploaded"),
        ]
    )
    pick = "Add an example image:" if ctx_.class_mode else "Or add an example image:"
    demo = html.Div(
        [
            html.Button("Try the demo", id="img-demo", className="btn btn-primary", n_clicks=0),
            html.Span(
                "a few shape/texture cue-conflict images and the three small demo models (CL, MIM, hybrid)",
                className="hint",
            ),
        ],
        className="demo-row",
    )
    return html.Section(
        [
            html.H2("1 · Images", id="img-heading"),
            demo,
            html.Div(
                [
                    *upload,
                    html.Div(
                        [
                            html.Div(pick, className="hint"),
                            html.Div(gallery_items, className="gallery", id="img-gallery"),
                            html.Div(gallery.SOURCE_NOTE, className="credit-note"),
                        ]
                        if gallery_items
                        else html.Div("No example gallery: scikit-image is not installed.", className="hint"),
                        className="gallery-wrap",
                    ),
                ],
                className="img-sources",
            ),
            html.Div(id="img-error", className="error-box", role="alert", **aria(live="polite")),
            html.Div(id="img-strip", className="img-strip", role="group", **aria(label="Images in the set")),
            learn("images", "Learn: how images are prepared"),
        ],
        className="panel",
        id="img-panel",
        **aria(labelledby="img-heading"),
    )


def _gallery_thumb(ctx_: AppContext, key: str) -> str:
    def make() -> str:
        data, _ = gallery.read(key)
        return to_data_uri(thumbnail(decode(data), 88), quality=80)

    try:
        return ctx_.uris.get(("gallery", key), make)
    except (OSError, KeyError):
        return ""


def demo_images(ctx_: AppContext) -> tuple[dict[str, Any], list[str]]:
    """The images of the "Try the demo" preset, uploaded through the API: the store, and what failed."""
    store = empty_images()
    errors = []
    for example in gallery.demo_images():
        try:
            data, filename = gallery.read(example.key)
            store = _add(
                store, ctx_.client.upload_image(data, filename, client=client_address()), example.title
            )
        except (ApiError, OSError) as exc:
            errors.append(f"{example.title}: {exc}")
    if store["ids"]:
        store["active"] = store["ids"][0]
    return store, errors


def _add(store: dict[str, Any] | None, body: dict[str, Any], name: str) -> dict[str, Any]:
    store = clean_images(store)
    ids = list(store.get("ids", []))
    names = dict(store.get("names", {}))
    image_id = str(body["id"])
    if image_id not in ids:
        ids.append(image_id)
    names[image_id] = name
    store.update(ids=ids, names=names, active=image_id)
    return store


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client

    if not ctx_.class_mode:
        _register_uploaded(app)

    @app.callback(
        Output(IMG_STORE, "data", allow_duplicate=True),
        Output("img-error", "children", allow_duplicate=True),
        Input({"type": "img-gallery", "key": ALL}, "n_clicks"),
        State(IMG_STORE, "data"),
        prevent_initial_call=True,
    )
    def add_example(_clicks: list[int | None], store: dict[str, Any] | None) -> Any:
        trig = ctx.triggered_id
        if not isinstance(trig, dict) or not any(_clicks):
            raise PreventUpdate
        key = str(trig.get("key"))
        try:
            data, filename = gallery.read(key)
        except KeyError:
            raise PreventUpdate from None
        except OSError as exc:
            return no_update, html.Div(f"{key}: {exc}", className="error-text")
        try:
            body = client.upload_image(data, filename, client=client_address())
        except (ApiError, OSError) as exc:
            return no_update, html.Div(f"{key}: {exc}", className="error-text")
        return _add(store, body, gallery.BY_KEY[key].title), None

    @app.callback(
        Output(IMG_STORE, "data", allow_duplicate=True),
        Input({"type": "img-pick", "id": ALL}, "n_clicks"),
        Input({"type": "img-remove", "id": ALL}, "n_clicks"),
        State(IMG_STORE, "data"),
        prevent_initial_call=True,
    )
    def pick_or_remove(
        picks: list[int | None], removes: list[int | None], store: dict[str, Any] | None
    ) -> Any:
        trig = ctx.triggered_id
        if not isinstance(trig, dict) or not store:
            raise PreventUpdate
        if not (ctx.triggered and ctx.triggered[0].get("value")):
            raise PreventUpdate  # a button was (re)drawn, not clicked
        chosen = image_id(trig.get("id"))
        store = clean_images(store)
        ids = list(store["ids"])
        if chosen is None or chosen not in ids:
            raise PreventUpdate
        if trig.get("type") == "img-pick":
            if store["active"] == chosen:
                raise PreventUpdate
            store["active"] = chosen
            return store
        pos = ids.index(chosen)
        ids.remove(chosen)
        store["ids"] = ids
        store["names"] = {k: v for k, v in store["names"].items() if k in ids}
        if store["active"] == chosen:
            store["active"] = ids[min(pos, len(ids) - 1)] if ids else None
        return store

    @app.callback(
        Output("img-strip", "children"),
        Output("img-error", "children", allow_duplicate=True),
        Input(IMG_STORE, "data"),
        prevent_initial_call="initial_duplicate",
    )
    def strip(store: dict[str, Any] | None) -> Any:
        store = clean_images(store)
        ids: list[str] = store["ids"]
        if not ids:
            hint = "pick an example." if ctx_.class_mode else "drop one above or pick an example."
            return html.Div(f"No images yet: {hint}", className="hint"), no_update
        names = store.get("names", {})

        def thumb_uri(iid: str) -> str:
            return to_data_uri(thumbnail(decode(client.image_bytes(iid)[0])))

        items = []
        missing = []
        for iid in ids:
            name = names.get(iid) or f"image {iid[:8]}"
            try:
                src = ctx_.uris.get(("thumb", iid), partial(thumb_uri, iid))
            except (ApiError, OSError, ValueError) as exc:
                src = ""
                missing.append(f"{name}: {exc}")
            active = iid == store.get("active")
            items.append(
                html.Div(
                    [
                        html.Button(
                            [
                                html.Img(src=src, alt="", className="thumb"),
                                html.Span(name, className="strip-name"),
                            ],
                            id={"type": "img-pick", "id": iid},
                            className="strip-pick" + (" strip-active" if active else ""),
                            title=f"Show {name} in the attention and spectrum views",
                            n_clicks=0,
                            **aria(pressed="true" if active else "false"),
                        ),
                        html.Button(
                            "×",
                            id={"type": "img-remove", "id": iid},
                            className="strip-remove",
                            title=f"Remove {name}",
                            n_clicks=0,
                            **aria(label=f"Remove {name}"),
                        ),
                    ],
                    className="strip-item",
                )
            )
        summary = html.Div(
            f"{len(ids)} image(s) in the set" + (" · curves show mean ± std" if len(ids) > 1 else ""),
            className="hint strip-summary",
        )
        error = (
            html.Div(["Some images could not be loaded: ", "; ".join(missing)], className="error-text")
            if missing
            else no_update
        )
        return [summary, html.Div(items, className="strip-items")], error


def _register_uploaded(app: Dash) -> None:
    @app.callback(
        Output(IMG_STORE, "data", allow_duplicate=True),
        Output("img-error", "children", allow_duplicate=True),
        Input("img-uploaded", "data"),
        State(IMG_STORE, "data"),
        prevent_initial_call=True,
    )
    def uploaded(done: dict[str, Any] | None, store: dict[str, Any] | None) -> Any:
        """The page's script uploaded files (``vitscope.uploadFiles``): add the images, say what failed."""
        results = (done or {}).get("results") or []
        if not results:
            raise PreventUpdate
        errors: list[Any] = []
        added = 0
        for res in results:
            name = str(res.get("name") or "upload")
            raw_body = res.get("body")
            body: dict[str, Any] = raw_body if isinstance(raw_body, dict) else {}
            if res.get("ok") and body.get("id"):
                store = _add(store, body, name)
                added += 1
                continue
            raw_err = body.get("error")
            err: dict[str, Any] = raw_err if isinstance(raw_err, dict) else {}
            message = err.get("message") or res.get("message") or f"the upload failed ({res.get('status')})"
            errors.append(html.Li([html.Strong(name), f": {message}"]))
        message_div = (
            html.Div(
                [html.Span(f"{len(errors)} of {len(results)} file(s) were not added:"), html.Ul(errors)],
                className="error-text",
            )
            if errors
            else None
        )
        return (store if added else no_update), message_div
