"""The one settings object of the service: ``VITSCOPE_*`` environment variables (and ``REDIS_URL``).

Every value is checked when the settings are built; an unsafe or impossible value is refused with a message
that echoes it and says what is allowed (pydantic raises; `vitscope serve` prints it and exits with 2).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/vitscope`` (``~/.local/share/vitscope``): where uploads and set definitions live."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vitscope"


def _split_list(value: Any) -> Any:
    """Accept ``a,b,c`` (the usual shell form) as well as a JSON list or a Python list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]


# The shipped demo models (offline, trained by vitscope) and the random baseline; the first is the default.
DEFAULT_MODELS = ("cifar-cl-vit-t4", "cifar-mim-vit-t4", "cifar-hybrid-vit-t4", "random-vit-s16")

class Settings(BaseSettings):
    """Service settings. Environment: ``VITSCOPE_<FIELD>`` (upper case), plus ``REDIS_URL``."""

    model_config = SettingsConfigDict(env_prefix="VITSCOPE_", extra="ignore", populate_by_name=True)

    # -- network ---------------------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Interface `vitscope serve` binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port `vitscope serve` binds.")
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token required on every /api/v1 route except /health (unset: open)."
    )
    cors_origins: CommaList = Field(
        default_factory=list, description="Origins allowed by CORS (comma separated); empty: CORS off."
    )
    ui: bool = Field(default=True, description="Mount the Dash UI at / of the same process.")

    # -- cache -----------------------------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "VITSCOPE_REDIS_URL", "redis_url"),
        description="Redis for the cache; unset: an in-process LRU store (the embedded default).",
    )
    redis_timeout_s: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description="Limit on each Redis call; slower counts as a miss (circuit breaker).",
    )
    cache_memory_bytes: int = Field(
        default=512 * MiB,
        ge=1 * MiB,
        le=256 * GiB,
        description="Size of the in-process LRU store (REDIS_URL unset).",
    )
    hot_cache_bytes: int = Field(
        default=32 * MiB,
        ge=0,
        le=16 * GiB,
        description="In-process LRU of rendered responses in front of the store (0: off).",
    )

    # -- uploads ---------------------------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=default_data_dir, description="Uploaded images and set definitions."
    )
    data_dir_max_bytes: int = Field(
        default=2 * GiB,
        ge=1 * MiB,
        description="Disk bound of the uploads folder; least recently used images go first.",
    )
    max_upload_bytes: int = Field(
        default=20 * MiB,
        ge=1 * KiB,
        le=256 * MiB,
        description="Largest accepted upload (413 above, while it streams).",
    )
    max_set_images: int = Field(default=64, ge=1, le=1024, description="Most images in one set.")
    max_embedding_points: int = Field(
        default=12544,
        ge=100,
        le=200_000,
        description="Most tokens (images x patches) one t-SNE / PCA projection takes.",
    )

    # -- model runner ----------------------------------------------------------------------------------------
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N: one runner per device.")
    default_models: CommaList = Field(
        default_factory=lambda: list(DEFAULT_MODELS), description="Models loaded and run once before /ready."
    )
    warmup: bool = Field(
        default=True, description="Load the default models and run one dummy forward at start-up."
    )
    max_batch: int = Field(
        default=8, ge=1, le=256, description="Largest dynamic batch (images of one model)."
    )
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000, description="How long a batch waits to fill up.")
    queue_size: int = Field(
        default=64, ge=1, le=100_000, description="Requests waiting per runner before 503."
    )
    request_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="Per-request limit on waiting for the runner (504 after)."
    )
    model_memory_bytes: int = Field(
        default=4 * GiB, ge=1 * MiB, description="Byte bound of the LRU of loaded models (per device)."
    )
    allow_downloads: bool = Field(
        default=False,
        description="Let POST /models/{id}/pull download weights (off: import them with the CLI).",
    )
    set_wait_s: float = Field(
        default=10.0, ge=0, le=600, description="How long set routes wait for their job before answering 202."
    )
    job_history: int = Field(
        default=256, ge=1, le=100_000, description="Finished jobs kept for GET /jobs/{id}."
    )

    # -- validation ------------------------------------------------------------------------------------------
    @field_validator("cors_origins", "default_models", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE_RE.match(value):
            raise ValueError(f"device {value!r} is not one of auto, cpu, cuda, cuda:N, mps")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(_REDIS_SCHEMES):
            raise ValueError(f"REDIS_URL {value!r} must start with one of {', '.join(_REDIS_SCHEMES)}")
        return value

    @field_validator("api_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        secret = value.get_secret_value()
        if len(secret) < 16:
            raise ValueError(
                f"api_token is {len(secret)} characters long; use at least 16 (e.g. `openssl rand -hex 16`)"
            )
        if any(c.isspace() for c in secret):
            raise ValueError("api_token must not contain whitespace")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"CORS origin {origin!r} must be '*' or scheme://host[:port] without a path")
        return value

    @field_validator("default_models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        for model_id in value:
            if not re.match(r"^[A-Za-z0-9_.\-]{1,128}$", model_id):
                raise ValueError(f"default model {model_id!r} is not a model id (letters, digits, _ . -)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.data_dir_max_bytes < self.max_upload_bytes:
            raise ValueError(
                f"data_dir_max_bytes {self.data_dir_max_bytes} is below max_upload_bytes "
                f"{self.max_upload_bytes}: one upload would not fit"
            )
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            raise ValueError(f"cors_origins {self.cors_origins!r} mixes '*' with named origins; pick one")
        return self

    # -- derived ---------------------------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token is not None else None

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
