"""DATASET arguments -> a list of image references: files, folders (recursive), globs, WebDataset tar shards.

A reference is cheap (a path, and for a tar member its byte range), so thousands are listed up front (the
progress bar needs the total) while the bytes are read batch by batch, by whichever worker decodes them.
Tar shards are read by byte range (uncompressed ``.tar``, as WebDataset writes them), so any worker can read
any member without scanning the shard again.
"""

from __future__ import annotations

import glob
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from backend.errors import BadRequest

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
SHARD_SUFFIX = ".tar"
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class ImageRef:
    """One image: a file, or a member of a tar shard at ``offset`` (``size`` bytes)."""

    source: str
    member: str | None = None
    offset: int = 0
    size: int = 0

    @property
    def path(self) -> str:
        """The name in the outputs: the file path, or ``shard.tar/member`` for a shard member."""
        return self.source if self.member is None else f"{self.source}/{self.member}"

    def read(self) -> bytes:
        """The image's bytes (OSError when unreadable)."""
        with open(self.source, "rb") as f:
            if self.member is None:
                return f.read()
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"the shard ends {self.size - len(data)} bytes before the end of this member")
        return data


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def shard_members(path: Path) -> list[ImageRef]:
    """The image members of an uncompressed tar shard, in the shard's order."""
    try:
        with tarfile.open(path, "r:") as tar:
            return [
                ImageRef(str(path), m.name, m.offset_data, m.size)
                for m in tar
                if m.isfile() and _is_image(m.name)
            ]
    except tarfile.ReadError as exc:
        raise BadRequest(
            f"{path} is not an uncompressed tar shard ({exc}); WebDataset shards are plain .tar files"
        ) from None


def _expand_one(path: Path) -> list[ImageRef]:
    if path.is_dir():
        return [ImageRef(str(p)) for p in sorted(path.rglob("*")) if p.is_file() and _is_image(p.name)]
    if path.is_file():
        return shard_members(path) if path.suffix.lower() == SHARD_SUFFIX else [ImageRef(str(path))]
    raise BadRequest(f"{path} is neither an image file, a folder nor a .tar shard")


def expand(datasets: Iterable[str | Path]) -> list[ImageRef]:
    """Every image of the DATASET arguments, in argument order, each listed once."""
    refs: dict[str, ImageRef] = {}
    names = [str(d) for d in datasets]
    for name in names:
        if _GLOB_CHARS & set(name):
            matches = sorted(glob.glob(name, recursive=True))
            if not matches:
                raise BadRequest(f"the pattern {name!r} matches no file")
            # a pattern picks folders, shards and images; other files it happens to match are not asked for
            paths = [Path(m) for m in matches if not Path(m).is_file() or _is_image(m) or m.endswith(".tar")]
        else:
            paths = [Path(name)]
        for path in paths:
            for ref in _expand_one(path):
                refs.setdefault(ref.path, ref)
    if not refs:
        raise BadRequest(
            f"no images found in {', '.join(names)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} files "
            f"and {SHARD_SUFFIX} shards)"
        )
    return list(refs.values())
