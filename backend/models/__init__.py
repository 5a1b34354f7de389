"""The model zoo: catalogue, loading, and converters for original checkpoint formats (WEIGHTS.md)."""

from backend.models.catalog import FAMILIES, ModelSpec, get_spec, list_specs, models_cache_dir
from backend.models.converters import FORMATS
from backend.models.importing import import_checkpoint, register_trained
from backend.models.loading import LoadedModel, load_model
from backend.models.weights import pull, weights_available

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
