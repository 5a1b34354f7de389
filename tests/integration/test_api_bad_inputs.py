"""A corpus of bad inputs: each gets its 4xx and a message that says what was wrong and what is allowed;
afterwards the server still answers correctly. Hard-but-valid images (16-bit PNG, CMYK JPEG, animated GIF,
EXIF-rotated...) are converted explicitly (the issue's hardening rules) and accepted."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.test_api import (
    TINY,
    Api,
    models_env,
    png_bytes,
    running,
    settings_for,
    tiny_models_cache,
)

pytestmark = pytest.mark.integration
__all__ = ["models_env", "tiny_models_cache"]

UPLOAD_LIMIT = 256 * 1024
TOKEN = "corpus-token-0123456789abcdef"


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return _save(Image.fromarray((rng.random((64, 80, 3)) * 255).astype(np.uint8)), "JPEG", quality=90)


def png16_bytes() -> bytes:
    """A 16-bit grayscale PNG written by hand (Pillow writes I;16 too, but this pins the exact bit depth)."""
    h, w = 32, 40
    rows = b"".join(b"\x00" + np.full(w, 60000 - 1000 * y, dtype=">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), color=(i * 80, 255 - i * 80, 0)) for i in range(3)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def exif_rotated_jpeg() -> bytes:
    img = Image.new("RGB", (60, 30), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return _save(img, "JPEG", exif=exif.tobytes())


def bomb_png() -> bytes:
    """12000 x 12000 = 144 M pixels of 1-bit zeros: a few KB on disk."""
    return _save(Image.new("1", (12000, 12000)), "PNG")


@pytest.fixture
async def api(models_env: Path, tmp_path: Path) -> AsyncIterator[Api]:
    settings = settings_for(tmp_path, max_upload_bytes=UPLOAD_LIMIT, max_set_images=2)
    async with running(settings) as a:
        yield a


def assert_error(r: httpx.Response, status: int, code: str | None, *needles: str, case: str = "") -> None:
    assert r.status_code == status, (case, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"code", "message"} and err["message"], err
    if code is not None:
        assert err["code"] == code, (case, err)
    for needle in needles:
        assert needle in err["message"], (case, needle, err["message"])


async def test_bad_uploads(api: Api) -> None:
    good = jpeg_bytes()
    cases: list[tuple[str, Callable[[], Any], int, str | None, tuple[str, ...]]] = [
        ("empty body", lambda: api.client.post("/api/v1/images"), 422, "invalid_request", ("file",)),
        ("empty file", lambda: api.upload(b"", "empty.png"), 400, "bad_image", ("empty", "JPEG")),
        (
            "truncated JPEG",
            lambda: api.upload(good[: len(good) // 2], "cut.jpg", "image/jpeg"),
            400,
            "bad_image",
            ("truncated",),
        ),
        (
            "text named .png",
            lambda: api.upload(b"hello, I am not a picture\n" * 20, "fake.png"),
            400,
            "bad_image",
            ("allowed formats", "PNG"),
        ),
        (
            "ICO (not allowed)",
            lambda: api.upload(_save(Image.new("RGB", (32, 32)), "ICO"), "x.ico"),
            400,
            "bad_image",
            ("allowed formats",),
        ),
        (
            "1x1 image",
            lambda: api.upload(_save(Image.new("RGB", (1, 1)), "PNG")),
            400,
            "bad_image",
            ("1x1", "at least"),
        ),
        (
            "decompression bomb",
            lambda: api.upload(bomb_png(), "bomb.png"),
            400,
            "bad_image",
            ("decompression bomb", "at most 40,000,000 pixels"),
        ),
        (
            "oversize upload",
            lambda: api.upload(b"\xff" * (UPLOAD_LIMIT + 100 * 1024), "big.jpg"),
            413,
            "too_large",
            (f"{UPLOAD_LIMIT + 64 * 1024:,}",),
        ),
        (
            "oversize upload, streamed without a length",
            lambda: api.client.post(
                "/api/v1/images",
                content=_chunks(UPLOAD_LIMIT + 200 * 1024),
                headers={"content-type": "multipart/form-data; boundary=xyz"},
            ),
            413,
            "too_large",
            ("at most",),
        ),
        (
            "wrong field name",
            lambda: api.client.post("/api/v1/images", files={"image": ("a.png", png_bytes())}),
            422,
            "invalid_request",
            ("'file'", "required"),
        ),
    ]
    for name, call, status, code, needles in cases:
        r = await call()
        assert_error(r, status, code, *needles, case=name)


async def _chunks(total: int) -> AsyncIterator[bytes]:
    yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n'
    sent = 0
    while sent < total:
        yield b"\0" * 65536
        sent += 65536


async def test_bad_parameters(api: Api) -> None:
    iid = await api.upload_ok(png_bytes(7))
    att = f"/api/v1/images/{iid}/attention"
    unknown = "0" * 64
    cases: list[tuple[str, str, dict[str, Any], int, str | None, tuple[str, ...]]] = [
        (
            "unknown model",
            att,
            {"model": "no-such-model"},
            404,
            "unknown_model",
            ("'no-such-model'", "known ids"),
        ),
        ("path as model", att, {"model": "../../etc/passwd"}, 404, "unknown_model", ("'../../etc/passwd'",)),
        ("layer out of range", att, {"model": TINY, "layer": 3}, 400, "bad_request", ("layer 3", "1..2")),
        ("layer zero", att, {"model": TINY, "layer": 0}, 422, "invalid_request", ("'layer'", "greater than")),
        (
            "layer not a number",
            att,
            {"model": TINY, "layer": "x"},
            422,
            "invalid_request",
            ("'layer'", "'x'"),
        ),
        ("head out of range", att, {"model": TINY, "head": "2"}, 400, "bad_request", ("head '2'", "0..1")),
        ("head garbage", att, {"model": TINY, "head": "max"}, 422, "invalid_request", ("'head'", "'max'")),
        (
            "query out of range",
            att,
            {"model": TINY, "query": "16"},
            400,
            "bad_request",
            ("query '16'", "0..15"),
        ),
        ("query garbage", att, {"model": TINY, "query": "-1"}, 422, "invalid_request", ("'query'",)),
        (
            "rollout with one head",
            att,
            {"model": TINY, "rollout": "true", "head": "1"},
            400,
            "bad_request",
            ("rollout", "'mean'"),
        ),
        ("bad format", att, {"model": TINY, "format": "gif"}, 422, "invalid_request", ("'format'", "'gif'")),
        (
            "attn depth 0",
            f"/api/v1/images/{iid}/spectrum",
            {"model": TINY, "state": "attn", "depth": 0},
            400,
            "bad_request",
            ("depth 0", "1..2"),
        ),
        (
            "depth too deep",
            f"/api/v1/images/{iid}/spectrum",
            {"model": TINY, "depth": 3},
            400,
            "bad_request",
            ("depth 3", "0..2"),
        ),
        (
            "bad state",
            f"/api/v1/images/{iid}/spectrum",
            {"state": "mlp"},
            422,
            "invalid_request",
            ("'state'",),
        ),
        (
            "unknown image",
            f"/api/v1/images/{unknown}/metrics",
            {"model": TINY},
            404,
            "not_found",
            (unknown, "POST /api/v1/images"),
        ),
        (
            "malformed image id",
            "/api/v1/images/not-an-id/metrics",
            {},
            422,
            "invalid_request",
            ("'image_id'",),
        ),
        ("unknown set", f"/api/v1/sets/{unknown}/metrics", {"model": TINY}, 404, "not_found", (unknown,)),
        ("unknown job", f"/api/v1/jobs/{'a' * 32}", {}, 404, "not_found", ("a" * 32,)),
        ("unknown route", "/api/v1/nothing/here", {}, 404, "not_found", ("/api/v1/nothing/here",)),
        (
            "absent weights",
            att,
            {"model": "dino-vit-s16"},
            409,
            "weights_unavailable",
            ("dino-vit-s16", "vitscope models pull"),
        ),
        (
            "embedding layer",
            f"/api/v1/sets/{unknown}/embeddings",
            {"layer": -1},
            422,
            "invalid_request",
            ("'layer'",),
        ),
    ]
    for name, url, params, status, code, needles in cases:
        r = await api.client.get(url, params=params)
        assert_error(r, status, code, *needles, case=name)

    posts: list[tuple[str, str, dict[str, Any], int, str, tuple[str, ...]]] = [
        ("empty set", "/api/v1/sets", {"json": {"images": []}}, 422, "invalid_request", ("'images'",)),
        (
            "too many images",
            "/api/v1/sets",
            {"json": {"images": [iid] * 3}},
            400,
            "bad_request",
            ("at most 2",),
        ),
        ("set of unknown", "/api/v1/sets", {"json": {"images": [unknown]}}, 404, "not_found", (unknown,)),
        ("set of non-ids", "/api/v1/sets", {"json": {"images": ["../x"]}}, 400, "bad_request", ("'../x'",)),
        (
            "not JSON",
            "/api/v1/sets",
            {"content": b"{nope", "headers": {"content-type": "application/json"}},
            422,
            "invalid_request",
            (),
        ),
        (
            "downloads off",
            "/api/v1/models/dino-vit-s16/pull",
            {},
            403,
            "downloads_disabled",
            ("VITSCOPE_ALLOW_DOWNLOADS",),
        ),
        ("pull unknown", "/api/v1/models/nope-model/pull", {}, 404, "unknown_model", ("'nope-model'",)),
    ]
    for name, url, kwargs, status, code, needles in posts:
        r = await api.client.post(url, **kwargs)
        assert_error(r, status, code, *needles, case=name)
    r = await api.client.delete(f"/api/v1/images/{iid}")
    assert_error(r, 405, "method_not_allowed", "DELETE")

    # ... and afterwards the server still answers correctly
    assert (await api.client.get("/api/v1/ready")).status_code == 200
    iid2 = await api.upload_ok(png_bytes(8))
    r = await api.client.get(
        f"/api/v1/images/{iid2}/attention", params={"model": TINY, "layer": 2, "query": "5"}
    )
    assert r.status_code == 200 and abs(np.array(r.json()["map"]).sum() - 1) < 1e-4


async def test_hard_images_are_converted_explicitly(api: Api) -> None:
    cases = [
        ("16-bit PNG", png16_bytes(), "PNG", (40, 32), False),
        ("CMYK JPEG", _save(Image.new("CMYK", (48, 40), (0, 255, 255, 0)), "JPEG"), "JPEG", (48, 40), False),
        ("animated GIF", animated_gif(), "GIF", (40, 40), True),
        ("RGBA PNG", _save(Image.new("RGBA", (30, 20), (0, 0, 0, 0)), "PNG"), "PNG", (30, 20), False),
        ("palette PNG", _save(Image.new("P", (24, 24), 3), "PNG"), "PNG", (24, 24), False),
        ("grayscale TIFF", _save(Image.new("L", (20, 16), 128), "TIFF"), "TIFF", (20, 16), False),
        ("EXIF-rotated JPEG", exif_rotated_jpeg(), "JPEG", (30, 60), False),
    ]
    for name, data, fmt, size, animated in cases:
        r = await api.upload(data, name)
        assert r.status_code == 201, (name, r.text)
        body = r.json()
        assert (body["format"], (body["width"], body["height"]), body["animated"]) == (fmt, size, animated), (
            name
        )
        m = await api.client.get(f"/api/v1/images/{body['id']}/attention", params={"model": TINY})
        assert m.status_code == 200, (name, m.text)


async def test_wrong_token(models_env: Path, tmp_path: Path) -> None:
    async with running(settings_for(tmp_path, api_token=TOKEN), wait_ready=False) as api:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            r = await api.client.get("/api/v1/models", headers=headers)
            assert_error(r, 401, "unauthorized", "Authorization: Bearer")
        r = await api.client.post("/api/v1/images", files={"file": ("a.png", png_bytes())})
        assert_error(r, 401, "unauthorized")
        ok = await api.client.get("/api/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
