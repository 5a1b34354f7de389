"""Check values of the patch-token views: cosine similarity of one patch to all, PCA of the tokens to RGB."""

from __future__ import annotations

import math

import pytest
import torch

from backend.analysis import AnalysisArgumentError
from backend.analysis.patches import foreground_mask, patch_similarity, pca_rgb, pca_rgb_set


def test_patch_similarity_is_the_cosine_to_every_patch() -> None:
    z = torch.tensor([[1.0, 0], [0, 1], [1, 1], [-2, 0], [0, 0]], dtype=torch.float64)
    assert patch_similarity(z, 0).tolist() == pytest.approx([1, 0, 1 / math.sqrt(2), -1, 0], abs=1e-12)
    assert patch_similarity(z * 7, 2).tolist() == pytest.approx(
        [1 / math.sqrt(2)] * 2 + [1, -1 / math.sqrt(2), 0]
    )
    with pytest.raises(AnalysisArgumentError, match=r"\[0, 5\)"):
        patch_similarity(z, 5)


def test_centred_patch_similarity_removes_the_shared_direction() -> None:
    # a large shared token (10, 0, 0) plus +-1 along y or z: raw cosines all near 1, centred they are the
    # offsets' cosines (the mean patch is exactly the shared token)
    base = torch.tensor([10.0, 0, 0], dtype=torch.float64)
    offsets = torch.tensor([[0, 1.0, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)
    z = base + offsets
    raw = patch_similarity(z, 0)
    assert raw.tolist() == pytest.approx([1, 99 / 101, 100 / 101, 100 / 101], abs=1e-12)
    assert patch_similarity(z, 0, centred=True).tolist() == pytest.approx([1, -1, 0, 0], abs=1e-12)
    assert patch_similarity(z + 3, 2, centred=True).tolist() == pytest.approx([0, 0, 1, -1], abs=1e-12)


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
    assert res.foreground is None


def _basis() -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    return q


def test_pca_fitted_on_a_set_uses_one_mean_one_basis_and_one_scale() -> None:
    q = _basis()
    x = torch.tensor([2.0, -1, -1, 0, 0, 0], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0.5, 0.5, -1], dtype=torch.float64)
    first = 4 + x[:, None] * q[0] + y[:, None] * q[1]
    second = 4 + 3 * x[:, None] * q[0]
    a, b = pca_rgb_set([first, second])
    # over both: scores x and 3x on q0 (largest |score| 6, positive), scaled from -3..6; y on q1 flipped
    # (its largest |score| is -1), scaled from -0.5..1; variances 60 and 1.5 (sums of squares)
    assert a.rgb[:, 0].tolist() == pytest.approx([5 / 9, 2 / 9, 2 / 9, 1 / 3, 1 / 3, 1 / 3], abs=1e-9)
    assert b.rgb[:, 0].tolist() == pytest.approx([1, 0, 0, 1 / 3, 1 / 3, 1 / 3], abs=1e-9)
    assert a.rgb[:, 1].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0, 0, 1], abs=1e-9)
    assert b.rgb[:, 1].tolist() == pytest.approx([1 / 3] * 6, abs=1e-9)
    assert a.rgb[:, 2].tolist() == b.rgb[:, 2].tolist() == [0.0] * 6
    assert a.explained.tolist() == b.explained.tolist()
    assert a.explained.tolist() == pytest.approx([60 / 61.5, 1.5 / 61.5, 0], abs=1e-9)
    # fitted on the first image alone, its picture spans [0, 1] itself
    assert pca_rgb(first).rgb[:, 0].tolist() == pytest.approx([1, 0, 0, 1 / 3, 1 / 3, 1 / 3], abs=1e-9)
    # a set of one image is the image PCA
    (only,) = pca_rgb_set([first])
    assert torch.equal(only.rgb, pca_rgb(first).rgb) and torch.equal(only.explained, pca_rgb(first).explained)
    with pytest.raises(AnalysisArgumentError, match="same channels"):
        pca_rgb_set([first, second[:, :3]])
    with pytest.raises(AnalysisArgumentError, match="at least one"):
        pca_rgb_set([])


def _object_and_background() -> torch.Tensor:
    """8 patches: 3 object patches at +5 on q0 (apart by 2, -1, -1 on q1), 5 background patches at -3 on q0
    (apart by 1, -1, 0, 0, 0 on q2): centred over all, q0 holds the variance 120, q1 6, q2 2."""
    q = _basis()
    s0 = torch.tensor([5.0, 5, 5, -3, -3, -3, -3, -3], dtype=torch.float64)
    s1 = torch.tensor([2.0, -1, -1, 0, 0, 0, 0, 0], dtype=torch.float64)
    s2 = torch.tensor([0.0, 0, 0, 1, -1, 0, 0, 0], dtype=torch.float64)
    return 1 + s0[:, None] * q[0] + s1[:, None] * q[1] + s2[:, None] * q[2]


def test_foreground_mask_keeps_the_first_components_positive_side() -> None:
    z = _object_and_background()
    # first-component scores 5 (object) and -3, std sqrt(15) = 3.87; the largest |score| is an object's
    assert foreground_mask(z).tolist() == [True] * 3 + [False] * 5
    assert foreground_mask(z, 1.0).tolist() == [True] * 3 + [False] * 5  # 5 > 3.87
    assert foreground_mask(z, 1.5).tolist() == [False] * 8  # 5 < 5.81
    assert foreground_mask(z, -1.0).tolist() == [True] * 8  # -3 > -3.87
    assert foreground_mask(torch.ones(4, 3)).tolist() == [False] * 4  # no first component
    res = pca_rgb(z, 0.0)
    assert res.foreground is not None and res.foreground.tolist() == [True] * 3 + [False] * 5
    # the PCA of the object's patches only: one component (q1: 2, -1, -1), the background black
    assert res.rgb[:, 0].tolist() == pytest.approx([1, 0, 0] + [0] * 5, abs=1e-9)
    assert res.rgb[:, 1:].abs().max().item() == 0.0
    assert res.explained.tolist() == pytest.approx([1, 0, 0], abs=1e-9)
    # every patch kept: the unmasked PCA; none kept: all black, nothing explained
    everything = pca_rgb(z, -1.0)
    assert torch.allclose(everything.rgb, pca_rgb(z).rgb) and everything.explained.tolist() == pytest.approx(
        pca_rgb(z).explained.tolist()
    )
    nothing = pca_rgb(z, 1.5)
    assert nothing.rgb.abs().max().item() == 0.0 and nothing.explained.tolist() == [0.0] * 3


def test_the_set_mask_is_the_rule_over_all_patches_of_the_set() -> None:
    z = _object_and_background()
    a, b = pca_rgb_set([z[:4], z[4:]], 0.0)  # image b: background only
    assert a.foreground is not None and b.foreground is not None
    assert a.foreground.tolist() == [True] * 3 + [False] and b.foreground.tolist() == [False] * 4
    whole = pca_rgb(z, 0.0)
    assert torch.equal(torch.cat([a.rgb, b.rgb]), whole.rgb)
    assert torch.equal(a.explained, whole.explained)
    # image b alone has a first component of its own (q2): its mask there is not the set's
    alone = pca_rgb(z[4:], 0.0).foreground
    assert alone is not None and alone.any()
