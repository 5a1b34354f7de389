"""The encoder every objective trains: a plain timm VisionTransformer (no hand-written ViT)."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import Tensor, nn

# timm's VisionTransformer (and kin): typed loosely, its submodules are reached by name.
ViT = Any

DEFAULT_ARCH = "vit_tiny_patch16_224"
# ViT-Tiny shape (dim 192, 12 blocks, 3 heads) with 4 px patches: an 8 x 8 grid on 32 px images.
DEFAULT_ARCH_KWARGS: dict[str, Any] = {"img_size": 32, "patch_size": 4, "num_classes": 0}
# timm's own normalization for this architecture; training and every later use agree on it.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


def build_encoder(
    arch: str = DEFAULT_ARCH, arch_kwargs: dict[str, Any] | None = None, *, sincos_init: bool = True
) -> ViT:
    """Create a randomly initialized timm ViT with a classifier-free head (features only)."""
    kwargs = dict(DEFAULT_ARCH_KWARGS if arch_kwargs is None else arch_kwargs)
    kwargs.setdefault("num_classes", 0)
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if not hasattr(model, "patch_embed") or not hasattr(model, "blocks"):
        raise ValueError(f"{arch} is not a ViT with patch_embed and blocks")
    set_fused_attention(model, True)
    if sincos_init:
        _init_sincos_pos_embed(model)
    return model


def set_fused_attention(model: nn.Module, fused: bool) -> None:
    """Training wants the fused kernel (fast); capture turns it off to read the probabilities."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            setattr(module, "fused_attn", fused)  # noqa: B010 - typed as Tensor | Module by torch


@torch.no_grad()
def _init_sincos_pos_embed(model: ViT) -> None:
    # MoCo v3 and MAE start from 2D sin-cos position embeddings; they make short runs far more stable.
    # They stay learnable, so the weights keep timm's keys and load strictly.
    pos = getattr(model, "pos_embed", None)
    if pos is None:
        return
    from timm.layers import build_sincos2d_pos_embed

    grid = grid_size(model)
    table = build_sincos2d_pos_embed(list(grid), dim=pos.shape[-1])
    n_prefix = pos.shape[1] - grid[0] * grid[1]
    pos[:, n_prefix:].copy_(table.to(pos.dtype))
    pos[:, :n_prefix].zero_()


def grid_size(model: ViT) -> tuple[int, int]:
    grid = model.patch_embed.grid_size
    return int(grid[0]), int(grid[1])


def patch_size(model: ViT) -> int:
    return int(model.patch_embed.patch_size[0])


def num_prefix_tokens(model: ViT) -> int:
    return int(getattr(model, "num_prefix_tokens", 1))


def embed(model: ViT, images: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None) -> Tensor:
    """Tokens entering block 1 (``x_out[0]``); masked patches are replaced by ``mask_token`` (SimMIM)."""
    x = model.patch_embed(images)
    if mask is not None:
        if mask_token is None:
            raise ValueError("a mask needs a mask token")
        w = mask.flatten(1).unsqueeze(-1).to(x.dtype)
        x = x * (1 - w) + mask_token.to(x.dtype) * w
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    return model.norm_pre(x)


def encode(
    model: ViT, images: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None
) -> Tensor:
    """All tokens after the final norm, (B, N, C)."""
    x = embed(model, images, mask, mask_token)
    x = model.blocks(x)
    return model.norm(x)


def cls_feature(model: ViT, tokens: Tensor) -> Tensor:
    """The pooled feature the CL heads use (timm's own pooling: the CLS token for this arch)."""
    return model.forward_head(tokens, pre_logits=True)
