"""Request and response shapes for the OpenAPI document (the routes answer with pre-rendered bytes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

IMAGE_ID = r"^[0-9a-f]{64}$"
EXAMPLE_ID = "3f8a1c0d9b2e4f6a7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
EXAMPLE_SET = "9d2c1b0a8f7e6d5c4b3a29181716151413121110f0e0d0c0b0a09080706050403"


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable name", examples=["bad_request"])
    message: str = Field(
        description="What was wrong and what is allowed",
        examples=["layer 13 is out of range: model random-vit-s16 has 12 blocks; use 1..12"],
    )


class ErrorOut(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    devices: list[str] = Field(examples=[["cpu"]])
    cache: str = Field(description="memory | redis", examples=["redis"])
    cache_ok: bool
    models: dict[str, str] = Field(
        description="Warm-up outcome per default model", examples=[{"random-vit-s16": "ok"}]
    )


class SnapshotCurves(BaseModel):
    epoch: float
    images_seen: int
    attention_distance_relative: list[float] = Field(description="per block 1..L, 1 = uniform attention")
    nmi: list[float] = Field(description="per block 1..L")
    delta_log_amplitude: list[float] = Field(description="per depth 0..L (0 = the embedding)")


class ModelOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "dino-vit-s16",
                "family": "cl",
                "arch": "vit_small_patch16_224.dino",
                "patch_size": 16,
                "available": True,
                "loaded": False,
                "license": "apache-2.0",
                "source": "timm",
                "untrained": False,
                "paper": "Caron et al. ...",
                "description": "DINO ViT-S/16 teacher backbone, IN-1k.",
            }
        }
    )
    id: str
    family: str = Field(description="cl | mim | hybrid | supervised | baseline")
    arch: str
    patch_size: int | None
    input_size: list[int] | None = Field(
        default=None,
        description="[H, W] pixels the model reads: from its card before it is loaded, else once loaded",
    )
    available: bool = Field(description="Weights are on disk (random-init models always are)")
    loaded: bool = Field(description="Loaded on a device now")
    license: str
    source: str
    untrained: bool
    paper: str
    description: str
    info: dict[str, Any] | None = Field(
        default=None,
        description="layers, heads, grid, patch size, prefix tokens, weights digest (once loaded)",
    )
    default: bool = Field(
        default=False, description="One of the server's default models (VITSCOPE_DEFAULT_MODELS)"
    )
    unavailable_reason: str | None = Field(
        default=None,
        description="When not available: why, naming the weights file expected",
        examples=["no weights in the models cache (expected /data/models_cache/releases/...)"],
    )
    fetch_command: str | None = Field(
        default=None,
        description="When not available: the command that fetches or imports the weights",
        examples=["vitscope models pull mae-vit-b16"],
    )
    snapshots: list[SnapshotCurves] = Field(
        default_factory=list,
        description="A trained model's analysed snapshots (vitscope train --snapshot-epochs), by epoch",
    )


class ModelList(BaseModel):
    models: list[ModelOut]


class ImageOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"id": EXAMPLE_ID, "width": 640, "height": 480, "format": "JPEG"}}
    )
    id: str = Field(description="sha256 hex of the uploaded bytes", pattern=IMAGE_ID)
    width: int
    height: int
    format: str = Field(description="JPEG | PNG | WEBP | BMP | GIF | TIFF")
    animated: bool = Field(default=False, description="Several frames: the first one is analysed")
    bytes: int = Field(default=0, description="Size of the upload")


class AttentionOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "image": EXAMPLE_ID,
                "model": "random-vit-s16",
                "grid": [14, 14],
                "patch_size": 16,
                "layer": 12,
                "head": "mean",
                "query": "cls",
                "rollout": False,
                "map": [[0.0051, 0.0049, "..."], ["..."]],
            }
        }
    )
    image: str
    model: str
    grid: list[int] = Field(description="[H, W] of the patch grid")
    patch_size: int
    layer: int = Field(description="1-based block")
    head: int | str = Field(description="head index, 'mean' or 'all'")
    query: int | str = Field(description="row-major patch index or 'cls'")
    rollout: bool
    map: list[Any] = Field(
        description="H x W rows renormalized over patches (sums to 1); heads x H x W for head=all"
    )


class SpectrumOut(BaseModel):
    image: str
    model: str
    grid: list[int]
    state: Literal["out", "attn"]
    depth: int
    high_frequency_delta: float = Field(
        description="delta at the last half-diagonal bin (the paper's scalar)"
    )
    delta: list[float] = Field(
        description="delta(m) = L(m, m) - L(0, 0), m = 0 .. (H + 1) // 2 - 1 (the paper's half-diagonal bins)"
    )
    frequencies: list[list[float]] = Field(
        description="(row, column) frequency of each delta bin in radians per patch: (2 pi m / H, 2 pi m / W)"
    )
    delta_bin: dict[str, Any] = Field(
        description="The bin high_frequency_delta reads: index, cycles_per_image, radians_per_patch, label",
        examples=[
            {
                "index": 3,
                "cycles_per_image": [3, 3],
                "label": "bin 3: 3 cycles per image, 3/4 pi per patch, 8x8 grid",
            }
        ],
    )
    map: list[list[float]] = Field(description="H x W centred log-amplitude map (A4 step 5)")


class PrefixNormOut(BaseModel):
    token: int = Field(description="Index in the token sequence (the prefix comes first)")
    label: str = Field(description="'cls' or 'register 1', 'register 2', ...")
    norm: float


class TokenNormsOut(BaseModel):
    image: str
    model: str
    grid: list[int] = Field(description="[H, W] of the patch grid")
    layer: int = Field(description="Output of block K (0 = the embedding)")
    state: Literal["out"]
    has_cls_token: bool
    num_prefix_tokens: int
    median: float = Field(description="The median patch norm (of an even count: the two middle ones' mean)")
    outlier_factor: float
    outliers: list[int] = Field(description="Row-major patch indices with norm > outlier_factor x median")
    stats: dict[str, float] = Field(
        description="mean, p99, max and outlier_fraction of the patch norms (metrics.json's token_norm)"
    )
    prefix: list[PrefixNormOut]
    map: list[list[float]] = Field(description="H x W L2 norms of the patch tokens")


class SetIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"images": [EXAMPLE_ID]}})
    images: list[str] = Field(min_length=1, max_length=1024, description="Image ids, in order")


class SetOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"id": EXAMPLE_SET, "images": [EXAMPLE_ID], "size": 1}}
    )
    id: str = Field(description="Content address of the ordered id list")
    images: list[str]
    size: int


class JobOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "id": "5b0c7a4e2f1d4c3b9a8e7d6c5b4a3f2e",
                "kind": "set-metrics",
                "description": "metrics of set 9d2c1b0a8f7e with random-vit-s16",
                "status": "running",
                "progress": 0.25,
                "done": 4,
                "total": 16,
                "result_url": None,
                "result": None,
                "error": None,
                "created": 1764200000.0,
                "updated": 1764200003.2,
            }
        }
    )
    id: str
    kind: str
    description: str
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: float
    done: int
    total: int
    result_url: str | None = Field(description="GET it once the job succeeded (then answered from the cache)")
    result: Any = None
    error: ErrorBody | None
    created: float
    updated: float


class JobAccepted(BaseModel):
    job: JobOut


class JobList(BaseModel):
    jobs: list[JobOut]


class EmbeddingsOut(BaseModel):
    set: str
    model: str
    layer: int = Field(description="Output of block K (0 = the embedding)")
    state: Literal["out"]
    method: Literal["pca", "tsne"]
    grid: list[int]
    images: list[str]
    image_index: list[int] = Field(description="Index into images of each point")
    token_index: list[int] = Field(description="Row-major patch index of each point")
    coords: list[list[float]] = Field(description="2D coordinates, one per point")
    singular_values_centred: bool = Field(
        description="Whether the singular values are of centred tokens: false, the raw tokens as A5 says "
        "(the PCA projection centres its matrix; these do not)"
    )
    singular_values_normalized: list[list[float]] = Field(
        description="Per image (the order of images): the singular values of its patch-token matrix "
        "(patches x channels, the tokens the projection uses), descending, divided by its largest"
    )
    singular_values_mean: list[float] = Field(
        description="The mean over images of singular_values_normalized (starts at 1)"
    )
    singular_values_largest: list[float] = Field(
        description="Per image: its largest singular value, raw (normalized x largest = the raw values)"
    )


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all with the one error shape."""
    text = {
        400: "Bad input (the message says what is allowed)",
        401: "Missing or wrong bearer token",
        403: "Not allowed on this server (downloads off, or class mode)",
        404: "Unknown image, set, job or model",
        409: "Model weights are not available",
        413: "Upload too large",
        422: "Malformed request",
        429: "Too many uploads from this client in the last hour (Retry-After)",
        503: "Busy (Retry-After) or not ready",
        504: "Timed out waiting for the device",
    }
    return {code: {"model": ErrorOut, "description": text.get(code, "Error")} for code in codes}
