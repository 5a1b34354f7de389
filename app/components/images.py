"""Bring images: drag and drop (several at once), the example gallery, the strip of images in the set.

Every image goes through ``POST /images``; the API's error message for a bad file is shown in words, per file,
and the rest of the page keeps working. The strip picks the image the attention and spectrum views show.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flask
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from app import gallery
from app.api_client import ApiError
from app.auth import client_address
from app.components.common import IMG_STORE, aria, learn
from app.context import AppContext
from app.images import decode, thumbnail, to_data_uri

MAX_UPLOAD_BYTES = 32 * 1024 * 1024


def _json_error(status: int, code: str, message: str) -> Any:
    response = flask.jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


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
    pick = "Add an example photograph:" if ctx_.class_mode else "Or add an example photograph:"
    return html.Section(
        [
            html.H2("1 · Images", id="img-heading"),
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


def register(app: Dash, ctx_: AppContext) -> None:
    client = ctx_.client

    @app.server.route("/_vitscope/upload", methods=["POST"])
    def upload_proxy() -> Any:
        """One image file from the page's drop zone (multipart ``file``), passed on to ``POST /images``.

        The page tries ``/api/v1/images`` on its own origin first (the API's own upload limit applies there)
        and comes here when that is not the API (the UI on its own, behind a proxy, or with a token). The
        browser's address goes along in ``X-Forwarded-For`` for the API's per-client caps. Class mode: 403.
        """
        if ctx_.class_mode:
            return _json_error(
                403,
                "class_mode",
                "this UI runs in class mode, which allows only the images of the example gallery; "
                "uploads of your own images are off",
            )
        sent = flask.request.files.get("file")
        if sent is None:
            return _json_error(400, "bad_request", "send the image as the multipart field 'file'")
        data = sent.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            return _json_error(413, "too_large", f"the file is over {MAX_UPLOAD_BYTES:,} bytes")
        try:
            body = client.upload_image(
                data, sent.filename or "upload", sent.mimetype, client=client_address()
            )
        except ApiError as exc:
            response = _json_error(exc.status or 502, exc.code, exc.message)
            if exc.retry_after:
                response.headers["Retry-After"] = exc.retry_after
            return response
        response = flask.jsonify(body)
        response.status_code = 201
        return response

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
            body = client.upload_image(data, filename, client=client_address())
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
            hint = "pick an example." if ctx_.class_mode else "drop one above or pick an example."
            return html.Div(f"No images yet: {hint}", className="hint"), no_update
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
