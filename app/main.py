"""Build the Dash app (``create_dash_app``) and run it on its own (``python -m app.main --api-url URL``).

``vitscope serve`` mounts the app on the API's own port at ``/`` (one process); in compose it runs on its own
and talks to the API over the network. Either way the UI knows the backend only through HTTP; on its own it
reads its settings (``VITSCOPE_UI_*``, ``VITSCOPE_CLASS_MODE``, ``VITSCOPE_API_TOKEN``) through
``backend.config.UiSettings``, the same rules the API applies.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Any

import dash
from dash import dcc, html

from app import auth as ui_auth
from app import proxy
from app.api_client import ApiClient
from app.components import (
    attention,
    cka,
    controls,
    curves,
    export_all,
    images,
    lab,
    models,
    modern,
    permalink,
    snapshots,
    spectrum,
    tokens,
)
from app.components.common import IMG_STORE, MDL_CATALOG, MDL_STORE, META_STORE, QUERY_STORE, aria
from app.context import ASSETS_DIR, AppContext

log = logging.getLogger(__name__)


def build_layout(ctx: AppContext) -> html.Div:
    header: list[Any] = [
        html.H1("vitscope"),
        html.Span(
            "What do self-supervised Vision Transformers learn? Compare how contrastive, "
            "masked-image-modeling, hybrid and supervised ViTs attend and which frequencies "
            "they use (Park et al., ICLR 2023).",
            className="tagline",
        ),
    ]
    if ctx.class_mode:
        note = "Class mode: example images and preloaded models"
        header.append(html.Span(note, className="badge mode-badge"))
    if ctx.logout_url:
        header.append(html.A("Log out", href=ctx.logout_url, className="logout-link"))
    return html.Div(
        [
            html.A("Skip to the views", href="#att-panel", className="skip-link"),
            permalink.layout(),
            dcc.Store(id=IMG_STORE, data=images.empty_images()),
            dcc.Store(id=MDL_CATALOG),
            dcc.Store(id=MDL_STORE, data=[]),
            dcc.Store(id=META_STORE),
            dcc.Store(id=QUERY_STORE, data="cls"),
            html.Header(header, className="app-header"),
            html.Main(
                [
                    html.Div(id="url-note"),
                    html.Div([images.layout(ctx), models.layout()], className="setup"),
                    snapshots.layout(),
                    controls.layout(),
                    html.Div(id="work-status", className="work-status", role="status", **aria(live="polite")),
                    export_all.layout(),
                    attention.layout(),
                    curves.layout(),
                    modern.layout(),
                    spectrum.layout(),
                    tokens.layout(),
                    cka.layout(),
                    lab.layout(ctx),
                ],
                className="page",
            ),
        ]
    )


def create_dash_app(
    api_url: str,
    *,
    requests_pathname_prefix: str = "/",
    api_token: str | None = None,
    auth: ui_auth.UiAuth | None = None,
    class_mode: bool = False,
    proxy_hops: int = 0,
    allow_downloads: bool = False,
) -> dash.Dash:
    """The UI as a Dash app that calls the REST API at ``api_url``.

    ``api_url`` is the API server's base URL, with or without ``/api/v1`` (``http://127.0.0.1:8765``).
    ``requests_pathname_prefix`` is where the browser reaches the app (``/`` when mounted at the root); routes
    stay at ``/`` because a mount strips its prefix. ``api_token`` (default ``$VITSCOPE_API_TOKEN``) is sent
    as a bearer token on every API call; it stays on the server. ``auth`` guards every route (default: none);
    ``class_mode`` offers only the example gallery and the server's default models, with no upload;
    ``proxy_hops`` reverse proxies in front are believed about the browser's address (``X-Forwarded-For``)
    and scheme (``X-Forwarded-Proto``); ``allow_downloads`` (the API's ``VITSCOPE_ALLOW_DOWNLOADS``) offers a
    Download button for models without weights.
    """
    auth = auth or ui_auth.UiAuth()
    prefix = (
        requests_pathname_prefix if requests_pathname_prefix.endswith("/") else requests_pathname_prefix + "/"
    )
    app = dash.Dash(
        __name__,
        title="vitscope",
        assets_folder=str(ASSETS_DIR),
        requests_pathname_prefix=prefix,
        routes_pathname_prefix="/",
        serve_locally=True,
        update_title="vitscope · working…",
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    ctx = AppContext(
        client=ApiClient(api_url, token=api_token),
        class_mode=class_mode,
        allow_downloads=allow_downloads and not class_mode,
        logout_url=prefix + ui_auth.LOGOUT_PATH.lstrip("/") if auth.mode == "password" else None,
    )
    app.layout = build_layout(ctx)
    for component in (permalink, images, models, snapshots, controls, attention, curves, spectrum, tokens,
                      export_all):  # fmt: skip
        component.register(app, ctx)
    lab.register(app, ctx)
    cka.register(app, ctx)
    modern.register(app, ctx)
    app.server.config["VITSCOPE_API_URL"] = ctx.client.base
    proxy.install(app.server, ctx, prefix)
    if proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.server.wsgi_app = ProxyFix(app.server.wsgi_app, x_for=proxy_hops, x_proto=proxy_hops)
    ui_auth.install(app.server, auth, prefix)
    return app


def ui_options(settings: Any) -> dict[str, Any]:
    """``create_dash_app`` keywords from the settings (``backend.config.UiSettings`` or ``Settings``)."""
    password = settings.ui_password.get_secret_value() if settings.ui_password is not None else None
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    return {
        "api_token": token,
        "auth": ui_auth.UiAuth(settings.ui_auth, password, settings.ui_proxy_header, settings.redis_url),
        "class_mode": bool(settings.class_mode),
        "proxy_hops": int(settings.ui_proxy_hops),
        "allow_downloads": bool(getattr(settings, "allow_downloads", False)),  # Settings only
    }


def read_settings() -> Any:
    """The UI's settings from the environment (``backend.config.UiSettings``); ValidationError if refused."""
    from backend.config import UiSettings  # settings only: no torch, no service

    return UiSettings()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the vitscope UI on its own, against a running API.")
    parser.add_argument(
        "--api-url",
        default=os.environ.get("VITSCOPE_API_URL", "http://127.0.0.1:8000"),
        help="base URL of the vitscope API (default $VITSCOPE_API_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument("--host", default=os.environ.get("VITSCOPE_UI_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("VITSCOPE_UI_PORT", "8050")))
    parser.add_argument("--prefix", default="/", help="URL path prefix the browser uses (behind a proxy)")
    parser.add_argument(
        "--debug", action="store_true", help="Dash dev tools and reloading (never in production)"
    )
    args = parser.parse_args(argv)
    from pydantic import ValidationError

    try:
        settings = read_settings()
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
            print(f"vitscope ui: {where}: {err.get('msg')}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options = ui_options(settings)
    if options["api_token"] and settings.ui_auth == "none":
        log.warning(
            "VITSCOPE_UI_AUTH=none: anyone who reaches this UI uses the API through it, with its token; "
            "set VITSCOPE_UI_AUTH=password or proxy-header unless the network is closed"
        )
    app = create_dash_app(args.api_url, requests_pathname_prefix=args.prefix, **options)
    log.info(
        "vitscope UI on http://%s:%d%s, API at %s, login: %s%s",
        args.host,
        args.port,
        args.prefix,
        args.api_url,
        settings.ui_auth,
        ", class mode" if settings.class_mode else "",
    )
    if args.debug:
        app.run(host=args.host, port=args.port, debug=True, threaded=True)
        return 0
    serve_wsgi(app, args.host, args.port)
    return 0


def serve_wsgi(app: dash.Dash, host: str, port: int) -> None:
    """Serve the Dash (WSGI) app with uvicorn, as ``vitscope serve`` does when it mounts the UI."""
    import uvicorn

    try:
        from a2wsgi import WSGIMiddleware  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from starlette.middleware.wsgi import WSGIMiddleware
    uvicorn.run(WSGIMiddleware(app.server), host=host, port=port, log_level="warning")  # type: ignore[arg-type,unused-ignore]


if __name__ == "__main__":
    raise SystemExit(main())
