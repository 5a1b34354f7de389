"""The paper's recipes (Beit SimMIM, MoCo v3 with frozen sin-cos, hybrid), their controls, snapshots with
analyses, resume across a snapshot, the catalogue loading a Beit card, and the speed levers (no host sync per
step, fused AdamW, torch.compile) on tiny models on the CPU."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backend.analysis import compute_metrics
from backend.capture import capture
from backend.cli import main as cli_main
from backend.models import get_spec, load_model, register_trained
from backend.training.data import ImageSet
from backend.training.encoder import embed
from backend.training.measure import count_host_syncs
from backend.training.objectives import ObjectiveConfig
from backend.training.trainer import CHECKPOINT, TrainConfig, Trainer

TINY_DIMS = {"embed_dim": 32, "depth": 2, "num_heads": 2}
SMALL_HEADS = ObjectiveConfig(proj_hidden=64, proj_dim=32)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSCOPE_MODELS_CACHE", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def data(n: int = 16, seed: int = 3) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % 2, ["a", "b"], "random")


def trainer(tmp_path, objective: str, **kw) -> Trainer:
    cfg = TrainConfig(
        objective=objective,
        lam=kw.pop("lam", 0.5 if objective == "hybrid" else None),
        arch_overrides=kw.pop("arch_overrides", TINY_DIMS),
        batch_size=8,
        epochs=kw.pop("epochs", 3),
        lr=1e-3,
        out=str(tmp_path),
        name=kw.pop("name", f"tiny-{objective}"),
        progress=False,
        log_every=1,
        checkpoint_every=0,
        objective_cfg=SMALL_HEADS,
        analysis_images=4,
        **kw,
    )
    return Trainer(cfg, data(), data(4, seed=9))


def moco_sincos(h: int, w: int, dim: int) -> torch.Tensor:
    """MoCo v3's build_2d_sincos_position_embedding, element by element: (h * w, dim), row-major patches."""
    quarter = dim // 4
    table = torch.zeros(h * w, dim, dtype=torch.float64)
    for r in range(h):
        for c in range(w):
            for d in range(quarter):
                omega = 1.0 / 10000 ** (d / quarter)
                table[r * w + c, d] = math.sin(r * omega)
                table[r * w + c, quarter + d] = math.cos(r * omega)
                table[r * w + c, 2 * quarter + d] = math.sin(c * omega)
                table[r * w + c, 3 * quarter + d] = math.cos(c * omega)
    return table


def test_mim_trains_simmim_as_beit_without_an_absolute_position_embedding(tmp_path) -> None:
    t = trainer(tmp_path, "mim")
    e = t.model.encoder
    assert type(e).__name__ == "Beit" and e.pos_embed is None
    assert not any("pos_embed" in k for k in e.state_dict())
    # one relative position bias shared by every block, none per block
    assert e.rel_pos_bias is not None
    assert all(b.attn.relative_position_bias_table is None for b in e.blocks)
    assert all(torch.allclose(b.gamma_1, torch.full_like(b.gamma_1, 0.1)) for b in e.blocks)  # layer scale
    assert e.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # drop path 0.1 (linear to the last)
    # 60 % masking in squares of 2 x 2 patches: 10 of the 16 squares of the 8 x 8 grid
    assert t.model.masker.scale == 2 and t.model.masker.count == 10
    assert not hasattr(t.model, "momentum_encoder") and t.model.decoder.out_features == 4 * 4 * 3
    # the mask token replaces the masked patch embeddings before the blocks (CLS in front)
    e.eval()
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, :2, :2] = True
    masked, plain = embed(e, x, mask, t.model.mask_token), embed(e, x)
    diff = (masked - plain).abs().sum(-1)[:, 1:].view(2, 8, 8) > 0
    assert torch.equal(diff, mask)
    assert torch.allclose(masked[:, 1:].view(2, 8, 8, -1)[mask], t.model.mask_token.view(-1).expand(8, -1))
    card = t.card()
    assert card["training"]["encoder"]["relative_position_bias"] and card["arch"].startswith("beit")


def test_cl_uses_a_frozen_2d_sincos_embedding_equal_to_the_formula(tmp_path) -> None:
    t = trainer(tmp_path, "cl")
    e = t.model.encoder
    assert type(e).__name__ == "VisionTransformer" and not e.pos_embed.requires_grad
    expected = moco_sincos(8, 8, 32).float()
    assert torch.allclose(e.pos_embed[0, 1:], expected, atol=1e-6)
    assert torch.equal(e.pos_embed[0, 0], torch.zeros(32))  # the CLS row
    before = e.pos_embed.detach().clone()
    t.train_step()
    assert e.pos_embed.grad is None and torch.equal(e.pos_embed, before)
    assert t.model.momentum_encoder.pos_embed.requires_grad is False
    in_optimizer = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert id(e.pos_embed) not in in_optimizer
    assert any(p.grad is not None for p in e.blocks.parameters())  # the rest does learn


def test_hybrid_is_the_mim_encoder_with_mocos_heads_at_any_lambda(tmp_path) -> None:
    t = trainer(tmp_path, "hybrid", lam=0.3)
    m = t.model
    assert type(m.encoder).__name__ == "Beit" and m.encoder.pos_embed is None
    assert type(m.momentum_encoder).__name__ == "Beit" and hasattr(m, "mask_token")
    assert m.lam == 0.3 and len(m.projector) and len(m.predictor)
    loss, parts = m(t.images[:8])
    assert float(loss.detach()) == pytest.approx(
        0.7 * float(parts["mim"]) + 0.3 * float(parts["cl"]), rel=1e-5
    )


@pytest.mark.parametrize(
    ("objective", "encoder", "pos_embed", "patch", "cls", "trainable"),
    [
        ("mim", None, "learnable", 4, "Beit", True),  # MIM with a learnable absolute embedding
        ("cl", "beit", None, 4, "Beit", None),  # CL on the Beit encoder (no absolute embedding)
        ("cl", "vit", "none", 2, "VisionTransformer", None),  # a position-free ViT at patch 2
    ],
)
def test_controls(tmp_path, objective, encoder, pos_embed, patch, cls, trainable) -> None:
    t = trainer(tmp_path, objective, encoder=encoder, pos_embed=pos_embed, patch_size=patch)
    e = t.model.encoder
    assert type(e).__name__ == cls and tuple(e.patch_embed.grid_size) == (32 // patch, 32 // patch)
    if trainable is None:
        assert e.pos_embed is None
    else:
        assert e.pos_embed.requires_grad is trainable
        assert torch.allclose(e.pos_embed[0, 1:], moco_sincos(8, 8, 32).float(), atol=1e-6)  # the start
    t.train_step()
    if trainable:
        assert e.pos_embed.grad is not None
    assert t.card()["training"]["encoder"]["pos_embed"] == (pos_embed or {"Beit": "none"}.get(cls))


def test_a_beit_card_registers_loads_and_is_captured(tmp_path) -> None:
    t = trainer(tmp_path / "run", "mim", max_steps=2, name="tiny-beit-mim")
    t.fit()
    weights, card_path = t.export()
    card = json.loads(card_path.read_text())
    spec = register_trained(
        weights, card["arch"], card["arch_kwargs"], card["id"], card["family"], card, dest=tmp_path / "zoo"
    )
    assert get_spec("tiny-beit-mim").family == "mim"
    loaded = load_model(spec.id, "cpu")
    assert type(loaded.model).__name__ == "Beit" and loaded.data_config["input_size"] == (3, 32, 32)
    ref = {k: v.float() for k, v in t.encoder_state().items()}
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    trace = capture(loaded.model, torch.randn(2, 3, 32, 32), model_id=spec.id)
    assert trace.grid == (8, 8) and trace.num_layers == 2 and trace.attentions[0].shape == (2, 2, 65, 65)
    metrics = compute_metrics(trace, spec.family)
    assert all(np.isfinite(metrics["nmi"]["mean"])) and len(metrics["delta_log_amplitude"]["value"]) == 3


def test_snapshots_are_written_with_their_analyses_and_survive_a_resume(tmp_path) -> None:
    # 16 images, batch 8: 2 steps per epoch; 3 epochs, snapshots after epochs 1 and 2 (steps 2 and 4)
    full = trainer(tmp_path / "full", "cl", snapshot_epochs=(1, 2))
    full.fit()
    assert [s["epoch"] for s in full.snapshots] == [1.0, 2.0] and [s["step"] for s in full.snapshots] == [
        2,
        4,
    ]
    for snap in full.snapshots:
        path = tmp_path / "full" / snap["weights"]
        assert path.exists() and all(v.dtype == torch.float16 for v in load_file(str(path)).values())
        m = snap["metrics"]
        assert m["num_images"] == 4 and m["layers"] == 2 and len(m["attention_distance"]["mean"]) == 2
    # the analyses are those of the stored file: recomputed by hand from it, they agree
    first = load_file(str(tmp_path / "full" / full.snapshots[0]["weights"]))
    assert not torch.equal(
        first["blocks.0.attn.qkv.weight"], full.encoder_state()["blocks.0.attn.qkv.weight"]
    )
    _, card_path = full.export()
    card = json.loads(card_path.read_text())
    assert [s["epoch"] for s in card["training"]["snapshots"]] == [1.0, 2.0]

    part = trainer(tmp_path / "part", "cl", snapshot_epochs=(1, 2))
    part.fit(until=3)  # cut after the first snapshot
    assert part.step == 3 and len(part.snapshots) == 1
    resumed = trainer(tmp_path / "part", "cl", snapshot_epochs=(1, 2))
    resumed.load_checkpoint(tmp_path / "part" / CHECKPOINT)
    resumed.fit()
    assert resumed.step == full.step == 6 and [s["step"] for s in resumed.snapshots] == [2, 4]
    for a, b in zip(full.snapshots, resumed.snapshots, strict=True):
        assert a["metrics"]["nmi"]["mean"] == pytest.approx(b["metrics"]["nmi"]["mean"], abs=1e-5)
    for k, v in full.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[k].float(), v.float(), atol=1e-6), k


@pytest.mark.parametrize("objective", ["mim", "cl", "hybrid"])
def test_a_training_step_makes_no_host_sync(tmp_path, objective) -> None:
    t = trainer(tmp_path, objective)
    t.train_step(0)
    assert t.optimizer.defaults["fused"] is True
    assert sum(count_host_syncs(lambda: t.train_step(1)).values()) == 0


def test_the_sync_counter_sees_what_syncs() -> None:
    x = torch.randn(4)

    def syncing() -> None:
        float(x.sum())  # a read-back
        x + torch.tensor([1.0, 2.0, 3.0, 4.0])  # host data made a tensor
        x[x > 0]  # a data-dependent size

    counts = count_host_syncs(syncing)
    assert counts["_local_scalar_dense"] == 1 and counts["lift_fresh"] == 1 and sum(counts.values()) >= 3


def test_compiled_training_step_learns(tmp_path) -> None:
    t = trainer(
        tmp_path, "mim", compile="default", arch_overrides={"embed_dim": 16, "depth": 1, "num_heads": 2}
    )
    before = {k: v.clone() for k, v in t.model.decoder.state_dict().items()}
    loss, parts = t.train_step(0)
    assert torch.isfinite(loss) and set(parts) == {"mim"}
    assert any(not torch.equal(v, before[k]) for k, v in t.model.decoder.state_dict().items())


def test_cli_rejects_snapshots_beyond_the_run(tmp_path, capsys) -> None:
    rc = cli_main(
        [
            "train",
            "--objective",
            "mim",
            "--out",
            str(tmp_path),
            "--name",
            "x",
            "--epochs",
            "10",
            "--snapshot-epochs",
            "5,20",
            "--device",
            "cpu",
        ]
    )
    assert rc == 2 and "beyond --epochs 10" in capsys.readouterr().err


def test_train_help_shows_every_option_with_help_and_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: 4)" in text and "(default: 256)" in text and "(default: 0.0005)" in text
    from backend.cli import build_parser

    sub = next(a for a in build_parser("train")._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    assert len(train._actions) > 20, "the real train parser, not the name-only stub of other commands"
    assert all(a.help for a in train._actions), [a.dest for a in train._actions if not a.help]
