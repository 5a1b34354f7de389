"""The paper's claims on constructed per-image values and on constructed traces (known answers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.analysis import AnalysisArgumentError, compute_metrics
from backend.analysis.claims import ModelValues, claims_report, evaluate_claims, same_scale
from backend.analysis.summary import per_image_values
from backend.capture import Trace


def values(
    model: str,
    distance: list[list[float]],
    nmi: list[list[float]],
    delta: list[list[float]],
    grid: tuple[int, int] = (8, 8),
    patch: int = 4,
) -> ModelValues:
    return ModelValues(model, "x", grid, patch, np.array(distance), np.array(nmi), np.array(delta))


# 4 blocks, 3 images: the later half is blocks 3-4 (rows 2-3)
CL = values(
    "cl",
    distance=[[9, 9, 9], [9, 9, 9], [10, 12, 5], [12, 10, 5]],
    nmi=[[0.9] * 3, [0.9] * 3, [0.1, 0.1, 0.5], [0.1, 0.1, 0.5]],
    delta=[[0] * 3, [-3] * 3, [-3] * 3, [-3] * 3, [-3] * 3],
)
MIM = values(
    "mim",
    distance=[[1] * 3, [1] * 3, [6, 6, 6], [8, 8, 8]],
    nmi=[[0.0] * 3, [0.0] * 3, [0.3] * 3, [0.3] * 3],
    delta=[[-9] * 3, [-2, -2, -4], [-2, -2, -4], [-2, -2, -4], [-2, -2, -4]],
)
HYBRID = values(
    "hyb",
    distance=[[0] * 3, [0] * 3, [8, 13, 5], [9, 12, 7]],
    nmi=[[0.0] * 3] * 4,
    delta=[[0.0] * 3] * 5,
)


def test_claims_by_hand() -> None:
    claims = {c.id: c for c in evaluate_claims(CL, MIM, HYBRID)}
    assert list(claims) == ["distance", "nmi", "fourier", "hybrid"]
    d = claims["distance"]
    # later-half means per image: CL 11, 11, 5; MIM 7, 7, 7
    assert [v["cl"] for v in d.per_image_values] == [11, 11, 5]
    assert d.values == {"cl": pytest.approx(9.0), "mim": pytest.approx(7.0)}
    assert d.held and d.per_image == [True, True, False] and d.unit == "px" and d.where == "blocks 3-4"
    assert "holds on 2 of 3 images" in d.summary and "CL 9.000, MIM 7.000" in d.summary
    n = claims["nmi"]  # CL 0.1, 0.1, 0.5 vs MIM 0.3
    assert n.held and n.per_image == [True, True, False]
    f = claims["fourier"]  # depths 1-4 only (depth 0 left out): CL -3 vs MIM -2, -2, -4
    assert f.values == {"cl": pytest.approx(-3.0), "mim": pytest.approx(-8 / 3)}
    assert f.held and f.per_image == [True, True, False] and f.where == "depths 1-4"
    h = claims["hybrid"]  # 8.5, 12.5, 6 against (7, 11), (7, 11), (5, 7)
    assert h.per_image == [True, False, True]
    assert h.values["hybrid"] == pytest.approx(9.0) and not h.held  # equal to CL's 9: not strictly between
    report = claims_report(list(claims.values()))
    assert (report["all_held"], report["held"], report["total"], report["images"]) == (False, 3, 4, 3)
    assert report["claims"][3]["per_image"][1] == {"held": False, "values": h.per_image_values[1]}
    assert json.loads(json.dumps(report)) == report


def test_a_claim_that_fails_on_the_mean() -> None:
    flipped = evaluate_claims(MIM, CL)  # roles swapped: every claim turns around
    assert [c.held for c in flipped] == [False, False, False]
    assert [c.images_held for c in flipped] == [1, 1, 1]
    assert claims_report(flipped)["all_held"] is False and claims_report(flipped)["held"] == 0
    assert all("does not hold on the mean" in c.summary for c in flipped)


def test_relative_scale_where_grids_differ() -> None:
    """CL on 8 x 8 at patch 4 at 0.9 of uniform (14.9 px), MIM on 14 x 14 at 16 at 0.5 (58 px): in pixels CL
    looks below MIM, on the relative scale it is above, and the claims use the relative scale."""
    cl_u, mim_u = 16.545930811669677, 116.49222696467967
    cl = values("cl", [[0.9 * cl_u]] * 2, [[0.1]] * 2, [[0.0]] * 3)
    mim = values("mim", [[0.5 * mim_u]] * 2, [[0.5]] * 2, [[0.0]] * 3, grid=(14, 14), patch=16)
    assert not same_scale([cl, mim])
    distance = evaluate_claims(cl, mim)[0]
    assert distance.unit == "relative" and distance.held
    assert distance.values == {"cl": pytest.approx(0.9), "mim": pytest.approx(0.5)}
    assert claims_report(evaluate_claims(cl, mim))["distance_scale"] == "relative"


def test_bad_inputs() -> None:
    with pytest.raises(AnalysisArgumentError, match="same images"):
        evaluate_claims(CL, values("m", [[1, 2]], [[1, 2]], [[1, 2], [1, 2]]))
    with pytest.raises(AnalysisArgumentError, match="delta"):
        values("m", [[1]], [[1]], [[1]])


def _trace(attn: torch.Tensor, tokens: torch.Tensor, layers: int = 4) -> Trace:
    b, n, _ = tokens.shape
    return Trace(
        attentions=[attn] * layers,
        x_attn=[tokens] * layers,
        x_out=[tokens] * (layers + 1),
        grid=(4, 4),
        patch_size=8,
        num_prefix_tokens=0,
        model_id="t",
        preprocessing={},
    )


def test_on_constructed_traces_through_metrics_and_per_image_values() -> None:
    """Uniform attention on smooth tokens (CL-like: far, query-blind, low frequencies) against self attention
    on random tokens (MIM-like: near, query-specific, high frequencies); a half-and-half mix is the hybrid."""
    b, n = 3, 16
    uniform = torch.full((b, 2, n, n), 1.0 / n)
    identity = torch.eye(n).expand(b, 2, n, n).clone()
    r = torch.arange(4, dtype=torch.float64)
    smooth = (torch.cos(2 * torch.pi * r / 4)[:, None] + torch.cos(2 * torch.pi * r / 4)[None, :]).flatten()
    smooth_tokens = (smooth[None, :, None] + 2.0).expand(b, n, 8).float() + 0.01 * torch.randn(
        b, n, 8, generator=torch.Generator().manual_seed(0)
    )
    random_tokens = torch.randn(b, n, 8, generator=torch.Generator().manual_seed(1))
    traces = {
        "cl": _trace(uniform, smooth_tokens),
        "mim": _trace(identity, random_tokens),
        "hybrid": _trace(0.5 * uniform + 0.5 * identity, random_tokens),
    }
    from_values = {
        role: ModelValues.from_per_image(
            per_image_values(t), model=role, family=role, grid=(4, 4), patch_size=8
        )
        for role, t in traces.items()
    }
    claims = evaluate_claims(from_values["cl"], from_values["mim"], from_values["hybrid"])
    assert [c.held for c in claims] == [True, True, True, True]
    assert all(c.images_held == b for c in claims)
    distance = claims[0]
    assert distance.values["mim"] == pytest.approx(0.0, abs=1e-6)  # self attention: distance 0
    assert distance.values["cl"] == pytest.approx(from_values["cl"].uniform_distance, rel=1e-5)
    assert claims[1].values["cl"] == pytest.approx(0.0, abs=1e-5)  # NMI of uniform attention
    assert claims[1].values["mim"] == pytest.approx(1.0, abs=1e-3)
    # per-image metrics objects (what the API has) give the same claims
    per_image = {
        role: ModelValues.from_metrics(
            [
                compute_metrics(_trace(t.attentions[0][i : i + 1], t.x_out[0][i : i + 1]), role)
                | {"model": role}
                for i in range(b)
            ]
        )
        for role, t in traces.items()
    }
    again = evaluate_claims(per_image["cl"], per_image["mim"], per_image["hybrid"])
    for c1, c2 in zip(claims, again, strict=True):
        assert c1.held == c2.held and c1.per_image == c2.per_image
        assert c1.values == pytest.approx(c2.values, rel=1e-5, abs=1e-6)
