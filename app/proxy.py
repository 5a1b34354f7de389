"""The UI server's own routes under ``/_vitscope/`` (beside Dash's); they call the API with its token.

- ``GET /_vitscope/attention``: one attention map (or rollout) for the page's script (the click fast path);
- ``POST /_vitscope/upload``: one image file from the drop zone, passed on to ``POST /images``;
- ``GET /_vitscope/jobs/<id>``: a job's progress (model downloads), for the page's progress bar;
- ``GET /_vitscope/work``: the set work under way (``done`` of ``total`` images), for the page's status line.

In class mode they apply the API's rules for anonymous students: only the example gallery's images and the
server's default models, no uploads (403 with the reason). Any other path the page does not serve is a 404.
"""

from __future__ import annotations

from typing import Any

import flask

from app.api_client import ApiError
from app.auth import client_address
from app.context import AppContext
from app.exports import attention_name
from app.state import head_param, image_id, model_id

MAX_UPLOAD_BYTES = 32 * 1024 * 1024
SET_WORK = ("set-metrics", "embeddings", "set-cka", "set-pca")  # the set jobs the page's status line names
# What the Flask server under Dash serves; everything else is a 404 (not the dashboard for a mistyped path).
SERVED_PREFIXES = ("/_dash-", "/_vitscope/", "/assets/", "/_favicon", "/_reload-hash", "/_alive")

_NOT_FOUND = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>vitscope · not found</title>
</head><body style="font-family: system-ui, sans-serif; margin: 3rem"><h1>Not found</h1>
<p>There is no page at this address. <a href="{home}">Open the vitscope dashboard</a>.</p></body></html>"""


def json_error(status: int, code: str, message: str) -> Any:
    response = flask.jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def _api_error(exc: ApiError) -> Any:
    response = json_error(exc.status or 502, exc.code, exc.message)
    if exc.retry_after:
        response.headers["Retry-After"] = exc.retry_after
    return response


def install(server: flask.Flask, ctx: AppContext, prefix: str) -> None:
    """Add the routes to ``server`` (the Flask app under Dash); ``prefix`` is where the browser reaches it."""

    @server.before_request
    def unknown_path() -> Any:
        path = flask.request.path
        if path == "/" or path.startswith(SERVED_PREFIXES):
            return None
        return flask.Response(_NOT_FOUND.format(home=prefix), status=404, mimetype="text/html")

    @server.route("/_vitscope/attention")
    def attention() -> Any:
        """One attention map for the page's script (same origin as the page, wherever the API lives)."""
        args = flask.request.args
        image, model = image_id(args.get("image", "")), model_id(args.get("model", ""))
        if image is None or model is None:
            return json_error(400, "bad_request", "image (64 hex digits, its sha256) and model are required")
        try:
            layer = int(args.get("layer", ""))
        except ValueError:
            return json_error(400, "bad_request", "layer must be a whole number (1-based block)")
        raw_query = args.get("query", "cls")
        query: int | str = int(raw_query) if raw_query.isdigit() else "cls"
        rollout = args.get("rollout", "false") == "true"
        try:
            refused = ctx.refusal(image, model)
            if refused:
                return json_error(403, "class_mode", refused)
            head = head_param(args.get("head", "mean"))
            body = ctx.client.attention(image, model, layer, head, query, rollout)
        except ApiError as exc:
            return _api_error(exc)
        # What an export of the redrawn map is called (the script keeps it in the figure's layout.meta).
        name = attention_name(model, layer, head, query, body["grid"], rollout)
        return flask.jsonify({**body, "filename": name})

    @server.route("/_vitscope/upload", methods=["POST"])
    def upload() -> Any:
        """One image file from the page's drop zone (multipart ``file``), passed on to ``POST /images``.

        The page tries ``/api/v1/images`` on its own origin first (the API's own upload limit applies there)
        and comes here when that is not the API (the UI on its own, behind a proxy, or with a token). The
        browser's address goes along in ``X-Forwarded-For`` for the API's per-client caps. Class mode: 403.
        """
        if ctx.class_mode:
            return json_error(
                403,
                "class_mode",
                "this UI runs in class mode, which allows only the images of the example gallery; "
                "uploads of your own images are off",
            )
        sent = flask.request.files.get("file")
        if sent is None:
            return json_error(400, "bad_request", "send the image as the multipart field 'file'")
        data = sent.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            return json_error(413, "too_large", f"the file is over {MAX_UPLOAD_BYTES:,} bytes")
        try:
            body = ctx.client.upload_image(
                data, sent.filename or "upload", sent.mimetype, client=client_address()
            )
        except ApiError as exc:
            return _api_error(exc)
        response = flask.jsonify(body)
        response.status_code = 201
        return response

    @server.route("/_vitscope/jobs/<job_id>")
    def job(job_id: str) -> Any:
        """A job's state (``done`` of ``total``, ``progress``), for the progress bars of downloads."""
        try:
            return flask.jsonify(ctx.client.job(job_id))
        except ApiError as exc:
            return _api_error(exc)

    @server.route("/_vitscope/work")
    def work() -> Any:
        """Set jobs under way, as "description: done of total" for the status line while panels compute."""
        try:
            jobs = ctx.client.jobs()
        except ApiError as exc:
            return _api_error(exc)
        running = [
            {"kind": j["kind"], "description": j["description"], "done": j["done"], "total": j["total"]}
            for j in jobs
            if j["status"] in ("queued", "running") and j["kind"] in SET_WORK
        ]
        return flask.jsonify({"work": running})
