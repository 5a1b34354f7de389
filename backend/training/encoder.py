"""The encoders the objectives train, built as the paper's models are (timm classes, no hand-written ViT).

- ``beit``: SimMIM's encoder as timm ``Beit``: no absolute position embedding, one relative position bias
  shared by all blocks, layer scale 0.1, drop path 0.1 (the layout of ``simmim-vit-b16`` in the catalogue).
- ``vit``: MoCo v3's encoder as timm ``VisionTransformer`` with a fixed (frozen) 2D sin-cos position
  embedding.

Both at ViT-Tiny width (dim 192, 12 blocks, 3 heads) with 4 px patches by default: an 8 x 8 grid on 32 px
images. The timm name and kwargs that :func:`arch_for` returns are what the model card stores and every
loader builds, so exported weights load strictly into a fresh timm model.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import Tensor, nn

# timm's VisionTransformer / Beit: typed loosely, their submodules are reached by name.
ViT = Any

ENCODERS = ("vit", "beit")
POS_EMBEDS = ("learnable", "sincos-fixed", "none")
PATCH_SIZES = (2, 4)
ARCHS = {"vit": "vit_tiny_patch16_224", "beit": "beit_base_patch16_224"}
VIT_TINY = {"embed_dim": 192, "depth": 12, "num_heads": 3}
DEFAULT_IMG_SIZE = 32
# What each objective trains unless told otherwise: SimMIM's Beit, MoCo v3's ViT with frozen sin-cos; the
# hybrid is the MIM encoder with MoCo's heads.
OBJECTIVE_ENCODER = {"mim": "beit", "cl": "vit", "hybrid": "beit"}
ENCODER_POS_EMBED = {"beit": "none", "vit": "sincos-fixed"}
ENCODER_DROP_PATH = {"beit": 0.1, "vit": 0.0}
BEIT_LAYER_SCALE = 0.1
# timm's own normalization for both architectures; training and every later use agree on it.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


def arch_for(
    encoder: str,
    pos_embed: str | None = None,
    patch_size: int = 4,
    img_size: int = DEFAULT_IMG_SIZE,
) -> tuple[str, dict[str, Any]]:
    """timm name and kwargs of an encoder at ViT-Tiny width (``pos_embed`` defaults to the encoder's)."""
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, not {encoder!r}")
    pos = pos_embed or ENCODER_POS_EMBED[encoder]
    if pos not in POS_EMBEDS:
        raise ValueError(f"pos_embed must be one of {POS_EMBEDS}, not {pos!r}")
    if img_size % patch_size:
        raise ValueError(f"image size {img_size} is not a multiple of the patch size {patch_size}")
    kwargs: dict[str, Any] = {
        "img_size": img_size,
        "patch_size": patch_size,
        **VIT_TINY,
        "num_classes": 0,
        "drop_path_rate": ENCODER_DROP_PATH[encoder],
    }
    if encoder == "beit":
        kwargs.update(
            use_abs_pos_emb=pos != "none",
            use_rel_pos_bias=False,
            use_shared_rel_pos_bias=True,
            init_values=BEIT_LAYER_SCALE,
            global_pool="token",
        )
    elif pos == "none":
        kwargs["pos_embed"] = "none"
    return ARCHS[encoder], kwargs


def build_encoder(arch: str, arch_kwargs: dict[str, Any], *, pos_embed: str = "learnable") -> ViT:
    """A randomly initialized timm encoder without a classifier, its position embedding set up as asked:

    ``sincos-fixed``: MoCo v3's 2D sin-cos table, frozen (``requires_grad`` False, never in the optimizer);
    ``learnable``: the same table as a trained start; ``none``: the model must have no absolute embedding.
    """
    if pos_embed not in POS_EMBEDS:
        raise ValueError(f"pos_embed must be one of {POS_EMBEDS}, not {pos_embed!r}")
    kwargs = dict(arch_kwargs)
    kwargs.setdefault("num_classes", 0)
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if not hasattr(model, "patch_embed") or not hasattr(model, "blocks"):
        raise ValueError(f"{arch} is not a ViT with patch_embed and blocks")
    pos = getattr(model, "pos_embed", None)
    if (pos is None) != (pos_embed == "none"):
        raise ValueError(f"pos_embed {pos_embed!r} does not match {arch} {kwargs}: build it with arch_for")
    if pos is not None:
        with torch.no_grad():
            pos.copy_(sincos_pos_embed(grid_size(model), pos.shape[-1], pos.shape[1]).to(pos.dtype))
        pos.requires_grad_(pos_embed == "learnable")
    set_fused_attention(model, True)
    return model


def sincos_pos_embed(grid: tuple[int, int], dim: int, rows: int | None = None) -> Tensor:
    """MoCo v3's ``build_2d_sincos_position_embedding`` (temperature 1e4): for the patch at (row r, col c),
    ``[sin(r w), cos(r w), sin(c w), cos(c w)]`` with ``w_d = 1e4 ** (-d / (dim / 4))``; prefix rows zero.

    (MoCo v3 names the row coordinate ``w``: its meshgrid is ``ij``-indexed.) Returns (1, rows, dim).
    """
    h, w = grid
    if dim % 4:
        raise ValueError(f"a 2D sin-cos embedding needs a dim divisible by 4, not {dim}")
    rows = h * w if rows is None else rows
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    r, c = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    out_r = r.flatten()[:, None] * omega[None]
    out_c = c.flatten()[:, None] * omega[None]
    table = torch.cat([out_r.sin(), out_r.cos(), out_c.sin(), out_c.cos()], dim=1).float()
    prefix = torch.zeros(rows - h * w, dim)
    return torch.cat([prefix, table])[None]


def set_fused_attention(model: nn.Module, fused: bool) -> None:
    """Training wants the fused kernel (fast); capture turns it off to read the probabilities."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            setattr(module, "fused_attn", fused)  # noqa: B010 - typed as Tensor | Module by torch


def is_beit(model: ViT) -> bool:
    return hasattr(model, "rel_pos_bias") and not hasattr(model, "_pos_embed")


def grid_size(model: ViT) -> tuple[int, int]:
    grid = model.patch_embed.grid_size
    return int(grid[0]), int(grid[1])


def patch_size(model: ViT) -> int:
    return int(model.patch_embed.patch_size[0])


def num_prefix_tokens(model: ViT) -> int:
    return int(getattr(model, "num_prefix_tokens", 1))


def embed(model: ViT, images: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None) -> Tensor:
    """Tokens entering block 1 (``x_out[0]``). SimMIM mixes the mask token into the patch embeddings before
    the CLS token and any position embedding are added."""
    x = model.patch_embed(images)
    if mask is not None:
        if mask_token is None:
            raise ValueError("a mask needs a mask token")
        w = mask.flatten(1).unsqueeze(-1).to(x.dtype)
        x = x * (1 - w) + mask_token.to(x.dtype) * w
    if is_beit(model):  # timm Beit.forward_features up to the blocks
        x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if model.pos_embed is not None:
            x = x + model.pos_embed
        return model.pos_drop(x)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    return model.norm_pre(x)


def encode(
    model: ViT, images: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None
) -> Tensor:
    """All tokens after the final norm, (B, N, C): the model's ``forward_features`` with the mask mixed in."""
    x = embed(model, images, mask, mask_token)
    if is_beit(model):
        bias = model.rel_pos_bias() if model.rel_pos_bias is not None else None
        for blk in model.blocks:
            x = blk(x, shared_rel_pos_bias=bias)
    else:
        x = model.blocks(x)
    return model.norm(x)


def cls_feature(model: ViT, tokens: Tensor) -> Tensor:
    """The pooled feature the CL heads use (timm's own pooling: the CLS token for both encoders)."""
    return model.forward_head(tokens, pre_logits=True)
