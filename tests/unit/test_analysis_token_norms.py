"""The token-norm map (``backend.analysis.patches.norm_map``), the prefix labels and the view's parameters:
check values on constructed tokens, and the per-patch rule agrees with ``representation.token_norms``."""

from __future__ import annotations

import pytest
import torch

from backend.analysis import AnalysisArgumentError
from backend.analysis.patches import norm_map, token_l2
from backend.analysis.representation import OUTLIER_FACTOR, token_norms
from backend.errors import BadRequest
from backend.service.bundle import ModelInfo
from backend.service.token_norms import TokenNormsView, prefix_labels


def test_norm_map_of_tokens_with_known_norms() -> None:
    # norms 3, 4, 5, 1, 40, 2 (3-4-5 and axis vectors): median of 6 = (3 + 4) / 2 = 3.5, outlier above 14
    tokens = torch.tensor(
        [[3.0, 0, 0], [0, 4, 0], [3, 4, 0], [0, 0, 1], [0, 24, 32], [2, 0, 0]], dtype=torch.float16
    )
    res = norm_map(tokens)
    assert res.norms.dtype == torch.float32
    assert res.norms.tolist() == pytest.approx([3, 4, 5, 1, 40, 2])
    assert res.median.item() == pytest.approx(3.5)
    assert res.outliers.tolist() == [False, False, False, False, True, False]
    assert norm_map(tokens, 1.0).outliers.tolist() == [False, True, True, False, True, False]
    assert token_l2(tokens[None]).shape == (1, 6)
    with pytest.raises(AnalysisArgumentError, match="outlier_factor"):
        norm_map(tokens, 0.0)
    with pytest.raises(AnalysisArgumentError, match=r"\(Np, C\)"):
        norm_map(tokens[None])


def test_norm_map_is_the_per_patch_rule_of_token_norms() -> None:
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(49, 16, generator=gen)
    z[[5, 30]] *= 12  # two high-norm tokens
    res = norm_map(z)
    mean, p99, peak, share = token_norms([z[None]], 0, OUTLIER_FACTOR)[:, 0, 0].tolist()
    assert res.outliers.nonzero().flatten().tolist() == [5, 30]
    assert share == pytest.approx(res.outliers.float().mean().item())
    assert (mean, peak) == pytest.approx((res.norms.mean().item(), res.norms.max().item()))
    assert p99 <= peak


def test_prefix_labels_follow_the_models_prefix() -> None:
    assert prefix_labels(1, True) == ["cls"]
    assert prefix_labels(5, True) == ["cls", "register 1", "register 2", "register 3", "register 4"]
    assert prefix_labels(4, False) == ["register 1", "register 2", "register 3", "register 4"]
    assert prefix_labels(0, False) == [] and prefix_labels(0, True) == []


def test_view_parameters_say_what_is_allowed() -> None:
    info = ModelInfo("m", "cl", "vit", "d", {"input_size": [32, 32]}, 4, 2, (2, 2), 16, 1, 32, 1000)
    for layer in (0, 4):
        TokenNormsView.parse(layer).check(info)
    with pytest.raises(BadRequest, match=r"model m has 4 blocks; use 0\.\.4 \(the output of block K"):
        TokenNormsView.parse(5).check(info)
    with pytest.raises(BadRequest, match=r"layer -1 is out of range: use 0\.\.1024"):
        TokenNormsView.parse(-1)
