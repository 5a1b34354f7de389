"""Catalogue, offline behaviour, random baseline, demo / trained models, hub cache, digests and the CLI.

No test touches the network: HF_HUB_OFFLINE is set and the models cache is a temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import Tensor

import backend.cli
from backend.errors import BadRequest, ModelNotFound, WeightsUnavailable
from backend.models import (
    FAMILIES,
    ModelSpec,
    catalog,
    get_spec,
    import_checkpoint,
    list_specs,
    load_model,
    models_cache_dir,
    pull,
    register_trained,
    weights_available,
)
from backend.models.catalog import IN_MEAN, SIMMIM_FILE, family_from_tag, imported_dir
from backend.models.loading import build_model

VIT = "vit_small_patch16_224"
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
CATALOGUE_IDS = (
    "mocov3-vit-b16",
    "mocov3-vit-s16",
    "dino-vit-s16",
    "dino-vit-b16",
    "mae-vit-b16",
    "simmim-vit-b16",
    "dinov2-vit-s14",
    "dinov2-vit-s14-reg4",
    "ibot-vit-b16",
    "deit-vit-b16",
    "deit-vit-s16",
    "random-vit-s16",
)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VITSCOPE_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VITSCOPE_DEMO_MODELS", str(tmp_path / "demo"))  # absent unless a test creates it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


def tiny_weights(seed: int = 0) -> dict[str, Tensor]:
    model = timm.create_model(VIT, pretrained=False, num_classes=0, **TINY)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}


def unfused(model: torch.nn.Module) -> bool:
    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    return bool(flags) and not any(flags)


# ------------------------------------------------------------------------------------------- catalogue
def test_catalogue_ids_families_and_notes() -> None:
    specs = {s.id: s for s in list_specs()}
    assert set(CATALOGUE_IDS) <= set(specs)
    assert all(s.family in FAMILIES and s.paper and s.license for s in specs.values())
    assert specs["mocov3-vit-s16"].arch_kwargs["num_heads"] == 12
    assert specs["mocov3-vit-b16"].location.endswith("vit-b-300ep.pth.tar")
    simmim = specs["simmim-vit-b16"]
    assert (simmim.source, simmim.converter, simmim.arch) == ("manual", "simmim", "beit_base_patch16_224")
    assert simmim.arch_kwargs["use_shared_rel_pos_bias"] and not simmim.arch_kwargs["use_abs_pos_emb"]
    assert specs["dinov2-vit-s14"].arch_kwargs["pretrained_cfg_overlay"]["input_size"] == (3, 224, 224)
    assert specs["mae-vit-b16"].license.startswith("cc-by-nc-4.0")
    assert [specs[i].family for i in ("mocov3-vit-b16", "mae-vit-b16", "ibot-vit-b16", "deit-vit-s16")] == [
        "cl",
        "mim",
        "hybrid",
        "supervised",
    ]
    random = specs["random-vit-s16"]
    assert random.untrained and random.family == "baseline" and "untrained" in random.description.lower()
    assert [s.id for s in list_specs() if weights_available(s)] == ["random-vit-s16"]


def test_timm_names_resolve_with_full_tag_and_family() -> None:
    assert get_spec("vit_small_patch16_224.dino").family == "cl"
    assert get_spec("vit_base_patch16_224.mae").family == "mim"
    dinov2 = get_spec("vit_small_patch14_dinov2")
    assert (dinov2.arch, dinov2.family) == ("vit_small_patch14_dinov2.lvd142m", "hybrid")
    untagged = get_spec("vit_small_patch16_224")  # resolves to fine-tuned weights (WEIGHTS.md 2.5)
    assert untagged.arch == "vit_small_patch16_224.augreg_in21k_ft_in1k" and untagged.family == "supervised"
    assert get_spec("beitv2_base_patch16_224.in1k_ft_in1k").family == "supervised"
    assert get_spec("eva02_small_patch14_224.mim_in22k").family == "mim"
    no_weights = get_spec("vit_small_patch16_18x2_224")
    assert (no_weights.source, no_weights.family, no_weights.untrained) == ("random", "baseline", True)
    assert family_from_tag("vit_base_patch16_clip_224", "openai")[0] == "cl"


@pytest.mark.parametrize("name", ["resnet50", "vit_small_patch16_224.nope", "../etc/passwd", "no-such-model"])
def test_unknown_ids_list_the_catalogue(name: str) -> None:
    with pytest.raises(ModelNotFound, match=r"known ids: .*mocov3-vit-b16.*random-vit-s16"):
        get_spec(name)


def test_dinov2_runs_at_224_with_a_consistent_data_config() -> None:
    spec = get_spec("dinov2-vit-s14-reg4")
    model = build_model(spec.arch, {**spec.arch_kwargs, "embed_dim": 32, "depth": 1, "num_heads": 2})
    assert model.patch_embed.grid_size == (16, 16) and model.num_prefix_tokens == 5
    assert timm.data.resolve_model_data_config(model)["input_size"] == (3, 224, 224)


def test_models_cache_dir_follows_the_environment(cache: Path) -> None:
    assert models_cache_dir() == cache and cache.is_dir()


# ------------------------------------------------------------------------------------------- offline
@pytest.mark.parametrize(
    ("model_id", "expected_file", "command"),
    [
        ("mae-vit-b16", "models--timm--vit_base_patch16_224.mae", "vitscope models pull mae-vit-b16"),
        ("mocov3-vit-b16", "vit-b-300ep.pth.tar", "vitscope models pull mocov3-vit-b16"),
        ("simmim-vit-b16", SIMMIM_FILE, "vitscope models import FILE --format simmim --as simmim-vit-b16"),
        ("ibot-vit-b16", "checkpoint_teacher.pth", "vitscope models pull ibot-vit-b16"),
    ],
)
def test_absent_weights_fail_at_once_naming_file_and_command(
    model_id: str, expected_file: str, command: str
) -> None:
    for download in (False, True):  # download=True while offline must not try the network either
        start = time.perf_counter()
        with pytest.raises(WeightsUnavailable) as err:
            load_model(model_id, download=download)
        print(f"{model_id} download={download}: failed in {time.perf_counter() - start:.3f} s")
        message = str(err.value)
        assert model_id in message and expected_file in message and command in message
        assert download is False or "offline" in message or "by hand" in message


def test_pull_offline_fails_at_once() -> None:
    with pytest.raises(WeightsUnavailable, match="offline"):
        pull("dino-vit-s16", progress=False)
    with pytest.raises(BadRequest, match="random"):
        pull("random-vit-s16")


# ------------------------------------------------------------------------------------------- random baseline
def test_random_baseline_is_deterministic_offline_and_leaves_the_rng_alone() -> None:
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = load_model("random-vit-s16")
    assert torch.equal(torch.rand(3), expected_draw)
    second = load_model("random-vit-s16")
    assert first.weights_digest == second.weights_digest == "random-seed-0"
    state = second.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in first.model.state_dict().items())
    assert unfused(first.model) and not first.model.training
    assert first.num_parameters == sum(p.numel() for p in first.model.parameters()) > 20_000_000
    assert first.nbytes >= 4 * first.num_parameters
    assert first.data_config["mean"] == IN_MEAN and first.data_config["input_size"] == (3, 224, 224)


# ------------------------------------------------------------------------------------------- hub cache
def fake_hub_cache(cache: Path, repo: str, weights: dict[str, Tensor]) -> Path:
    """A hand-made HF cache entry: refs/main + snapshots/<commit>/model.safetensors (WEIGHTS.md 5.1)."""
    commit = "0" * 40
    folder = cache / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file(weights, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def test_timm_tag_loads_offline_from_the_hub_cache(cache: Path) -> None:
    model = timm.create_model("test_vit", pretrained=False, num_classes=0)
    weights = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    head = {"head.weight": torch.randn(1000, weights["norm.weight"].shape[0]), "head.bias": torch.randn(1000)}
    file = fake_hub_cache(cache, "timm/test_vit.r160_in1k", weights | head)
    spec = get_spec("test_vit.r160_in1k")
    assert spec.source == "timm" and weights_available(spec)
    assert pull("test_vit.r160_in1k", progress=False) == file  # cached: no network even when offline
    loaded = load_model("test_vit.r160_in1k")
    state = loaded.model.state_dict()
    assert set(state) == set(weights) and all(torch.equal(state[k], v) for k, v in weights.items())
    assert loaded.weights_digest == hashlib.sha256(file.read_bytes()).hexdigest()
    assert loaded.data_config["input_size"] == (3, 160, 160) and unfused(loaded.model)


# ------------------------------------------------------------------------------------------- imports
def test_import_under_a_catalogue_id_makes_it_available(tmp_path: Path) -> None:
    enc = tiny_weights()
    torch.save({"state_dict": enc}, tmp_path / "checkpoint_teacher.pth")
    with pytest.raises(BadRequest, match="family"):
        import_checkpoint(tmp_path / "checkpoint_teacher.pth", "ibot", VIT, "ibot-vit-s16", "cl")
    with pytest.raises(BadRequest, match="vit_small_patch16_224"):
        import_checkpoint(
            tmp_path / "checkpoint_teacher.pth", "ibot", "vit_base_patch16_224", "ibot-vit-s16", "hybrid"
        )
    spec = import_checkpoint(
        tmp_path / "checkpoint_teacher.pth", "ibot", VIT, "ibot-vit-s16", "hybrid", arch_kwargs=TINY
    )
    assert spec.id == "ibot-vit-s16" and spec.source == "url" and spec.card is not None
    assert weights_available(spec)
    assert [s.id for s in list_specs()].count("ibot-vit-s16") == 1
    loaded = load_model("ibot-vit-s16")
    assert torch.equal(loaded.model.state_dict()["pos_embed"], enc["pos_embed"])
    assert loaded.data_config["mean"] == IN_MEAN


def test_release_file_in_the_cache_is_converted_at_load(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A url-source model whose original file sits in models_cache/releases (as `pull` leaves it)."""
    spec = ModelSpec(
        "tiny-ibot",
        "hybrid",
        "iBOT",
        VIT,
        dict(TINY),
        "url",
        "https://example.invalid/ibot/tiny_teacher.pth",
        "ibot",
        "apache-2.0",
    )
    monkeypatch.setitem(catalog.BUILTIN, spec.id, spec)
    assert not weights_available(spec)
    enc = tiny_weights(3)
    release = cache / "releases" / "tiny_teacher.pth"
    release.parent.mkdir(parents=True)
    torch.save({"state_dict": enc | {"masked_embed": torch.zeros(1, 32)}}, release)
    assert weights_available(get_spec("tiny-ibot"))
    loaded = load_model("tiny-ibot", device="cpu")
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in enc.items())
    assert loaded.weights_digest == hashlib.sha256(release.read_bytes()).hexdigest()


def test_weights_digest_is_cached_next_to_the_file(tmp_path: Path) -> None:
    torch.save(tiny_weights(), tmp_path / "dino.pth")
    spec = import_checkpoint(tmp_path / "dino.pth", "dino", VIT, "my-dino", "cl", arch_kwargs=TINY)
    weights = Path(spec.location)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert spec.card is not None and spec.card["sha256"] == digest
    assert load_model("my-dino").weights_digest == digest
    sidecar = weights.with_name(weights.name + ".sha256")
    cached = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(cached | {"sha256": "from-the-sidecar"}))
    assert load_model("my-dino").weights_digest == "from-the-sidecar"  # not recomputed


# ------------------------------------------------------------------------------------------- demo / trained
def write_demo(folder: Path, model_id: str, weights: dict[str, Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / f"{model_id}.safetensors"))
    card = {
        "id": model_id,
        "family": "hybrid",
        "arch": VIT,
        "arch_kwargs": TINY,
        "paper": "Park et al. 2023",
        "license": "apache-2.0",
        "description": "tiny demo",
        "weights": f"{model_id}.safetensors",
        "training": {"epochs": 1, "lambda": 0.5},
        "probes": {"linear": 0.3},
    }
    (folder / f"{model_id}.json").write_text(json.dumps(card))


def test_demo_models_are_listed_and_load_offline(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    weights = tiny_weights(1)
    write_demo(demo, "demo-hybrid", weights)
    (demo / "broken.json").write_text("{not json")
    ids = [s.id for s in list_specs()]
    assert "demo-hybrid" in ids and "broken" not in ids
    spec = get_spec("demo-hybrid")
    assert spec.source == "file" and spec.family == "hybrid" and weights_available(spec)
    assert spec.card is not None and spec.card["training"]["lambda"] == 0.5
    loaded = load_model("demo-hybrid")
    assert torch.equal(loaded.model.state_dict()["cls_token"], weights["cls_token"])
    assert not list(demo.glob("*.sha256"))  # the digest cache never writes into the git folder


def test_register_trained(tmp_path: Path) -> None:
    weights = tiny_weights(2)
    save_file(weights, str(tmp_path / "out.safetensors"))
    torch.save(weights, tmp_path / "out.pth")  # a torch.save file is stored as safetensors, not copied
    spec_pth = register_trained(tmp_path / "out.pth", VIT, TINY, "trained-pth", "cl", {})
    assert Path(spec_pth.location).suffix == ".safetensors"
    assert torch.equal(load_model("trained-pth").model.state_dict()["cls_token"], weights["cls_token"])
    card = {"description": "hybrid lambda 0.5", "training": {"lambda": 0.5}, "probes": {"knn": 0.2}}
    spec = register_trained(tmp_path / "out.safetensors", VIT, TINY, "trained-a", "hybrid", card)
    assert Path(spec.location).parent == imported_dir()
    elsewhere = tmp_path / "runs"
    spec_b = register_trained(
        tmp_path / "out.safetensors", VIT, TINY, "trained-b", "mim", card, dest=elsewhere
    )
    assert Path(spec_b.location) == elsewhere / "trained-b.safetensors"
    spec_demo = register_trained(
        tmp_path / "out.safetensors", VIT, TINY, "trained-demo", "cl", card, dest=tmp_path / "demo"
    )
    listed = {s.id: s for s in list_specs()}
    assert {"trained-a", "trained-b", "trained-demo"} <= set(listed)
    assert listed["trained-b"].card is not None and listed["trained-b"].card["probes"] == {"knn": 0.2}
    for model_id in ("trained-a", "trained-b", spec_demo.id):
        assert torch.equal(load_model(model_id).model.state_dict()["norm.bias"], weights["norm.bias"])
    with pytest.raises(BadRequest, match="built-in"):
        register_trained(tmp_path / "out.safetensors", VIT, TINY, "random-vit-s16", "baseline", card)


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend.cli, "COMMAND_MODULES", ["models"])  # only this subcommand is under test


@pytest.mark.usefixtures("cli")
def test_cli_list_import_pull(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert backend.cli.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["ID", "FAMILY", "ARCH", "AVAILABLE", "LICENCE"]
    rows = [re.split(r"\s{2,}", line) for line in out.splitlines()]  # cells are 2+ spaces apart
    assert ["mae-vit-b16", "mim", "ViT-Base/16 at 224 px", "no"] in [row[:4] for row in rows]

    torch.save(tiny_weights(), tmp_path / "dino.pth")
    dino = str(tmp_path / "dino.pth")
    argv = [
        "models",
        "import",
        dino,
        "--format",
        "dino",
        "--arch",
        VIT,
        "--as",
        "cli-dino",
        "--arch-kwargs",
        json.dumps(TINY),
    ]
    assert backend.cli.main(argv) == 0
    assert "imported cli-dino (cl," in capsys.readouterr().out
    assert backend.cli.main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(re.split(r"\s{2,}", line) for line in lines if line.startswith("cli-dino "))
    assert row[1:4] == ["cl", "ViT/16 at 32 px (embed_dim 32, depth 2, heads 2)", "yes"]

    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert (
        backend.cli.main(
            ["models", "import", str(tmp_path / "junk.pth"), "--format", "mae", "--arch", VIT, "--as", "junk"]
        )
        == 2
    )
    assert "not a PyTorch checkpoint" in capsys.readouterr().err
    assert backend.cli.main(["models", "import", dino, "--format", "timm", "--arch", VIT, "--as", "x"]) == 2
    assert "--family is required" in capsys.readouterr().err

    assert backend.cli.main(["models", "pull", "mae-vit-b16", "--no-progress"]) == 2
    assert "offline" in capsys.readouterr().err
    assert backend.cli.main(["models", "pull", "random-vit-s16"]) == 2
