"""Capture records exactly what the model computes, without changing it."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from backend.capture import capture


def tiny_vit(**kwargs: object) -> torch.nn.Module:
    args: dict[str, object] = dict(
        img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=0
    )
    args.update(kwargs)
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch16_224", pretrained=False, **args).eval()


def tiny_beit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        "beit_base_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=3,
        num_heads=2,
        num_classes=0,
        use_abs_pos_emb=False,
        use_rel_pos_bias=False,
        use_shared_rel_pos_bias=True,
        init_values=0.1,
        global_pool="token",
    ).eval()
    with torch.no_grad():  # a non-zero bias table, so that the test sees whether the bias is included
        model.rel_pos_bias.relative_position_bias_table.normal_()
    return model


def manual_vit_attention(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    attn = block.attn
    b, n, _ = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return F.softmax(q @ k.transpose(-2, -1) * attn.scale, dim=-1)


def manual_beit_attention(model: torch.nn.Module, block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    attn = block.attn
    b, n, _ = x.shape
    bias = torch.cat((attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias))
    qkv = F.linear(block.norm1(x), attn.qkv.weight, bias).reshape(b, n, 3, attn.num_heads, -1)
    q, k = qkv.permute(2, 0, 3, 1, 4)[:2]
    logits = q @ k.transpose(-2, -1) * attn.scale + model.rel_pos_bias()
    return F.softmax(logits, dim=-1)


VIT_CASES = {
    "plain": (dict(), (32, 32), (4, 4), 8, 1),
    "registers": (dict(reg_tokens=4, no_embed_class=True), (32, 32), (4, 4), 8, 5),
    "patch14": (dict(img_size=56, patch_size=14), (56, 56), (4, 4), 14, 1),
    "non_square_dynamic": (dict(dynamic_img_size=True), (48, 64), (6, 8), 8, 1),
    "no_cls": (dict(class_token=False, global_pool="avg"), (32, 32), (4, 4), 8, 0),
}


@pytest.mark.parametrize("case", sorted(VIT_CASES))
def test_vit_attention_equals_softmax_recomputed_by_hand(case: str) -> None:
    kwargs, size, grid, patch, prefix = VIT_CASES[case]
    model = tiny_vit(**kwargs)
    pixels = torch.randn(2, 3, *size)
    trace = capture(model, pixels, model_id="tiny")
    assert trace.grid == grid and trace.patch_size == patch and trace.num_prefix_tokens == prefix
    assert trace.num_layers == 3 and len(trace.x_attn) == 3 and len(trace.x_out) == 4
    n = prefix + grid[0] * grid[1]
    with torch.no_grad():
        for k, block in enumerate(model.blocks):
            assert trace.attentions[k].shape == (2, 2, n, n)
            expected = manual_vit_attention(block, trace.x_out[k])
            torch.testing.assert_close(trace.attentions[k], expected, atol=1e-6, rtol=1e-5)
            # x_attn[k] = x + Attn(LN1(x)); x_out[k+1] = x_attn[k] + MLP(LN2(x_attn[k]))
            x_attn = trace.x_out[k] + block.ls1(block.attn(block.norm1(trace.x_out[k])))
            torch.testing.assert_close(trace.x_attn[k], x_attn, atol=1e-5, rtol=1e-5)
            x_out = trace.x_attn[k] + block.ls2(block.mlp(block.norm2(trace.x_attn[k])))
            torch.testing.assert_close(trace.x_out[k + 1], x_out, atol=1e-5, rtol=1e-5)


def test_beit_attention_includes_the_shared_relative_position_bias() -> None:
    model = tiny_beit()
    trace = capture(model, torch.randn(1, 3, 32, 32))
    assert trace.grid == (4, 4) and trace.num_prefix_tokens == 1
    with torch.no_grad():
        for k, block in enumerate(model.blocks):
            expected = manual_beit_attention(model, block, trace.x_out[k])
            torch.testing.assert_close(trace.attentions[k], expected, atol=1e-6, rtol=1e-5)
            x_attn = trace.x_out[k] + block.gamma_1 * block.attn(
                block.norm1(trace.x_out[k]), shared_rel_pos_bias=model.rel_pos_bias()
            )
            torch.testing.assert_close(trace.x_attn[k], x_attn, atol=1e-5, rtol=1e-5)


def test_embedding_state_is_patch_plus_position_embedding() -> None:
    model = tiny_vit()
    pixels = torch.randn(1, 3, 32, 32)
    trace = capture(model, pixels)
    with torch.no_grad():
        patches = model.patch_embed(pixels)
        expected = model._pos_embed(patches)
    torch.testing.assert_close(trace.x_out[0], expected)


def test_capture_leaves_the_fused_forward_unchanged() -> None:
    model = tiny_vit()
    pixels = torch.randn(2, 3, 32, 32)
    assert all(b.attn.fused_attn for b in model.blocks)
    with torch.no_grad():
        before = model(pixels)
    trace = capture(model, pixels)
    with torch.no_grad():
        after = model(pixels)
    assert all(b.attn.fused_attn for b in model.blocks), "capture must restore the fused flag"
    assert not model._forward_hooks and not model.blocks[0]._forward_pre_hooks
    torch.testing.assert_close(after, before)
    # The block output captured through the unfused path matches the fused model's features.
    with torch.no_grad():
        fused_last = model.forward_features(pixels)
    torch.testing.assert_close(model.norm(trace.x_out[-1]), fused_last, atol=1e-5, rtol=1e-4)


def test_capture_rejects_a_model_without_blocks() -> None:
    with pytest.raises(TypeError, match="VisionTransformer"):
        capture(torch.nn.Linear(3, 3), torch.randn(1, 3, 32, 32))
