"""Models an anonymous client may ask for: sized before building, random init of any timm name off by
default, unsupported architectures refused before building, NaN / Inf weights refused (issue 10, items 1, 6
and 7). Every refusal is a 4xx saying why; nothing stays in the model LRU."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.integration.test_api import (
    TINY,
    TINY_KWARGS,
    models_env,
    png_bytes,
    running,
    settings_for,
    tiny_models_cache,
)

pytestmark = pytest.mark.integration
__all__ = ["models_env", "tiny_models_cache"]

GIANT = "vit_giant_patch14_224"  # 1.0 B parameters, 4 GB in fp32; timm has no weights for it
PARALLEL = "vit_small_patch16_18x2_224"  # ParallelThingsBlock: no single `attn`


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


async def test_random_init_of_a_timm_name_is_off_by_default(models_env: Path, tmp_path: Path) -> None:
    async with running(settings_for(tmp_path)) as api:
        image = await api.upload_ok(png_bytes(1))
        r = await api.client.get(f"/api/v1/images/{image}/metrics", params={"model": GIANT})
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "random_init_disabled"
        assert GIANT in error["message"] and "VITSCOPE_ALLOW_RANDOM_INIT" in error["message"]
        assert GIANT not in api.service.pool.loaded()
        # The catalogue's own random baseline is not an arbitrary timm name: it stays allowed.
        from backend.models import get_spec
        from backend.models.loading import check_loadable

        assert check_loadable(get_spec("random-vit-s16"), allow_random_init=False) > 0


async def test_a_model_over_the_memory_bound_is_refused_before_it_is_built(
    models_env: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, allow_random_init=True, model_memory_bytes=100 * 2**20)
    async with running(settings) as api:
        image = await api.upload_ok(png_bytes(2))
        before = max_rss_bytes()
        r = await api.client.get(f"/api/v1/images/{image}/metrics", params={"model": GIANT})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "model_too_large"
        assert "VITSCOPE_MODEL_MEMORY_BYTES" in error["message"] and "3,857 MiB" in error["message"]
        assert GIANT not in api.service.pool.loaded()
        # Building it would have taken 4 GB: the process never came near (sizing is on the meta device).
        assert max_rss_bytes() - before < 1 * 2**30
        # The small model still answers under the same bound.
        ok = await api.client.get(f"/api/v1/images/{image}/metrics", params={"model": TINY})
        assert ok.status_code == 200, ok.text


async def test_a_parallel_block_vit_is_refused_naming_why(models_env: Path, tmp_path: Path) -> None:
    async with running(settings_for(tmp_path, allow_random_init=True)) as api:
        image = await api.upload_ok(png_bytes(3))
        for _ in range(2):  # the refusal is remembered and stays a 4xx
            r = await api.client.get(f"/api/v1/images/{image}/metrics", params={"model": PARALLEL})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["code"] == "unsupported_architecture"
            assert "ParallelThingsBlock" in error["message"] and "one attention module" in error["message"]
        assert PARALLEL not in api.service.pool.loaded()


def write_broken_model(folder: Path, name: str, value: float) -> None:
    """An imported card whose weights hold one non-finite value (written by hand, past `models import`)."""
    from backend.models.loading import build_model

    model = build_model("vit_tiny_patch16_224", TINY_KWARGS)
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    state["blocks.0.attn.qkv.weight"][0, 0] = value
    imported = folder / "imported"
    save_file(state, str(imported / f"{name}.safetensors"))
    card = {"id": name, "family": "cl", "arch": "vit_tiny_patch16_224", "arch_kwargs": TINY_KWARGS,
            "weights": f"{name}.safetensors", "license": "test only"}  # fmt: skip
    (imported / f"{name}.json").write_text(json.dumps(card))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
async def test_non_finite_weights_are_a_clear_error_never_a_500(
    models_env: Path, tmp_path: Path, value: float
) -> None:
    name = f"tiny-broken-{'nan' if value != value else 'inf'}"
    write_broken_model(models_env, name, value)
    try:
        async with running(settings_for(tmp_path)) as api:
            image = await api.upload_ok(png_bytes(4))
            for route in ("metrics", "attention"):
                r = await api.client.get(f"/api/v1/images/{image}/{route}", params={"model": name})
                assert r.status_code == 409, r.text
                error = r.json()["error"]
                assert error["code"] == "non_finite_weights"
                assert "blocks.0.attn.qkv.weight" in error["message"]
            assert name not in api.service.pool.loaded()
    finally:
        for suffix in (".json", ".safetensors"):
            (models_env / "imported" / f"{name}{suffix}").unlink(missing_ok=True)


def test_sizing_allocates_nothing() -> None:
    """The size comes from the architecture on the meta device: exact parameter bytes, no memory."""
    from backend.models.loading import architecture_bytes, build_model

    before = max_rss_bytes()
    giant = architecture_bytes("vit_gigantic_patch14_224", {})
    # ViT-gigantic/14 at 224 px by hand: width 1664, depth 48, MLP 8192, 16 x 16 patches + CLS, no head.
    c, depth, mlp, tokens = 1664, 48, 8192, 16 * 16 + 1
    block = 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + 2 * c + (c * mlp + mlp) + (mlp * c + c)
    parameters = (3 * 14 * 14 * c + c) + c + tokens * c + depth * block + 2 * c
    assert giant == parameters * 4  # fp32, no buffers: 1.84 B parameters, 7.4 GB
    assert max_rss_bytes() - before < 1 * 2**30
    tiny = build_model("vit_tiny_patch16_224", TINY_KWARGS)
    expected = sum(t.numel() * t.element_size() for t in [*tiny.parameters(), *tiny.buffers()])
    assert architecture_bytes("vit_tiny_patch16_224", TINY_KWARGS) == expected
    assert torch.is_tensor(next(tiny.parameters()))


async def test_finite_weights_that_overflow_are_a_clear_error(models_env: Path, tmp_path: Path) -> None:
    """Every weight finite (the import check passes), but block 2's MLP overflows float32."""
    from backend.models.loading import build_model

    name = "tiny-overflow"
    model = build_model("vit_tiny_patch16_224", TINY_KWARGS)
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    state["blocks.1.mlp.fc1.weight"].fill_(1e30)
    state["blocks.1.mlp.fc2.weight"].fill_(1e30)
    imported = models_env / "imported"
    save_file(state, str(imported / f"{name}.safetensors"))
    card = {"id": name, "family": "cl", "arch": "vit_tiny_patch16_224", "arch_kwargs": TINY_KWARGS,
            "weights": f"{name}.safetensors", "license": "test only"}  # fmt: skip
    (imported / f"{name}.json").write_text(json.dumps(card))
    try:
        async with running(settings_for(tmp_path)) as api:
            image = await api.upload_ok(png_bytes(5))
            r = await api.client.get(f"/api/v1/images/{image}/metrics", params={"model": name})
            assert r.status_code == 409, r.text
            error = r.json()["error"]
            assert error["code"] == "non_finite_result"
            assert "the output of block 2" in error["message"]
            ok = await api.client.get(f"/api/v1/images/{image}/metrics", params={"model": TINY})
            assert ok.status_code == 200, ok.text
    finally:
        for suffix in (".json", ".safetensors"):
            (imported / f"{name}{suffix}").unlink(missing_ok=True)
