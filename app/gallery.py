"""Example photographs for the gallery: public-domain / CC0 images that scikit-image ships, with their credit.

The UI reads the files from the installed package and uploads them through the API like any other image
(``POST /images``), so the backend treats them exactly as a user's upload.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Example:
    key: str
    filename: str
    title: str
    credit: str


EXAMPLES: tuple[Example, ...] = (
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
SOURCE_NOTE = "Example photographs ship with scikit-image (skimage.data); credits as given there."


@lru_cache(maxsize=1)
def data_dir() -> Path | None:
    """scikit-image's folder of bundled images, found without importing the package."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def available() -> list[Example]:
    folder = data_dir()
    if folder is None:
        return []
    return [e for e in EXAMPLES if (folder / e.filename).is_file()]


def read(key: str) -> tuple[bytes, str]:
    """The bytes and file name of an example; KeyError for a key not in the gallery."""
    example = BY_KEY[key]
    folder = data_dir()
    if folder is None:
        raise FileNotFoundError("scikit-image is not installed: the example gallery is empty")
    return (folder / example.filename).read_bytes(), example.filename
