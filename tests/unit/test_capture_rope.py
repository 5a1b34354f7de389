"""Capture on timm ``Eva`` (DINOv3, EVA-02): the recorded attention is softmax(q k^T * scale) with RoPE on the
patch tokens only, recomputed here by hand; and the Trace says whether a model has a CLS token.

The rotation is applied as a complex product per pair of channels, with cos + i sin read off timm's table:
interleaved pairs (2i, 2i + 1) for EVA-02, halves (i, i + d/2) for DINOv3 (``rotate_half``).
"""

from __future__ import annotations

from typing import Any

import pytest
import timm
import torch
from torch import Tensor, nn

from backend.capture import capture

TINY: dict[str, Any] = {"depth": 2, "num_classes": 0}


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (timm zero-inits the q / v biases), in float64 for a tight comparison."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.double().eval()


def rotate(x: Tensor, table: Tensor, half: bool) -> Tensor:
    """RoPE by hand: ``x`` (B, heads, Np, d), ``table`` (Np, 2d) = [sin | cos] as timm builds it."""
    d = x.shape[-1]
    sin, cos = table[:, :d], table[:, d:]
    if half:  # pair i with i + d/2
        first, second = slice(0, d // 2), slice(d // 2, d)
        z = torch.complex(x[..., first], x[..., second])
        turn = torch.complex(cos[:, first], sin[:, first])
        assert torch.allclose(sin[:, first], sin[:, second]) and torch.allclose(cos[:, first], cos[:, second])
    else:  # pair 2i with 2i + 1
        z = torch.complex(x[..., 0::2], x[..., 1::2])
        turn = torch.complex(cos[:, 0::2], sin[:, 0::2])
        assert torch.allclose(sin[:, 0::2], sin[:, 1::2]) and torch.allclose(cos[:, 0::2], cos[:, 1::2])
    y = z * turn  # (x0 + i x1) (cos + i sin): rotation by the pair's angle
    if half:
        return torch.cat([y.real, y.imag], dim=-1)
    return torch.stack([y.real, y.imag], dim=-1).flatten(-2)


def by_hand(attn: Any, x: Tensor, table: Tensor | None, num_prefix: int) -> Tensor:
    """softmax(q k^T / sqrt(d)) from the block's weights; RoPE on the patch tokens when ``table`` is given."""
    b, n, _ = x.shape
    heads = int(attn.num_heads)
    if attn.qkv is not None:  # fused weight; timm's k bias is a zero buffer
        width = attn.qkv.weight.shape[0] // 3
        w_q, w_k = attn.qkv.weight[:width], attn.qkv.weight[width : 2 * width]
        b_q = attn.q_bias if attn.q_bias is not None else torch.zeros(width, dtype=x.dtype)
        b_k = torch.zeros(width, dtype=x.dtype)
    else:  # separate projections (EVA-02 base / large)
        w_q, w_k = attn.q_proj.weight, attn.k_proj.weight
        b_q = attn.q_proj.bias if attn.q_proj.bias is not None else torch.zeros(w_q.shape[0], dtype=x.dtype)
        b_k = torch.zeros(w_k.shape[0], dtype=x.dtype)
    assert isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)
    q = (x @ w_q.T + b_q).view(b, n, heads, -1).transpose(1, 2)
    k = (x @ w_k.T + b_k).view(b, n, heads, -1).transpose(1, 2)
    if table is not None:
        half = bool(attn.rotate_half)
        q = torch.cat([q[:, :, :num_prefix], rotate(q[:, :, num_prefix:], table, half)], dim=2)
        k = torch.cat([k[:, :, :num_prefix], rotate(k[:, :, num_prefix:], table, half)], dim=2)
    scale = q.shape[-1] ** -0.5
    return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)


def attention_inputs(model: nn.Module, pixels: Tensor) -> list[tuple[Tensor, Tensor]]:
    """What each block hands its attention: the normed tokens and timm's RoPE table (sin | cos)."""
    seen: list[tuple[Tensor, Tensor]] = []

    def hook(_m: nn.Module, args: tuple[Tensor, ...], kwargs: dict[str, Any]) -> None:
        seen.append((args[0], kwargs["rope"]))

    blocks: Any = model.blocks
    handles = [blk.attn.register_forward_pre_hook(hook, with_kwargs=True) for blk in blocks]
    try:
        with torch.no_grad():
            model.forward_features(pixels)  # type: ignore[operator]
    finally:
        for h in handles:
            h.remove()
    return seen


@torch.no_grad()
@pytest.mark.parametrize(
    ("arch", "kwargs", "size", "prefix", "half", "fused"),
    [
        # DINOv3: CLS + 4 registers, rotate_half RoPE, no absolute position embedding, any input size
        (
            "vit_small_patch16_dinov3",
            {"embed_dim": 64, "num_heads": 4, "img_size": 64},
            (64, 96),
            5,
            True,
            True,
        ),
        # EVA-02: CLS, interleaved RoPE + absolute position embedding; base / large: q_proj, k_proj, v_proj
        (
            "eva02_tiny_patch14_224",
            {"embed_dim": 64, "num_heads": 2, "img_size": 56},
            (56, 56),
            1,
            False,
            True,
        ),
        (
            "eva02_base_patch14_224",
            {"embed_dim": 64, "num_heads": 2, "img_size": 56},
            (56, 56),
            1,
            False,
            False,
        ),
    ],
    ids=["dinov3", "eva02-tiny", "eva02-base"],
)
def test_captured_attention_is_softmax_of_rotated_q_k(
    arch: str, kwargs: dict[str, Any], size: tuple[int, int], prefix: int, half: bool, fused: bool
) -> None:
    model = randomized(timm.create_model(arch, pretrained=False, **TINY, **kwargs))
    blocks: Any = model.blocks
    attn0 = blocks[0].attn
    assert (type(model).__name__, bool(attn0.rotate_half), attn0.qkv is not None) == ("Eva", half, fused)
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    trace = capture(model, pixels)
    grid = (size[0] // 16, size[1] // 16) if "dinov3" in arch else (size[0] // 14, size[1] // 14)
    assert trace.grid == grid and trace.num_prefix_tokens == prefix and trace.has_cls
    inputs = attention_inputs(model, pixels)
    assert len(inputs) == len(trace.attentions) == 2
    for blk, (x, table), captured in zip(blocks, inputs, trace.attentions, strict=True):
        assert table.shape == (grid[0] * grid[1], 2 * x.shape[-1] // attn0.num_heads)
        expected = by_hand(blk.attn, x, table, prefix)
        n = prefix + grid[0] * grid[1]
        assert captured.shape == expected.shape == (2, attn0.num_heads, n, n)
        assert (captured - expected).abs().max() < 1e-12
        # RoPE matters here: the same weights without it give other maps
        assert (captured - by_hand(blk.attn, x, None, prefix)).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("arch", "kwargs", "prefix", "cls"),
    [
        ("vit_huge_patch14_gap_224", {"embed_dim": 32, "num_heads": 2, "img_size": 28}, 0, False),  # I-JEPA
        ("aimv2_large_patch14_224", {"embed_dim": 32, "num_heads": 2, "img_size": 28}, 0, False),
        (
            "vit_small_patch16_224",
            {
                "embed_dim": 32,
                "num_heads": 2,
                "img_size": 32,
                "class_token": False,
                "reg_tokens": 4,
                "global_pool": "avg",
            },
            4,
            False,
        ),  # registers, no CLS
        ("vit_small_patch16_dinov3", {"embed_dim": 32, "num_heads": 2, "img_size": 32}, 5, True),
        ("vit_small_patch16_224", {"embed_dim": 32, "num_heads": 2, "img_size": 32}, 1, True),
    ],
    ids=["ijepa", "aimv2", "registers-only", "dinov3", "vit"],
)
def test_the_trace_says_whether_token_zero_is_cls(
    arch: str, kwargs: dict[str, Any], prefix: int, cls: bool
) -> None:
    model = timm.create_model(arch, pretrained=False, **TINY, **kwargs).eval()
    size = kwargs["img_size"]
    trace = capture(model, torch.randn(1, 3, size, size))
    assert (trace.num_prefix_tokens, trace.has_cls) == (prefix, cls)
