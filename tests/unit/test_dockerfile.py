"""The Dockerfile and .dockerignore, read as text (no Docker engine here): instructions, user, health check,
what gets installed and what never enters the image. The two snippets the build and the health check run
are executed here for real against the project's pyproject.toml and a local HTTP server."""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.healthcheck import run_check

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

Instruction = tuple[str, str]  # (KEYWORD, arguments)


def parse(text: str) -> list[Instruction]:
    """Logical instructions: comment lines dropped (also inside continuations), backslash lines joined."""
    out: list[Instruction] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def _all(instructions: list[Instruction], keyword: str) -> list[str]:
    return [rest for kw, rest in instructions if kw == keyword]


def _index(instructions: list[Instruction], keyword: str, contains: str = "") -> int:
    for i, (kw, rest) in enumerate(instructions):
        if kw == keyword and contains in rest:
            return i
    raise AssertionError(f"no {keyword} containing {contains!r}")


def _env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in _all(instructions, "ENV"):
        for token in shlex.split(rest):
            key, sep, value = token.partition("=")
            assert sep, f"ENV {rest!r}: use the KEY=value form"
            env[key] = value
    return env


def _args(instructions: list[Instruction]) -> dict[str, str]:
    args: dict[str, str] = {}
    for rest in _all(instructions, "ARG"):
        key, _, value = rest.partition("=")
        args[key.strip()] = value.strip().strip('"')
    return args


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest)  # Docker runs a non-JSON array through /bin/sh instead: it must parse
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


# ------------------------------------------------------------------------------------------ base and layout
def test_base_image_is_python_311_slim(instructions: list[Instruction]) -> None:
    [base] = _all(instructions, "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: _args(instructions)[m.group(1)], base)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    assert _index(instructions, "ARG", "BASE_IMAGE") < _index(instructions, "FROM")


def test_runs_as_a_non_root_user(instructions: list[Instruction]) -> None:
    users = _all(instructions, "USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    last_user = max(i for i, (kw, _) in enumerate(instructions) if kw == "USER")
    assert last_user < _index(instructions, "CMD")
    assert all(kw != "USER" or rest == users[-1] for kw, rest in instructions[last_user:])
    # The user is created with that uid, and owns the volumes it writes to.
    run = " ".join(_all(instructions, "RUN"))
    assert f"--uid {user}" in run
    assert re.search(rf"chown -R {user}:{user} /data\b", run)


def test_installs_the_project_from_pyproject(instructions: list[Instruction]) -> None:
    copy_pyproject = _index(instructions, "COPY", "pyproject.toml")
    deps = _index(instructions, "RUN", "pip install -r /tmp/requirements.txt")
    copy_all = _index(instructions, "COPY", ". .")
    project = _index(instructions, "RUN", "pip install --no-deps --no-build-isolation -e .")
    assert copy_pyproject < deps < copy_all < project, "dependencies are cached in a layer before the source"
    assert "vitscope --version" in instructions[project][1], "the build runs the installed entry point once"
    # torch is never pinned here: the pins are pyproject.toml's (a CUDA build from PyPI on x86_64).
    assert not re.search(r"\btorch(vision)?\s*==", " ".join(rest for _, rest in instructions))


def test_requirements_snippet_reads_pyproject(instructions: list[Instruction], tmp_path: Path) -> None:
    """Run the build's dependency step (the python -c part) on the real pyproject.toml."""
    run = instructions[_index(instructions, "RUN", "tomllib")][1]
    m = re.match(r'python -c "(?P<code>[^"]+)"', run)
    assert m, run
    code = m.group("code").replace("/tmp/requirements.txt", str(tmp_path / "requirements.txt"))
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=30)
    lines = (tmp_path / "requirements.txt").read_text().splitlines()
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert lines == expected
    torch = [line for line in lines if re.match(r"^(torch|torchvision)[=<>~!]", line)]
    assert len(torch) == 2, "the optional TORCH_INDEX_URL step installs exactly torch and torchvision"


def test_optional_torch_index_is_empty_by_default(instructions: list[Instruction]) -> None:
    assert _args(instructions)["TORCH_INDEX_URL"] == ""


# ------------------------------------------------------------------------------------------ runtime
def test_volumes_and_paths(instructions: list[Instruction]) -> None:
    env = _env(instructions)
    assert env["VITSCOPE_MODELS_CACHE"] == "/data/models_cache"
    assert env["VITSCOPE_DATA_DIR"] == "/data/uploads"
    [volumes] = _all(instructions, "VOLUME")
    assert set(_exec_form(volumes)) == {"/data/models_cache", "/data/uploads"}
    # Ownership is set before VOLUME: later build steps cannot change a volume's contents.
    assert _index(instructions, "RUN", "chown") < _index(instructions, "VOLUME")


def test_settings_read_the_image_paths() -> None:
    from backend.config import Settings

    assert "data_dir" in Settings.model_fields  # VITSCOPE_DATA_DIR
    catalog = (ROOT / "backend" / "models" / "catalog.py").read_text()
    assert "VITSCOPE_MODELS_CACHE" in catalog


def test_exposes_the_api_and_ui_ports(instructions: list[Instruction]) -> None:
    ports = {p.split("/")[0] for rest in _all(instructions, "EXPOSE") for p in rest.split()}
    assert {"8000", "8050"} <= ports


def test_default_command(instructions: list[Instruction]) -> None:
    [cmd] = _all(instructions, "CMD")
    command = _exec_form(cmd)
    assert command == ["vitscope", "serve", "--host", "0.0.0.0", "--port", "8000"]
    args = cli_parser().parse_args(command[1:])
    assert args.host == "0.0.0.0" and args.port == 8000 and not args.no_ui
    assert not _all(instructions, "ENTRYPOINT")


def cli_parser() -> argparse.ArgumentParser:
    """`vitscope` with only its `serve` subcommand (the other subcommands import torch)."""
    from backend.cli import serve

    root = argparse.ArgumentParser(prog="vitscope")
    serve.register(root.add_subparsers(dest="command", required=True))
    return root


def _healthcheck(instructions: list[Instruction]) -> tuple[dict[str, str], list[str]]:
    [rest] = _all(instructions, "HEALTHCHECK")
    options, _, command = rest.partition("CMD ")
    opts = dict(opt.lstrip("-").split("=", 1) for opt in options.split())
    return opts, _exec_form(command)


def test_healthcheck_calls_the_health_route_with_python(instructions: list[Instruction]) -> None:
    opts, command = _healthcheck(instructions)
    assert command[:2] == ["python", "-c"]
    assert "/api/v1/health" in command[2] and "8000" in command[2]
    assert not any(tool in " ".join(command) for tool in ("curl", "wget"))
    assert {"interval", "timeout", "start-period", "retries"} <= set(opts)
    assert _index(instructions, "USER") < _index(instructions, "HEALTHCHECK")


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_healthcheck_script_runs(instructions: list[Instruction], status: int | None, healthy: bool) -> None:
    _, command = _healthcheck(instructions)
    code, paths = run_check(command[2], 8000, status)
    assert (code == 0) is healthy
    if status is not None:
        assert paths == ["/api/v1/health"]


# ------------------------------------------------------------------------------------------ secrets
def test_no_secrets_baked_in(instructions: list[Instruction]) -> None:
    secret = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|API_KEY|PRIVATE", re.I)
    for name in [*_env(instructions), *_args(instructions)]:
        assert not secret.search(name), f"{name} would be stored in the image; pass it at run time"
    for rest in _all(instructions, "COPY") + _all(instructions, "ADD"):
        assert ".env" not in rest and "secret" not in rest.lower(), rest
    assert not _all(instructions, "ADD"), "use COPY (ADD fetches URLs and unpacks archives)"
    text = DOCKERFILE.read_text()
    assert not re.search(r"\b[0-9a-fA-F]{32,}\b", text)
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text)


def _ignore_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line.lstrip("/") for line in lines if line and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also covers everything below a match."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            n = len(parts)
            candidates += ["/".join(parts[i : j + 1]) for i in range(n) for j in range(i, n)]
            pat = pat[3:]
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".env.local",
        "deploy/prod.env",
        ".git/config",
        ".venv/bin/python",
        "models_cache/hub/x.bin",
        "models_cache/README.md",
        ".data/cifar10/x",
        "backend/__pycache__/a.pyc",
        "tests/unit/test_x.py",
        "vitscope.egg-info/PKG-INFO",
        "certs/server.key",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert _ignored(path, _ignore_patterns()), path


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "backend/config.py",
        "backend/cli/serve.py",
        "app/main.py",
        "frontend_assets/style.css",
        "demo_models/demo.safetensors",
    ],
)
def test_dockerignore_keeps_what_the_build_needs(path: str) -> None:
    assert not _ignored(path, _ignore_patterns()), path
