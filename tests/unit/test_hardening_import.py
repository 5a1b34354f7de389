"""Checkpoint imports that must be refused with a message naming why (issue 10, items 7 and 12): non-finite
weights, and pickles that call code, whatever their file name says. Nothing here runs the pickles' code:
a marker file proves it."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file

from backend.errors import BadCheckpoint, NonFiniteWeights
from backend.models import import_checkpoint
from backend.models.converters import read_checkpoint, sniff_format

VIT = "vit_small_patch16_224"
TINY: dict[str, Any] = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITSCOPE_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VITSCOPE_DEMO_MODELS", str(tmp_path / "no_demo_models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny_state() -> dict[str, torch.Tensor]:
    model = timm.create_model(VIT, pretrained=False, num_classes=0, **TINY)
    return {k: v.clone() for k, v in model.state_dict().items()}


class RunsCode:
    """Unpickling this calls os.system (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_non_finite_weights_are_refused_at_import(tmp_path: Path, value: float, suffix: str) -> None:
    state = tiny_state()
    state["blocks.1.mlp.fc1.weight"][3, 2] = value
    path = tmp_path / f"broken{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    with pytest.raises(NonFiniteWeights, match=r"NaN or infinite values in blocks\.1\.mlp\.fc1\.weight"):
        import_checkpoint(path, "timm", VIT, "broken", "cl", arch_kwargs=TINY)
    assert not (tmp_path / "cache" / "imported" / "broken.json").exists()
    # A finite copy of the same file imports.
    state["blocks.1.mlp.fc1.weight"][3, 2] = 0.5
    save_file(state, str(tmp_path / "fine.safetensors"))
    assert import_checkpoint(tmp_path / "fine.safetensors", "timm", VIT, "fine", "cl", arch_kwargs=TINY)


def evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """The same os.system payload as a raw pickle, a legacy torch.save file and a zip torch.save file, each
    also under a misleading name (.safetensors)."""
    payload = {"state_dict": tiny_state(), "extra": RunsCode(marker)}
    files = {"raw": folder / "raw.pkl", "legacy": folder / "legacy.pth", "zip": folder / "zip.pth"}
    files["raw"].write_bytes(pickle.dumps(payload, protocol=4))
    torch.save(payload, files["legacy"], _use_new_zipfile_serialization=False)
    torch.save(payload, files["zip"])
    for kind in list(files):
        renamed = folder / f"{kind}-named.safetensors"
        shutil.copyfile(files[kind], renamed)
        files[f"{kind} as .safetensors"] = renamed
    return files


def test_a_pickle_that_calls_os_system_is_named_blocked_in_every_container(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    for kind, path in evil_files(tmp_path, marker).items():
        with pytest.raises(BadCheckpoint) as info:
            read_checkpoint(path)
        message = str(info.value)
        assert "posix.system" in message and "--trusted" in message, (kind, message)
        assert "not a PyTorch checkpoint" not in message, kind
        with pytest.raises(BadCheckpoint, match="posix.system"):
            import_checkpoint(path, "timm", VIT, f"evil-{kind.split()[0]}", "cl", arch_kwargs=TINY)
    assert not marker.exists()  # no payload ever ran


def test_the_format_is_read_from_the_content_not_the_name(tmp_path: Path) -> None:
    state = tiny_state()
    save_file(state, str(tmp_path / "weights.pth"))  # safetensors bytes behind a .pth name
    torch.save(state, tmp_path / "weights.safetensors")  # a zip checkpoint behind a .safetensors name
    torch.save(state, tmp_path / "old.bin", _use_new_zipfile_serialization=False)
    (tmp_path / "notes.safetensors").write_bytes(b"just some text, no checkpoint at all")
    assert sniff_format(tmp_path / "weights.pth") == "safetensors"
    assert sniff_format(tmp_path / "weights.safetensors") == "zip"
    assert sniff_format(tmp_path / "old.bin") == "pickle"
    assert sniff_format(tmp_path / "notes.safetensors") == "unknown"
    for name in ("weights.pth", "weights.safetensors", "old.bin"):
        loaded = read_checkpoint(tmp_path / name)
        assert torch.equal(loaded["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"]), name
    with pytest.raises(
        BadCheckpoint, match="is not a PyTorch checkpoint or safetensors file: its first bytes"
    ):
        read_checkpoint(tmp_path / "notes.safetensors")
