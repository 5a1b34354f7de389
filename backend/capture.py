"""One forward pass over a batch that records every layer: the Trace.

The Trace is the one contract between capture and the analyses (ANALYSES.md section 0):

- ``attentions[k-1]``: block k's attention probabilities after softmax, ``(B, heads, N, N)``, prefix included,
  relative position bias included where the model has one;
- ``x_attn[k-1]``: block k's residual stream after attention, ``x + Attn(LN1(x))`` (the input of ``norm2``);
- ``x_out[k]``: block k's output, ``x_out[0]`` the token sequence entering block 1;

all ``(B, N, C)`` with ``N = num_prefix_tokens + H * W`` and patch tokens in row-major order. The prefix is
``[CLS, registers]`` or registers only: ``has_cls`` says whether token 0 is a CLS token (I-JEPA and AIMv2 have
none, so a "CLS" map or CLS metric of theirs would read a register or a patch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class Trace:
    attentions: list[Tensor]
    x_attn: list[Tensor]
    x_out: list[Tensor]
    grid: tuple[int, int]
    patch_size: int
    num_prefix_tokens: int
    model_id: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)
    cls_token: bool | None = None  # capture() reads it off the model; None: a CLS token iff there is a prefix

    @property
    def has_cls(self) -> bool:
        return self.num_prefix_tokens > 0 if self.cls_token is None else bool(self.cls_token)

    @property
    def num_layers(self) -> int:
        return len(self.attentions)

    @property
    def num_heads(self) -> int:
        return int(self.attentions[0].shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.x_out[0].shape[0])

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def patch_tokens(self, state: Tensor) -> Tensor:
        """Drop the prefix tokens (CLS, registers) of a ``(B, N, C)`` state."""
        return state[:, self.num_prefix_tokens :]


def _blocks(model: nn.Module) -> list[Any]:
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(
            f"{type(model).__name__} has no `blocks`: capture supports timm VisionTransformer and Beit models"
        )
    return list(blocks)


def _attention_module(block: nn.Module) -> Any:
    attn = getattr(block, "attn", None)
    if attn is None or not hasattr(attn, "attn_drop"):
        raise TypeError(f"{type(block).__name__} has no timm attention with `attn_drop`; cannot capture it")
    return attn


def has_cls_token(model: nn.Module) -> bool:
    """Whether the model's first token is a CLS token (timm keeps ``cls_token = None`` without one)."""
    return getattr(model, "cls_token", None) is not None


def grid_and_patch(model: nn.Module, pixels: Tensor) -> tuple[tuple[int, int], int]:
    """The patch grid that ``pixels`` produce and the (square) patch size, read from the model."""
    patch_embed: Any = model.patch_embed
    ph, pw = patch_embed.patch_size
    if ph != pw:
        raise ValueError(f"non-square patches {ph}x{pw} are not supported")
    h, w = int(pixels.shape[-2]), int(pixels.shape[-1])
    if hasattr(patch_embed, "dynamic_feat_size") and getattr(patch_embed, "dynamic_img_pad", False):
        gh, gw = patch_embed.dynamic_feat_size((h, w))
        return (int(gh), int(gw)), int(ph)
    return (h // ph, w // pw), int(ph)


@torch.no_grad()
def capture(
    model: nn.Module,
    pixels: Tensor,
    *,
    model_id: str = "",
    preprocessing: dict[str, Any] | None = None,
) -> Trace:
    """Run ``model`` once on ``pixels`` (B, 3, H, W) and record every block.

    Attention probabilities need the non-fused attention path (the fused kernel never materializes them), so
    fused attention is switched off on this instance for the pass and restored afterwards. Callers must not
    run the same instance concurrently (the model runner serializes per model).
    """
    blocks = _blocks(model)
    attn_modules = [_attention_module(b) for b in blocks]
    was_fused = [bool(getattr(a, "fused_attn", False)) for a in attn_modules]
    attentions: list[Tensor | None] = [None] * len(blocks)
    x_attn: list[Tensor | None] = [None] * len(blocks)
    x_out: list[Tensor | None] = [None] * (len(blocks) + 1)
    handles = []

    def keep_attention(i: int):  # noqa: ANN202 - hook factory
        def hook(_m: nn.Module, _inp: Any, out: Tensor) -> None:
            attentions[i] = out

        return hook

    def keep_input(store: list[Tensor | None], i: int):  # noqa: ANN202
        def hook(_m: nn.Module, inp: tuple[Tensor, ...]) -> None:
            store[i] = inp[0]

        return hook

    def keep_output(i: int):  # noqa: ANN202
        def hook(_m: nn.Module, _inp: Any, out: Tensor) -> None:
            x_out[i] = out

        return hook

    was_training = model.training
    model.eval()
    try:
        for i, (block, attn) in enumerate(zip(blocks, attn_modules, strict=True)):
            attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(keep_attention(i)))
            handles.append(block.norm2.register_forward_pre_hook(keep_input(x_attn, i)))
            handles.append(block.register_forward_hook(keep_output(i + 1)))
        handles.append(blocks[0].register_forward_pre_hook(keep_input(x_out, 0)))
        model.forward_features(pixels)  # type: ignore[operator]
    finally:
        for h in handles:
            h.remove()
        for attn, fused in zip(attn_modules, was_fused, strict=True):
            attn.fused_attn = fused
        model.train(was_training)

    if any(a is None for a in attentions) or any(x is None for x in x_attn) or any(x is None for x in x_out):
        raise RuntimeError(
            "capture missed a layer: the model's blocks did not run their attention as expected"
        )
    grid, patch_size = grid_and_patch(model, pixels)
    n_tokens = int(x_out[0].shape[1])  # type: ignore[union-attr]
    num_prefix = int(getattr(model, "num_prefix_tokens", n_tokens - grid[0] * grid[1]))
    if n_tokens != num_prefix + grid[0] * grid[1]:
        raise RuntimeError(f"{n_tokens} tokens do not match {num_prefix} prefix + grid {grid}")
    return Trace(
        attentions=[a for a in attentions if a is not None],
        x_attn=[x for x in x_attn if x is not None],
        x_out=[x for x in x_out if x is not None],
        grid=grid,
        patch_size=patch_size,
        num_prefix_tokens=num_prefix,
        model_id=model_id,
        preprocessing=dict(preprocessing or {}),
        cls_token=has_cls_token(model),
    )
