"""The page's sentences about what the selected models do, computed from their numbers, never written ahead.

Sources: the API's claims report (``backend.analysis.claims.claims_report``: each of the paper's claims held
or not on the set means, with the numbers and how many images it holds on), and the numbers drawn on the page
(the spectra's ``high_frequency_delta``, the shown image's metrics at the shown block). What the *paper*
found is fixed text, always said with its setting (ViT-B/16, ImageNet-1k, 14 x 14 grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The paper's own finding for each claim id of the API's report, with its numbers and setting.
PAPER_FINDINGS: dict[str, str] = {
    "distance": "The paper (MoCo v3 and SimMIM ViT-B/16, ImageNet-1k, 14 × 14 grid) finds CL's later-layer "
    "attention much wider than MIM's: MoCo v3 reaches 113.5 px in block 12, 0.97 of uniform attention.",
    "nmi": "The paper finds CL's attention collapsing in the later layers: MoCo v3's NMI falls from 0.32 "
    "(block 3) to 0.01 (block 12), while SimMIM's stays clearly higher.",
    "fourier": "The paper finds MIM's tokens richer in high frequencies: SimMIM's Δ log amplitude lies above "
    "MoCo v3's at every depth (depth 12: −2.32 against −2.51, read at 6/7 π on 14 × 14).",
    "hybrid": "The paper's hybrids (λ L_CL + (1 − λ) L_MIM) take from both: CL-like collapse (low NMI) at "
    "the end of the network, more high-frequency content than CL early and less at the end.",
}
ROLE_NAMES = {"cl": "CL", "mim": "MIM", "hybrid": "hybrid"}
# What each claim says, as a verb phrase of the selected models (held / not held).
_SAYS: dict[str, tuple[str, str]] = {
    "distance": ("{cl} attends farther than {mim}", "{cl} does not attend farther than {mim}"),
    "nmi": ("{cl}'s attention depends less on the query than {mim}'s",
            "{cl}'s attention does not depend less on the query than {mim}'s"),
    "fourier": ("{mim} keeps more high-frequency content than {cl}",
                "{mim} does not keep more high-frequency content than {cl}"),
    "hybrid": ("{hybrid}'s attention distance lies between {cl}'s and {mim}'s",
               "{hybrid}'s attention distance does not lie between {cl}'s and {mim}'s"),
}  # fmt: skip
PAPER_SETTING = "ViT-B/16 at 224 px (a 14 × 14 grid) pretrained for 300-800 epochs on ImageNet-1k"


def fmt_value(value: float, unit: str) -> str:
    if unit == "px":
        return f"{value:.1f} px"
    if unit == "relative":
        return f"{value:.2f} × uniform"
    return f"{value:.3f}"


@dataclass(frozen=True)
class ClaimLine:
    """One row of the "Does it reproduce the paper?" strip."""

    id: str
    statement: str  # the paper's claim
    held: bool
    verdict: str  # "held" | "not held"
    numbers: str  # "mean attention distance (relative), blocks 7-12: CL (a) 0.95 × uniform, MIM (b) ..."
    images: str | None  # "holds on 14 of 16 images" (a set only)


def claim_line(claim: dict[str, Any]) -> ClaimLine:
    unit = str(claim.get("unit", ""))
    models = claim.get("models", {})
    values = ", ".join(
        f"{ROLE_NAMES.get(role, role)} ({models.get(role, '?')}) {fmt_value(float(v), unit)}"
        for role, v in claim.get("values", {}).items()
    )
    metric = str(claim.get("metric", "")) + (" (relative to uniform)" if unit == "relative" else "")
    n, k = int(claim.get("images", 0)), int(claim.get("images_held", 0))
    held = bool(claim.get("held"))
    return ClaimLine(
        id=str(claim.get("id")),
        statement=str(claim.get("statement", "")),
        held=held,
        verdict="held" if held else "not held",
        numbers=f"{metric}, {claim.get('where', '')}: {values}",
        images=f"holds on {k} of {n} images" if n > 1 else None,
    )


def what_models_show(claim: dict[str, Any]) -> str:
    """One sentence of the Learn note: the selected models against this claim, with the numbers."""
    line = claim_line(claim)
    held_text, not_text = _SAYS.get(line.id, ("the claim holds", "the claim does not hold"))
    names = {role: str(m) for role, m in claim.get("models", {}).items()}
    says = (held_text if line.held else not_text).format_map(_Names(names))
    tail = "as in the paper" if line.held else "unlike the paper"
    images = f"; {line.images}" if line.images else ""
    return f"Your models: {says} ({line.numbers}{images}), {tail}."


class _Names(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return key.upper()


def why_different(
    report: dict[str, Any], shapes: dict[str, dict[str, Any]], descriptions: dict[str, str]
) -> str | None:
    """Where a claim is not held: how the models differ from the paper's (input size and grid from their
    metrics, what their catalogue entry says). None when every claim holds or nothing differs in size."""
    if not report.get("claims") or all(c.get("held") for c in report["claims"]):
        return None
    involved = list(dict.fromkeys(m for c in report["claims"] for m in c.get("models", {}).values()))
    parts, small = [], False
    for m in involved:
        shape = shapes.get(m)
        if not shape:
            continue
        size = shape.get("input_size") or [0, 0]
        grid = shape.get("grid") or [0, 0]
        small = small or int(size[0]) < 224
        what = f"{m}: {int(size[0])} × {int(size[1])} px input, {int(grid[0])} × {int(grid[1])} grid"
        if descriptions.get(m):
            what += f" ({descriptions[m].rstrip('.')})"
        parts.append(what)
    if not parts:
        return None
    text = (
        "Where your models differ from the paper's: "
        + "; ".join(parts)
        + f". The paper's are {PAPER_SETTING}."
    )
    if small:
        text += (
            " Small models on 32 px images with short training need not reproduce every claim: the claims "
            "not held here are what these models do, not a test of the paper."
        )
    return text


def roles(selected: list[str], families: dict[str, str]) -> dict[str, str] | None:
    """The first selected CL, MIM and (if any) hybrid model: the models a claims check compares; None
    without both a CL and a MIM model."""
    picked: dict[str, str] = {}
    for m in selected:
        fam = (families.get(m) or "").lower()
        if fam in ("cl", "mim", "hybrid") and fam not in picked:
            picked[fam] = m
    return picked if "cl" in picked and "mim" in picked else None


def spectrum_sentence(
    answers: dict[str, dict[str, Any]], families: dict[str, str], depths: dict[str, int]
) -> str | None:
    """The spectra's Δ log amplitude of the shown image, highest first, and how CL and MIM compare there."""
    values = {
        m: float(a["high_frequency_delta"])
        for m, a in answers.items()
        if isinstance(a.get("high_frequency_delta"), int | float)
    }
    if not values:
        return None
    ranked = sorted(values, key=lambda m: values[m], reverse=True)
    listed = ", ".join(f"{m} (depth {depths.get(m, '?')}) {values[m]:.2f}" for m in ranked)
    text = f"On this image, Δ log amplitude at the marked bin: {listed}."
    cl = [m for m in ranked if (families.get(m) or "").lower() == "cl"]
    mim = [m for m in ranked if (families.get(m) or "").lower() == "mim"]
    if cl and mim:
        a, b = mim[0], cl[0]
        if values[a] > values[b]:
            text += f" {a} (MIM) keeps more high-frequency content than {b} (CL) here, as the paper found."
        else:
            text += (
                f" {a} (MIM) keeps less high-frequency content than {b} (CL) here, unlike the paper "
                "(SimMIM above MoCo v3 at every depth)."
            )
    return text


def attention_sentence(
    per_model: dict[str, dict[str, Any]], layer: int, families: dict[str, str]
) -> str | None:
    """The attention maps' numbers at the shown block (each model clipped to its depth) on the shown image:
    NMI and distance relative to uniform, which model's maps change least with the query, and CL against MIM
    where both are selected (the paper's claim is about the later half of the blocks)."""
    rows: dict[str, tuple[int, int, float, float]] = {}
    for m, metrics in per_model.items():
        nmi = metrics["nmi"]["mean"]
        rel = metrics["attention_distance_relative"]["mean"]
        k = max(1, min(int(layer), len(nmi)))
        rows[m] = (k, len(nmi), float(nmi[k - 1]), float(rel[k - 1]))
    if not rows:
        return None
    listed = "; ".join(
        f"{m} (block {k}): NMI {n:.3f}, distance {r:.2f} × uniform" for m, (k, _, n, r) in rows.items()
    )
    text = f"On this image: {listed}."
    if len(rows) > 1:
        lowest = min(rows, key=lambda m: rows[m][2])
        text += f" {lowest}'s maps change least with the query here (lowest NMI)."
    cl = next((m for m in rows if (families.get(m) or "").lower() == "cl"), None)
    mim = next((m for m in rows if (families.get(m) or "").lower() == "mim"), None)
    if cl and mim:
        k, depth, n_cl, _ = rows[cl]
        n_mim = rows[mim][2]
        later = k > depth // 2
        where = (
            "a later block, where the paper finds"
            if later
            else "an early block; the paper's claim is about later ones:"
        )
        order = "below" if n_cl < n_mim else "not below"
        text += f" {cl} (CL) is {order} {mim} (MIM) in NMI here, {where} CL below MIM."
    return text
