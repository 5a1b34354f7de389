"""Labelled image sets decoded once into a uint8 tensor (N, 3, S, S), cached under an ignored folder.

Sources: ``cifar10`` (the JPEG archives of ``../shared/data/cifar10/``, read straight from the tar.gz),
an ImageFolder directory (``root/<class>/<image>``), or a directory holding ``train/`` and ``test/`` folders.
Small sets fit in memory (CIFAR-10 train: 150 MB) so augmentation can run on the training device.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from backend.errors import VitscopeError

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
CIFAR10_ARCHIVES = {"train": "cifar10-train-jpeg.tar.gz", "test": "cifar10-test-jpeg.tar.gz"}


@dataclass
class ImageSet:
    images: Tensor  # uint8 (N, 3, S, S)
    labels: Tensor  # int64 (N,)
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, n: int | None, seed: int = 0) -> ImageSet:
        """A seeded random subset of ``n`` images (all of them when ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return ImageSet(self.images[idx], self.labels[idx], self.classes, f"{self.source}[{n}]")


def cache_dir() -> Path:
    return Path(os.environ.get("VITSCOPE_DATA_CACHE", REPO_ROOT / ".data" / "cache"))


def cifar10_dir() -> Path:
    """Where the CIFAR-10 archives are: $VITSCOPE_CIFAR10, the repo's ignored .data/cifar10, ../shared."""
    candidates = [
        os.environ.get("VITSCOPE_CIFAR10"),
        REPO_ROOT / ".data" / "cifar10",
        REPO_ROOT.parent / "shared" / "data" / "cifar10",
    ]
    for c in candidates:
        if c and (Path(c) / CIFAR10_ARCHIVES["train"]).exists():
            return Path(c)
    raise VitscopeError("CIFAR-10 archives not found: set VITSCOPE_CIFAR10 or copy them to .data/cifar10/")


def load_images(data: str, split: str = "train", image_size: int = 32) -> ImageSet:
    """Decode (or read from the cache) one split of ``cifar10`` or an image directory."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {split!r}")
    if data == "cifar10":
        archive = cifar10_dir() / CIFAR10_ARCHIVES[split]
        return _cached(
            archive,
            f"cifar10-{split}-{image_size}",
            lambda: _iter_tar(archive),
            image_size,
            f"cifar10/{split}",
        )
    root = Path(data)
    if not root.is_dir():
        raise VitscopeError(f"--data must be cifar10 or a directory: {data}")
    if (root / split).is_dir():
        root = root / split
    elif split == "test" and (root / "val").is_dir():
        root = root / "val"
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
    return _cached(root, f"folder-{digest}-{image_size}", lambda: _iter_folder(root), image_size, str(root))


def _iter_tar(archive: Path) -> Iterator[tuple[str, str, bytes]]:
    # Streamed straight from the archive: nothing is unpacked to disk but the decoded cache.
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES and len(parts) >= 2:
                f = tar.extractfile(member)
                if f is not None:
                    yield parts[-2], member.name, f.read()


def _iter_folder(root: Path) -> Iterator[tuple[str, str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.parent != root:
            yield path.relative_to(root).parts[0], str(path), path.read_bytes()


def _decode(raw: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(raw)) as f:
        im: Image.Image = f.convert("RGB")
        if im.size != (size, size):
            # Shorter side to `size`, centre crop (the usual eval transform).
            w, h = im.size
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def _cached(source: Path, key: str, items, image_size: int, name: str) -> ImageSet:
    path = cache_dir() / f"{key}.npz"
    if path.exists() and path.stat().st_mtime >= source.stat().st_mtime:
        z = np.load(path, allow_pickle=False)
        return ImageSet(
            torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]), [str(c) for c in z["classes"]], name
        )
    rows = sorted(items(), key=lambda r: (r[0], r[1]))  # ImageFolder order: class, then file name
    if not rows:
        raise VitscopeError(f"no images under {source}")
    classes = sorted({r[0] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    # PIL releases the GIL while decoding: threads help on many-core training machines.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = np.stack(list(pool.map(lambda r: _decode(r[2], image_size), rows, chunksize=256)))
    labels = np.array([index[r[0]] for r in rows], dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, labels=labels, classes=np.array(classes))
    tmp.replace(path)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), classes, name)
