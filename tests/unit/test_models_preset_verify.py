"""`vitscope models pull --preset` (plan, sizes, skips, SimMIM by hand, dry run, offline) and `models verify`
(recorded sidecars, hub LFS blob names, card digests).

No test touches the network: sockets are blocked, HF_HUB_OFFLINE is set unless a test simulates being online
with fake downloaders, and the models cache and demo folder are temporary folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
import timm
import torch
from torch import Tensor

import backend.cli
from backend.models import import_checkpoint, load_model, plan
from backend.models.catalog import BUILTIN, PRESETS, REPO_ROOT, SIMMIM_FILE
from backend.models.weights import read_sidecar

VIT = "vit_small_patch16_224"
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
PAPER = ("mocov3-vit-b16", "simmim-vit-b16", "mae-vit-b16", "dino-vit-b16", "ibot-vit-b16", "deit-vit-b16")
SIMMIM_CMD = "vitscope models import FILE --format simmim --as simmim-vit-b16"
MAE_REPO = "timm/vit_base_patch16_224.mae"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VITSCOPE_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VITSCOPE_DEMO_MODELS", str(tmp_path / "demo"))  # absent unless a test creates it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backend.cli, "COMMAND_MODULES", ["models"])
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode off (sockets stay blocked: downloads and probes must be faked)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def forbid(monkeypatch: pytest.MonkeyPatch, *targets: tuple[Any, str]) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("must not be called")

    for obj, name in targets:
        monkeypatch.setattr(obj, name, fail)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = backend.cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def row(out: str, model_id: str) -> list[str]:
    return next(line.split() for line in out.splitlines() if line.startswith(model_id + " "))


def hub_blob_cache(cache: Path, repo: str, data: bytes, name: str = "model.safetensors") -> Path:
    """A Hugging Face cache entry as huggingface_hub writes it: refs/main, blobs/<sha256> (an LFS file) and
    snapshots/<commit>/<name> linking to the blob (WEIGHTS.md 5.1)."""
    folder = cache / "hub" / f"models--{repo.replace('/', '--')}"
    digest = hashlib.sha256(data).hexdigest()
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "blobs" / digest).write_bytes(data)
    commit = "1" * 40
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / digest)
    return snapshot / name


def tiny_weights(seed: int = 0) -> dict[str, Tensor]:
    model = timm.create_model(VIT, pretrained=False, num_classes=0, **TINY)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------- catalogue
def test_presets_and_size_estimates() -> None:
    assert PRESETS["paper"] == PAPER
    assert {BUILTIN[i].family for i in PAPER} == {"cl", "mim", "hybrid", "supervised"}
    assert all(BUILTIN[i].family != "baseline" for ids in PRESETS.values() for i in ids)
    assert all(s.size_mb for s in BUILTIN.values() if s.source != "random")
    assert BUILTIN["mocov3-vit-b16"].size_mb == 863
    assert all(343 <= (BUILTIN[i].size_mb or 0) <= 346 for i in PAPER if i != "mocov3-vit-b16")
    assert all(86 <= (BUILTIN[i].size_mb or 0) <= 89 for i in PRESETS["small"])


# ------------------------------------------------------------------------------------------- pull plan
def test_paper_dry_run_prints_the_plan_and_downloads_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forbid(monkeypatch, (plan, "pull_spec"), (plan, "probe"))
    code, out, err = run(["models", "pull", "--preset", "paper", "--dry-run"], capsys)
    assert (code, err) == (0, "")
    assert row(out, "ID") == ["ID", "FAMILY", "SOURCE", "SIZE", "(EST.)", "STATUS", "FROM", "/", "AT"]
    assert row(out, "mocov3-vit-b16")[:6] == ["mocov3-vit-b16", "cl", "url", "863", "MB", "download"]
    assert row(out, "mocov3-vit-b16")[6].endswith("/vit-b-300ep.pth.tar")
    assert row(out, "mae-vit-b16")[:6] == ["mae-vit-b16", "mim", "timm", "343", "MB", "download"]
    assert row(out, "deit-vit-b16")[3:6] == ["346", "MB", "download"]
    assert row(out, "ibot-vit-b16")[2:6] == ["url", "343", "MB", "download"]
    assert row(out, "simmim-vit-b16")[2:7] == ["manual", "345", "MB", "by", "hand"]
    assert [line.split()[0] for line in out.splitlines()[2:8]] == list(PAPER)
    assert "To download: 5 files, about 2.24 GB." in out  # 863 + 343 + 343 + 343 + 346 MB
    assert "By hand: 1 (about 345 MB; see below)." in out
    assert SIMMIM_FILE in out and "drive.google.com" in out and SIMMIM_CMD in out
    assert out.rstrip().endswith("Dry run: nothing downloaded.")
    assert not (cache / "hub").exists() and not (cache / "releases").exists()


def test_plan_skips_what_is_present(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub_blob_cache(cache, MAE_REPO, b"mae weights")
    release = cache / "releases" / "vit-b-300ep.pth.tar"
    release.parent.mkdir(parents=True)
    release.write_bytes(b"moco")
    items = plan.plan_pull(PRESETS["paper"])
    actions = {i.spec.id: i.action for i in items}
    assert actions == {
        "mocov3-vit-b16": plan.PRESENT,
        "simmim-vit-b16": plan.MANUAL,
        "mae-vit-b16": plan.PRESENT,
        "dino-vit-b16": plan.DOWNLOAD,
        "ibot-vit-b16": plan.DOWNLOAD,
        "deit-vit-b16": plan.DOWNLOAD,
    }
    code, out, _ = run(["models", "pull", "--preset", "paper", "--dry-run"], capsys)
    assert code == 0
    assert row(out, "mocov3-vit-b16")[5:] == ["present", str(release)]
    assert "To download: 3 files, about 1.03 GB. Already present (skipped): 2." in out


def test_present_models_need_no_network_even_offline(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = hub_blob_cache(cache, MAE_REPO, b"mae weights")
    code, out, err = run(["models", "pull", "mae-vit-b16"], capsys)
    assert (code, err) == (0, "")
    assert row(out, "mae-vit-b16")[5:] == ["present", str(snapshot)]
    assert "Done: 0 downloaded, 1 already present." in out


def test_offline_fails_fast_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forbid(monkeypatch, (plan, "pull_spec"), (plan, "probe"))
    start = time.perf_counter()
    code, out, err = run(["models", "pull", "--preset", "paper", "--no-progress"], capsys)
    assert time.perf_counter() - start < 5
    assert code == 2 and "To download: 5 files" in out  # the plan is printed first
    assert "offline mode is set (HF_HUB_OFFLINE), so nothing can be downloaded" in err
    assert "mocov3-vit-b16, mae-vit-b16, dino-vit-b16, ibot-vit-b16, deit-vit-b16 (about 2.24 GB)" in err


@pytest.mark.usefixtures("online")
def test_no_network_fails_fast_before_any_download(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forbid(monkeypatch, (plan, "pull_spec"))
    start = time.perf_counter()
    code, _, err = run(["models", "pull", "dino-vit-b16", "mocov3-vit-b16"], capsys)
    assert time.perf_counter() - start < 5
    assert code == 2
    assert "cannot reach https://huggingface.co (network disabled in tests) for dino-vit-b16" in err
    assert "https://dl.fbaipublicfiles.com (network disabled in tests) for mocov3-vit-b16" in err


@pytest.mark.usefixtures("online")
def test_too_little_disk_fails_before_any_download(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forbid(monkeypatch, (plan, "pull_spec"), (plan, "probe"))
    monkeypatch.setattr(plan.shutil, "disk_usage", lambda path: SimpleNamespace(free=100 * 10**6))
    code, _, err = run(["models", "pull", "--preset", "small"], capsys)
    assert code == 2 and "not enough disk space" in err and "100 MB is free" in err


@pytest.fixture
def fake_downloads(online: None, monkeypatch: pytest.MonkeyPatch, cache: Path) -> list[str]:
    """Hosts answer; release files and hub files 'download' as small files in the real cache layout."""
    fetched: list[str] = []

    def download_url_to_file(url: str, dst: str, progress: bool = True) -> None:
        fetched.append(url)
        Path(dst).write_bytes(f"release file from {url}".encode())

    def hf_hub_download(repo: str, name: str, cache_dir: Path, revision: str | None = None) -> str:
        fetched.append(f"{repo}/{name}")
        return str(hub_blob_cache(Path(cache_dir).parent, repo, f"hub file {repo}".encode(), name))

    monkeypatch.setattr(plan, "probe", lambda url: None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", download_url_to_file)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return fetched


def test_pull_downloads_records_digests_and_skips_next_time(
    cache: Path, fake_downloads: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["models", "pull", "mocov3-vit-b16", "dino-vit-b16", "--no-progress"], capsys)
    assert (code, err) == (0, "")
    dino_file = "timm/vit_base_patch16_224.dino/model.safetensors"
    assert fake_downloads == [BUILTIN["mocov3-vit-b16"].location, dino_file]
    assert "[1/2] mocov3-vit-b16: downloading about 863 MB from https://dl.fbaipublicfiles.com/" in out
    assert "[2/2] dino-vit-b16: downloading about 343 MB from https://huggingface.co/timm/" in out
    release = cache / "releases" / "vit-b-300ep.pth.tar"
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    assert f"[1/2] mocov3-vit-b16: {release} (sha256 {digest})" in out
    recorded = read_sidecar(release)["recorded"]  # written at pull time, before any load
    assert (recorded["sha256"], recorded["by"], recorded["size"]) == (digest, "pull", release.stat().st_size)
    assert "Done: 2 downloaded, 0 already present." in out

    code, out, _ = run(["models", "verify"], capsys)
    assert code == 0
    assert row(out, "mocov3-vit-b16")[1:3] == ["OK", "sha256"] and "(recorded at pull " in out
    dino = row(out, "dino-vit-b16")
    assert dino[1] == "OK" and "hub blob name" in " ".join(dino)

    fake_downloads.clear()
    code, out, _ = run(["models", "pull", "mocov3-vit-b16", "dino-vit-b16"], capsys)
    assert code == 0 and fake_downloads == []
    assert "To download: 0 files, about 0.0 MB. Already present (skipped): 2." in out


@pytest.mark.usefixtures("fake_downloads")
def test_a_corrupt_hub_download_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def corrupt(repo: str, name: str, cache_dir: Path, revision: str | None = None) -> str:
        path = hub_blob_cache(Path(cache_dir).parent, repo, b"good bytes", name)
        path.resolve().write_bytes(b"bad bytes")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", corrupt)
    code, out, _ = run(["models", "pull", "deit-vit-s16", "--no-progress"], capsys)
    assert code == 1
    assert "deit-vit-s16: FAILED:" in out and "was corrupt" in out and "1 failed" in out
    assert plan.plan_pull(["deit-vit-s16"])[0].action == plan.DOWNLOAD  # deleted: the next pull fetches again


def test_unknown_and_random_ids_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["models", "pull", "random-vit-s16"], capsys)[0] == 2
    assert run(["models", "pull", "no-such-model"], capsys)[0] == 2
    code, _, err = run(["models", "pull"], capsys)
    assert code == 2 and "--preset paper | small" in err


# ------------------------------------------------------------------------------------------- verify
def import_tiny(tmp_path: Path, name: str = "tiny-dino") -> Path:
    torch.save(tiny_weights(), tmp_path / "dino.pth")
    spec = import_checkpoint(tmp_path / "dino.pth", "dino", VIT, name, "cl", arch_kwargs=TINY)
    return Path(spec.location)


def test_import_records_the_digest_and_verify_says_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = import_tiny(tmp_path)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    sidecar = read_sidecar(weights)  # written by the import itself, not at the first load
    assert sidecar["recorded"]["sha256"] == digest and sidecar["recorded"]["by"] == "import"
    code, out, _ = run(["models", "verify", "tiny-dino"], capsys)
    assert code == 0
    assert row(out, "tiny-dino")[:3] == ["tiny-dino", "OK", "sha256"] and digest in out
    assert "recorded at import" in out and "card sha256" in out
    assert out.splitlines()[-1] == "1 checked: 1 OK"


def test_a_flipped_byte_is_a_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = import_tiny(tmp_path)
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    flip_last_byte(weights)
    after = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert load_model("tiny-dino").weights_digest == after  # a load re-hashes the changed file ...
    assert read_sidecar(weights)["recorded"]["sha256"] == before  # ... and keeps the record
    code, out, _ = run(["models", "verify"], capsys)
    assert code == 1
    line = " ".join(row(out, "tiny-dino"))
    assert line.startswith("tiny-dino MISMATCH expected " + before)
    assert f"got {after}" in line and "recorded at import" in line
    assert out.splitlines()[-1] == "1 checked: 1 MISMATCH"


def test_hub_blob_names_are_checked(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = hub_blob_cache(cache, MAE_REPO, b"mae weights")  # no sidecar: the blob name is the record
    code, out, _ = run(["models", "verify", "mae-vit-b16"], capsys)
    assert code == 0 and row(out, "mae-vit-b16")[1] == "OK" and "(hub blob name)" in out
    blob = snapshot.resolve()
    blob.write_bytes(b"mae weights, damaged")
    code, out, _ = run(["models", "verify", "mae-vit-b16"], capsys)
    got = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert code == 1
    assert f"MISMATCH expected {blob.name} (hub blob name), got {got}" in " ".join(row(out, "mae-vit-b16"))


def test_no_record_missing_and_skipped(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = cache / "releases" / "vitb_16-checkpoint_teacher.pth"  # copied in by hand: nothing recorded
    release.parent.mkdir(parents=True)
    release.write_bytes(b"ibot")
    code, out, _ = run(["models", "verify", "ibot-vit-b16", "mocov3-vit-b16", "random-vit-s16"], capsys)
    assert code == 0  # only a mismatch fails
    assert " ".join(row(out, "ibot-vit-b16")[:4]) == "ibot-vit-b16 NO RECORD sha256"
    missing = " ".join(row(out, "mocov3-vit-b16"))
    assert missing.startswith("mocov3-vit-b16 MISSING weights not found (expected")
    assert row(out, "random-vit-s16")[1] == "SKIPPED"
    code, out, _ = run(["models", "verify"], capsys)  # no ids: only models whose weights are present
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["ibot-vit-b16", "1"]


def test_a_sidecar_cached_at_first_load_counts_while_the_file_is_unchanged(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = cache / "releases" / "vitb_16-checkpoint_teacher.pth"
    release.parent.mkdir(parents=True)
    release.write_bytes(b"ibot")
    stat = release.stat()
    sidecar = release.with_name(release.name + ".sha256")
    sidecar.write_text(json.dumps({"sha256": "0" * 64, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    code, out, _ = run(["models", "verify", "ibot-vit-b16"], capsys)
    assert code == 1 and "(digest cached when first loaded)" in out  # same size and mtime: bytes rotted
    os.utime(release, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    code, out, _ = run(["models", "verify", "ibot-vit-b16"], capsys)
    assert code == 0 and row(out, "ibot-vit-b16")[1:3] == ["NO", "RECORD"]  # a stale cache is no record


def write_demo(folder: Path, model_id: str, data: bytes, **digests: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{model_id}.safetensors").write_bytes(data)
    card = {
        "id": model_id,
        "family": "cl",
        "arch": VIT,
        "arch_kwargs": TINY,
        "weights": f"{model_id}.safetensors",
        **digests,
    }
    (folder / f"{model_id}.json").write_text(json.dumps(card))
    return folder / f"{model_id}.safetensors"


def test_demo_cards_record_the_weights_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = tmp_path / "demo"
    good = hashlib.sha256(b"demo a").hexdigest()
    write_demo(demo, "demo-a", b"demo a", weights_sha256=good)
    write_demo(demo, "demo-b", b"demo b", sha256=hashlib.sha256(b"demo b").hexdigest())
    write_demo(demo, "demo-c", b"demo c", weights_sha256=good)
    code, out, _ = run(["models", "verify"], capsys)
    assert code == 1
    assert row(out, "demo-a")[1] == "OK" and "(card weights_sha256)" in " ".join(row(out, "demo-a"))
    assert row(out, "demo-b")[1] == "OK" and "(card sha256)" in " ".join(row(out, "demo-b"))
    assert f"MISMATCH expected {good} (card weights_sha256), got" in " ".join(row(out, "demo-c"))
    assert not list(demo.glob("*.sha256"))  # verify writes nothing, least of all into the git folder


def test_the_shipped_demo_models_verify(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VITSCOPE_DEMO_MODELS", str(REPO_ROOT / "demo_models"))
    cards = sorted((REPO_ROOT / "demo_models").glob("*.json"))
    assert len(cards) >= 3
    code, out, _ = run(["models", "verify"], capsys)
    assert code == 0
    for card in cards:
        assert row(out, card.stem)[1] == "OK"
    assert out.splitlines()[-1] == f"{len(cards)} checked: {len(cards)} OK"
