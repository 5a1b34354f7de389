"""Original checkpoint formats -> import_checkpoint -> load_model, on tiny synthetic checkpoints.

Each synthetic file has its format's exact key layout (WEIGHTS.md sections 3 and 4) around the weights of a
tiny timm model; the loaded model must hold exactly those weights.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import Tensor

from backend.errors import BadCheckpoint, BadRequest
from backend.models import import_checkpoint, load_model
from backend.models.catalog import IN_MEAN, SIMMIM_BEIT_KWARGS, imported_dir
from backend.models.converters import convert_ibot, convert_mae
from backend.models.importing import default_arch_kwargs

VIT = "vit_small_patch16_224"
BEIT = "beit_base_patch16_224"
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}

StateDict = dict[str, Tensor]


class FakeCfgNode(dict):  # stands in for SimMIM's pickled yacs config: not an allowed global
    pass


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITSCOPE_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VITSCOPE_DEMO_MODELS", str(tmp_path / "no_demo_models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny_weights(arch: str = VIT, seed: int = 0, **extra: Any) -> StateDict:
    """A tiny model's state dict with every tensor randomised (so a default init can never match it)."""
    model = timm.create_model(arch, pretrained=False, num_classes=0, **{**TINY, **extra})
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}


def perturbed(sd: StateDict) -> StateDict:
    return {k: v + 1.0 for k, v in sd.items()}


def bn(prefix: str, n: int, affine: bool = True) -> StateDict:
    out = {
        f"{prefix}.running_mean": torch.zeros(n),
        f"{prefix}.running_var": torch.ones(n),
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }
    if affine:
        out |= {f"{prefix}.weight": torch.ones(n), f"{prefix}.bias": torch.zeros(n)}
    return out


def prefixed(prefix: str, sd: StateDict) -> StateDict:
    return {prefix + k: v for k, v in sd.items()}


def mocov3_file(enc: StateDict) -> dict[str, Any]:
    dim = enc["cls_token"].shape[-1]
    sd: StateDict = {}
    for name, weights in (("base_encoder", enc), ("momentum_encoder", perturbed(enc))):
        sd |= prefixed(f"module.{name}.", weights)
        # 3-layer projector: Linear (no bias), BN, ReLU, Linear, BN, ReLU, Linear, BN(affine=False)
        sd |= {
            f"module.{name}.head.0.weight": torch.randn(64, dim),
            f"module.{name}.head.3.weight": torch.randn(64, 64),
            f"module.{name}.head.6.weight": torch.randn(16, 64),
        }
        sd |= bn(f"module.{name}.head.1", 64) | bn(f"module.{name}.head.4", 64)
        sd |= bn(f"module.{name}.head.7", 16, affine=False)
    sd |= {"module.predictor.0.weight": torch.randn(64, 16), "module.predictor.3.weight": torch.randn(16, 64)}
    sd |= bn("module.predictor.1", 64)
    optimizer = {"state": {}, "param_groups": [{"lr": 1.5e-4, "params": [0, 1]}]}
    return {
        "epoch": 300,
        "arch": "vit_small",
        "state_dict": sd,
        "optimizer": optimizer,
        "scaler": {"scale": 65536.0},
    }


def simmim_file(enc: StateDict, config: Any = None) -> dict[str, Any]:
    dim = enc["cls_token"].shape[-1]
    n = 1 + (TINY["img_size"] // 16) ** 2
    model = prefixed("encoder.", enc) | {
        "encoder.mask_token": torch.randn(1, 1, dim),
        "encoder.rel_pos_bias.relative_position_index": torch.zeros(n, n, dtype=torch.long),
        "decoder.0.weight": torch.randn(16 * 16 * 3, dim, 1, 1),
        "decoder.0.bias": torch.randn(16 * 16 * 3),
    }
    out: dict[str, Any] = {
        "model": model,
        "optimizer": {"state": {}, "param_groups": []},
        "lr_scheduler": {"last_epoch": 799},
        "max_accuracy": 0.0,
        "epoch": 799,
    }
    if config is not None:
        out["config"] = config
    return out


def mae_full_file(enc: StateDict) -> dict[str, Any]:
    dim = enc["cls_token"].shape[-1]
    decoder = {
        "mask_token": torch.randn(1, 1, 16),
        "decoder_embed.weight": torch.randn(16, dim),
        "decoder_embed.bias": torch.randn(16),
        "decoder_pos_embed": torch.randn(1, 5, 16),
        "decoder_blocks.0.norm1.weight": torch.randn(16),
        "decoder_blocks.0.attn.qkv.weight": torch.randn(48, 16),
        "decoder_norm.weight": torch.randn(16),
        "decoder_norm.bias": torch.randn(16),
        "decoder_pred.weight": torch.randn(16 * 16 * 3, 16),
        "decoder_pred.bias": torch.randn(16 * 16 * 3),
    }
    return {
        "model": enc | decoder,
        "optimizer": {"state": {}},
        "epoch": 1599,
        "scaler": {},
        "args": argparse.Namespace(model="mae_vit_base_patch16", norm_pix_loss=True),
    }


def teacher_student(enc: StateDict, loss_key: str) -> dict[str, Any]:
    """DINO / iBOT full checkpoint: teacher `backbone.*` + `head.*`, DDP student, args Namespace."""
    dim = enc["cls_token"].shape[-1]
    head = {
        "head.mlp.0.weight": torch.randn(64, dim),
        "head.mlp.0.bias": torch.randn(64),
        "head.mlp.2.weight": torch.randn(64, 64),
        "head.mlp.4.weight": torch.randn(16, 64),
        "head.last_layer.weight_g": torch.ones(100, 1),
        "head.last_layer.weight_v": torch.randn(100, 16),
    }
    teacher = prefixed("backbone.", enc) | head
    student = prefixed("module.backbone.", perturbed(enc)) | prefixed("module.", head)
    if loss_key == "ibot_loss":
        student["module.backbone.masked_embed"] = torch.randn(1, dim)
    return {
        "student": student,
        "teacher": teacher,
        "optimizer": {"state": {}},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16),
        loss_key: {"center": torch.zeros(1, 16)},
        "fp16_scaler": None,
    }


# (case id, format, arch, builder of the file's object from the encoder weights, file suffix)
CASES: list[tuple[str, str, str, Callable[[StateDict], Any], str]] = [
    (
        "timm-safetensors",
        "timm",
        VIT,
        lambda e: e | {"head.weight": torch.randn(10, 32), "head.bias": torch.randn(10)},
        ".safetensors",
    ),
    ("timm-wrapped", "timm", VIT, lambda e: {"state_dict": prefixed("module.", e), "epoch": 3}, ".pth"),
    ("mocov3", "mocov3", VIT, mocov3_file, ".pth.tar"),
    ("simmim", "simmim", BEIT, simmim_file, ".pth"),
    ("mae", "mae", VIT, lambda e: {"model": e}, ".pth"),
    ("mae-full", "mae", VIT, mae_full_file, ".pth"),
    ("dino-bare", "dino", VIT, lambda e: e, ".pth"),
    ("dino-full", "dino", VIT, lambda e: teacher_student(e, "dino_loss"), ".pth"),
    ("ibot-teacher", "ibot", VIT, lambda e: {"state_dict": e}, ".pth"),
    ("ibot-student", "ibot", VIT, lambda e: {"state_dict": e | {"masked_embed": torch.randn(1, 32)}}, ".pth"),
    ("ibot-full", "ibot", VIT, lambda e: teacher_student(e, "ibot_loss"), ".pth"),
]


def write(obj: Any, path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file(obj, str(path))
    else:
        torch.save(obj, path)
    return path


def encoder_for(arch: str, fmt: str) -> StateDict:
    extra = SIMMIM_BEIT_KWARGS if arch == BEIT else {}
    return tiny_weights(arch, **extra)


@pytest.mark.parametrize(("case", "fmt", "arch", "build", "suffix"), CASES, ids=[c[0] for c in CASES])
def test_import_then_load_gives_the_original_tensors(
    tmp_path: Path, case: str, fmt: str, arch: str, build: Callable[[StateDict], Any], suffix: str
) -> None:
    enc = encoder_for(arch, fmt)
    path = write(build(enc), tmp_path / f"{case}{suffix}")
    spec = import_checkpoint(path, fmt, arch, f"my-{case}", "cl", arch_kwargs=TINY)
    assert spec.source == "file" and spec.card is not None and spec.card["source"]["format"] == fmt
    assert (imported_dir() / f"my-{case}.safetensors").is_file()

    loaded = load_model(f"my-{case}")
    state = loaded.model.state_dict()
    assert set(state) == set(enc)
    for key, value in enc.items():
        assert torch.equal(state[key], value), key
    assert not loaded.model.training
    assert all(not m.fused_attn for m in loaded.model.modules() if hasattr(m, "fused_attn"))
    assert any(hasattr(m, "fused_attn") for m in loaded.model.modules())
    if fmt != "timm":  # every original method trained with ImageNet mean/std (WEIGHTS.md 6.3)
        assert loaded.data_config["mean"] == IN_MEAN
    with torch.inference_mode():
        assert loaded.model(torch.randn(1, 3, 32, 32)).shape == (1, 32)


def test_converters_drop_what_the_formats_say() -> None:
    enc = tiny_weights()
    assert set(convert_mae(mae_full_file(enc))) == set(enc)
    assert set(convert_ibot({"state_dict": enc | {"masked_embed": torch.zeros(1, 32)}})) == set(enc)
    assert default_arch_kwargs("mocov3", VIT)["num_heads"] == 12  # MoCo v3 ViT-S: 12 heads
    assert default_arch_kwargs("simmim", BEIT)["use_shared_rel_pos_bias"] is True
    assert "num_heads" not in default_arch_kwargs("mocov3", "vit_base_patch16_224")


def test_float16_checkpoint_keeps_its_dtype_in_the_cache(tmp_path: Path) -> None:
    enc = {k: v.half() for k, v in tiny_weights().items()}
    path = write({"model": enc}, tmp_path / "mae16.pth")
    spec = import_checkpoint(path, "mae", VIT, "mae16", "mim", arch_kwargs=TINY)
    from safetensors.torch import load_file

    assert all(v.dtype == torch.float16 for v in load_file(spec.location).values())
    state = load_model("mae16").model.state_dict()
    assert torch.equal(state["norm.weight"], enc["norm.weight"].float())


# ------------------------------------------------------------------------------------------- bad files
def _import(path: Path, fmt: str = "dino", name: str = "bad", **kw: Any) -> Any:
    return import_checkpoint(path, fmt, VIT, name, "cl", arch_kwargs=TINY, **kw)


@pytest.mark.parametrize(
    ("obj", "fmt", "message"),
    [
        (lambda e: e, "mocov3", r"no 'state_dict' entry.*MoCo v3"),
        (lambda e: {"state_dict": e}, "mocov3", r"no keys start with 'module.base_encoder.'"),
        (lambda e: {"model": e}, "dino", r"not tensors: model"),
        (lambda e: {"model": e}, "simmim", r"no keys start with 'encoder.'"),
        (lambda e: e, "ibot", r"no 'state_dict' entry"),
        (lambda e: {k: v for k, v in e.items() if k != "norm.weight"}, "dino", r"missing keys: norm.weight"),
        (lambda e: e | {"blocks.0.extra": torch.zeros(1)}, "dino", r"unexpected keys: blocks.0.extra"),
        (lambda e: {"teacher": {"backbone.x": torch.zeros(1)}}, "dino", r"missing keys: .*cls_token"),
        (lambda e: e | {"norm.weight": torch.zeros(64)}, "timm", r"does not fit .*norm.weight"),
    ],
    ids=[
        "dino-as-mocov3",
        "no-base-encoder",
        "mae-as-dino",
        "mae-as-simmim",
        "bare-as-ibot",
        "missing-key",
        "extra-key",
        "empty-teacher",
        "shape-mismatch",
    ],
)
def test_wrong_checkpoints_are_rejected_with_the_offending_keys(
    tmp_path: Path, obj: Callable[[StateDict], Any], fmt: str, message: str
) -> None:
    path = write(obj(tiny_weights()), tmp_path / "wrong.pth")
    with pytest.raises(BadCheckpoint, match=message):
        _import(path, fmt)
    assert not (imported_dir() / "bad.json").exists()


def test_non_checkpoint_bytes(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(
        BadCheckpoint, match="junk.pth is not a PyTorch checkpoint or safetensors file: its first bytes"
    ):
        _import(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)  # the name does not make it one
    with pytest.raises(BadCheckpoint, match="junk.safetensors is not a PyTorch checkpoint"):
        _import(tmp_path / "junk.safetensors")
    header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
    (tmp_path / "cut.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 3)
    with pytest.raises(BadCheckpoint, match="not a readable safetensors file"):  # a header, cut data
        _import(tmp_path / "cut.safetensors")
    with pytest.raises(BadCheckpoint, match="does not exist"):
        _import(tmp_path / "absent.pth")


def test_unsafe_pickle_needs_trusted(tmp_path: Path) -> None:
    enc = tiny_weights(BEIT, **SIMMIM_BEIT_KWARGS)
    path = write(simmim_file(enc, config=FakeCfgNode(MODEL="simmim")), tmp_path / "simmim_cfg.pth")
    with pytest.raises(BadCheckpoint, match=r"FakeCfgNode.*--trusted"):
        import_checkpoint(path, "simmim", BEIT, "simmim-cfg", "mim", arch_kwargs=TINY)
    spec = import_checkpoint(path, "simmim", BEIT, "simmim-cfg", "mim", arch_kwargs=TINY, trusted=True)
    assert spec.card is not None and spec.card["source"]["trusted"] is True
    state = load_model("simmim-cfg").model.state_dict()  # the converted safetensors needs no trust
    assert torch.equal(
        state["rel_pos_bias.relative_position_bias_table"], enc["rel_pos_bias.relative_position_bias_table"]
    )


def test_unknown_format_and_bad_names(tmp_path: Path) -> None:
    path = write(tiny_weights(), tmp_path / "dino.pth")
    with pytest.raises(BadRequest, match="allowed: timm, mocov3"):
        _import(path, "swav")
    for name in ("../escape", "Upper", "vit_small_patch16_224", ""):
        with pytest.raises(BadRequest):
            _import(path, name=name)
    with pytest.raises(BadRequest, match="family"):
        import_checkpoint(path, "dino", VIT, "ok-name", "contrastive", arch_kwargs=TINY)
