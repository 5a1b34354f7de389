"""Matplotlib figures that `vitscope analyze` writes: per-layer curves, attention maps, 2D spectra, the
analyses beyond the paper and CKA between models.

Each ``*_figure`` function builds the figure (the tests read it); ``plot_*`` saves it. The curves overlay the
paper's published curves (dashed, ``backend.reference``) and switch attention distance to the relative scale
(distance / the grid's uniform-attention distance) whenever the models' grids, or the paper's 14 x 14 grid at
patch 16, differ: pixels of a 32 px and a 224 px input are not one axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

FAMILY_COLORS = {
    "cl": "#1f77b4",
    "mim": "#d62728",
    "hybrid": "#9467bd",
    "supervised": "#2ca02c",
    "baseline": "#7f7f7f",
}
LINESTYLES = ["-", "-.", ":", (0, (5, 1))]  # plain "--" is kept for the paper's curves
PAPER_STYLE: dict[str, Any] = {"ls": "--", "lw": 1.4, "alpha": 0.75, "marker": "None"}
# (series id in paper_reference.json, legend label): what the curves panel overlays, per metric
PAPER_OVERLAYS = {
    "attention_distance": [("mocov3-b16.attention_distance", "paper: MoCo v3 ViT-B/16, ImageNet")],
    "nmi": [("mocov3-b16.nmi", "paper: MoCo v3 ViT-B/16, ImageNet")],
    "delta_log_amplitude": [
        ("mocov3-b16.delta_log_amplitude", "paper: MoCo v3 ViT-B/16, ImageNet"),
        ("simmim-b16.delta_log_amplitude", "paper: SimMIM ViT-B/16, ImageNet"),
    ],
}


@dataclass
class AttentionPanel:
    """What the attention-map figure needs of one model: maps for a few queries across layers."""

    model: str
    image: Image.Image  # as the model sees it
    patch_size: int
    grid: tuple[int, int]
    # query label -> (grid (row, col) or None for CLS, array (L, H, W) of head-mean maps)
    maps: dict[str, tuple[tuple[int, int] | None, np.ndarray]]
    image_name: str = ""  # which image the maps show (its file name), in the title


def _style(models: Sequence[dict[str, Any]]) -> list[tuple[str, Any]]:
    seen: dict[str, int] = {}
    styles = []
    for m in models:
        fam = m.get("family", "baseline")
        i = seen.get(fam, 0)
        seen[fam] = i + 1
        styles.append((FAMILY_COLORS.get(fam, "#000000"), LINESTYLES[i % len(LINESTYLES)]))
    return styles


def distance_scale(metrics: Sequence[dict[str, Any]], with_paper: bool = True) -> str:
    """ "px" when every model (and the paper, when overlaid) has one grid and patch size, else "relative"."""
    from backend.reference import distance_scale as scale_of

    return scale_of(((tuple(m["grid"]), int(m["patch_size"])) for m in metrics), with_paper)


def _delta_title(metrics: Sequence[dict[str, Any]]) -> str:
    labels = list(
        dict.fromkeys(
            m["delta_log_amplitude_bin"]["label"] for m in metrics if "delta_log_amplitude_bin" in m
        )
    )
    if len(labels) == 1:
        return f"Δ log amplitude, {labels[0]}"
    return "Δ log amplitude, last half-diagonal bin of each grid"


def curves_figure(metrics: Sequence[dict[str, Any]], with_paper: bool = True) -> Figure:
    """Per-layer curves overlaid across models (one colour per family, a band of one std over images), each
    model's uniform-attention level as a faint line, and the paper's curves dashed."""
    from backend.reference import paper_reference, paper_series

    scale = distance_scale(metrics, with_paper)
    distance_key = "attention_distance" if scale == "px" else "attention_distance_relative"
    panels = [
        (
            distance_key,
            "Mean attention distance (px)" if scale == "px" else "Attention distance / uniform (1 = uniform)",
            "block",
            "attention_distance",
        ),
        ("nmi", "NMI(query; key)", "block", "nmi"),
        ("attention_entropy", "Attention entropy (nats)", "block", None),
        ("delta_log_amplitude", _delta_title(metrics), "depth", "delta_log_amplitude"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 8))
    for ax, (key, title, axis, paper_metric) in zip(axes.flat, panels, strict=True):
        for m, (color, ls) in zip(metrics, _style(metrics), strict=True):
            block = m[key]
            if axis == "depth":
                x, y = np.asarray(block["depth"]), np.asarray(block["value"])
            else:
                y = np.asarray(block["mean"])
                x = np.arange(1, len(y) + 1)
            std = np.asarray(block["std"])
            ax.plot(x, y, ls=ls, color=color, marker="o", ms=3, label=f"{m['model']} ({m['family']})")
            if std.any():
                ax.fill_between(x, y - std, y + std, color=color, alpha=0.15, lw=0)
            if key == "attention_distance":  # each model's uniform level (its own grid)
                ax.axhline(m["uniform_attention_distance"], color=color, lw=0.8, alpha=0.3)
        if key == "attention_distance_relative":
            ax.axhline(1.0, color="#555555", lw=0.8, alpha=0.35, label="uniform attention")
        if with_paper and paper_metric is not None:
            for series_id, label in PAPER_OVERLAYS[paper_metric]:
                s = paper_series(series_id)
                values = s["values_relative"] if key == "attention_distance_relative" else s["values"]
                color = FAMILY_COLORS[s["family"]]
                ax.plot(s["x_values"], values, color=color, label=label, **PAPER_STYLE)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("depth (0 = embedding)" if axis == "depth" else "block")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    n = metrics[0].get("num_images", 1) if metrics else 0
    note = ""
    if with_paper:
        uniform = paper_reference()["uniform_attention_distance"]
        note = f"; dashed: the paper's curves (ViT-B/16, 14x14 grid, uniform distance {uniform:.1f} px)"
    fig.suptitle(f"Per-layer analyses, mean over {n} image(s); band = ±1 std over images{note}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves(metrics: Sequence[dict[str, Any]], path: Path, with_paper: bool = True) -> None:
    fig = curves_figure(metrics, with_paper)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# The modern figure's plots: (title, [(metrics.json key, token_norm statistic or None, marker, curve label)],
# x axis). Two curves in one plot are told apart by their marker.
MODERN_PANELS: tuple[tuple[str, tuple[tuple[str, str | None, str, str], ...], str], ...] = (
    (
        "Token norm: mean (o), 99th percentile (^)",
        (("token_norm", "mean", "o", "mean"), ("token_norm", "p99", "^", "p99")),
        "depth",
    ),
    (
        "High-norm tokens: share above {factor} x median",
        (("token_norm", "outlier_fraction", "o", ""),),
        "depth",
    ),
    ("Effective rank (RankMe)", (("effective_rank", None, "o", ""),), "depth"),
    ("Head diversity (JS divergence, nats)", (("head_diversity", None, "o", ""),), "block"),
    ("CLS selectivity (entropy / log Np)", (("cls_selectivity", None, "o", ""),), "block"),
    ("CLS attention to itself, A[0, 0]", (("cls_self", None, "o", ""),), "block"),
    ("Positional share", (("positional_share", None, "o", ""),), "depth"),
    ("Movement coherence (A6)", (("movement_coherence", None, "o", ""),), "block"),
    (
        "Δ log amplitude: x_out (o), x_attn (D)",
        (("delta_log_amplitude", None, "o", "x_out"), ("delta_log_amplitude_attn", None, "D", "x_attn")),
        "depth",
    ),
)
MODERN_NULL = {
    "head_diversity": "one head",
    "cls_selectivity": "no CLS token",
    "cls_self": "no CLS token",
}


def _modern_curve(m: dict[str, Any], key: str, stat: str | None) -> tuple[np.ndarray, ...] | None:
    """``(x, y, std)`` of one curve of a metrics object, or None where the key is absent or null."""
    raw = m.get(key)
    if not isinstance(raw, dict):
        return None
    block = raw.get(stat) if stat else raw
    if not isinstance(block, dict):
        return None
    y = np.asarray(block["value"] if "value" in block else block["mean"], dtype=float)
    depth = raw.get("depth")  # token_norm's statistics share the object's depth axis
    x = np.asarray(depth) if depth is not None else np.arange(1, len(y) + 1)
    std = np.asarray(block["std"], dtype=float) if block.get("std") is not None else np.zeros_like(y)
    return x, y, std


def _modern_missing(m: dict[str, Any], key: str) -> str:
    if key not in m:
        return "absent from metrics.json"
    if key == "positional_share":  # a set statistic
        if int(m.get("num_images") or 1) < 2:
            return "needs 2+ images"
        return "not computed in this run (a set statistic: --set-images)"
    return MODERN_NULL.get(key, "null")


def _sample_note(metrics: Sequence[dict[str, Any]], key: str) -> str:
    """`` (first N images)`` where a curve is computed on a sample of the images (the set statistics)."""
    sizes = {m[key].get("num_images") for m in metrics if isinstance(m.get(key), dict)} - {None}
    return f" (first {next(iter(sizes))} images)" if len(sizes) == 1 else ""


def modern_figure(metrics: Sequence[dict[str, Any]]) -> Figure:
    """The analyses beyond the paper (docs/MODERN.md) overlaid across models, a band of one std over
    images: whatever of them the metrics objects carry; a plot says which model lacks a curve and why, and the
    title names the keys absent from every model."""
    factors = {
        m["token_norm"].get("outlier_factor") for m in metrics if isinstance(m.get("token_norm"), dict)
    }
    factor = f"{next(iter(factors)):g}" if len(factors) == 1 else "the factor"
    fig, axes = plt.subplots(3, 3, figsize=(14, 11))
    for ax, (title, curves, axis) in zip(axes.flat, MODERN_PANELS, strict=True):
        notes, drawn = [], False
        for m, (color, ls) in zip(metrics, _style(metrics), strict=True):
            for key, stat, marker, label in curves:
                found = _modern_curve(m, key, stat)
                name = f"{m['model']} {label}".rstrip()
                if found is None:
                    notes.append(f"{name}: {_modern_missing(m, key)}")
                    continue
                x, y, std = found
                second = marker != "o"
                legend = None if second else f"{m['model']} ({m['family']})"
                ax.plot(
                    x,
                    y,
                    ls=ls,
                    color=color,
                    marker=marker,
                    ms=3.5,
                    lw=1.0 if second else 1.6,
                    mfc="none" if second else color,
                    label=legend,
                )
                if std.any():
                    ax.fill_between(x, y - std, y + std, color=color, alpha=0.12, lw=0)
                drawn = True
        if curves[0][0] == "head_diversity" and drawn:
            ax.axhline(np.log(2.0), color="#555555", lw=0.8, ls=":", label="log 2 (disjoint heads)")
        if notes:
            where = (0.02, 0.97, "left", "top") if drawn else (0.5, 0.5, "center", "center")
            ax.text(
                where[0],
                where[1],
                "\n".join(notes),
                transform=ax.transAxes,
                ha=where[2],
                va=where[3],
                fontsize=7,
                color="#555555",
            )
        ax.set_title(title.format(factor=factor) + _sample_note(metrics, curves[0][0]), fontsize=10)
        ax.set_xlabel("depth (0 = embedding)" if axis == "depth" else "block")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
    keys = dict.fromkeys(key for _, curves, _ in MODERN_PANELS for key, *_ in curves)
    absent = [k for k in keys if metrics and all(k not in m for m in metrics)]
    n = metrics[0].get("num_images", 1) if metrics else 0
    note = f"\nabsent from metrics.json: {', '.join(absent)}" if absent else ""
    fig.suptitle(f"Beyond the paper, mean over {n} image(s); band = ±1 std over images{note}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_modern(metrics: Sequence[dict[str, Any]], path: Path) -> None:
    fig = modern_figure(metrics)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def attention_figure(panel: AttentionPanel, max_layers: int = 12) -> Figure:
    """Rows: queries (the box marks the query patch); columns: layers; head-mean maps over the image, all on
    one colour scale from 0 to the largest weight shown, with a colourbar that marks the uniform weight."""
    n_layers = next(iter(panel.maps.values()))[1].shape[0]
    layers = np.unique(np.linspace(0, n_layers - 1, min(max_layers, n_layers)).round().astype(int))
    rows = len(panel.maps)
    fig, axes = plt.subplots(
        rows, len(layers), figsize=(1.6 * len(layers) + 1.2, 1.7 * rows + 0.6), squeeze=False
    )
    vmax = max(float(maps[layers].max()) for _, maps in panel.maps.values())
    w_px, h_px = panel.image.size
    p = panel.patch_size
    im = None
    for r, (label, (cell, maps)) in enumerate(panel.maps.items()):
        for c, layer in enumerate(layers):
            ax = axes[r][c]
            ax.imshow(panel.image)
            im = ax.imshow(
                maps[layer],
                cmap="inferno",
                alpha=0.6,
                vmin=0.0,
                vmax=vmax,
                extent=(0, w_px, h_px, 0),
                interpolation="nearest",
            )
            if cell is not None:  # a patch at (row, col) covers [row*P, (row+1)*P) x [col*P, (col+1)*P)
                ax.add_patch(plt.Rectangle((cell[1] * p, cell[0] * p), p, p, fill=False, ec="cyan", lw=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"block {layer + 1}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    patches = panel.grid[0] * panel.grid[1]
    if im is not None:
        bar = fig.colorbar(im, ax=axes, shrink=0.85, pad=0.02)
        bar.set_label(f"attention weight (uniform = 1/{patches} = {1 / patches:.3g})", fontsize=8)
        bar.ax.axhline(1 / patches, color="cyan", lw=1)
    shown = f" on {panel.image_name}" if panel.image_name else ""
    fig.suptitle(f"{panel.model}{shown}: attention of one query (mean over heads)", fontsize=10)
    return fig


def plot_attention(panel: AttentionPanel, path: Path, max_layers: int = 12) -> None:
    fig = attention_figure(panel, max_layers)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def spectra_figure(spectra: dict[str, np.ndarray], columns: int = 5) -> Figure:
    """Rows: models; columns: the same fractions of each model's depth (models may differ in depth);
    shifted 2D log amplitude (mean over images) on axes in cycles per image, one shared colour scale; the
    circle marks the bin the Δ log amplitude reads."""
    from backend.analysis.spectrum import half_diagonal_bins

    names = list(spectra)
    fractions = np.linspace(0.0, 1.0, columns)
    picks = {n: (fractions * (spectra[n].shape[0] - 1)).round().astype(int) for n in names}
    lo = min(float(spectra[n][picks[n]].min()) for n in names)
    hi = max(float(spectra[n][picks[n]].max()) for n in names)
    fig, axes = plt.subplots(len(names), columns, figsize=(2.2 * columns, 2.4 * len(names)), squeeze=False)
    im = None
    for r, name in enumerate(names):
        h, w = spectra[name].shape[-2:]
        # pixel (i, j) is frequency (i - h // 2, j - w // 2) cycles per image (fftshift)
        extent = (-(w // 2) - 0.5, w - w // 2 - 0.5, h - h // 2 - 0.5, -(h // 2) - 0.5)
        m = half_diagonal_bins((h, w)) - 1
        for c, d in enumerate(picks[name]):
            ax = axes[r][c]
            im = ax.imshow(spectra[name][d], cmap="viridis", vmin=lo, vmax=hi, extent=extent)
            ax.plot([m], [m], marker="o", mfc="none", mec="white", ms=7, mew=1.2)
            ax.tick_params(labelsize=6)
            ax.set_title(f"depth {d}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{name}\ncycles per image", fontsize=7)
            if r == len(names) - 1:
                ax.set_xlabel("cycles per image", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="log amplitude (centred)")
    fig.suptitle(
        "2D Fourier spectrum of block outputs (zero frequency at the centre; ○ = the Δ log amplitude bin)",
        fontsize=10,
    )
    return fig


def plot_spectra(spectra: dict[str, np.ndarray], path: Path, columns: int = 5) -> None:
    fig = spectra_figure(spectra, columns)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cka_figure(pairs: Sequence[dict[str, Any]], num_images: int) -> Figure:
    """One heat map per pair of models: linear CKA between every depth of model A (rows) and of model B
    (columns) on a fixed 0..1 scale, the permutation null's mean over all cells in the title."""
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.9 * rows), squeeze=False)
    im = None
    for ax, pair in zip(axes.flat, pairs, strict=False):
        cka = np.asarray(pair["cka"])
        im = ax.imshow(cka, cmap="magma", vmin=0.0, vmax=1.0, origin="lower", aspect="auto")
        ax.set_xlabel(f"{pair['model_b']} depth (0 = embedding)", fontsize=8)
        ax.set_ylabel(f"{pair['model_a']} depth", fontsize=8)
        null = float(np.mean(pair["null_mean"]))
        ax.set_title(f"{pair['model_a']} vs {pair['model_b']}\nnull mean {null:.3f}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    fig.subplots_adjust(top=0.8, wspace=0.35)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="linear CKA")
    fig.suptitle(
        f"Linear CKA of each image's mean patch token, {num_images} images "
        f"(null: {pairs[0]['permutations']} shuffles of model B's images)",
        fontsize=10,
    )
    return fig


def plot_cka(pairs: Sequence[dict[str, Any]], num_images: int, path: Path) -> None:
    fig = cka_figure(pairs, num_images)
    fig.savefig(path, dpi=100)
    plt.close(fig)
