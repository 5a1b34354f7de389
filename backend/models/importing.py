"""Import original checkpoints and register trained weights: safetensors + a JSON card in the models cache.

Cards share one schema with the shipped demo models: id, family, arch, arch_kwargs, paper, license,
description, weights (file name next to the card), sha256, plus provenance (``source`` for imports,
``training``/``probes`` for trained models).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from backend.errors import BadRequest
from backend.models.catalog import (
    BUILTIN,
    FAMILIES,
    IN_NORM,
    PAPERS,
    SIMMIM_BEIT_KWARGS,
    ModelSpec,
    check_name,
    demo_models_dir,
    family_from_tag,
    get_spec,
    imported_dir,
    index_path,
    read_index,
    spec_from_card,
)
from backend.models.converters import FORMATS, convert, convert_timm, load_strict, read_checkpoint
from backend.models.loading import build_model, check_finite
from backend.models.weights import record_digest, sha256_of

# Licences of the original releases (the repos' licences cover their weights).
FORMAT_LICENSES = {
    "mocov3": "cc-by-nc-4.0",
    "mae": "cc-by-nc-4.0",
    "simmim": "mit",
    "dino": "apache-2.0",
    "ibot": "apache-2.0",
    "ijepa": "cc-by-nc-4.0",
}
FORMAT_FAMILIES = {
    "mocov3": "cl",
    "dino": "cl",
    "mae": "mim",
    "simmim": "mim",
    "ibot": "hybrid",
    "ijepa": "mim",
}


def default_family(fmt: str, arch: str, name: str) -> str | None:
    """Family implied by the target id or the format; None when it must be given (timm files, no tag)."""
    if name in BUILTIN:
        return BUILTIN[name].family
    if fmt in FORMAT_FAMILIES:
        return FORMAT_FAMILIES[fmt]
    base, _, tag = arch.partition(".")
    return family_from_tag(base, tag)[0] if tag else None


def default_arch_kwargs(fmt: str, arch: str) -> dict[str, Any]:
    base = arch.partition(".")[0]
    kwargs: dict[str, Any] = {}
    if fmt == "mocov3" and base == "vit_small_patch16_224":
        kwargs["num_heads"] = 12  # MoCo v3 ViT-S has 12 heads (head dim 32)
    if fmt == "simmim" and base.startswith("beit"):
        kwargs.update(SIMMIM_BEIT_KWARGS)
    if fmt != "timm":
        kwargs.update(IN_NORM)  # every original release format was trained with ImageNet mean/std
    return kwargs


def _merge(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **given}
    overlay = {**defaults.get("pretrained_cfg_overlay", {}), **given.get("pretrained_cfg_overlay", {})}
    if overlay:
        merged["pretrained_cfg_overlay"] = overlay
    return merged


def _check_new_name(name: str, family: str, *, allow_demo: bool = False) -> None:
    check_name(name)
    if family not in FAMILIES:
        raise BadRequest(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    import timm.models as tm

    if tm.is_model(name):
        raise BadRequest(f"{name!r} is a timm model name; choose another name for the imported model")
    demo = demo_models_dir() / f"{name}.json"
    if demo.is_file() and not allow_demo:
        raise BadRequest(f"{name!r} is a shipped demo model ({demo}); choose another name")


def _atomic_write(dest: Path, write: Callable[[Path], object]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_safetensors(state_dict: dict[str, Tensor], dest: Path) -> None:
    """Original dtypes; clones because safetensors refuses tensors that share storage."""
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    _atomic_write(dest, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))


def _write_card(card: dict[str, Any], card_path: Path) -> None:
    _atomic_write(card_path, lambda p: p.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n"))


def _add_to_index(model_id: str, card_path: Path) -> None:
    models = read_index()
    models[model_id] = str(card_path.resolve())
    _atomic_write(index_path(), lambda p: p.write_text(json.dumps({"models": models}, indent=2) + "\n"))


def import_checkpoint(
    path: Path,
    fmt: str,
    arch: str,
    name: str,
    family: str,
    *,
    trusted: bool = False,
    arch_kwargs: dict[str, Any] | None = None,
) -> ModelSpec:
    """Convert an original checkpoint, validate it by a strict load into ``arch``, and save it as
    ``models_cache/imported/<name>.safetensors`` (original dtypes) + ``<name>.json``.

    ``name`` may be a built-in url/manual/timm id (e.g. ``simmim-vit-b16``): the built-in arch and kwargs are
    used and the model becomes available offline. ``arch_kwargs`` (e.g. a tiny test ViT) are merged over the
    format's defaults (MoCo v3 ViT-S 12 heads, SimMIM Beit kwargs, ImageNet mean/std).
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise BadRequest(f"unknown checkpoint format {fmt!r}; allowed: {', '.join(FORMATS)}")
    target = BUILTIN.get(name)
    if target is not None:
        if target.source == "random":
            raise BadRequest(f"{name!r} is a random-init baseline; import under another name")
        if arch.partition(".")[0] != target.arch.partition(".")[0]:
            raise BadRequest(f"{name!r} is a {target.arch}; got --arch {arch}")
        if family != target.family:
            raise BadRequest(f"{name!r} is in family {target.family!r}; got {family!r}")
        arch, kwargs = target.arch, _merge(target.arch_kwargs, arch_kwargs or {})
        paper, license_ = target.paper, target.license
    else:
        _check_new_name(name, family)
        kwargs = _merge(default_arch_kwargs(fmt, arch), arch_kwargs or {})
        paper, license_ = PAPERS[fmt], FORMAT_LICENSES.get(fmt, "unknown: see the original release")

    state_dict = load_strict(
        build_model(arch, kwargs), convert(read_checkpoint(path, trusted=trusted), fmt), fmt, arch
    )
    check_finite(state_dict, path.name)  # NaN / Inf weights would only show up as NaN results later
    weights = imported_dir() / f"{name}.safetensors"
    _save_safetensors(state_dict, weights)
    card = {
        "id": name,
        "family": family,
        "arch": arch,
        "arch_kwargs": kwargs,
        "paper": paper,
        "license": license_,
        "description": target.description if target else f"Imported from {path.name} ({fmt} format).",
        "weights": weights.name,
        "sha256": record_digest(weights, "import"),
        "source": {"file": path.name, "format": fmt, "sha256": sha256_of(path), "trusted": trusted},
        "imported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_card(card, weights.with_suffix(".json"))
    return get_spec(name)


def register_trained(
    weights: Path,
    arch: str,
    arch_kwargs: dict[str, Any],
    name: str,
    family: str,
    card: dict[str, Any],
    *,
    dest: Path | None = None,
) -> ModelSpec:
    """Register safetensors weights (timm keys) from the trainer with its card (training, probes, ...).

    Validated by a strict load; copied to ``dest/<name>.safetensors`` (default ``models_cache/imported``) with
    ``dest/<name>.json``. Models outside ``imported/`` and the demo folder are recorded in catalog.json.
    """
    weights = Path(weights)
    if name in BUILTIN:
        raise BadRequest(f"{name!r} is a built-in catalogue id; choose another name")
    folder = Path(dest) if dest is not None else imported_dir()
    _check_new_name(name, family, allow_demo=folder.resolve() == demo_models_dir().resolve())
    model = build_model(arch, arch_kwargs)
    state_dict = load_strict(model, convert_timm(read_checkpoint(weights)), "timm", arch)
    check_finite(state_dict, weights.name)
    target = folder / f"{name}.safetensors"
    if weights.suffix != ".safetensors":  # a torch.save file: store what was validated, never a pickle
        _save_safetensors(state_dict, target)
    elif not (target.exists() and target.resolve() == weights.resolve()):
        _atomic_write(target, lambda p: shutil.copyfile(weights, p))
    full = {
        "paper": "",
        "license": "same as the training data and the code it was trained with",
        "description": "",
        **card,
        "id": name,
        "family": family,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "weights": target.name,
        "sha256": record_digest(target, "register"),
    }
    card_path = target.with_suffix(".json")
    _write_card(full, card_path)
    if folder.resolve() not in (imported_dir().resolve(), demo_models_dir().resolve()):
        _add_to_index(name, card_path)
    return spec_from_card(full, card_path)
