"""Family-coded colours and the shared look of every figure."""

from __future__ import annotations

from typing import Any

FAMILIES: tuple[str, ...] = ("cl", "mim", "hybrid", "autoregressive", "supervised", "baseline", "other")
FAMILY_LABELS: dict[str, str] = {
    "cl": "Contrastive (CL)",
    "mim": "Masked image modeling (MIM)",
    "hybrid": "Hybrid (CL + MIM)",
    "autoregressive": "Autoregressive (AR)",
    "supervised": "Supervised",
    "baseline": "Baseline (random init)",
    "other": "Other",
}
# One hue per family (blue CL, orange-red MIM, green hybrid, brown autoregressive, purple supervised, grey
# baseline), one shade per model inside a family; a dash pattern per family so the curves still part without
# colour.
_PALETTES: dict[str, tuple[str, ...]] = {
    "cl": ("#1c62c4", "#5aa2ea", "#0b3b7a", "#8fc1f2"),
    "mim": ("#d9480f", "#f59f00", "#a61e4d", "#ffa94d"),
    "hybrid": ("#2b8a3e", "#74b816", "#087f5b", "#8ce99a"),
    "autoregressive": ("#8d5524", "#c68642", "#5c3317", "#e0ac69"),
    "supervised": ("#7048e8", "#be4bdb", "#5f3dc4", "#b197fc"),
    "baseline": ("#495057", "#868e96", "#212529", "#adb5bd"),
    "other": ("#0c8599", "#66d9e8", "#0b7285", "#99e9f2"),
}
DASHES: dict[str, str] = {
    "cl": "solid",
    "mim": "dash",
    "hybrid": "dashdot",
    "autoregressive": "longdashdot",
    "supervised": "dot",
    "baseline": "longdash",
    "other": "solid",
}
MAP_COLORSCALE = "Inferno"
SPECTRUM_COLORSCALE = "Viridis"
FONT = dict(family="Inter, system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=12, color="#1f2430")


def family_key(family: str | None) -> str:
    f = (family or "").lower()
    if f in ("random", "random-init", "untrained"):
        return "baseline"
    return f if f in FAMILIES else "other"


def model_colours(models: list[str], families: dict[str, str]) -> dict[str, str]:
    """A colour per model: its family's hue, the next shade for each further model of the same family."""
    used: dict[str, int] = {}
    out: dict[str, str] = {}
    for m in models:
        fam = family_key(families.get(m))
        i = used.get(fam, 0)
        used[fam] = i + 1
        palette = _PALETTES[fam]
        out[m] = palette[i % len(palette)]
    return out


def rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def base_layout(**overrides: Any) -> dict[str, Any]:
    layout: dict[str, Any] = dict(
        font=FONT,
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="#ffffff",
        margin=dict(l=40, r=16, t=40, b=36),
        hoverlabel=dict(font_size=12),
    )
    layout.update(overrides)
    return layout


def graph_config(filename: str | None) -> Any:
    """Plotly config of every graph: the camera saves PNG at 2x (SVG via the panel's export buttons); nothing
    that sends a figure off the server (no cloud or Chart Studio buttons: student uploads stay here).

    ``filename=None``: no camera, for graphs whose content (and so file name) changes with every click, where
    only the panel's export buttons know the name (from ``layout.meta.filename``)."""
    remove = ["select2d", "lasso2d", "autoScale2d", "sendDataToCloud"]
    config: dict[str, Any] = {
        "displaylogo": False,
        "showSendToCloud": False,
        "showEditInChartStudio": False,
        "modeBarButtonsToRemove": remove if filename else [*remove, "toImage"],
    }
    if filename:
        config["toImageButtonOptions"] = {"format": "png", "filename": filename, "scale": 2}
    return config
