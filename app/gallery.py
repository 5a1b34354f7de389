"""Example images for the gallery, with their credit: photographs scikit-image ships (public domain / CC0)
and, where the shared data folder is, a few shape/texture cue-conflict images (CC BY 4.0, Geirhos et al.).

The UI reads the files where they lie and uploads them through the API like any other image (POST /images),
so the backend treats them exactly as a user's upload; class mode lets in exactly these (:func:`digests`).
The cue-conflict images are read from ``$VITSCOPE_CUE_CONFLICT_DIR`` or ``<repo>/../shared/data/cue_conflict``
(never copied into the repository).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Example:
    key: str
    filename: str  # relative to its source folder
    title: str
    credit: str
    source: str = "skimage"  # "skimage" | "cue_conflict"


CUE_CREDIT = "Geirhos et al. (ICLR 2019), CC BY 4.0"
EXAMPLES: tuple[Example, ...] = (
    *(
        Example(
            f"cue-{shape}-{texture}",
            f"{shape}/{file}",
            f"{shape.title()} shape, {texture} texture",
            CUE_CREDIT,
            "cue_conflict",
        )
        for shape, texture, file in (
            ("cat", "airplane", "cat4-airplane1.png"),
            ("bear", "bird", "bear3-bird3.png"),
            ("car", "cat", "car9-cat1.png"),
            ("boat", "cat", "boat6-cat1.png"),
        )
    ),  # fmt: skip
    Example("astronaut", "astronaut.png", "Astronaut Eileen Collins", "NASA Great Images, public domain"),
    Example("chelsea", "chelsea.png", "Chelsea the cat", "Stefan van der Walt, CC0"),
    Example("coffee", "coffee.png", "Coffee cup", "Rachel Michetti (Pikolo Espresso Bar), CC0"),
    Example("rocket", "rocket.jpg", "DSCOVR launch on Falcon 9", "SpaceX, public domain"),
    Example("hubble", "hubble_deep_field.jpg", "Hubble eXtreme Deep Field", "NASA, public domain"),
    Example(
        "coins", "coins.png", "Greek coins from Pompeii", "Brooklyn Museum, no known copyright restrictions"
    ),
    Example("camera", "camera.png", "Camera man (grayscale)", "Lav Varshney, CC0"),
    Example("brick", "brick.png", "Brick wall (texture)", "CC0Textures, CC0"),
)
BY_KEY = {e.key: e for e in EXAMPLES}
SOURCE_NOTE = (
    "Photographs ship with scikit-image (skimage.data); cue-conflict images: Geirhos, Rubisch, Michaelis, "
    "Bethge, Wichmann and Brendel, ICLR 2019 (CC BY 4.0). Credits as given there."
)
DEMO_IMAGES: tuple[str, ...] = ("cue-cat-airplane", "cue-bear-bird", "cue-car-cat")  # "Try the demo"


@lru_cache(maxsize=1)
def skimage_dir() -> Path | None:
    """scikit-image's folder of bundled images, found without importing the package."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def cue_conflict_dir() -> Path | None:
    folder = Path(
        os.environ.get("VITSCOPE_CUE_CONFLICT_DIR") or REPO.parent / "shared" / "data" / "cue_conflict"
    )
    return folder if folder.is_dir() else None


def _path(example: Example) -> Path | None:
    folder = skimage_dir() if example.source == "skimage" else cue_conflict_dir()
    return folder / example.filename if folder is not None else None


def available() -> list[Example]:
    return [e for e in EXAMPLES if (p := _path(e)) is not None and p.is_file()]


def demo_images() -> list[Example]:
    """The images of the "Try the demo" preset this machine has (cue-conflict first, else photographs)."""
    have = {e.key: e for e in available()}
    chosen = [have[k] for k in DEMO_IMAGES if k in have]
    return chosen or list(have.values())[:3]


def read(key: str) -> tuple[bytes, str]:
    """The bytes and file name of an example; KeyError for a key not in the gallery."""
    example = BY_KEY[key]
    path = _path(example)
    if path is None:
        raise FileNotFoundError(f"the folder of the example {key!r} is missing on this machine")
    return path.read_bytes(), path.name


@lru_cache(maxsize=1)
def digests() -> frozenset[str]:
    """sha256 (hex) of every example this machine offers: the ids the API gives them (class mode's images)."""
    out = set()
    for example in available():
        try:
            out.add(hashlib.sha256(read(example.key)[0]).hexdigest())
        except OSError:
            continue
    return frozenset(out)
