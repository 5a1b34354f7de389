"""`vitscope claims` on constructed models whose answers are known, through the real loading path.

Three tiny ViTs (32 px, patch 8: a 4 x 4 grid) with hand-set weights: the patch embedding is zero and every
block adds nothing to the residual stream, so the tokens are the position embedding. "CL": a constant position
embedding, hence uniform attention (distance = the uniform distance, NMI 0) and constant tokens (delta log
amplitude -16.6). "MIM": a random position embedding and q = k = 2 x, hence self attention (distance ~ 0,
NMI ~ 1) and random tokens (delta ~ +0.35). "Hybrid": the same tokens with q = k = 0.6 x: in between.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import backend.cli
from backend.cli.claims import split_args

KWARGS: dict[str, Any] = {
    "img_size": 32,
    "patch_size": 8,
    "depth": 2,
    "embed_dim": 32,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "pretrained_cfg_overlay": {"input_size": [3, 32, 32], "crop_pct": 1.0, "interpolation": "bilinear"},
}


def constructed(name: str, family: str, pos: torch.Tensor, qk_scale: float, folder: Path) -> None:
    from safetensors.torch import save_file

    from backend.models.loading import build_model

    model = build_model("vit_tiny_patch16_224", KWARGS)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    for k, v in model.state_dict().items():
        if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight":
            state[k] = torch.ones_like(v)
    dim = 32
    for i in range(KWARGS["depth"]):
        qkv = torch.zeros(3 * dim, dim)
        qkv[:dim] = qk_scale * torch.eye(dim)
        qkv[dim : 2 * dim] = qk_scale * torch.eye(dim)
        qkv[2 * dim :] = torch.eye(dim)
        state[f"blocks.{i}.attn.qkv.weight"] = qkv
    state["pos_embed"] = pos
    imported = folder / "imported"
    imported.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(imported / f"{name}.safetensors"))
    card = {
        "id": name,
        "family": family,
        "arch": "vit_tiny_patch16_224",
        "arch_kwargs": KWARGS,
        "weights": f"{name}.safetensors",
        "license": "test only",
        "description": "constructed weights for the claims test",
    }
    (imported / f"{name}.json").write_text(json.dumps(card))


@pytest.fixture(scope="module")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("claims_models")
    g = torch.Generator().manual_seed(0)
    random_pos = torch.randn(1, 17, 32, generator=g)
    constructed("claims-cl", "cl", torch.ones(1, 17, 32), 1.0, folder)
    constructed("claims-mim", "mim", random_pos, 2.0, folder)
    constructed("claims-hybrid", "hybrid", random_pos, 0.6, folder)
    return folder


@pytest.fixture
def images(tmp_path: Path, models_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VITSCOPE_MODELS_CACHE", str(models_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_all_claims_hold_exit_0(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "claims.json"
    args = ["claims", "claims-cl", "claims-mim", "claims-hybrid", str(images), "--device", "cpu"]
    assert backend.cli.main([*args, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "overall: 4 of 4 claims hold on the set means" in text
    assert text.count("[held]") == 4 and "holds on 3 of 3 images" in text
    assert f"{images / 'im0.png'}: distance held" in text  # per image, named
    report = json.loads(out.read_text())
    assert report["all_held"] and report["images"] == 3 and len(report["image_files"]) == 3
    assert report["distance_scale"] == "px"
    distance, nmi, fourier, hybrid = report["claims"]
    uniform = 8 * 2.0080150  # 4 x 4 grid at patch 8: 8 px x the mean distance between two cells
    assert distance["values"]["cl"] == pytest.approx(uniform, abs=1e-3)
    assert distance["values"]["mim"] < 0.1 * uniform
    assert nmi["values"]["cl"] == pytest.approx(0.0, abs=1e-4) and nmi["values"]["mim"] > 0.9
    # constant tokens of value 1 on 16 patches: log(0 + 1e-6) - log(16 + 1e-6) at every depth
    assert fourier["values"]["cl"] == pytest.approx(math.log(1e-6) - math.log(16 + 1e-6), abs=1e-4)
    assert fourier["values"]["mim"] > -1
    assert distance["values"]["mim"] < hybrid["values"]["hybrid"] < distance["values"]["cl"]
    # each model's own preprocessing: the cards say 32 px, no crop
    assert {p["source"] for p in report["preprocessing"].values()} == {"card"}
    assert {p["resize"] for p in report["preprocessing"].values()} == {32}


def test_roles_swapped_exit_1(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert backend.cli.main(["claims", "claims-mim", "claims-cl", str(images), "--quiet"]) == 1
    text = capsys.readouterr().out
    assert text.count("[NOT held]") == 3 and "holds on 0 of 3 images" in text
    assert "per image" not in text and "overall: 0 of 3 claims" in text


def test_bad_input_exit_2(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert backend.cli.main(["claims", "claims-cl", str(images)]) == 2
    assert "CL_MODEL MIM_MODEL" in capsys.readouterr().err
    assert backend.cli.main(["claims", "claims-cl", "no-such-model", str(images)]) == 2


def test_split_args(tmp_path: Path) -> None:
    assert split_args(["a", "b", "c", str(tmp_path)]) == (["a", "b", "c"], [tmp_path])
    assert split_args(["a", "b", str(tmp_path), str(tmp_path)]) == (["a", "b"], [tmp_path, tmp_path])
    assert split_args(["a", "b", "c"]) == (["a", "b"], [Path("c")])


def test_claims_parser_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, backend.cli; backend.cli.build_parser('claims'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
