"""The model zoo: catalogue, loading, and converters for original checkpoint formats (WEIGHTS.md)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from backend.models.catalog import FAMILIES, ModelSpec, get_spec, list_specs, models_cache_dir
from backend.models.weights import pull, weights_available

if TYPE_CHECKING:
    from backend.models.converters import FORMATS
    from backend.models.importing import import_checkpoint, register_trained
    from backend.models.loading import LoadedModel, load_model

# Converting, importing and loading need torch: imported on first use, so that the catalogue (and with it
# `vitscope models list`) starts without it.
_LAZY = {
    "FORMATS": "converters",
    "import_checkpoint": "importing",
    "register_trained": "importing",
    "LoadedModel": "loading",
    "load_model": "loading",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"backend.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'backend.models' has no attribute {name!r}")


__all__ = [
    "FAMILIES",
    "FORMATS",
    "LoadedModel",
    "ModelSpec",
    "get_spec",
    "import_checkpoint",
    "list_specs",
    "load_model",
    "models_cache_dir",
    "pull",
    "register_trained",
    "weights_available",
]
