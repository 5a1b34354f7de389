"""A trained checkpoint registers, reloads through the zoo, and the analyses run on it; the CLI end to end;
the shipped demo models load."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.analysis import compute_metrics
from backend.capture import capture
from backend.cli import train as train_cli
from backend.errors import VitscopeError
from backend.models import get_spec, load_model, register_trained
from backend.training.data import ImageSet
from backend.training.objectives import ObjectiveConfig
from backend.training.trainer import TrainConfig, Trainer

TINY_DIMS = {"embed_dim": 32, "depth": 2, "num_heads": 2}
DEMO = Path(__file__).resolve().parents[2] / "demo_models"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSCOPE_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VITSCOPE_DATA_CACHE", str(tmp_path / "data-cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def main(argv: list[str]) -> int:
    """`vitscope` with only the train and probe subcommands (what backend.cli.main does for each)."""
    parser = argparse.ArgumentParser(prog="vitscope")
    train_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except VitscopeError:
        return 2


def test_trained_model_registers_reloads_and_runs_the_analyses(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    data = ImageSet(
        torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g),
        torch.zeros(16, dtype=torch.long),
        ["x"],
        "random",
    )
    cfg = TrainConfig(
        objective="hybrid",
        lam=0.5,
        arch_overrides=TINY_DIMS,
        batch_size=8,
        max_steps=2,
        out=str(tmp_path / "run"),
        name="tiny-trained-hybrid",
        progress=False,
        objective_cfg=ObjectiveConfig(proj_hidden=64, proj_dim=32),
    )
    trainer = Trainer(cfg, data)
    trainer.fit()
    weights, card_path = trainer.export()
    card = json.loads(card_path.read_text())
    spec = register_trained(
        weights, card["arch"], card["arch_kwargs"], card["id"], card["family"], card, dest=tmp_path / "zoo"
    )
    stored = get_spec("tiny-trained-hybrid").card
    assert spec.family == "hybrid" and stored is not None and stored["training"]["lambda"] == 0.5

    loaded = load_model("tiny-trained-hybrid", "cpu")
    assert loaded.data_config["input_size"] == (3, 32, 32) and loaded.data_config["mean"] == (0.5, 0.5, 0.5)
    ref = {k: v.float() for k, v in trainer.encoder_state().items()}
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    pixels = torch.randn(2, 3, 32, 32)
    trace = capture(loaded.model, pixels, model_id=spec.id)
    assert trace.grid == (8, 8) and trace.patch_size == 4 and trace.num_layers == 2
    metrics = compute_metrics(trace, spec.family)
    assert (
        len(metrics["attention_distance"]["mean"]) == 2 and len(metrics["delta_log_amplitude"]["value"]) == 3
    )
    assert all(np.isfinite(metrics["nmi"]["mean"]))


def _image_folder(root: Path) -> None:
    colours = {"red": (200, 30, 30), "blue": (30, 30, 200)}
    for split, n in (("train", 8), ("test", 4)):
        for name, rgb in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                noise = np.random.default_rng(i).integers(-30, 30, (32, 32, 3))
                Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(
                    folder / f"{i}.png"
                )


def test_cli_train_then_probe(tmp_path, capsys) -> None:
    _image_folder(tmp_path / "images")
    out = tmp_path / "out"
    rc = main(
        [
            "train",
            "--objective",
            "mim",
            "--data",
            str(tmp_path / "images"),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--name",
            "tiny-cli-mim",
            "--device",
            "cpu",
            "--arch-kwargs",
            json.dumps(TINY_DIMS),
            "--max-steps",
            "2",
            "--probe",
        ]
    )
    assert rc == 0
    card = json.loads((out / "tiny-cli-mim.json").read_text())
    assert card["family"] == "mim" and card["training"]["steps"] == 2
    assert card["probes"]["linear"]["depth"] == [0, 1, 2] and (out / "probes.png").exists()
    assert get_spec("tiny-cli-mim").family == "mim"  # registered in the (temporary) zoo

    rc = main(
        [
            "probe",
            "tiny-cli-mim",
            "--data",
            str(tmp_path / "images"),
            "--out",
            str(tmp_path / "probe"),
            "--device",
            "cpu",
            "--noise-eps",
            "0.5",
            "--noise-freqs",
            "2",
            "--noise-images",
            "4",
        ]
    )
    assert rc == 0
    result = json.loads((tmp_path / "probe" / "probes.json").read_text())
    assert result["data"]["train_images"] == 16 and result["data"]["test_images"] == 8
    assert result["linear"]["top1"][-1] > 50  # red vs blue
    stored = get_spec("tiny-cli-mim").card
    assert stored is not None and stored["probes"]["noise"]["eps"] == [0.5]
    assert "linear top-1 by depth" in capsys.readouterr().out


def test_cli_rejects_a_hybrid_without_lambda(tmp_path) -> None:
    assert main(["train", "--objective", "hybrid", "--out", str(tmp_path), "--name", "x"]) == 2


@pytest.mark.parametrize(
    ("model_id", "family"),
    [("cifar-mim-vit-t4", "mim"), ("cifar-hybrid-vit-t4", "hybrid"), ("cifar-cl-vit-t4", "cl")],
)
def test_shipped_demo_models_load_with_their_probes(model_id: str, family: str) -> None:
    assert (DEMO / f"{model_id}.safetensors").exists(), "the demo weights ship in git (demo_models/)"
    loaded = load_model(model_id, "cpu")
    card = loaded.spec.card
    assert loaded.spec.family == family and card is not None
    assert card["training"]["lambda"] == {"mim": 0.0, "hybrid": 0.5, "cl": 1.0}[family]
    assert len(card["probes"]["linear"]["top1"]) == 13 and card["probes"]["knn"]["top1"] > 30
    assert loaded.data_config["input_size"] == (3, 32, 32)
    trace = capture(loaded.model, torch.zeros(1, 3, 32, 32))
    assert trace.grid == (8, 8) and trace.num_layers == 12
