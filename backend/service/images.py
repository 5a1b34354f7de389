"""Uploaded images: ``ImageService`` (upload, meta, bytes, decoded pixels) over the folder that keeps them.

Disk is the source of truth: the originals are kept in a bounded folder so a cache eviction never loses one.
Uploads up to ``IMAGE_IN_CACHE_MAX_BYTES`` are also copied into the cache, so other replicas sharing the
same Redis can serve them (they copy them to their own folder on first use).

Layout under ``<data_dir>/images``: ``ab/<sha256>`` (the exact uploaded bytes) and ``ab/<sha256>.json``
(``{"width", "height", "format", "animated", "bytes"}``). When the folder grows over its byte bound, the least
recently used images are deleted first (their ids then answer 404 and the client uploads again). Files are
written atomically (temporary name, then rename), so a crash never leaves half an image; the temporary files a
crash leaves behind are swept at start-up (and whenever the folder is over its bound). Set definitions count
in the same bound (``companions``): whichever entry was used least recently goes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from backend.cache import Store
from backend.cache import keys as K
from backend.config import Settings
from backend.errors import BadImage, BadRequest, ClassModeRefused, NotFound, PayloadTooLarge

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from PIL import Image

    from backend.imaging import Preprocessing

log = logging.getLogger(__name__)

IMAGE_ID_RE = re.compile(r"^[0-9a-f]{64}$")
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
}
# Larger uploads would risk the cache's short timeouts; they are kept on disk only.
IMAGE_IN_CACHE_MAX_BYTES = 4 * 1024 * 1024
# Small decoded images kept whole (bytes, 8-bit RGB), and shrunk model views kept (count: ~200 KB each).
_DECODED_KEPT_BYTES = 64 * 1024 * 1024
_VIEWS_KEPT = 64


@dataclass(frozen=True)
class ImageMeta:
    width: int
    height: int
    format: str
    bytes: int
    animated: bool = False

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES.get(self.format.upper(), "application/octet-stream")


# A temporary file older than this belongs to no write in progress (writes take milliseconds): a crash's.
STALE_TMP_S = 60.0


def sweep_partial(root: Path, older_than: float = STALE_TMP_S) -> int:
    """Delete the ``.*.tmp`` files under ``root`` that a crash mid-write left behind; returns their bytes."""
    cutoff = time.time() - older_than
    freed = 0
    for path in root.rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            info = path.stat()
            if info.st_mtime < cutoff:
                path.unlink()
                freed += info.st_size
    if freed:
        log.info("removed %d bytes of partial files a crash left under %s", freed, root)
    return freed


class Companion(Protocol):
    """Other entries of the data folder counted in its bound (the set definitions)."""

    @property
    def total_bytes(self) -> int: ...

    def oldest(self) -> tuple[float, str] | None: ...

    def remove(self, entry_id: str) -> int: ...


class ImageFolder:
    """Thread-safe; every method does blocking file I/O (call it from a worker thread where that matters)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root) / "images"
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._index: dict[str, ImageMeta] = {}
        self._used: dict[str, float] = {}
        self.companions: list[Companion] = []
        self.root.mkdir(parents=True, exist_ok=True)
        sweep_partial(self.root)
        self._scan()

    def _paths(self, image_id: str) -> tuple[Path, Path]:
        if not IMAGE_ID_RE.match(image_id):
            raise ValueError(f"image id {image_id!r} is not 64 lowercase hex digits")
        folder = self.root / image_id[:2]
        return folder / image_id, folder / f"{image_id}.json"

    def _scan(self) -> None:
        for meta_path in self.root.glob("??/*.json"):
            image_id = meta_path.stem
            data_path = meta_path.with_suffix("")
            if not IMAGE_ID_RE.match(image_id) or not data_path.is_file():
                continue
            try:
                meta = ImageMeta(**json.loads(meta_path.read_text()))
                self._index[image_id] = meta
                self._used[image_id] = data_path.stat().st_mtime
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable upload record %s: %s", meta_path, exc)
        log.info("image folder %s: %d images, %d bytes", self.root, len(self._index), self.total_bytes)

    @property
    def total_bytes(self) -> int:
        return sum(m.bytes for m in self._index.values())

    def __len__(self) -> int:
        return len(self._index)

    def meta(self, image_id: str) -> ImageMeta | None:
        """Cheap (an in-memory index): is the image here, and what is it."""
        return self._index.get(image_id)

    def put(self, image_id: str, data: bytes, meta: ImageMeta) -> None:
        data_path, meta_path = self._paths(image_id)
        with self._lock:
            if image_id in self._index and data_path.is_file():
                self._touch(image_id, data_path)
                return
            data_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(data_path, data)
            atomic_write(meta_path, json.dumps(asdict(meta)).encode())
            self._index[image_id] = meta
            self._used[image_id] = time.time()
            self._enforce_bound(keep=image_id)

    def read(self, image_id: str) -> bytes | None:
        if image_id not in self._index:
            return None
        data_path, _ = self._paths(image_id)
        try:
            data = data_path.read_bytes()
        except OSError:
            with self._lock:
                self._index.pop(image_id, None)
                self._used.pop(image_id, None)
            return None
        with self._lock:
            self._touch(image_id, data_path)
        return data

    def _touch(self, image_id: str, data_path: Path) -> None:
        now = time.time()
        if now - self._used.get(image_id, 0.0) > 60:  # persist recency at most once a minute per image
            with contextlib.suppress(OSError):
                os.utime(data_path, (now, now))
        self._used[image_id] = now

    def enforce(self) -> None:
        """Bring images and companions back under the bound (after a companion wrote)."""
        with self._lock:
            self._enforce_bound(keep=None)

    def _enforce_bound(self, keep: str | None) -> None:
        total = self.total_bytes + sum(c.total_bytes for c in self.companions)
        if total <= self.max_bytes:
            return
        sweep_partial(self.root)
        images = sorted((t, iid) for iid, t in self._used.items() if iid != keep)  # oldest first
        next_image = 0
        while total > self.max_bytes:
            image = images[next_image] if next_image < len(images) else None
            olds = [(old, c) for c in self.companions if (old := c.oldest()) is not None]
            companion = min(olds, key=lambda pair: pair[0][0]) if olds else None
            if companion is not None and (image is None or companion[0][0] < image[0]):
                (_, entry_id), owner = companion
                total -= owner.remove(entry_id)
                continue
            if image is None:
                break
            next_image += 1
            image_id = image[1]
            meta = self._index.pop(image_id, None)
            self._used.pop(image_id, None)
            if meta is None:
                continue
            total -= meta.bytes
            for path in self._paths(image_id):
                with contextlib.suppress(OSError):
                    path.unlink()
            log.info("uploads over %d bytes: removed least recently used image %s", self.max_bytes, image_id)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:  # disk full, interrupted: no partial file stays behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class ByteBudget:
    """At most ``max_bytes`` held at once (by decodes); a holder alone always proceeds, so an image larger
    than the budget still decodes, by itself."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        self.peak = 0  # the most held at once (tests, bench/memory.py)
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.held == 0 or self.held + nbytes <= self.max_bytes)
            self.held += nbytes
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            async with self._changed:
                self.held -= nbytes
                self._changed.notify_all()


def decode_cost(width: int, height: int) -> int:
    """Bytes a decode of a ``width x height`` image holds at its peak: the decoded frame and one more (a
    rotation or mode conversion copies it; an upright RGB JPEG is not copied), 8-bit RGB."""
    return 2 * 3 * width * height


class ImageService:
    """Uploads by content address: the folder on disk, a copy in the cache, and in memory the small images
    decoded lately and each model's shrunk view of the images analysed lately.

    A large legal image (40 Mpx: 120 MB decoded) is decoded under a byte budget (``decode_memory_bytes``),
    shrunk at once to what its model reads (the shorter side its preprocessing resizes to: a few hundred
    KB), and the full frame let go: the runner queue and the overlays hold only the shrunk views.
    """

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.folder = ImageFolder(settings.data_dir, settings.data_dir_max_bytes)
        self.decode_budget = ByteBudget(settings.decode_memory_bytes)
        self._decoded: OrderedDict[str, Image.Image] = OrderedDict()  # small full-size images
        self._views: OrderedDict[tuple[str, int, str], Image.Image] = OrderedDict()  # shrunk per model

    def known(self, image_id: str) -> ImageMeta | None:
        """Cheap (memory only): the image is in this process's folder."""
        return self.folder.meta(image_id)

    async def upload(self, data: bytes) -> tuple[str, ImageMeta]:
        from backend.uploads import decode_image, image_id, probe_size, release_memory

        limit = self.settings.max_upload_bytes
        if len(data) > limit:
            raise PayloadTooLarge(f"the upload is {len(data):,} bytes; at most {limit:,} bytes are allowed")
        iid = image_id(data)
        if self.settings.class_mode:
            from backend.service.gallery import gallery_digests

            if iid not in await asyncio.to_thread(gallery_digests):
                raise ClassModeRefused(
                    "this server runs in class mode (VITSCOPE_CLASS_MODE), which allows only the images of "
                    "the example gallery; pick one there (uploads of your own images are off)"
                )
        async with self.decode_budget.hold(decode_cost(*probe_size(data))):
            decoded = await asyncio.to_thread(decode_image, data, max_bytes=limit)
            meta = ImageMeta(decoded.width, decoded.height, decoded.format, len(data), decoded.animated)
            self._remember(iid, decoded.image)
            del decoded
            await asyncio.to_thread(release_memory)
        await asyncio.to_thread(self.folder.put, iid, data, meta)
        if len(data) <= IMAGE_IN_CACHE_MAX_BYTES:  # disk is the source of truth
            await self.store.set(K.image_key(iid), data)
        return iid, meta

    @staticmethod
    def check_id(image_id: str) -> None:
        if not IMAGE_ID_RE.match(image_id):
            raise BadRequest(
                f"image id {image_id!r} is not 64 lowercase hex digits (the sha256 of the upload)"
            )

    async def meta(self, image_id: str) -> ImageMeta:
        self.check_id(image_id)
        meta = self.folder.meta(image_id)
        if meta is not None:
            return meta
        data = await self.store.get(K.image_key(image_id))  # uploaded through another replica
        if data is not None:
            try:
                _, meta = await self.upload(data)
                return meta
            except BadImage:
                pass
        raise NotFound(f"no image with id {image_id}: upload it first with POST /api/v1/images")

    async def read(self, image_id: str) -> tuple[bytes, ImageMeta]:
        meta = await self.meta(image_id)
        data = await asyncio.to_thread(self.folder.read, image_id)
        if data is None:
            data = await self.store.get(K.image_key(image_id))
        if data is None:
            raise NotFound(f"image {image_id} is no longer stored; upload it again")
        return data, meta

    async def model_view(self, image_id: str, prep: Preprocessing) -> Image.Image:
        """The image resized as ``prep``'s first step does (shorter side ``prep.resize``), not yet cropped:
        what the runner's preprocessing and the overlays start from, the same pixels as from the full
        image (the preprocessing's resize of it is the identity)."""
        key = (image_id, prep.resize, prep.interpolation)
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        image = self._decoded.get(image_id)
        if image is not None:
            self._decoded.move_to_end(image_id)
            view = await asyncio.to_thread(_shrink, image, prep)
        else:
            view = await self._decode_and_shrink(image_id, prep)
        self._views[key] = view
        while len(self._views) > _VIEWS_KEPT:
            self._views.popitem(last=False)
        return view

    async def _decode_and_shrink(self, image_id: str, prep: Preprocessing) -> Image.Image:
        from backend.uploads import decode_image, release_memory

        data, meta = await self.read(image_id)
        async with self.decode_budget.hold(decode_cost(meta.width, meta.height)):

            def decode() -> Image.Image:
                decoded = decode_image(data, max_bytes=max(len(data), 1))
                self._remember(image_id, decoded.image)
                view = _shrink(decoded.image, prep)
                del decoded
                release_memory()  # the full frame's pages go back to the system, not to a free list
                return view

            return await asyncio.to_thread(decode)

    def _remember(self, image_id: str, image: Image.Image) -> None:
        """Keep a small decoded image (a later model view needs no decode); large ones are not kept."""
        size = 3 * image.width * image.height
        if size > _DECODED_KEPT_BYTES // 4:
            return
        self._decoded[image_id] = image
        self._decoded.move_to_end(image_id)
        while sum(3 * im.width * im.height for im in self._decoded.values()) > _DECODED_KEPT_BYTES:
            self._decoded.popitem(last=False)


def _shrink(image: Image.Image, prep: Preprocessing) -> Image.Image:
    from backend.imaging import resize_for

    return resize_for(image, prep)
