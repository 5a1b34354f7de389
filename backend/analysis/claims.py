"""The paper's claims about CL and MIM, checked on a set of images (Park et al., ICLR 2023).

Pure functions of per-image values: given a CL model, a MIM model and optionally a hybrid, each claim is
evaluated on the set means and on every image, with the numbers behind it:

- ``distance``: in the later half of the blocks, CL's mean attention distance is above MIM's;
- ``nmi``: in the later half, CL's NMI is below MIM's (CL's attention is the same for every query);
- ``fourier``: MIM's delta log amplitude is above CL's, averaged over depths ``1..L`` (MIM keeps more high
  frequencies);
- ``hybrid``: the hybrid's later-half attention distance lies between CL's and MIM's.

"Later half" is blocks ``L // 2 + 1 .. L`` of each model (7-12 of 12). Attention distance is compared in
pixels when every model has the same grid and patch size, else on the relative scale (distance / the grid's
uniform-attention distance). A statistic of a set is the mean over images of the per-image statistic, which is
also the statistic of the set means (everything here is linear), so "held" is a statement about the set means
and "holds on k of n images" about the images one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.analysis._common import AnalysisArgumentError
from backend.analysis.attention import uniform_attention_distance

CLAIM_IDS = ("distance", "nmi", "fourier", "hybrid")
STATEMENTS = {
    "distance": "later layers: CL attends farther than MIM (mean attention distance, CL > MIM)",
    "nmi": "later layers: CL's attention depends less on the query than MIM's (NMI, CL < MIM)",
    "fourier": "MIM keeps more high-frequency content than CL (delta log amplitude, MIM > CL)",
    "hybrid": "the hybrid's later-layer attention distance lies between CL's and MIM's",
}


@dataclass(frozen=True)
class ModelValues:
    """Per-image values of one model (head-averaged): ``distance`` and ``nmi`` ``(L, B)`` for blocks
    ``1..L``, ``delta`` ``(L + 1, B)`` for depths ``0..L`` (0 = the embedding); the same ``B`` images for
    every model."""

    model: str
    family: str
    grid: tuple[int, int]
    patch_size: int
    distance: np.ndarray
    nmi: np.ndarray
    delta: np.ndarray

    def __post_init__(self) -> None:
        layers, images = self.distance.shape if self.distance.ndim == 2 else (0, 0)
        if layers < 1 or images < 1:
            raise AnalysisArgumentError(f"{self.model}: distance must be (L, B) with L, B >= 1")
        if self.nmi.shape != (layers, images) or self.delta.shape != (layers + 1, images):
            raise AnalysisArgumentError(
                f"{self.model}: nmi must be ({layers}, {images}) and delta ({layers + 1}, {images}), got "
                f"{self.nmi.shape} and {self.delta.shape}"
            )

    @property
    def layers(self) -> int:
        return int(self.distance.shape[0])

    @property
    def images(self) -> int:
        return int(self.distance.shape[1])

    @property
    def later_half(self) -> slice:
        """Blocks ``L // 2 + 1 .. L`` (1-based) as rows of ``distance`` / ``nmi``."""
        return slice(self.layers // 2, self.layers)

    @property
    def later_blocks(self) -> list[int]:
        return list(range(self.layers // 2 + 1, self.layers + 1))

    @property
    def uniform_distance(self) -> float:
        return uniform_attention_distance(self.grid, self.patch_size)

    @staticmethod
    def from_metrics(objects: Sequence[Mapping[str, Any]]) -> ModelValues:
        """From per-image ``metrics.json`` objects of one model (one per image, in image order)."""
        if not objects:
            raise AnalysisArgumentError("from_metrics needs at least one metrics object")
        first = objects[0]
        for o in objects:
            if o.get("model") != first.get("model") or o.get("num_images", 1) != 1:
                raise AnalysisArgumentError("from_metrics takes one-image metrics objects of one model")

        def column(key: str, part: str) -> np.ndarray:
            return np.asarray([o[key][part] for o in objects], dtype=np.float64).T

        return ModelValues(
            model=str(first["model"]),
            family=str(first.get("family", "")),
            grid=(int(first["grid"][0]), int(first["grid"][1])),
            patch_size=int(first["patch_size"]),
            distance=column("attention_distance", "mean"),
            nmi=column("nmi", "mean"),
            delta=column("delta_log_amplitude", "value"),
        )

    @staticmethod
    def from_per_image(
        values: Any, *, model: str, family: str, grid: tuple[int, int], patch_size: int
    ) -> ModelValues:
        """From ``backend.analysis.summary.PerImage`` (``(L, B, heads)`` attention metrics, scalar rows)."""
        layers = values.num_layers
        return ModelValues(
            model=model,
            family=family,
            grid=(int(grid[0]), int(grid[1])),
            patch_size=int(patch_size),
            distance=values.distance.double().mean(-1).cpu().numpy(),
            nmi=values.nmi.double().mean(-1).cpu().numpy(),
            delta=values.scalars[: layers + 1].double().cpu().numpy(),
        )


@dataclass
class Claim:
    """One claim: held on the set means, and per image; ``values`` are each role's set statistic."""

    id: str
    statement: str
    held: bool
    values: dict[str, float]  # role ("cl", "mim", "hybrid") -> the statistic's set mean
    models: dict[str, str]  # role -> model id
    metric: str
    unit: str  # "px", "relative" (distance / uniform) or "" (NMI, delta log amplitude)
    where: str  # which blocks or depths, per role
    per_image: list[bool] = field(default_factory=list)
    per_image_values: list[dict[str, float]] = field(default_factory=list)

    @property
    def images_held(self) -> int:
        return sum(self.per_image)

    @property
    def summary(self) -> str:
        verdict = "holds" if self.held else "does not hold"
        numbers = ", ".join(f"{_label(role)} {v:.3f}" for role, v in self.values.items())
        unit = f" {self.unit}" if self.unit else ""
        return (
            f"{verdict} on the mean ({self.metric}{unit}, {self.where}: {numbers}); "
            f"holds on {self.images_held} of {len(self.per_image)} images"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "statement": self.statement,
            "held": self.held,
            "values": self.values,
            "models": self.models,
            "metric": self.metric,
            "unit": self.unit,
            "where": self.where,
            "images": len(self.per_image),
            "images_held": self.images_held,
            "summary": self.summary,
            "per_image": [
                {"held": h, "values": v} for h, v in zip(self.per_image, self.per_image_values, strict=True)
            ],
        }


def _label(role: str) -> str:
    return role if role == "hybrid" else role.upper()


def _blocks(values: ModelValues) -> str:
    b = values.later_blocks
    return f"blocks {b[0]}-{b[-1]}" if len(b) > 1 else f"block {b[0]}"


def _later(values: ModelValues, rows: np.ndarray) -> np.ndarray:
    return rows[values.later_half].mean(0)  # (B,)


def _claim(
    claim_id: str,
    per_role: dict[str, np.ndarray],
    models: dict[str, ModelValues],
    metric: str,
    unit: str,
    where: str,
    test: Any,
) -> Claim:
    means = {role: float(v.mean()) for role, v in per_role.items()}
    n = next(iter(per_role.values())).shape[0]
    per_image_values = [{role: float(v[i]) for role, v in per_role.items()} for i in range(n)]
    return Claim(
        id=claim_id,
        statement=STATEMENTS[claim_id],
        held=bool(test(means)),
        values=means,
        models={role: models[role].model for role in per_role},
        metric=metric,
        unit=unit,
        where=where,
        per_image=[bool(test(v)) for v in per_image_values],
        per_image_values=per_image_values,
    )


def same_scale(models: Sequence[ModelValues]) -> bool:
    """Whether pixels are comparable: every model has the same grid and patch size."""
    return len({(m.grid, m.patch_size) for m in models}) == 1


def evaluate_claims(cl: ModelValues, mim: ModelValues, hybrid: ModelValues | None = None) -> list[Claim]:
    """Every claim for these models (``hybrid`` only with a hybrid model), in ``CLAIM_IDS`` order."""
    models = {"cl": cl, "mim": mim} | ({"hybrid": hybrid} if hybrid is not None else {})
    images = {m.images for m in models.values()}
    if len(images) != 1:
        raise AnalysisArgumentError(f"every model needs the same images; got {sorted(images)} images")
    pixels = same_scale(list(models.values()))
    unit = "px" if pixels else "relative"

    def distance(m: ModelValues) -> np.ndarray:
        return _later(m, m.distance if pixels else m.distance / m.uniform_distance)

    def where_later(roles: Sequence[str]) -> str:
        spans = {_blocks(models[r]) for r in roles}
        return spans.pop() if len(spans) == 1 else ", ".join(f"{r}: {_blocks(models[r])}" for r in roles)

    def depths(m: ModelValues) -> str:
        return f"depths 1-{m.layers}" if m.layers > 1 else "depth 1"

    pair = ("cl", "mim")
    fourier_where = {depths(cl), depths(mim)}
    claims = [
        _claim(
            "distance",
            {r: distance(models[r]) for r in pair},
            models,
            "mean attention distance",
            unit,
            where_later(pair),
            lambda v: v["cl"] > v["mim"],
        ),
        _claim(
            "nmi",
            {r: _later(models[r], models[r].nmi) for r in pair},
            models,
            "NMI",
            "",
            where_later(pair),
            lambda v: v["cl"] < v["mim"],
        ),
        _claim(
            "fourier",
            {r: models[r].delta[1:].mean(0) for r in pair},
            models,
            "delta log amplitude",
            "",
            fourier_where.pop() if len(fourier_where) == 1 else f"cl: {depths(cl)}, mim: {depths(mim)}",
            lambda v: v["mim"] > v["cl"],
        ),
    ]
    if hybrid is not None:
        roles = ("cl", "mim", "hybrid")
        claims.append(
            _claim(
                "hybrid",
                {r: distance(models[r]) for r in roles},
                models,
                "mean attention distance",
                unit,
                where_later(roles),
                lambda v: min(v["cl"], v["mim"]) < v["hybrid"] < max(v["cl"], v["mim"]),
            )
        )
    return claims


def claims_report(claims: Sequence[Claim]) -> dict[str, Any]:
    """The JSON object of a claims check: every claim, how many hold, whether all hold on the set means."""
    if not claims:
        raise AnalysisArgumentError("claims_report needs at least one claim")
    return {
        "all_held": all(c.held for c in claims),
        "held": sum(c.held for c in claims),
        "total": len(claims),
        "images": len(claims[0].per_image),
        "distance_scale": claims[0].unit,  # the distance claim comes first: "px" or "relative"
        "claims": [c.as_dict() for c in claims],
    }
