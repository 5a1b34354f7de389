"""Training objectives, masking, momentum, hybrid sum, checkpoints and export (tiny ViT on the CPU)."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from backend.training.data import ImageSet
from backend.training.encoder import ENCODER_POS_EMBED, arch_for, build_encoder
from backend.training.objectives import BlockMasker, ObjectiveConfig, SelfSupervised, family_for, lam_for
from backend.training.trainer import TrainConfig, Trainer

TINY_DIMS = {"embed_dim": 32, "depth": 2, "num_heads": 2}
SMALL_HEADS = ObjectiveConfig(proj_hidden=64, proj_dim=32)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; tiny ops are fastest on one thread anyway
    yield
    torch.set_num_threads(n)


def images(n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def tiny_encoder(kind: str = "vit", pos_embed: str | None = None):
    pos = pos_embed or ENCODER_POS_EMBED[kind]
    arch, kwargs = arch_for(kind, pos)
    return build_encoder(arch, {**kwargs, **TINY_DIMS}, pos_embed=pos)


def tiny_model(
    lam: float, seed: int = 0, cfg: ObjectiveConfig = SMALL_HEADS, kind: str = "vit"
) -> SelfSupervised:
    torch.manual_seed(seed)
    return SelfSupervised(tiny_encoder(kind), lam, cfg)


@pytest.mark.parametrize(("lam", "kind"), [(0.0, "beit"), (0.5, "beit"), (1.0, "vit")])
def test_loss_falls_on_a_fixed_batch(lam: float, kind: str) -> None:
    model = tiny_model(lam, kind=kind)  # each objective on its recipe's encoder
    torch.manual_seed(1)
    views = model.draw(images())  # one fixed set of views and masks
    opt = torch.optim.AdamW(model.optim_groups(0.0), lr=2e-3)
    losses = []
    for _ in range(20):
        loss, _ = model.loss(views)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_momentum(0.9)
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    # drop path makes single steps noisy: the mean of the last four against the first
    assert sum(losses[-4:]) / 4 < 0.8 * losses[0], losses


@pytest.mark.parametrize(("scale", "units", "count"), [(2, 16, 10), (1, 64, 39)])
def test_masking_covers_the_requested_ratio(scale: int, units: int, count: int) -> None:
    masker = BlockMasker((8, 8), scale, 0.6)
    assert masker.count == count and masker.ratio == pytest.approx(count / units)
    torch.manual_seed(0)
    mask = masker(64, torch.device("cpu"))
    assert mask.shape == (64, 8, 8) and mask.dtype == torch.bool
    per_image = mask.flatten(1).float().mean(1)
    assert torch.all(per_image == count / units)  # exactly ceil(0.6 * units) squares each
    assert abs(per_image.mean().item() - 0.6) < 0.03
    if scale == 2:  # whole 2 x 2 patch squares are masked together
        blocks = mask.view(64, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(64, 16, 4)
        assert torch.all(blocks.all(-1) | ~blocks.any(-1))
    assert not torch.equal(mask[0], mask[1])  # random per image


def test_masked_tokens_change_the_encoding() -> None:
    model = tiny_model(0.0).eval()
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, :4] = True
    from backend.training.encoder import embed

    masked = embed(model.encoder, x, mask, model.mask_token)
    plain = embed(model.encoder, x)
    patch = masked[:, 1:].view(2, 8, 8, -1)
    assert torch.allclose(patch[:, 4:], plain[:, 1:].view(2, 8, 8, -1)[:, 4:])
    assert not torch.allclose(patch[:, :4], plain[:, 1:].view(2, 8, 8, -1)[:, :4])


def _momentum_after_step(m: float) -> tuple[SelfSupervised, dict[str, torch.Tensor]]:
    model = tiny_model(1.0)
    before = {k: v.clone() for k, v in model.momentum_encoder.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss, _ = model(images())
    loss.backward()
    opt.step()
    model.update_momentum(m)
    return model, before


def test_momentum_one_leaves_the_key_encoder_unchanged() -> None:
    model, before = _momentum_after_step(1.0)
    for name, p in model.momentum_encoder.named_parameters():
        assert torch.equal(p, before[name]), name
    assert any(not torch.equal(p, before[n]) for n, p in model.encoder.named_parameters())


def test_momentum_zero_copies_the_online_encoder() -> None:
    model, _ = _momentum_after_step(0.0)
    online = dict(model.encoder.named_parameters())
    for name, p in model.momentum_encoder.named_parameters():
        assert torch.equal(p, online[name]), name
    for p, q in zip(model.projector.parameters(), model.momentum_projector.parameters(), strict=True):
        assert torch.equal(p, q)


def test_momentum_between_moves_part_way_and_follows_the_cosine() -> None:
    model, before = _momentum_after_step(0.75)
    online = dict(model.encoder.named_parameters())
    for name, p in model.momentum_encoder.named_parameters():
        assert torch.allclose(p, 0.75 * before[name] + 0.25 * online[name], atol=1e-6)
    assert model.momentum_at(0, 100) == pytest.approx(0.99)
    assert model.momentum_at(100, 100) == pytest.approx(1.0)
    assert all(p.grad is None for p in model.momentum_encoder.parameters())  # stop-gradient


def test_hybrid_loss_is_the_weighted_sum_of_its_parts() -> None:
    lam = 0.3
    hybrid = tiny_model(lam)
    torch.manual_seed(5)
    views = hybrid.draw(images())
    total, parts = hybrid.loss(views)
    assert set(parts) == {"mim", "cl"}
    expected = (1 - lam) * float(parts["mim"]) + lam * float(parts["cl"])
    assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
    # The parts are the pure objectives' losses: the same weights give the same values on the same views.
    mim, cl = tiny_model(0.0), tiny_model(1.0)
    mim.load_state_dict({k: v for k, v in hybrid.state_dict().items() if k in mim.state_dict()})
    cl.load_state_dict({k: v for k, v in hybrid.state_dict().items() if k in cl.state_dict()})
    assert float(mim.loss(views)[0].detach()) == pytest.approx(float(parts["mim"]), rel=1e-5)
    assert float(cl.loss(views)[0].detach()) == pytest.approx(float(parts["cl"]), rel=1e-5)


def test_pure_objectives_build_only_their_parts() -> None:
    assert not hasattr(tiny_model(0.0), "momentum_encoder")
    assert not hasattr(tiny_model(1.0), "mask_token")
    assert [family_for(x) for x in (0.0, 0.5, 1.0)] == ["mim", "hybrid", "cl"]
    assert lam_for("mim", 0.7) == 0.0 and lam_for("cl", None) == 1.0 and lam_for("hybrid", 0.5) == 0.5
    with pytest.raises(ValueError):
        lam_for("hybrid", None)


def _trainer(tmp_path, objective: str = "hybrid", **kw) -> Trainer:
    n = 16
    data = ImageSet(images(n, seed=3), torch.arange(n) % 2, ["a", "b"], "random")
    cfg = TrainConfig(
        objective=objective,
        lam=0.5 if objective == "hybrid" else None,
        arch_overrides=TINY_DIMS,
        batch_size=8,
        epochs=3,
        lr=1e-3,
        out=str(tmp_path),
        name="tiny-hybrid",
        progress=False,
        log_every=1,
        checkpoint_every=0,
        objective_cfg=SMALL_HEADS,
        **kw,
    )
    return Trainer(cfg, data)


def _state(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in t.model.state_dict().items()}


def test_checkpoint_round_trip_resumes_identically(tmp_path) -> None:
    a = _trainer(tmp_path)
    for _ in range(2):
        a.train_step()
        a.step += 1
    path = tmp_path / "ck.pt"
    a.save_checkpoint(path)
    saved = _state(a)
    for _ in range(2):
        a.train_step()
        a.step += 1
    b = _trainer(tmp_path, seed=0)
    b.load_checkpoint(path)
    assert b.step == 2
    for k, v in saved.items():
        assert torch.equal(b.model.state_dict()[k], v), k
    assert b.optimizer.state_dict()["state"].keys() == a.optimizer.state_dict()["state"].keys()
    for _ in range(2):
        b.train_step()
        b.step += 1
    for k, v in _state(a).items():  # momentum encoder, heads, optimizer moments and RNG all resumed
        assert torch.allclose(b.model.state_dict()[k].float(), v.float(), atol=1e-6), k


def test_fit_exports_strict_loadable_float16_weights_and_a_card(tmp_path) -> None:
    t = _trainer(tmp_path, objective="cl", max_steps=3)
    t.fit()
    weights, card_path = t.export()
    card = json.loads(card_path.read_text())
    assert card["id"] == "tiny-hybrid" and card["family"] == "cl" and card["weights"] == weights.name
    tr = card["training"]
    assert tr["objective"] == "cl" and tr["lambda"] == 1.0 and tr["images_seen"] == 3 * 8 and tr["seed"] == 0
    assert tr["cl"]["temperature"] == 0.2 and "mim" not in tr
    assert card["arch_kwargs"]["pretrained_cfg_overlay"]["input_size"] == [3, 32, 32]
    sd = load_file(str(weights))
    assert all(v.dtype == torch.float16 for v in sd.values())
    model = timm.create_model(card["arch"], pretrained=False, **card["arch_kwargs"])
    model.load_state_dict(sd, strict=True)
    assert (tmp_path / "checkpoint.pt").exists() and json.loads((tmp_path / "train_log.json").read_text())


def test_resume_continues_to_the_same_end_state(tmp_path) -> None:
    full = _trainer(tmp_path / "full", max_steps=4)
    full.fit()
    part = _trainer(tmp_path / "part", max_steps=4)
    part.total_steps = 4
    for _ in range(2):
        part.train_step()
        part.step += 1
    part.save_checkpoint(tmp_path / "part" / "checkpoint.pt")
    resumed = _trainer(tmp_path / "part", max_steps=4)
    resumed.load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    resumed.fit()
    assert resumed.step == full.step == 4
    for k, v in full.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[k].float(), v.float(), atol=1e-6), k


def test_time_budget_shortens_the_schedule(tmp_path) -> None:
    t = _trainer(tmp_path, objective="mim", time_budget_s=1e-3)
    t.fit()
    assert t.total_steps == 1 and t.step == 1 and t.measured_ips and t.measured_ips > 0


def test_lr_schedule_warms_up_then_decays(tmp_path) -> None:
    t = _trainer(tmp_path, objective="mim", warmup_frac=0.25)
    t.set_epochs(20)  # 2 steps per epoch: 40 steps, 10 of warm-up
    lrs = [t.lr_at(s) for s in range(40)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)) and lrs[-1] < 1e-4
