"""Settings: environment parsing and the refusal of unsafe or impossible values (messages echo the value)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.config import DEFAULT_MODELS, MiB, Settings


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
    assert s.allow_downloads is False and s.default_models == list(DEFAULT_MODELS)
    assert s.max_wait_s == pytest.approx(0.005)


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("VITSCOPE_CORS_ORIGINS", "http://a.example, https://b.example:8443")
    monkeypatch.setenv("VITSCOPE_DEFAULT_MODELS", '["dino-vit-s16", "mae-vit-b16"]')
    monkeypatch.setenv("VITSCOPE_API_TOKEN", "0123456789abcdef0123")
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
    ],
)
def test_refuses_unsafe_values(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(**{field: value})
    assert needle in str(exc.value)


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
