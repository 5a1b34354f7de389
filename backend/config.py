"""The one settings object of the service: ``VITSCOPE_*`` environment variables (and ``REDIS_URL``).

Every value is checked when the settings are built; an unsafe or impossible value is refused with a message
that echoes it and says what is allowed (pydantic raises; `vitscope serve` prints it and exits with 2).
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

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

UI_AUTH_MODES = ("none", "password", "proxy-header")
MIN_UI_PASSWORD = 12
# An HTTP header name (RFC 9110 token).
_HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
# Headers a browser sends by itself, or that proxies and HTTP set for other purposes: useless as a proof that
# the reverse proxy authenticated the user.
_BROWSER_HEADERS = frozenset(
    {
        "accept", "accept-encoding", "accept-language", "authorization", "cache-control", "connection",
        "content-length", "content-type", "cookie", "dnt", "forwarded", "host", "origin", "pragma", "range",
        "referer", "te", "transfer-encoding", "upgrade", "upgrade-insecure-requests", "user-agent",
        "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "x-requested-with",
    }
)  # fmt: skip
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
# No proxy is trusted unless configured, loopback included: any local process could otherwise choose its
# own client address (X-Forwarded-For) and dodge the upload caps.
TRUSTED_PROXIES: tuple[str, ...] = ()


def _check_secret_token(value: SecretStr | None) -> SecretStr | None:
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


class UiSettings(BaseSettings):
    """What the UI process reads: its login mode, class mode and the API token it sends.

    ``python -m app.main`` (the UI on its own) reads only these; ``vitscope serve`` reads them as part of
    :class:`Settings` and hands them to the UI it mounts.
    """

    model_config = SettingsConfigDict(env_prefix="VITSCOPE_", extra="ignore", populate_by_name=True)

    api_token: SecretStr | None = Field(
        default=None, description="Bearer token required on every /api/v1 route except /health (unset: open)."
    )
    ui_auth: Literal["none", "password", "proxy-header"] = Field(
        default="none",
        description="UI login: none | password (one shared password) | proxy-header (a proxy logs in).",
    )
    ui_password: SecretStr | None = Field(
        default=None, description=f"The shared UI password in password mode ({MIN_UI_PASSWORD}+ characters)."
    )
    ui_proxy_header: str = Field(
        default="X-Forwarded-User",
        description="Header the reverse proxy sets to the user name in proxy-header mode.",
    )
    ui_proxy_hops: int = Field(
        default=0,
        ge=0,
        le=5,
        description="Reverse proxies in front of the UI whose X-Forwarded-For (and -Proto) the UI believes.",
    )
    class_mode: bool = Field(
        default=False,
        description="Read-only class mode: only the example gallery and the default models; no uploads.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "VITSCOPE_REDIS_URL", "redis_url"),
        description="Redis for the cache (and the UI's login failure counts, so replicas and restarts share "
        "them); unset: an in-process LRU store (the embedded default).",
    )

    @field_validator("api_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        return _check_secret_token(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(_REDIS_SCHEMES):
            raise ValueError(f"REDIS_URL {value!r} must start with one of {', '.join(_REDIS_SCHEMES)}")
        return value

    @field_validator("ui_auth", mode="before")
    @classmethod
    def _auth_mode(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower() or "none"
            if value not in UI_AUTH_MODES:
                raise ValueError(f"ui_auth {value!r} is not one of {', '.join(UI_AUTH_MODES)}")
        return value

    @field_validator("ui_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        return value

    @field_validator("ui_proxy_header")
    @classmethod
    def _proxy_header(cls, value: str) -> str:
        value = value.strip()
        if not _HEADER_RE.match(value):
            raise ValueError(
                f"ui_proxy_header {value!r} is not an HTTP header name (at most 64 letters, digits and "
                "- _ . ! # $ % & ' * + ^ ` | ~)"
            )
        if value.lower() in _BROWSER_HEADERS or value.lower().startswith(("sec-", "accept-", "content-")):
            raise ValueError(
                f"ui_proxy_header {value!r} is a header browsers or proxies send for other purposes, so it "
                "proves nothing; use a header of its own such as X-Forwarded-User or X-Auth-Request-User"
            )
        return value

    @model_validator(mode="after")
    def _ui_consistent(self) -> UiSettings:
        if self.ui_auth == "password":
            if self.ui_password is None:
                raise ValueError(
                    "ui_auth is 'password' but VITSCOPE_UI_PASSWORD is empty; set a shared class password of "
                    f"at least {MIN_UI_PASSWORD} characters (e.g. `openssl rand -base64 12`), or choose "
                    "VITSCOPE_UI_AUTH=proxy-header or none"
                )
            length = len(self.ui_password.get_secret_value())
            if length < MIN_UI_PASSWORD:
                raise ValueError(
                    f"ui_password is {length} characters long; use at least {MIN_UI_PASSWORD} "
                    "(e.g. `openssl rand -base64 12`)"
                )
        return self

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token is not None else None

    @property
    def password(self) -> str | None:
        return self.ui_password.get_secret_value() if self.ui_password is not None else None


class Settings(UiSettings):
    """Service settings. Environment: ``VITSCOPE_<FIELD>`` (upper case), plus ``REDIS_URL``."""

    # -- network ---------------------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Interface `vitscope serve` binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port `vitscope serve` binds.")
    cors_origins: CommaList = Field(
        default_factory=list, description="Origins allowed by CORS (comma separated); empty: CORS off."
    )
    ui: bool = Field(default=True, description="Mount the Dash UI at / of the same process.")
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A connection must send a request's complete headers within this many seconds of "
        "opening (or of its previous response); slower ones are closed.",
    )
    body_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="A request body must arrive in full within this many seconds (408 after).",
    )
    keep_alive_s: float = Field(
        default=5.0, gt=0, le=600, description="Idle keep-alive connections are closed after this long."
    )
    max_header_bytes: int = Field(
        default=16 * KiB,
        ge=4 * KiB,
        le=1 * MiB,
        description="Most bytes of an unfinished request line + headers held while the rest is awaited "
        "(h11's incomplete event limit; 400 above).",
    )
    trusted_proxies: CommaList = Field(
        default_factory=lambda: list(TRUSTED_PROXIES),
        description="Peers (IPs, CIDRs, host names) whose X-Forwarded-For names the client of an upload.",
    )

    # -- cache -----------------------------------------------------------------------------------------------
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
    client_uploads_per_hour: int = Field(
        default=120, ge=0, le=1_000_000, description="Uploads one client may make per hour (0: no cap)."
    )
    client_upload_bytes_per_hour: int = Field(
        default=256 * MiB, ge=0, description="Bytes one client may upload per hour (0: no cap)."
    )
    max_set_images: int = Field(
        default=1024, ge=1, le=1024, description="Most images in one set (analysed as a job, in batches)."
    )
    max_sets: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Set definitions kept on disk (least recently used out first; their bytes count in "
        "data_dir_max_bytes).",
    )
    client_sets_per_hour: int = Field(
        default=600, ge=0, le=1_000_000, description="Sets one client may create per hour (0: no cap)."
    )
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
    decode_memory_bytes: int = Field(
        default=768 * MiB,
        ge=16 * MiB,
        le=64 * GiB,
        description="Bytes of images being decoded at once (a 40 Mpx image takes about 240 MB while it "
        "decodes; more wait their turn; one alone always proceeds).",
    )
    queue_bytes: int = Field(
        default=256 * MiB,
        ge=1 * MiB,
        le=64 * GiB,
        description="Bytes of images the requests waiting for one runner may hold (503 above, as for "
        "queue_size).",
    )
    allow_downloads: bool = Field(
        default=False,
        description="Let POST /models/{id}/pull download weights (off: import them with the CLI).",
    )
    allow_random_init: bool = Field(
        default=False,
        description="Build timm models that have no weights (random init of any timm name); off: only the "
        "catalogue (with its random baseline), demo and imported models.",
    )
    set_wait_s: float = Field(
        default=10.0, ge=0, le=600, description="How long set routes wait for their job before answering 202."
    )
    job_history: int = Field(
        default=256, ge=1, le=100_000, description="Finished jobs kept for GET /jobs/{id}."
    )

    # -- validation ------------------------------------------------------------------------------------------
    @field_validator("cors_origins", "default_models", "trusted_proxies", mode="before")
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

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        return [_trusted_proxy(entry) for entry in value]

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.class_mode and self.allow_downloads:
            raise ValueError(
                "class_mode and allow_downloads are both on; class mode is read-only and offers only the "
                "preloaded models: set VITSCOPE_ALLOW_DOWNLOADS=false (pull models with `vitscope models "
                "pull` before the lesson)"
            )
        if 0 < self.client_upload_bytes_per_hour < self.max_upload_bytes:
            raise ValueError(
                f"client_upload_bytes_per_hour {self.client_upload_bytes_per_hour} is below max_upload_bytes "
                f"{self.max_upload_bytes}: one upload of the largest size would never be accepted; raise it, "
                "or use 0 for no cap"
            )
        problem = mounted_ui_problem(self) if self.ui else None
        if problem:
            raise ValueError(problem)
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
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0


def _trusted_proxy(entry: str) -> str:
    """One entry of trusted_proxies: an IP, a CIDR network or a host name; never everyone."""
    text = entry.strip()
    if text in ("*", "all", "any"):
        raise ValueError(
            f"trusted_proxies {text!r} would let every client choose its own address (X-Forwarded-For); name "
            "the proxies: IPs, CIDR networks or host names"
        )
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        if not _HOSTNAME_RE.match(text):
            raise ValueError(
                f"trusted_proxies entry {text!r} is not an IP address, a CIDR network (10.0.0.0/8) or a host "
                "name"
            ) from None
        return text.lower()
    if network.prefixlen == 0:
        raise ValueError(
            f"trusted_proxies entry {text!r} matches every address, so every client could choose its own "
            "address (X-Forwarded-For); name the proxies: IPs, CIDR networks or host names"
        )
    if network.num_addresses == 1 and network.network_address.is_unspecified:
        raise ValueError(f"trusted_proxies entry {text!r} is the unspecified address, never a peer")
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def mounted_ui_problem(settings: Settings) -> str | None:
    """Why the UI may not be mounted in the API's process with these settings, or None.

    In one process the UI and the API share a port, and the UI calls the API with the API token: the token and
    a UI login go together. A token with an open UI would hand the token's power to anyone who opens the
    page; a UI login without a token would leave /api/v1 open beside it.
    """
    if settings.token and settings.ui_auth == "none":
        return (
            "VITSCOPE_API_TOKEN is set but the UI mounted at / has no login (VITSCOPE_UI_AUTH=none): the UI "
            "calls the API with the token, so anyone who opens the page could use it; set VITSCOPE_UI_AUTH="
            "password (with VITSCOPE_UI_PASSWORD) or proxy-header, or serve the API alone (--no-ui)"
        )
    if not settings.token and settings.ui_auth != "none":
        return (
            f"VITSCOPE_UI_AUTH={settings.ui_auth} protects the UI, but without VITSCOPE_API_TOKEN the API at "
            "/api/v1 on the same port stays open; set a token too (16+ characters, e.g. `openssl rand -hex "
            "16`), or set VITSCOPE_UI_AUTH=none"
        )
    return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
