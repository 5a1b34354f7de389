"""Check values of the patch-token views: cosine similarity of one patch to all, PCA of the tokens to RGB."""

from __future__ import annotations

import math

import pytest
import torch

from backend.analysis import AnalysisArgumentError
from backend.analysis.patches import patch_similarity, pca_rgb


def test_patch_similarity_is_the_cosine_to_every_patch() -> None:
    z = torch.tensor([[1.0, 0], [0, 1], [1, 1], [-2, 0], [0, 0]], dtype=torch.float64)
    assert patch_similarity(z, 0).tolist() == pytest.approx([1, 0, 1 / math.sqrt(2), -1, 0], abs=1e-12)
    assert patch_similarity(z * 7, 2).tolist() == pytest.approx(
        [1 / math.sqrt(2)] * 2 + [1, -1 / math.sqrt(2), 0]
    )
    with pytest.raises(AnalysisArgumentError, match=r"\[0, 5\)"):
        patch_similarity(z, 5)


def test_pca_rgb_of_tokens_with_known_components() -> None:
    # 6 patches in 5 channels along two orthonormal directions (+ an offset): scores x and y, variances 6, 1.5
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    x = torch.tensor([2.0, -1, -1, 0, 0, 0], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0.5, 0.5, -1], dtype=torch.float64)
    tokens = 4 + x[:, None] * q[0] + y[:, None] * q[1]
    res = pca_rgb(tokens)
    # channel 0: x scaled to [0, 1]; channel 1: -y scaled (sign fixed: the largest |score|, -1, made
    # positive); rank 2, so channel 2 is 0
    assert res.rgb[:, 0].tolist() == pytest.approx([1, 0, 0, 1 / 3, 1 / 3, 1 / 3], abs=1e-9)
    assert res.rgb[:, 1].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0, 0, 1], abs=1e-9)
    assert res.rgb[:, 2].tolist() == [0.0] * 6
    assert res.explained.tolist() == pytest.approx([0.8, 0.2, 0.0], abs=1e-9)
    # fitted on a larger set: that set's mean and components, the image's own [0, 1] range
    fit = torch.cat([tokens, 4 + 3 * x[:, None] * q[0]])
    both = pca_rgb(tokens, fit=fit)
    assert both.rgb[:, 0].tolist() == pytest.approx([1, 0, 0, 1 / 3, 1 / 3, 1 / 3], abs=1e-9)
    assert both.explained[0].item() > 0.9
    with pytest.raises(AnalysisArgumentError, match="channels"):
        pca_rgb(tokens, fit=fit[:, :3])
