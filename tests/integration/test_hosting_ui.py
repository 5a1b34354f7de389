"""Hosting for a class, on the UI side: the login modes, class mode's page, the browser's address passed on.

Flask's test client drives the Dash server in-process; the API it would call is replaced by a mock transport
(``ApiClient(transport=...)``) where a test needs answers. The last tests mount the UI in the API's process.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn

import app.main as ui_main
from app.api_client import ApiClient
from app.auth import COOKIE, MAX_FAILURES, UiAuth
from tests.integration.test_api import (  # noqa: F401 - fixtures
    TINY,
    models_env,
    settings_for,
    tiny_models_cache,
)

pytestmark = pytest.mark.usefixtures("models_env")  # the tiny test model, offline

PASSWORD = "a class password"
TOKEN = "hosting-test-token-0123456789"
IMAGE_ID = "ab" * 32
NOWHERE = "http://127.0.0.1:9"  # nothing listens: calls that reach the API fail with "unreachable"


def dash_server(**kwargs: Any) -> Any:
    return ui_main.create_dash_app(NOWHERE, **kwargs).server


def ids_in(layout: Any) -> set[str]:
    """Every component id in a served layout (``/_dash-layout`` JSON), pattern ids as JSON text."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("props")
            if isinstance(props, dict) and "id" in props:
                pid = props["id"]
                found.add(pid if isinstance(pid, str) else json.dumps(pid, sort_keys=True))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(layout)
    return found


def browser_at(server: Any, address: str) -> Any:
    """Flask's test client for requests from ``address`` (the peer the UI server sees)."""
    client = server.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def login(client: Any, password: str = PASSWORD, next_: str = "/") -> Any:
    return client.post("/_vitscope/login", data={"password": password, "next": next_})


# ---------------------------------------------------------------------------------------------- password mode
UI_ROUTES = [
    ("GET", "/_dash-layout"),
    ("GET", "/_dash-dependencies"),
    ("POST", "/_dash-update-component"),
    ("GET", f"/_vitscope/attention?image={IMAGE_ID}&model=m&layer=1"),
    ("POST", "/_vitscope/upload"),
    ("GET", "/assets/vitscope.css"),
]


@pytest.fixture
def password_ui() -> Any:
    return dash_server(auth=UiAuth("password", PASSWORD), api_token=TOKEN)


def test_password_mode_sends_the_page_to_the_login_form(password_ui: Any) -> None:
    client = password_ui.test_client()
    r = client.get("/?images=abc&layer=3")
    assert r.status_code == 302
    where = urlsplit(r.headers["Location"])
    assert where.path == "/_vitscope/login"
    assert parse_qs(where.query)["next"] == ["/?images=abc&layer=3"]
    page = client.get(r.headers["Location"])
    assert page.status_code == 200 and b'type="password"' in page.data
    assert b'value="/?images=abc&amp;layer=3"' in page.data


@pytest.mark.parametrize(("method", "path"), UI_ROUTES)
def test_password_mode_guards_every_ui_route(password_ui: Any, method: str, path: str) -> None:
    r = password_ui.test_client().open(path, method=method)
    assert r.status_code == 401, (path, r.status_code)
    assert r.get_json()["error"]["code"] == "unauthorized"
    assert "log in first" in r.get_json()["error"]["message"]


def test_the_right_password_opens_every_route(password_ui: Any) -> None:
    client = password_ui.test_client()
    r = login(client, next_="/?layer=2")
    assert r.status_code == 303 and r.headers["Location"] == "/?layer=2"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/" in cookie and "Secure" not in cookie  # plain http here; https through a proxy sets it
    assert PASSWORD not in cookie
    assert client.get("/").status_code == 200
    assert client.get("/_dash-layout").status_code == 200
    assert client.get("/assets/vitscope.css").status_code == 200
    # The forwarding routes run (the API behind them is unreachable here: 502, not 401).
    r = client.get(f"/_vitscope/attention?image={IMAGE_ID}&model=m&layer=1")
    assert r.status_code == 502 and r.get_json()["error"]["code"] == "unreachable"
    # Logging out ends it.
    r = client.get("/_vitscope/logout")
    assert r.status_code == 303 and r.headers["Location"] == "/_vitscope/login"
    assert client.get("/_dash-layout").status_code == 401


def test_a_wrong_password_is_refused(password_ui: Any) -> None:
    client = password_ui.test_client()
    for wrong in ("", "a class passwore", PASSWORD + " ", PASSWORD.upper()):
        r = login(client, wrong)
        assert r.status_code == 401 and b"not the class password" in r.data
        assert "Set-Cookie" not in r.headers
    assert client.get("/_dash-layout").status_code == 401


def test_a_forged_cookie_is_refused(password_ui: Any) -> None:
    client = password_ui.test_client()
    client.set_cookie(COOKIE, "eyJ2IjoxfQ.forged.signature")
    assert client.get("/_dash-layout").status_code == 401
    # A cookie of another UI process (another secret) is refused too.
    other = dash_server(auth=UiAuth("password", PASSWORD)).test_client()
    session = login(other).headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    client.set_cookie(COOKIE, session)
    assert client.get("/_dash-layout").status_code == 401


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "x",
        "/\t/evil.example/phish",  # a browser drops the tab: //evil.example/phish
        "/\n/evil.example",
        "/\r\n/evil.example",
        "/%09/evil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/\x00/evil.example",
        "\x7f//evil.example",
        "/ /evil.example",
    ],
)
def test_login_never_redirects_to_another_site(password_ui: Any, target: str) -> None:
    client = password_ui.test_client()
    page = client.get("/_vitscope/login", query_string={"next": target})
    assert page.status_code == 200, "never a 5xx"
    r = login(client, next_=target)
    assert r.status_code == 303
    where = r.headers["Location"]
    assert not any(ch in where for ch in "\t\r\n\\"), where
    assert urlsplit(where).netloc == "" and not where.startswith("//"), where


def test_login_keeps_a_path_of_this_app(password_ui: Any) -> None:
    r = login(password_ui.test_client(), next_="/?images=ab&name=my%20cat.png&query=0.25,0.75")
    assert r.status_code == 303
    assert r.headers["Location"] == "/?images=ab&name=my%20cat.png&query=0.25,0.75"


def test_too_many_wrong_passwords_are_slowed_down(password_ui: Any) -> None:
    client = password_ui.test_client()
    for _ in range(MAX_FAILURES):
        assert login(client, "wrong password!").status_code == 401
    r = login(client)  # even the right one, until the window passes
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    other = browser_at(password_ui, "192.0.2.44")
    assert login(other).status_code == 303  # another address is not affected


def test_wrong_passwords_are_counted_in_redis_across_replicas_and_restarts(redis_url: str) -> None:
    import flask

    from app.auth import install

    def replica() -> Any:
        server = flask.Flask(f"ui-{id(object())}")
        install(server, UiAuth("password", PASSWORD, redis_url=redis_url), "/")
        return server

    address = f"192.0.2.{time.time_ns() % 200 + 1}"  # unique per run: the shared Redis keeps the window
    first, second = replica(), replica()
    for i in range(MAX_FAILURES):  # spread over two replicas: each alone saw fewer than the limit
        assert login(browser_at(first if i % 2 else second, address), "wrong password!").status_code == 401
    for server in (first, second, replica()):  # both replicas, and one started afterwards
        r = login(browser_at(server, address))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert login(browser_at(replica(), "198.51.100.7")).status_code == 303  # other addresses unaffected


def test_wrong_passwords_are_still_counted_while_redis_is_down() -> None:
    import flask

    from app.auth import install

    server = flask.Flask("ui-no-redis")
    install(server, UiAuth("password", PASSWORD, redis_url="redis://127.0.0.1:9/0"), "/")  # nothing listens
    client = browser_at(server, "192.0.2.250")
    for _ in range(MAX_FAILURES):
        assert login(client, "wrong password!").status_code == 401
    assert login(client).status_code == 429


def test_password_mode_under_a_prefix() -> None:
    server = dash_server(auth=UiAuth("password", PASSWORD), requests_pathname_prefix="/vitscope/")
    client = server.test_client()
    r = client.get("/")  # the proxy strips /vitscope/ before the UI sees the path
    assert r.status_code == 302
    assert r.headers["Location"] == "/vitscope/_vitscope/login?next=%2Fvitscope%2F"
    r = login(client, next_="/vitscope/?layer=1")
    assert r.headers["Location"] == "/vitscope/?layer=1" and "Path=/vitscope/" in r.headers["Set-Cookie"]
    assert login(client, next_="/elsewhere").headers["Location"] == "/vitscope/"


def test_the_page_offers_a_logout_link_in_password_mode(password_ui: Any) -> None:
    client = password_ui.test_client()
    login(client)
    assert "/_vitscope/logout" in json.dumps(client.get("/_dash-layout").get_json())
    assert "/_vitscope/logout" not in json.dumps(dash_server().test_client().get("/_dash-layout").get_json())


# ---------------------------------------------------------------------------------------------- proxy-header
@pytest.mark.parametrize(("method", "path"), [("GET", "/"), *UI_ROUTES])
def test_proxy_header_mode_needs_the_header(method: str, path: str) -> None:
    client = dash_server(auth=UiAuth("proxy-header", proxy_header="X-Auth-Request-User")).test_client()
    r = client.open(path, method=method)
    assert r.status_code == 401
    assert "X-Auth-Request-User" in r.get_json()["error"]["message"]
    assert client.open(path, method=method, headers={"X-Auth-Request-User": "  "}).status_code == 401
    r = client.open(path, method=method, headers={"X-Auth-Request-User": "student7"})
    assert r.status_code != 401


def test_proxy_header_mode_serves_the_page_with_the_header() -> None:
    client = dash_server(auth=UiAuth("proxy-header")).test_client()
    assert client.get("/", headers={"X-Forwarded-User": "student7"}).status_code == 200
    assert client.get("/_dash-layout", headers={"X-Forwarded-User": "student7"}).status_code == 200
    assert client.get("/_vitscope/login").status_code == 401  # no login form in this mode


def test_no_login_mode_is_open() -> None:
    client = dash_server().test_client()
    assert client.get("/").status_code == 200 and client.get("/_dash-layout").status_code == 200


# ---------------------------------------------------------------------------------------------- class mode
def test_class_mode_layout_has_no_upload_control() -> None:
    open_ids = ids_in(dash_server().test_client().get("/_dash-layout").get_json())
    assert {"img-upload", "img-uploaded", "img-upload-status"} <= open_ids
    class_ids = ids_in(dash_server(class_mode=True).test_client().get("/_dash-layout").get_json())
    assert not {i for i in class_ids if i.startswith("img-upload")}, class_ids
    gallery = {i for i in class_ids if "img-gallery" in i}
    assert len(gallery) >= 4, "the gallery stays"


def _hidden_above(node: Any, target: str, hidden: bool = False) -> bool | None:
    """Whether the component with id ``target`` sits under a ``hidden`` one; None when it is not there."""
    if isinstance(node, list):
        found = [_hidden_above(n, target, hidden) for n in node]
        return next((f for f in found if f is not None), None)
    if not isinstance(node, dict):
        return None
    props = node.get("props", {})
    hidden = hidden or bool(props.get("hidden"))
    if props.get("id") == target:
        return hidden
    return _hidden_above(list(props.values()), target, hidden)


def test_class_mode_hides_the_frequency_lab() -> None:
    """The lab makes new images (POST /perturb answers 403 in class mode): its form is not offered there."""
    assert _hidden_above(dash_server().test_client().get("/_dash-layout").get_json(), "lab-make") is False
    class_layout = dash_server(class_mode=True).test_client().get("/_dash-layout").get_json()
    assert _hidden_above(class_layout, "lab-make") is True


def test_class_mode_upload_route_refuses() -> None:
    client = dash_server(class_mode=True).test_client()
    r = client.post("/_vitscope/upload", data={"file": (b"\x89PNG...", "a.png")})
    assert r.status_code == 403
    err = r.get_json()["error"]
    assert err["code"] == "class_mode" and "example gallery" in err["message"]


@pytest.fixture
def class_api(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """The API as the UI sees it in class mode: one preloaded (default) model, others buildable on demand."""
    seen: list[httpx.Request] = []
    models = [
        {"id": "preloaded", "family": "cl", "arch": "vit_tiny_patch16", "available": True, "default": True},
        {"id": "vit_giant_patch14_224", "family": "other", "arch": "vit_giant_patch14_224", "available": True,
         "default": False},
    ]  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/api/v1/models":
            return httpx.Response(200, json={"models": models})
        if path.endswith("/attention"):
            return httpx.Response(200, json={"grid": [1, 1], "patch_size": 16, "map": [[1.0]]})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": f"no route {path}"}})

    def client(url: str, *, token: str | None = None) -> ApiClient:
        return ApiClient(url, token=token, transport=httpx.MockTransport(handler))

    monkeypatch.setattr(ui_main, "ApiClient", client)
    return seen


def gallery_image_id() -> str:
    """The API's id (sha256) of one example of the UI's gallery: an image class mode lets in."""
    from app import gallery

    return hashlib.sha256(gallery.read(gallery.available()[0].key)[0]).hexdigest()


def test_class_mode_proxy_allows_only_gallery_images_and_default_models(
    class_api: list[httpx.Request],
) -> None:
    example = gallery_image_id()
    client = dash_server(class_mode=True).test_client()
    r = client.get(f"/_vitscope/attention?image={example}&model=vit_giant_patch14_224&layer=1")
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "class_mode"
    assert "preloaded" in r.get_json()["error"]["message"]
    r = client.get(f"/_vitscope/attention?image={'cd' * 32}&model=preloaded&layer=1")
    assert r.status_code == 403 and "example gallery" in r.get_json()["error"]["message"]
    assert not [q for q in class_api if q.url.path.endswith("/attention")], "nothing refused reached the API"
    r = client.get(f"/_vitscope/attention?image={example}&model=preloaded&layer=1")
    assert r.status_code == 200 and r.get_json()["map"] == [[1.0]]
    # Outside class mode the same server passes any model on (the API's own rules apply there).
    r = (
        dash_server()
        .test_client()
        .get(f"/_vitscope/attention?image={'cd' * 32}&model=vit_giant_patch14_224&layer=1")
    )
    assert r.status_code == 200


def _model_shapes(client: Any, store: Any, models: Any) -> Any:
    """Call the shapes callback (image store + models -> an-meta) as the page would, with any store value."""
    outputs = [("an-meta", "data"), ("ctl-layer", "max"), ("ctl-layer", "marks"), ("ctl-head", "options")]
    payload = {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
        "outputs": [{"id": i, "property": p} for i, p in outputs],
        "inputs": [
            {"id": "img-store", "property": "data", "value": store},
            {"id": "mdl-store", "property": "data", "value": models},
        ],
        "changedPropIds": ["img-store.data"],
        "state": [{"id": "mdl-catalog", "property": "data", "value": None}],
    }
    r = client.post("/_dash-update-component", json=payload)
    assert r.status_code in (200, 204), r.data[:500]
    return r.get_json()["response"]["an-meta"]["data"] if r.status_code == 200 else None


def test_forged_store_values_never_reach_other_api_routes(class_api: list[httpx.Request]) -> None:
    """img-store.active = "../jobs?" once made the UI call GET /jobs with its token."""
    client = dash_server().test_client()
    for forged in ("../jobs?", "../../models/x/pull#", "a" * 64 + "/../../jobs", "%2e%2e%2fjobs"):
        meta = _model_shapes(client, {"ids": [forged], "names": {}, "active": forged}, ["preloaded", "other"])
        assert meta is None or meta["image"] is None
    meta = _model_shapes(client, {"ids": ["ab" * 32], "active": "ab" * 32}, ["../../jobs", "preloaded"])
    assert meta["for"] == ["preloaded"]
    paths = [q.url.path for q in class_api]
    assert paths and all(p.startswith("/api/v1/images/" + "ab" * 32 + "/") for p in paths), paths


def test_class_mode_shapes_only_for_default_models(class_api: list[httpx.Request]) -> None:
    example = gallery_image_id()
    client = dash_server(class_mode=True).test_client()
    meta = _model_shapes(
        client, {"ids": [example], "active": example}, ["preloaded", "vit_giant_patch14_224"]
    )
    assert "class mode" in meta["errors"]["vit_giant_patch14_224"]
    assert not [q for q in class_api if "vit_giant" in str(q.url)], "the giant model was never asked for"


def test_class_mode_offers_only_the_default_models() -> None:
    from app.components.models import class_models

    models = [
        {"id": "a", "available": True, "default": True},
        {"id": "b", "available": True, "default": False},
        {"id": "c", "available": False, "default": False},
    ]
    assert [m["id"] for m in class_models(models)] == ["a"]


# ---------------------------------------------------------------------------------------------- addresses
@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """The UI's API client answers from a mock: uploads get an id, the 3rd from one address a 429."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len([r for r in seen if r.headers.get("x-forwarded-for") == "203.0.113.9"]) >= 3:
            error = {"error": {"code": "too_many_uploads", "message": "client 203.0.113.9 made 2 uploads"}}
            return httpx.Response(429, json=error, headers={"Retry-After": "1234"})
        return httpx.Response(201, json={"id": IMAGE_ID, "width": 8, "height": 8})

    def client(url: str, *, token: str | None = None) -> ApiClient:
        return ApiClient(url, token=token, transport=httpx.MockTransport(handler))

    monkeypatch.setattr(ui_main, "ApiClient", client)
    return seen


def _upload(client: Any, headers: dict[str, str] | None = None) -> Any:
    return client.post("/_vitscope/upload", data={"file": (BytesFile(), "a.png")}, headers=headers)


class BytesFile:
    """A tiny file object for Flask's test client."""

    def __init__(self) -> None:
        import io

        self._buf = io.BytesIO(b"\x89PNG\r\n")

    def read(self, *args: Any) -> bytes:
        return self._buf.read(*args)


def test_the_ui_passes_the_browsers_address_on(fake_api: list[httpx.Request]) -> None:
    direct = browser_at(dash_server(api_token=TOKEN), "198.51.100.5")
    # Without trusted hops, a browser's own X-Forwarded-For is not believed.
    assert _upload(direct, {"X-Forwarded-For": "203.0.113.200"}).status_code == 201
    assert fake_api[-1].headers["x-forwarded-for"] == "198.51.100.5"
    assert fake_api[-1].headers["authorization"] == f"Bearer {TOKEN}"
    proxied = browser_at(dash_server(proxy_hops=1), "127.0.0.1")
    assert _upload(proxied, {"X-Forwarded-For": "192.0.2.1, 203.0.113.9"}).status_code == 201
    assert fake_api[-1].headers["x-forwarded-for"] == "203.0.113.9"  # what the one proxy appended


def test_the_apis_429_reaches_the_page_with_retry_after(fake_api: list[httpx.Request]) -> None:
    client = dash_server(proxy_hops=1).test_client()
    for _ in range(2):
        assert _upload(client, {"X-Forwarded-For": "203.0.113.9"}).status_code == 201
    r = _upload(client, {"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "1234"
    assert r.get_json()["error"]["code"] == "too_many_uploads"


# ---------------------------------------------------------------------------------------------- mounted
@pytest.fixture
def live(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start ``create_app(settings, ui=True)`` on a free port (the mounted UI calls its API over HTTP)."""
    import socket

    from backend.api import create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**overrides: Any) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        settings = settings_for(tmp_path, ui=True, port=port, **overrides)
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/v1/ready", headers=headers).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the server did not get ready")

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(30)


def _gallery_click(ui: httpx.Client, key: str) -> httpx.Response:
    """What the page sends when an example of the gallery is clicked (Dash's callback request)."""
    deps = ui.get("/_dash-dependencies").json()
    dep = next(d for d in deps if any("img-gallery" in i["id"] for i in d["inputs"]))
    outputs = [
        {"id": part.rsplit(".", 1)[0], "property": part.rsplit(".", 1)[1]}
        for part in dep["output"].strip(".").split("...")
    ]
    pattern = {"key": key, "type": "img-gallery"}
    body = {
        "output": dep["output"],
        "outputs": outputs,
        "inputs": [[{"id": pattern, "property": "n_clicks", "value": 1}]],
        "changedPropIds": [json.dumps(pattern, separators=(",", ":"), sort_keys=True) + ".n_clicks"],
        "state": [{"id": "img-store", "property": "data", "value": None}],
    }
    return ui.post("/_dash-update-component", json=body)


def test_class_mode_mounted_the_gallery_still_works(live: Callable[..., str]) -> None:
    url = live(class_mode=True)
    with httpx.Client(base_url=url, timeout=60) as ui:
        assert "img-upload" not in ids_in(ui.get("/_dash-layout").json())
        r = _gallery_click(ui, "chelsea")
        assert r.status_code == 200, r.text
        store = r.json()["response"]["img-store"]["data"]
        assert len(store["ids"]) == 1 and store["names"][store["ids"][0]] == "Chelsea the cat"
        # The image is in the API; a file of one's own is not let in.
        assert ui.get(f"/api/v1/images/{store['ids'][0]}").status_code == 200
        r = ui.post("/api/v1/images", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n", "image/png")})
        assert r.status_code == 403 and r.json()["error"]["code"] == "class_mode"
        r = ui.post("/_vitscope/upload", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n", "image/png")})
        assert r.status_code == 403


def test_mounted_password_mode_keeps_the_token(live: Callable[..., str]) -> None:
    url = live(api_token=TOKEN, ui_auth="password", ui_password=PASSWORD)
    with httpx.Client(base_url=url, timeout=60) as ui:
        assert ui.get("/").status_code == 302
        for path in ("/_dash-layout", f"/_vitscope/attention?image={IMAGE_ID}&model={TINY}&layer=1"):
            assert ui.get(path).status_code == 401, path
        assert ui.post("/_vitscope/upload", files={"file": ("x.png", b"x", "image/png")}).status_code == 401
        r = ui.post("/_vitscope/login", data={"password": PASSWORD, "next": "/"})
        assert r.status_code == 303
        assert ui.get("/_dash-layout").status_code == 200
        # The UI's session opens the UI only: the API itself still wants the token.
        assert ui.get("/api/v1/models").status_code == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert ui.get("/api/v1/models", headers=headers).status_code == 200


def test_create_app_refuses_to_mount_an_open_ui_beside_a_token(tmp_path: Path) -> None:
    from backend.api import create_app

    settings = settings_for(tmp_path, api_token=TOKEN)  # ui=False in these settings
    with pytest.raises(ValueError, match="anyone who opens the page"):
        create_app(settings, ui=True)


def test_the_work_route_reports_set_jobs_done_of_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's status line ("7 of 14 images") comes from the API's jobs, set work only."""
    jobs = [
        {"id": "a" * 32, "kind": "set-metrics", "description": "metrics of set 9d2c1b0a8f7e with m",
         "status": "running", "progress": 0.5, "done": 7, "total": 14},
        {"id": "b" * 32, "kind": "set-metrics", "description": "old", "status": "succeeded", "progress": 1.0,
         "done": 3, "total": 3},
        {"id": "c" * 32, "kind": "pull", "description": "download", "status": "running", "progress": 0.1,
         "done": 1, "total": 9},
    ]  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/jobs"
        return httpx.Response(200, json={"jobs": jobs})

    monkeypatch.setattr(
        ui_main,
        "ApiClient",
        lambda url, *, token=None: ApiClient(url, transport=httpx.MockTransport(handler)),
    )
    r = dash_server().test_client().get("/_vitscope/work")
    assert r.status_code == 200
    assert r.get_json() == {
        "work": [
            {
                "kind": "set-metrics",
                "description": "metrics of set 9d2c1b0a8f7e with m",
                "done": 7,
                "total": 14,
            }
        ]
    }
