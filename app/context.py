"""What every component's callbacks share: the API client, caches, where the assets live."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from app.api_client import ApiClient
from app.images import UriCache

ASSETS_DIR = Path(__file__).resolve().parents[1] / "frontend_assets"
HELP_DIR = ASSETS_DIR / "help"
MAX_COLUMNS = 4


@dataclass
class AppContext:
    client: ApiClient
    uris: UriCache = field(default_factory=UriCache)
    class_mode: bool = False  # only the example gallery and the server's default models; no upload
    logout_url: str | None = None  # password mode: where the page's "Log out" link goes


@lru_cache(maxsize=32)
def help_text(name: str) -> str:
    """A teaching note from ``frontend_assets/help/<name>.md`` (empty if missing)."""
    path = HELP_DIR / f"{name}.md"
    return path.read_text(encoding="utf-8") if path.is_file() else ""
