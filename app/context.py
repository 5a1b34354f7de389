"""What every component's callbacks share: the API client, caches, the assets' folder, class mode's rules."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from app import gallery
from app.api_client import ApiClient
from app.images import UriCache

ASSETS_DIR = Path(__file__).resolve().parents[1] / "frontend_assets"
HELP_DIR = ASSETS_DIR / "help"
CATALOG_TTL_S = 30.0  # how long the model list is trusted for class mode's checks


@dataclass
class AppContext:
    client: ApiClient
    uris: UriCache = field(default_factory=UriCache)
    class_mode: bool = False  # only the example gallery and the server's default models; no upload
    logout_url: str | None = None  # password mode: where the page's "Log out" link goes
    allow_downloads: bool = False  # the page offers a Download button for models without weights
    _catalog: tuple[float, list[dict[str, Any]]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def catalog(self, *, fresh: bool = False) -> list[dict[str, Any]]:
        """The API's model list, kept for ``CATALOG_TTL_S`` (ApiError when the API cannot say)."""
        with self._lock:
            if not fresh and self._catalog and time.monotonic() - self._catalog[0] < CATALOG_TTL_S:
                return self._catalog[1]
        models = self.client.models()
        with self._lock:
            self._catalog = (time.monotonic(), models)
        return models

    def allowed_models(self) -> set[str] | None:
        """Class mode: the ids of the server's default models (the API's ``default``); else None (any)."""
        if not self.class_mode:
            return None
        return {str(m["id"]) for m in self.catalog() if m.get("default")}

    def image_allowed(self, image_id: str) -> bool:
        """Class mode lets in only the example gallery's images (by sha256), like the API's uploads."""
        return not self.class_mode or image_id in gallery.digests()

    def refusal(self, image_id: str, model: str) -> str | None:
        """Why class mode refuses this image or model (None: allowed)."""
        if not self.image_allowed(image_id):
            return "class mode allows only the images of the example gallery"
        allowed = self.allowed_models()
        if allowed is not None and model not in allowed:
            offered = ", ".join(sorted(allowed))
            return f"class mode offers only the preloaded models ({offered}); not {model!r}"
        return None


@lru_cache(maxsize=32)
def help_text(name: str) -> str:
    """A teaching note from ``frontend_assets/help/<name>.md`` (empty if missing)."""
    path = HELP_DIR / f"{name}.md"
    return path.read_text(encoding="utf-8") if path.is_file() else ""
