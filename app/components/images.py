"""Bring images: drag and drop (several at once), the example gallery, the strip of images in the set.

Every image goes through ``POST /images``; the API's error message for a bad file is shown in words, per file,
and the rest of the page keeps working. The strip picks the image the attention and spectrum views show.
"""

from __future__ import annotations

import base64
import binascii
from functools import partial
from typing import Any

from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app import gallery
from app.api_client import ApiError
from app.components.common import IMG_STORE, aria, learn
from app.context import AppContext
from app.images import decode, thumbnail, to_data_uri

MAX_UPLOAD_BYTES = 32 * 1024 * 1024


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
    return html.Section(
        [
            html.H2("1 · Images", id="img-heading"),
            html.Div(
                [
                    dcc.Upload(
                        html.Div(
                            [
                                html.Strong("Drop images here"),
                                html.Span(" or "),
                                html.Span("choose files", className="linkish"),
                                html.Div(
                                    "JPEG, PNG, WebP, BMP, GIF, TIFF · several at once", className="hint"
                                ),
                            ]
                        ),
                        id="img-upload",
                        multiple=True,
                        max_size=MAX_UPLOAD_BYTES,
                        className="dropzone",
                        className_active="dropzone dropzone-active",
                    ),
                    html.Div(
                        [
                            html.Div("Or add an example photograph:", className="hint"),
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


def _add(store: dict[str, Any] | None, body: dict[str, Any], name: str) -> dict[str, Any]:
    store = dict(store or empty_images())
    ids = list(store.get("ids", []))
    names = dict(store.get("names", {}))
    image_id = str(body["id"])
    if image_id not in ids:
        ids.append(image_id)
    names[image_id] = name
    store.update(ids=ids, names=names, active=image_id)
    return store


def _decode_upload(contents: str) -> bytes:
    try:
        _, b64 = contents.split(",", 1)
        return base64.b64decode(b64, validate=False)
    except (ValueError, binascii.Error) as exc:
        raise ApiError("the browser sent a file the page could not read") from exc


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client

    @app.callback(
        Output(IMG_STORE, "data", allow_duplicate=True),
        Output("img-error", "children", allow_duplicate=True),
        Output("img-upload", "contents"),
        Input("img-upload", "contents"),
        State("img-upload", "filename"),
        State(IMG_STORE, "data"),
        prevent_initial_call=True,
    )
    def upload(contents: list[str] | None, filenames: list[str] | None, store: dict[str, Any] | None) -> Any:
        if not contents:
            raise PreventUpdate
        names = filenames or [f"upload {i + 1}" for i in range(len(contents))]
        errors: list[Any] = []
        added = 0
        for content, name in zip(contents, names, strict=False):
            try:
                body = client.upload_image(_decode_upload(content), name)
            except ApiError as exc:
                errors.append(html.Li([html.Strong(name), f": {exc.message}"]))
                continue
            store = _add(store, body, name)
            added += 1
        message = (
            html.Div(
                [html.Span(f"{len(errors)} of {len(contents)} file(s) were not added:"), html.Ul(errors)],
                className="error-text",
            )
            if errors
            else None
        )
        return (store if added else no_update), message, None

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
            body = client.upload_image(data, filename)
        except KeyError:
            raise PreventUpdate from None
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
        image_id = str(trig.get("id"))
        store = dict(store)
        ids = list(store.get("ids", []))
        if trig.get("type") == "img-pick":
            if image_id not in ids or store.get("active") == image_id:
                raise PreventUpdate
            store["active"] = image_id
            return store
        if image_id in ids:
            pos = ids.index(image_id)
            ids.remove(image_id)
            store["ids"] = ids
            store["names"] = {k: v for k, v in store.get("names", {}).items() if k in ids}
            if store.get("active") == image_id:
                store["active"] = ids[min(pos, len(ids) - 1)] if ids else None
        return store

    @app.callback(
        Output("img-strip", "children"),
        Output("img-error", "children", allow_duplicate=True),
        Input(IMG_STORE, "data"),
        prevent_initial_call="initial_duplicate",
    )
    def strip(store: dict[str, Any] | None) -> Any:
        store = store or empty_images()
        ids: list[str] = store.get("ids", [])
        if not ids:
            return html.Div("No images yet: drop one above or pick an example.", className="hint"), no_update
        names = store.get("names", {})

        def thumb_uri(image_id: str) -> str:
            return to_data_uri(thumbnail(decode(client.image_bytes(image_id)[0])))

        items = []
        missing = []
        for image_id in ids:
            name = names.get(image_id) or f"image {image_id[:8]}"
            try:
                src = ctx_.uris.get(("thumb", image_id), partial(thumb_uri, image_id))
            except (ApiError, OSError, ValueError) as exc:
                src = ""
                missing.append(f"{name}: {exc}")
            active = image_id == store.get("active")
            items.append(
                html.Div(
                    [
                        html.Button(
                            [
                                html.Img(src=src, alt="", className="thumb"),
                                html.Span(name, className="strip-name"),
                            ],
                            id={"type": "img-pick", "id": image_id},
                            className="strip-pick" + (" strip-active" if active else ""),
                            title=f"Show {name} in the attention and spectrum views",
                            n_clicks=0,
                            **aria(pressed="true" if active else "false"),
                        ),
                        html.Button(
                            "×",
                            id={"type": "img-remove", "id": image_id},
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
