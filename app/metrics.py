"""Read the API's per-model ``metrics.json`` object into curves the figures draw.

The object (``backend.analysis.summary``): ``layers``, ``heads``, ``grid``, ``patch_size``, ``num_images``,
``preprocessing``; per-layer ``attention_distance``, ``nmi`` and ``attention_entropy`` as
``{"mean": [L], "std": [L], "per_head": [L][heads]}``, ``attention_distance_relative`` the same divided by the
grid's ``uniform_attention_distance`` (px); ``delta_log_amplitude`` as
``{"depth": [0..L], "value": [L+1], "std": [L+1]}`` (and ``delta_log_amplitude_attn`` on blocks 1..L).
The shapes are the API's (its responses are validated against their schemas in tests), read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Curve:
    x: list[int]
    mean: list[float]
    std: list[float] | None
    per_head: list[list[float]] | None


@dataclass(frozen=True)
class MetricSpec:
    key: str
    title: str
    unit: str
    depth_from_zero: bool  # x axis starts at depth 0 (the embedding) instead of block 1


DISTANCE_PX = MetricSpec("attention_distance", "Mean attention distance", "pixels", False)
DISTANCE_RELATIVE = MetricSpec(
    "attention_distance_relative", "Mean attention distance", "× uniform attention", False
)
# The four panels of the curves figure, in order (the distance panel on the pixel scale).
METRICS: tuple[MetricSpec, ...] = (
    DISTANCE_PX,
    MetricSpec("nmi", "NMI (query, key)", "", False),
    MetricSpec("attention_entropy", "Attention entropy", "nats", False),
    MetricSpec("delta_log_amplitude", "Δ log amplitude (high frequency)", "", True),
)
EXPORTED: tuple[MetricSpec, ...] = (*METRICS, DISTANCE_RELATIVE)

DistanceScale = Literal["px", "relative"]
SCALE_CHOICES: tuple[tuple[str, str], ...] = (
    ("auto", "auto: relative where grids differ"),
    ("px", "pixels of each model's input"),
    ("relative", "relative to uniform attention"),
)


def panel_specs(scale: DistanceScale) -> tuple[MetricSpec, ...]:
    """The curves figure's panels: the distance panel in pixels or relative to uniform attention."""
    return (DISTANCE_RELATIVE if scale == "relative" else DISTANCE_PX, *METRICS[1:])


def distance_scale(choice: str, grids: set[tuple[int, int, int]]) -> DistanceScale:
    """``auto``: relative to uniform attention when the curves on one axis come from different grids or patch
    sizes (``curve_grids``: a 32 px model on 8 x 8 next to the paper's 14 x 14 at patch 16), pixels when they
    share one (as the claims check decides); else the user's choice."""
    if choice in ("px", "relative"):
        return choice  # type: ignore[return-value]
    return "relative" if len(grids) > 1 else "px"


def grid_of(metrics: dict[str, Any]) -> tuple[int, int]:
    g = metrics.get("grid") or [0, 0]
    return int(g[0]), int(g[1])


def uniform_distance(metrics: dict[str, Any]) -> float | None:
    """The model's uniform-attention distance (px of its input), as the metrics object gives it."""
    u = metrics.get("uniform_attention_distance")
    return float(u) if isinstance(u, int | float) and u > 0 else None


def _floats(values: list[Any]) -> list[float]:
    return [float(v) if v is not None else float("nan") for v in values]  # JSON null = NaN


def read_curve(metrics: dict[str, Any], spec: MetricSpec) -> Curve | None:
    """One metric's curve as the API sends it, or None when the object has no such metric (an older
    ``metrics.json``). Blocks ``1..L`` for attention metrics, the object's own ``depth`` for delta."""
    raw = metrics.get(spec.key)
    if not isinstance(raw, dict):
        return None
    if spec.depth_from_zero:
        mean = _floats(raw["value"])
        x = [int(d) for d in raw["depth"]]
        per_head = None
    else:
        mean = _floats(raw["mean"])
        x = list(range(1, len(mean) + 1))
        per_head = [_floats(row) for row in raw["per_head"]] if raw.get("per_head") else None
    std = _floats(raw["std"]) if raw.get("std") else None
    return Curve(x=x, mean=mean, std=std, per_head=per_head)


# The curves the frequency lab compares between a source image and its perturbed copy: relative distance (one
# scale for every grid), NMI and Δ log amplitude.
MOVED_CURVES: tuple[MetricSpec, ...] = (DISTANCE_RELATIVE, METRICS[1], METRICS[3])


def curve_change(before: dict[str, Any], after: dict[str, Any], spec: MetricSpec) -> Curve | None:
    """``after`` minus ``before`` depth by depth (one image each, so no std), or None when either lacks the
    metric or their depths differ (not the same model)."""
    a, b = read_curve(before, spec), read_curve(after, spec)
    if a is None or b is None or a.x != b.x:
        return None
    return Curve(x=a.x, mean=[y - x for x, y in zip(a.mean, b.mean, strict=True)], std=None, per_head=None)


@dataclass(frozen=True)
class ModelShape:
    """What the UI needs to know of a model to draw it: depth, heads, grid, patch size, input size."""

    layers: int
    heads: int
    grid: tuple[int, int]
    patch_size: int
    input_size: tuple[int, int]
    resize: int | None
    crop_pct: float | None
    interpolation: str


def read_shape(metrics: dict[str, Any], fallback_patch: int | None = None) -> ModelShape:
    grid_raw = metrics.get("grid") or [14, 14]
    grid = (int(grid_raw[0]), int(grid_raw[1]))
    patch = int(metrics.get("patch_size") or fallback_patch or 16)
    layers = metrics.get("layers")
    heads = metrics.get("heads")
    dist = metrics.get("attention_distance")
    if not layers and isinstance(dist, dict) and isinstance(dist.get("mean"), list):
        layers = len(dist["mean"])
    if not heads and isinstance(dist, dict) and isinstance(dist.get("per_head"), list) and dist["per_head"]:
        heads = len(dist["per_head"][0])
    raw_prep = metrics.get("preprocessing")
    prep: dict[str, Any] = raw_prep if isinstance(raw_prep, dict) else {}
    size = prep.get("input_size") or [grid[0] * patch, grid[1] * patch]
    return ModelShape(
        layers=int(layers or 12),
        heads=int(heads or 1),
        grid=grid,
        patch_size=patch,
        input_size=(int(size[0]), int(size[1])),
        resize=int(prep["resize"]) if prep.get("resize") else None,
        crop_pct=float(prep["crop_pct"]) if prep.get("crop_pct") else None,
        interpolation=str(prep.get("interpolation") or "bilinear"),
    )


def metrics_table(per_model: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Long-form rows ``model, metric, depth, mean, std`` (and one row per head) for CSV export."""
    rows: list[dict[str, Any]] = []
    for model, metrics in per_model.items():
        for spec in EXPORTED:
            curve = read_curve(metrics, spec)
            if curve is None:
                continue
            for i, x in enumerate(curve.x):
                rows.append(
                    {
                        "model": model,
                        "metric": spec.key,
                        "depth": x,
                        "head": "mean",
                        "value": curve.mean[i],
                        "std": curve.std[i] if curve.std else "",
                    }
                )
                if curve.per_head and i < len(curve.per_head):
                    for h, v in enumerate(curve.per_head[i]):
                        rows.append(
                            {"model": model, "metric": spec.key, "depth": x, "head": h, "value": v, "std": ""}
                        )
    return rows


@dataclass(frozen=True)
class ReferenceCurve:
    """One of the paper's published curves (``GET /reference``), ready to draw next to a metric."""

    label: str  # "paper: MoCo v3 ViT-B/16, ImageNet"
    family: str
    x: list[int]
    y: list[float]
    source: str


def paper_label(series: dict[str, Any]) -> str:
    """``MoCo v3 ViT-B/16 (CL)`` -> ``paper: MoCo v3 ViT-B/16, ImageNet`` (the setting of every series)."""
    name = str(series.get("model", "")).split(" (")[0]
    return f"paper: {name}, ImageNet"


def reference_curves(reference: dict[str, Any] | None, spec: MetricSpec) -> list[ReferenceCurve]:
    """The paper's curves of one panel: the main series of each model (``<model>.<metric>``; the notebook
    duplicate and MAE's encoder/decoder split are left out), relative values for the relative distance."""
    if not reference:
        return []
    metric = "attention_distance" if spec is DISTANCE_RELATIVE else spec.key
    out = []
    for s in reference.get("series", []):
        if s.get("metric") != metric or not str(s.get("id", "")).endswith("." + metric):
            continue
        values = s.get("values_relative") if spec is DISTANCE_RELATIVE else s.get("values")
        if not isinstance(values, list):
            continue
        out.append(
            ReferenceCurve(
                label=paper_label(s),
                family=str(s.get("family", "")),
                x=[int(v) for v in s["x_values"]],
                y=[float(v) for v in values],
                source=str(s.get("source", "")),
            )
        )
    return out


def curve_grids(
    per_model: dict[str, dict[str, Any]], reference: dict[str, Any] | None
) -> set[tuple[int, int, int]]:
    """``(rows, cols, patch size)`` of the curves on one axis: each model's, and the paper's when overlaid."""

    def key(obj: dict[str, Any]) -> tuple[int, int, int]:
        return (*grid_of(obj), int(obj.get("patch_size") or 0))

    grids = {key(m) for m in per_model.values()}
    if reference and reference.get("grid"):
        grids.add(key(reference))
    return grids


def delta_bin_label(per_model: dict[str, dict[str, Any]]) -> str | None:
    """Which frequency bin the delta log amplitude curves read, in the API's words
    (``delta_log_amplitude_bin``), once if every model reads the same bin, else per model."""
    labels = {
        m: str(b["label"]).replace(" pi", " π")
        for m, metrics in per_model.items()
        if isinstance(b := metrics.get("delta_log_amplitude_bin"), dict) and b.get("label")
    }
    if not labels:
        return None
    if len(set(labels.values())) == 1:
        return "read at " + next(iter(labels.values()))
    return "read at " + "; ".join(f"{m}: {label}" for m, label in labels.items())


# -- the analyses beyond the paper (backend/analysis/modern.py, docs/MODERN.md) -----------------------------


@dataclass(frozen=True)
class ModernSpec:
    """One curve of the "Beyond the paper" panel: a ``metrics.json`` key (and for ``token_norm`` one of its
    statistics), and its label where a panel holds two curves per model (x_out and x_attn)."""

    key: str
    stat: str | None = None
    label: str = ""


@dataclass(frozen=True)
class ModernPanel:
    key: str  # names the panel in ``layout.meta`` and the exports
    title: str
    unit: str
    curves: tuple[ModernSpec, ...]
    depth_axis: bool  # x is the depth 0..L (0 = the embedding) instead of the block 1..L


TOKEN_NORM_STATS: tuple[tuple[str, str], ...] = (("mean", "mean"), ("p99", "99th percentile"), ("max", "max"))
LOG2 = 0.6931471805599453  # head diversity's ceiling: the JS divergence of two disjoint distributions
# Why the API sends null for a key (the one case each does; docs/MODERN.md).
NULL_REASONS: dict[str, str] = {
    "head_diversity": "one head: nothing to compare",
    "cls_selectivity": "no CLS token",
    "cls_self": "no CLS token",
    "positional_share": "needs a set of 2+ images (curves for the whole set)",
}
DELTA_OUT = ModernSpec("delta_log_amplitude", label="x_out")
DELTA_ATTN = ModernSpec("delta_log_amplitude_attn", label="x_attn")
MODERN_KEYS: tuple[str, ...] = (
    "token_norm",
    "effective_rank",
    "head_diversity",
    "cls_selectivity",
    "cls_self",
    "positional_share",
    "movement_coherence",
    "delta_log_amplitude",
    "delta_log_amplitude_attn",
)


def modern_panels(norm_stat: str = "mean") -> tuple[ModernPanel, ...]:
    """The panel's nine plots in order (row-major, 3 x 3); ``norm_stat``: the token norm's statistic."""
    stat = norm_stat if norm_stat in dict(TOKEN_NORM_STATS) else "mean"
    return (
        ModernPanel(
            "token_norm",
            f"Token norm ({dict(TOKEN_NORM_STATS)[stat]})",
            "L2",
            (ModernSpec("token_norm", stat),),
            True,
        ),
        ModernPanel(
            "outlier_fraction",
            "High-norm tokens",
            "share above the factor × median",
            (ModernSpec("token_norm", "outlier_fraction"),),
            True,
        ),
        ModernPanel("effective_rank", "Effective rank (RankMe)", "", (ModernSpec("effective_rank"),), True),
        ModernPanel("head_diversity", "Head diversity (JS)", "nats", (ModernSpec("head_diversity"),), False),
        ModernPanel(
            "cls_selectivity", "CLS selectivity", "entropy / log Np", (ModernSpec("cls_selectivity"),), False
        ),
        ModernPanel("cls_self", "CLS attention to itself", "A[0, 0]", (ModernSpec("cls_self"),), False),
        ModernPanel("positional_share", "Positional share", "", (ModernSpec("positional_share"),), True),
        ModernPanel(
            "movement_coherence", "Movement coherence (A6)", "", (ModernSpec("movement_coherence"),), False
        ),
        ModernPanel(
            "delta_log_amplitude", "Δ log amplitude", "x_out ●, x_attn ◇", (DELTA_OUT, DELTA_ATTN), True
        ),
    )


def read_modern(metrics: dict[str, Any], spec: ModernSpec) -> Curve | None:
    """One curve as the API sends it, or None when the key is absent or null (``modern_missing`` says why).

    Shapes: ``{"depth", "value", "std"?}`` (token norm's statistics: ``{"value", "std"}`` under a ``depth``
    of their own), or ``{"mean", "std", "per_head"?}`` per block ``1..L``."""
    raw = metrics.get(spec.key)
    if not isinstance(raw, dict):
        return None
    block = raw.get(spec.stat) if spec.stat else raw
    if not isinstance(block, dict):
        return None
    depth = raw.get("depth") if spec.stat else block.get("depth")
    mean = _floats(block["value"] if "value" in block else block["mean"])
    x = [int(d) for d in depth] if isinstance(depth, list) else list(range(1, len(mean) + 1))
    std = _floats(block["std"]) if block.get("std") else None
    per_head = [_floats(row) for row in block["per_head"]] if block.get("per_head") else None
    return Curve(x=x, mean=mean, std=std, per_head=per_head)


def modern_missing(metrics: dict[str, Any], spec: ModernSpec) -> str:
    """Why a model has no curve for ``spec``: the API's null (``NULL_REASONS``), or the key is absent."""
    if spec.key in metrics and metrics[spec.key] is None:
        return NULL_REASONS.get(spec.key, f"{spec.key} is null")
    return f"its metrics have no {spec.key}"


def outlier_factor(per_model: dict[str, dict[str, Any]]) -> float | None:
    """The factor of the high-norm share (``token_norm.outlier_factor``, 4 in the API), once if all agree."""
    factors = {
        float(raw["outlier_factor"])
        for m in per_model.values()
        if isinstance(raw := m.get("token_norm"), dict) and raw.get("outlier_factor") is not None
    }
    return next(iter(factors)) if len(factors) == 1 else None


def modern_table(per_model: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Long-form rows ``model, metric, depth, head, value, std`` of the panel's curves, for CSV export
    (``metric``: the key, ``token_norm.<statistic>`` for token norms)."""
    specs = [ModernSpec("token_norm", s) for s in ("mean", "p99", "max", "outlier_fraction")]
    specs += [ModernSpec(k) for k in MODERN_KEYS if k != "token_norm"]
    rows: list[dict[str, Any]] = []
    for model, metrics in per_model.items():
        for spec in specs:
            curve = read_modern(metrics, spec)
            if curve is None:
                continue
            name = f"{spec.key}.{spec.stat}" if spec.stat else spec.key
            for i, x in enumerate(curve.x):
                std = curve.std[i] if curve.std else ""
                row = {"model": model, "metric": name, "depth": x, "head": "mean", "value": curve.mean[i]}
                rows.append({**row, "std": std})
                for h, v in enumerate(curve.per_head[i] if curve.per_head else []):
                    rows.append(
                        {"model": model, "metric": name, "depth": x, "head": h, "value": v, "std": ""}
                    )
    return rows
