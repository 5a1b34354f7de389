"""Settings: environment parsing and the refusal of unsafe or impossible values (messages echo the value)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.config import DEFAULT_MODELS, MiB, Settings, UiSettings

TOKEN = "0123456789abcdef0123"
PASSWORD = "a class password"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("VITSCOPE_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


def test_defaults_are_safe() -> None:
    s = Settings()
    assert s.host == "127.0.0.1" and s.port == 8000
    assert s.token is None and s.cors_origins == [] and s.redis_url is None
    assert s.allow_downloads is False and s.allow_random_init is False
    assert s.default_models == list(DEFAULT_MODELS)
    assert s.max_wait_s == pytest.approx(0.005)
    assert s.ui_auth == "none" and s.password is None and s.class_mode is False
    assert s.client_uploads_per_hour == 120 and s.client_upload_bytes_per_hour == 256 * MiB
    assert s.trusted_proxies == []  # no proxy trusted unless configured, loopback included


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("VITSCOPE_CORS_ORIGINS", "http://a.example, https://b.example:8443")
    monkeypatch.setenv("VITSCOPE_DEFAULT_MODELS", '["dino-vit-s16", "mae-vit-b16"]')
    monkeypatch.setenv("VITSCOPE_API_TOKEN", "0123456789abcdef0123")
    monkeypatch.setenv("VITSCOPE_UI", "false")  # a token and an open mounted UI do not go together
    monkeypatch.setenv("VITSCOPE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VITSCOPE_MAX_UPLOAD_BYTES", str(5 * MiB))
    monkeypatch.setenv("VITSCOPE_DEVICE", "CUDA:1")
    s = Settings()
    assert s.redis_url == "redis://127.0.0.1:6379/2"
    assert s.cors_origins == ["http://a.example", "https://b.example:8443"]
    assert s.default_models == ["dino-vit-s16", "mae-vit-b16"]
    assert s.token == "0123456789abcdef0123" and "0123456789" not in repr(s)
    assert s.data_dir == tmp_path and s.max_upload_bytes == 5 * MiB and s.device == "cuda:1"


def test_empty_redis_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    assert Settings().redis_url is None


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("device", "gpu", "'gpu'"),
        ("redis_url", "http://localhost:6379", "'http://localhost:6379'"),
        ("api_token", "short", "5 characters"),
        ("api_token", "with space in it 123", "whitespace"),
        ("cors_origins", ["http://ok.example/path"], "'http://ok.example/path'"),
        ("cors_origins", ["*", "http://a.example"], "mixes '*'"),
        ("default_models", ["../weights"], "'../weights'"),
        ("port", 0, "greater than or equal to 1"),
        ("max_upload_bytes", 10 * 1024 * MiB, "less than or equal"),
        ("max_batch", 0, "greater than or equal to 1"),
        ("request_timeout_s", 0, "greater than 0"),
        ("data_dir_max_bytes", 2 * MiB, "one upload would not fit"),
        ("ui_auth", "ldap", "'ldap' is not one of none, password, proxy-header"),
        ("ui_proxy_header", "X Forwarded User", "is not an HTTP header name"),
        ("ui_proxy_header", "Cookie", "browsers or proxies send"),
        ("ui_proxy_header", "authorization", "browsers or proxies send"),
        ("ui_proxy_header", "Sec-Fetch-User", "browsers or proxies send"),
        ("ui_proxy_hops", 9, "less than or equal to 5"),
        ("trusted_proxies", "0.0.0.0/0", "matches every address"),
        ("trusted_proxies", "10.0.0.1, ::/0", "matches every address"),
        ("trusted_proxies", "*", "every client choose its own address"),
        ("trusted_proxies", "0.0.0.0", "unspecified address"),
        ("trusted_proxies", "not a host!", "'not a host!' is not an IP address"),
        ("client_uploads_per_hour", -1, "greater than or equal to 0"),
        ("client_upload_bytes_per_hour", 1 * MiB, "would never be accepted"),
    ],
)
def test_refuses_unsafe_values(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(**{field: value})
    assert needle in str(exc.value)


@pytest.mark.parametrize("cls", [Settings, UiSettings])
@pytest.mark.parametrize(
    ("password", "needle"),
    [(None, "UI_PASSWORD is empty"), ("", "UI_PASSWORD is empty"), ("short pass", "10 characters long")],
)
def test_password_mode_needs_a_long_password(
    cls: type[UiSettings], password: str | None, needle: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        cls(ui_auth="password", ui_password=password, api_token=TOKEN)
    assert needle in str(exc.value)
    assert PASSWORD not in str(exc.value)


def test_password_mode_with_a_good_password() -> None:
    s = Settings(ui_auth=" Password ", ui_password=PASSWORD, api_token=TOKEN)
    assert s.ui_auth == "password" and s.password == PASSWORD
    assert PASSWORD not in repr(s)


def test_class_mode_refuses_downloads() -> None:
    with pytest.raises(ValidationError, match="class_mode and allow_downloads"):
        Settings(class_mode=True, allow_downloads=True)
    assert Settings(class_mode=True).class_mode is True


def test_trusted_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITSCOPE_TRUSTED_PROXIES", "ui, 10.1.2.3, 172.16.0.0/12, FE80::1, Proxy.Example")
    assert Settings().trusted_proxies == ["ui", "10.1.2.3", "172.16.0.0/12", "fe80::1", "proxy.example"]
    monkeypatch.setenv("VITSCOPE_TRUSTED_PROXIES", "")
    assert Settings().trusted_proxies == []


def test_a_mounted_ui_and_the_token_go_together() -> None:
    # A token with an open mounted UI: the UI would call the API with the token for anyone.
    with pytest.raises(ValidationError, match="anyone who opens the page could use it"):
        Settings(api_token=TOKEN)
    # A UI login without a token: /api/v1 on the same port would stay open beside it.
    with pytest.raises(ValidationError, match="stays open"):
        Settings(ui_auth="password", ui_password=PASSWORD)
    Settings(api_token=TOKEN, ui=False)  # the API alone
    Settings(api_token=TOKEN, ui_auth="password", ui_password=PASSWORD)
    Settings(api_token=TOKEN, ui_auth="proxy-header")
    # The UI on its own (compose) may be open by choice: the token still guards the API's port.
    assert UiSettings(api_token=TOKEN).ui_auth == "none"


def test_serve_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from backend.cli import serve

    monkeypatch.setenv("VITSCOPE_PORT", "9000")
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--port", "8123", "--no-ui", "--device", "cpu", "--models", "a,b"])
    s = serve.settings_from(args)
    assert (s.port, s.ui, s.device, s.default_models) == (8123, False, "cpu", ["a", "b"])
    assert serve.run(parser.parse_args(["serve", "--device", "tpu"])) == 2


def test_serve_refuses_a_token_with_an_open_ui(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from backend.cli import serve

    monkeypatch.setenv("VITSCOPE_API_TOKEN", TOKEN)
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    assert serve.run(parser.parse_args(["serve"])) == 2
    assert "VITSCOPE_UI_AUTH=password" in capsys.readouterr().err
    assert serve.settings_from(parser.parse_args(["serve", "--no-ui"])).token == TOKEN
