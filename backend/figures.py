"""Matplotlib figures that `vitscope analyze` writes: per-layer curves, attention maps, 2D spectra."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

FAMILY_COLORS = {
    "cl": "#1f77b4",
    "mim": "#d62728",
    "hybrid": "#9467bd",
    "supervised": "#2ca02c",
    "baseline": "#7f7f7f",
}
LINESTYLES = ["-", "--", ":", "-."]

CURVES = [
    ("attention_distance", "Mean attention distance (px)", "block"),
    ("nmi", "NMI(query; key)", "block"),
    ("attention_entropy", "Attention entropy (nats)", "block"),
    ("delta_log_amplitude", "Δ log amplitude (high freq.)", "depth"),
]


@dataclass
class AttentionPanel:
    """What the attention-map figure needs of one model: maps for a few queries across layers."""

    model: str
    image: Image.Image  # as the model sees it
    patch_size: int
    grid: tuple[int, int]
    # query label -> (grid (row, col) or None for CLS, array (L, H, W) of head-mean maps)
    maps: dict[str, tuple[tuple[int, int] | None, np.ndarray]]


def _style(models: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    styles = []
    for m in models:
        fam = m.get("family", "baseline")
        i = seen.get(fam, 0)
        seen[fam] = i + 1
        styles.append((FAMILY_COLORS.get(fam, "#000000"), LINESTYLES[i % len(LINESTYLES)]))
    return styles


def plot_curves(metrics: Sequence[dict[str, Any]], path: Path) -> None:
    """Per-layer curves overlaid across models, one colour per family, a band of one std over images."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (key, title, axis) in zip(axes.flat, CURVES, strict=True):
        for m, (color, ls) in zip(metrics, _style(metrics), strict=True):
            block = m[key]
            if axis == "depth":
                x, y = np.asarray(block["depth"]), np.asarray(block["value"])
            else:
                y = np.asarray(block["mean"])
                x = np.arange(1, len(y) + 1)
            std = np.asarray(block["std"])
            ax.plot(x, y, ls, color=color, marker="o", ms=3, label=f"{m['model']} ({m['family']})")
            if std.any():
                ax.fill_between(x, y - std, y + std, color=color, alpha=0.15, lw=0)
        ax.set_title(title)
        ax.set_xlabel("depth (0 = embedding)" if axis == "depth" else "block")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    n = metrics[0].get("num_images", 1) if metrics else 0
    fig.suptitle(f"Per-layer analyses, mean over {n} image(s); band = ±1 std over images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_attention(panel: AttentionPanel, path: Path, max_layers: int = 12) -> None:
    """Rows: queries (the marker shows the query patch); columns: layers; head-mean maps over the image."""
    n_layers = next(iter(panel.maps.values()))[1].shape[0]
    layers = np.unique(np.linspace(0, n_layers - 1, min(max_layers, n_layers)).round().astype(int))
    rows = len(panel.maps)
    fig, axes = plt.subplots(rows, len(layers), figsize=(1.6 * len(layers), 1.7 * rows), squeeze=False)
    w_px, h_px = panel.image.size
    p = panel.patch_size
    for r, (label, (cell, maps)) in enumerate(panel.maps.items()):
        for c, layer in enumerate(layers):
            ax = axes[r][c]
            ax.imshow(panel.image)
            ax.imshow(
                maps[layer], cmap="inferno", alpha=0.6, extent=(0, w_px, h_px, 0), interpolation="nearest"
            )
            if cell is not None:  # a patch at (row, col) covers [row*P, (row+1)*P) x [col*P, (col+1)*P)
                ax.add_patch(plt.Rectangle((cell[1] * p, cell[0] * p), p, p, fill=False, ec="cyan", lw=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"block {layer + 1}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"{panel.model}: attention of one query (mean over heads)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_spectra(spectra: dict[str, np.ndarray], path: Path, columns: int = 5) -> None:
    """Rows: models; columns: the same fractions of each model's depth (models may differ in depth);
    shifted 2D log amplitude (mean over images), one shared colour scale."""
    names = list(spectra)
    fractions = np.linspace(0.0, 1.0, columns)
    picks = {n: (fractions * (spectra[n].shape[0] - 1)).round().astype(int) for n in names}
    lo = min(float(spectra[n][picks[n]].min()) for n in names)
    hi = max(float(spectra[n][picks[n]].max()) for n in names)
    fig, axes = plt.subplots(len(names), columns, figsize=(2.2 * columns, 2.3 * len(names)), squeeze=False)
    im = None
    for r, name in enumerate(names):
        for c, d in enumerate(picks[name]):
            ax = axes[r][c]
            im = ax.imshow(spectra[name][d], cmap="viridis", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"depth {d}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="log amplitude (centred)")
    fig.suptitle("2D Fourier spectrum of block outputs (zero frequency at the centre)", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
