"""The data folder under attack (issue 10, items 5 and 9): partial files a crash left are swept at start-up,
set definitions count in VITSCOPE_DATA_DIR_MAX_BYTES, are capped per client and kept in bounded number, with
a bounded memory index."""

from __future__ import annotations

import itertools
import os
import random
import time
from pathlib import Path

import pytest

from backend.config import KiB, MiB
from backend.service.sets import SetFolder
from tests.integration.test_api import models_env, png_bytes, running, settings_for, tiny_models_cache

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("models_env")]
__all__ = ["models_env", "tiny_models_cache"]


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def stale(path: Path, data: bytes, age: float = 3600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


async def test_partial_files_from_a_crash_are_swept_at_start_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    crashed = [
        stale(data / "images" / "ab" / f".{'ab' * 32}.4242.1.tmp", b"\0" * 300_000),
        stale(data / "images" / "ab" / f".{'ab' * 32}.json.4242.1.tmp", b'{"width"'),
        stale(data / "sets" / f".{'cd' * 32}.json.4242.tmp", b'["ab'),
    ]
    writing = stale(data / "images" / "ef" / f".{'ef' * 32}.77.1.tmp", b"\0" * 10, age=1)  # in progress
    async with running(settings_for(tmp_path), wait_ready=False) as api:
        assert not any(p.exists() for p in crashed)
        assert writing.exists()  # a write a moment old may belong to a live process
        assert (await api.upload(png_bytes(90))).status_code == 201


async def test_sets_count_in_the_disk_bound(tmp_path: Path) -> None:
    bound = 1 * MiB
    settings = settings_for(tmp_path, data_dir_max_bytes=bound, max_upload_bytes=64 * KiB)
    async with running(settings, wait_ready=False) as api:
        ids = [await api.upload_ok(png_bytes(100 + i, size=(40, 40))) for i in range(4)]
        rng = random.Random(0)
        created = []
        for _ in range(400):  # 64-image sets of 4 images in random orders: ~4.2 KB each, 1.7 MB in all
            members = [rng.choice(ids) for _ in range(64)]
            r = await api.client.post("/api/v1/sets", json={"images": members})
            assert r.status_code == 201, r.text
            created.append(r.json()["id"])
        root = settings.data_dir
        assert folder_bytes(root) <= bound
        folder = api.service.sets.folder
        assert 0 < len(folder) < len(created)
        assert created[-1] in {p.stem for p in (root / "sets").glob("*.json")}  # the newest stays
        assert not (root / "sets" / f"{created[0]}.json").exists()  # the oldest went first
        r = await api.client.get(f"/api/v1/images/{ids[-1]}")  # images recently used stay
        assert r.status_code == 200


async def test_sets_per_client_are_capped(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, client_sets_per_hour=3)
    async with running(settings, wait_ready=False) as api:
        image = await api.upload_ok(png_bytes(110))
        for n in range(1, 4):
            assert (await api.client.post("/api/v1/sets", json={"images": [image] * n})).status_code == 201
        r = await api.client.post("/api/v1/sets", json={"images": [image] * 4})
        assert r.status_code == 429 and 3500 <= int(r.headers["Retry-After"]) <= 3600
        error = r.json()["error"]
        assert error["code"] == "too_many_sets" and "3 sets in the last hour" in error["message"]
        assert "VITSCOPE_CLIENT_SETS_PER_HOUR" in error["message"]


def test_the_set_folder_keeps_a_bounded_number_and_index(tmp_path: Path) -> None:
    folder = SetFolder(tmp_path, max_sets=50, index_size=10)
    ids = [f"{n:064x}" for n in range(80)]
    for set_id, members in zip(ids, itertools.repeat(["a" * 64]), strict=False):
        folder.put(set_id, members)
    assert len(folder) == 50 and len(list((tmp_path / "sets").glob("*.json"))) == 50
    assert len(folder._index) <= 10
    assert folder.get(ids[0]) is None and folder.get(ids[-1]) == ["a" * 64]
    again = SetFolder(tmp_path, max_sets=20)  # a restart with a lower bound trims the oldest
    assert len(again) == 20 and again.get(ids[-1]) == ["a" * 64] and again.get(ids[30]) is None
