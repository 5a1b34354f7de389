"""Newer model families (DINOv3, I-JEPA, EVA-02 MIM, AIMv2): catalogue entries, the ``modern`` preset, and
each model loading from a random-init file written in the layout it is published in, then captured.

No downloads: sockets are blocked, HF_HUB_OFFLINE is set, the architectures are shrunk (same timm class and
flags, fewer and narrower blocks) and the files are written into a temporary models cache where ``pull`` would
put them.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor

import backend.cli
from backend.capture import capture
from backend.errors import BadCheckpoint, BadRequest
from backend.models import catalog, import_checkpoint, load_model, plan
from backend.models.catalog import BUILTIN, FAMILIES, IN_MEAN, PRESETS
from backend.models.loading import build_model
from backend.models.weights import release_file
from backend.service.bundle import ModelInfo, model_info_of
from backend.service.views import AttentionView

MODERN = ("dinov3-vit-s16", "dinov3-vit-b16", "ijepa-vit-h14", "eva02-vit-b14-mim", "aimv2-vit-l14")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2}
# id -> (shrunk kwargs, input side in px, prefix tokens, has CLS, mean)
CASES: dict[str, tuple[dict[str, Any], int, int, bool, tuple[float, ...]]] = {
    "dinov3-vit-s16": ({**SMALL, "img_size": 64}, 64, 5, True, IN_MEAN),
    "dinov3-vit-b16": ({**SMALL, "img_size": 64}, 64, 5, True, IN_MEAN),
    "dinov3-vit-l16": ({**SMALL, "img_size": 64}, 64, 5, True, IN_MEAN),
    "ijepa-vit-h14": ({**SMALL, "img_size": 28}, 28, 0, False, IN_MEAN),
    "eva02-vit-t14-mim": ({**SMALL, "img_size": 28}, 28, 1, True, CLIP_MEAN),
    "eva02-vit-s14-mim": ({**SMALL, "img_size": 28}, 28, 1, True, CLIP_MEAN),
    "eva02-vit-b14-mim": ({**SMALL, "img_size": 28}, 28, 1, True, CLIP_MEAN),
    "aimv2-vit-l14": ({**SMALL, "img_size": 28}, 28, 0, False, CLIP_MEAN),
}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VITSCOPE_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VITSCOPE_DEMO_MODELS", str(tmp_path / "demo"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backend.cli, "COMMAND_MODULES", ["models"])

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return tmp_path / "cache"


def shrink(monkeypatch: pytest.MonkeyPatch, model_id: str) -> catalog.ModelSpec:
    spec = replace(BUILTIN[model_id], arch_kwargs={**BUILTIN[model_id].arch_kwargs, **CASES[model_id][0]})
    monkeypatch.setitem(catalog.BUILTIN, model_id, spec)
    return spec


def random_params(spec: catalog.ModelSpec, seed: int) -> dict[str, Tensor]:
    """Random values for every parameter of the (shrunk) architecture: a file that could only load whole."""
    model = build_model(spec.arch, spec.arch_kwargs)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in model.named_parameters()}


def hub_file(cache: Path, repo: str, weights: dict[str, Tensor]) -> Path:
    """refs/main + snapshots/<commit>/model.safetensors, as huggingface_hub leaves a timm repo."""
    folder = cache / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(weights, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def ijepa_checkpoint(encoder: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Any]:
    """As facebookresearch/ijepa src/train.py save_checkpoint writes it: DDP-wrapped modules, optimizer."""
    return {
        "encoder": {f"module.{k}": v for k, v in encoder.items()},
        "predictor": {
            "module.predictor_embed.weight": torch.randn(16, 32),
            "module.mask_token": torch.zeros(1, 1, 16),
        },
        "target_encoder": {f"module.{k}": v for k, v in target.items()},
        "opt": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
            "param_groups": [{"lr": 1e-3, "params": [0]}],
        },
        "scaler": None,
        "epoch": 300,
        "loss": 0.12,
        "batch_size": 2048,
        "world_size": 16,
        "lr": 1e-3,
    }


def apple_layout(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """AIMv2 as apple/ml-aim names it (timm's filter renames it back: vision_transformer._convert_aimv2)."""
    out = {}
    for k, v in weights.items():
        if k.startswith("patch_embed."):
            k = "preprocessor.patchifier." + k.removeprefix("patch_embed.")
        elif k == "pos_embed":
            k = "preprocessor.pos_embed"
        elif k.startswith("norm."):
            k = "trunk.post_trunk_norm." + k.removeprefix("norm.")
        else:
            k = "trunk." + k.replace("norm1", "norm_1").replace("norm2", "norm_2")
            k = k.replace("mlp.fc1_g", "mlp.fc1").replace("mlp.fc1_x", "mlp.fc3")
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------- catalogue
def test_entries_name_what_each_is_trained_with_and_their_licences() -> None:
    specs = {i: BUILTIN[i] for i in CASES}
    assert "autoregressive" in FAMILIES
    assert {i: s.family for i, s in specs.items()} == {
        "dinov3-vit-s16": "hybrid",
        "dinov3-vit-b16": "hybrid",
        "dinov3-vit-l16": "hybrid",
        "ijepa-vit-h14": "mim",
        "eva02-vit-t14-mim": "mim",
        "eva02-vit-s14-mim": "mim",
        "eva02-vit-b14-mim": "mim",
        "aimv2-vit-l14": "autoregressive",
    }
    assert all(s.license.startswith("dinov3-license") for i, s in specs.items() if i.startswith("dinov3"))
    assert specs["aimv2-vit-l14"].license == "apple-ascl" and specs["eva02-vit-b14-mim"].license == "mit"
    assert specs["ijepa-vit-h14"].license.startswith("cc-by-nc-4.0")
    assert [s.arch for i, s in specs.items() if i.startswith("dinov3")] == [
        f"vit_{n}_patch16_dinov3.lvd1689m" for n in ("small", "base", "large")
    ]
    ijepa = specs["ijepa-vit-h14"]
    assert (ijepa.source, ijepa.converter, ijepa.arch) == (
        "url",
        "ijepa",
        "vit_huge_patch14_gap_224.in1k_ijepa",
    )
    assert release_file(ijepa).name == "IN1K-vit.h.14-300e.pth.tar"
    assert all("No CLS token" in specs[i].description for i in ("ijepa-vit-h14", "aimv2-vit-l14"))
    assert all(s.paper and s.size_mb for s in specs.values())


def test_modern_preset_dry_run_lists_sizes_and_downloads_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert PRESETS["modern"] == MODERN and {"paper", "small", "modern"} <= set(PRESETS)

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("must not be called")

    monkeypatch.setattr(plan, "pull_spec", fail)
    monkeypatch.setattr(plan, "probe", fail)
    assert backend.cli.main(["models", "pull", "--preset", "modern", "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    assert [line.split()[0] for line in out.splitlines()[2:7]] == list(MODERN)
    assert rows["dinov3-vit-s16"][1:6] == ["hybrid", "timm", "86.3", "MB", "download"]
    assert rows["ijepa-vit-h14"][1:6] == ["mim", "url", "10.37", "GB", "download"]
    assert rows["ijepa-vit-h14"][6].endswith("/IN1K-vit.h.14-300e.pth.tar")
    assert rows["aimv2-vit-l14"][1:6] == ["autoregressive", "timm", "1.24", "GB", "download"]
    total = sum(BUILTIN[i].size_mb or 0 for i in MODERN)  # 86.3 + 342.6 + 10368 + 343 + 1236.8 MB
    assert f"To download: 5 files, about {total / 1000:.2f} GB." in out
    assert not (cache / "hub").exists() and not (cache / "releases").exists()


# ------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("model_id", [i for i in CASES if i != "ijepa-vit-h14"])
def test_timm_hub_files_load_and_capture(model_id: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = shrink(monkeypatch, model_id)
    weights = random_params(spec, seed=1)
    hub_file(cache, spec.location, weights)
    check_loaded(model_id, weights)


def test_aimv2_in_apple_layout_loads_through_timms_filter(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = shrink(monkeypatch, "aimv2-vit-l14")
    weights = random_params(spec, seed=2)
    original = apple_layout(weights)
    assert "trunk.blocks.0.mlp.fc3.weight" in original and "preprocessor.patchifier.proj.weight" in original
    hub_file(cache, spec.location, original)
    check_loaded("aimv2-vit-l14", weights)


def test_ijepa_release_loads_the_target_encoder(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = shrink(monkeypatch, "ijepa-vit-h14")
    context, target = random_params(spec, seed=3), random_params(spec, seed=4)
    path = release_file(spec)
    path.parent.mkdir(parents=True)
    torch.save(ijepa_checkpoint(context, target), path)
    check_loaded("ijepa-vit-h14", target)


def test_ijepa_imports_under_its_catalogue_id(tmp_path: Path) -> None:
    spec = BUILTIN["ijepa-vit-h14"]
    small = dict(CASES["ijepa-vit-h14"][0])
    context = random_params(replace(spec, arch_kwargs=small), seed=5)
    target = random_params(replace(spec, arch_kwargs=small), seed=6)
    torch.save(ijepa_checkpoint(context, target), tmp_path / "IN1K-vit.h.14-300e.pth.tar")
    imported = import_checkpoint(
        tmp_path / "IN1K-vit.h.14-300e.pth.tar", "ijepa", spec.arch, spec.id, "mim", arch_kwargs=small
    )
    assert imported.family == "mim" and imported.card is not None
    check_loaded("ijepa-vit-h14", target)
    torch.save({"encoder": {f"module.{k}": v for k, v in context.items()}}, tmp_path / "context_only.pth")
    with pytest.raises(BadCheckpoint, match="no 'target_encoder' entry"):
        import_checkpoint(
            tmp_path / "context_only.pth", "ijepa", spec.arch, "ijepa-context", "mim", arch_kwargs=small
        )


def check_loaded(model_id: str, weights: dict[str, Tensor]) -> None:
    _, side, prefix, cls, mean = CASES[model_id]
    loaded = load_model(model_id)
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items()), "weights differ from the file's"
    assert tuple(loaded.data_config["mean"]) == pytest.approx(mean)
    trace = capture(loaded.model, torch.randn(2, 3, side, side))
    grid = side // trace.patch_size
    assert trace.grid == (grid, grid) and trace.num_layers == 2
    assert (trace.num_prefix_tokens, trace.has_cls) == (prefix, cls)
    assert trace.attentions[0].shape == (2, 2, prefix + grid * grid, prefix + grid * grid)


@pytest.mark.parametrize("model_id", ["ijepa-vit-h14", "aimv2-vit-l14", "dinov3-vit-s16"])
def test_cls_queries_of_models_without_cls_are_a_clear_400(
    model_id: str, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view parameters are checked against the model: a CLS map of a model without CLS is refused, never
    drawn from token 0 (a register or a patch)."""
    spec = shrink(monkeypatch, model_id)
    weights = random_params(spec, seed=7)
    if spec.source == "url":
        path = release_file(spec)
        path.parent.mkdir(parents=True)
        torch.save(ijepa_checkpoint(weights, weights), path)
    else:
        hub_file(cache, spec.location, weights)
    info = model_info_of(load_model(model_id))
    has_cls = CASES[model_id][3]
    assert info.has_cls is has_cls and info.as_dict()["has_cls_token"] is has_cls
    patch = AttentionView.parse(1, query="3")
    patch.check(info)  # a patch query is always fine
    for view in (AttentionView.parse(1, query="cls"), AttentionView.parse(2, query="cls", rollout=True)):
        if has_cls:
            view.check(info)
            continue
        with pytest.raises(
            BadRequest, match=r"has no CLS token; query a patch \(a row-major patch index 0\.\.3\)"
        ):
            view.check(info)
        assert BadRequest.status == 400


def test_registers_without_cls_are_not_taken_for_cls() -> None:
    prep = {"input_size": [32, 32]}
    info = ModelInfo("reg-only", "mim", "vit", "d", prep, 2, 2, (2, 2), 16, 4, 32, 1000, has_cls=False)
    with pytest.raises(BadRequest, match="no CLS token"):
        AttentionView.parse(1, query="cls").check(info)
    with pytest.raises(BadRequest, match=r"patch index 0\.\.3$"):  # no "or 'cls'" offered
        AttentionView.parse(1, query="4").check(info)
    AttentionView.parse(1, query="cls").check(replace(info, has_cls=True))
