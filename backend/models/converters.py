"""Original checkpoint formats -> timm state dicts (no head), and the strict load that validates them.

One converter per format, following WEIGHTS.md sections 3 and 4. Every failure is a ``BadCheckpoint`` that
says which keys were wrong and which layout the format expects.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from backend.errors import BadCheckpoint

StateDict = dict[str, Tensor]

LAYOUTS = {
    "timm": "a timm state dict with keys like 'blocks.0.attn.qkv.weight' (bare, or under 'state_dict' or "
    "'model')",
    "mocov3": "a MoCo v3 main_moco.py checkpoint {'state_dict': {'module.base_encoder.<timm key>', "
    "'module.momentum_encoder.*', 'module.predictor.*'}, 'epoch', 'arch', 'optimizer', ...}",
    "simmim": "a SimMIM checkpoint {'model': {'encoder.<Beit key>', 'encoder.mask_token', 'decoder.0.*'}, "
    "...}",
    "mae": "an MAE checkpoint {'model': {<timm key>}} (encoder-only), or with 'mask_token' and 'decoder_*' "
    "(_full)",
    "dino": "a DINO backbone file (bare timm state dict) or full checkpoint {'teacher': {'backbone.*', "
    "'head.*'}, 'student', ...}",
    "ibot": "an iBOT backbone file {'state_dict': {<timm key>, optional 'masked_embed'}} or full checkpoint "
    "{'teacher': {'backbone.*', 'head.*'}, 'student', ...}",
    "ijepa": "an I-JEPA training checkpoint {'target_encoder': {'module.<timm key>'}, 'encoder', "
    "'predictor', 'opt', 'scaler', 'epoch', ...}",
}
FORMATS = tuple(LAYOUTS)
HEAD_PREFIXES = ("head.", "head_dist.")


def _preview(keys: list[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > n else shown


def _bad(fmt: str, what: str) -> BadCheckpoint:
    return BadCheckpoint(f"not a valid '{fmt}' checkpoint: {what}; expected {LAYOUTS[fmt]}")


def _state_dict(obj: Any, fmt: str, where: str) -> StateDict:
    if not isinstance(obj, Mapping) or not obj:
        raise _bad(fmt, f"{where} is {type(obj).__name__}, not a non-empty dict of tensors")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise _bad(fmt, f"{where} holds entries that are not tensors: {_preview(bad)}")
    return dict(obj)


def _unwrap(raw: Any, key: str, fmt: str) -> StateDict:
    if not isinstance(raw, Mapping) or key not in raw:
        top = _preview(sorted(map(str, raw))) if isinstance(raw, Mapping) else type(raw).__name__
        raise _bad(fmt, f"no '{key}' entry (top level: {top})")
    return _state_dict(raw[key], fmt, f"'{key}'")


def _strip(sd: StateDict, prefix: str, fmt: str, drop: tuple[str, ...] = ()) -> StateDict:
    """Keep keys under ``prefix``, without it, minus those starting with one of ``drop`` (after stripping)."""
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        raise _bad(fmt, f"no keys start with '{prefix}' (keys: {_preview(sorted(sd))})")
    return {k: v for k, v in out.items() if not k.startswith(drop)}


def convert_timm(raw: Any) -> StateDict:
    """Already timm keys; unwrap like timm (EMA first), strip DDP / compile prefixes, drop the head."""
    if isinstance(raw, Mapping):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    sd = _state_dict(raw, "timm", "the checkpoint")
    for prefix in ("module.", "_orig_mod."):
        sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if not k.startswith(HEAD_PREFIXES)}


def convert_mocov3(raw: Any) -> StateDict:
    """Online encoder ``module.base_encoder.*`` minus its projector ``head``; momentum encoder and predictor
    are dropped."""
    return _strip(_unwrap(raw, "state_dict", "mocov3"), "module.base_encoder.", "mocov3", drop=("head.",))


def convert_simmim(raw: Any) -> StateDict:
    """``model.encoder.*`` minus mask_token and the (non-persistent in timm) relative_position_index."""
    sd = _strip(_unwrap(raw, "model", "simmim"), "encoder.", "simmim", drop=("mask_token",))
    return {k: v for k, v in sd.items() if not k.endswith("relative_position_index")}


def convert_mae(raw: Any) -> StateDict:
    """``model`` minus mask_token and every decoder key (left in, timm's filter takes the DINOv2 path)."""
    sd = _unwrap(raw, "model", "mae")
    return {k: v for k, v in sd.items() if k != "mask_token" and not k.startswith("decoder")}


def _teacher_backbone(raw: Mapping[str, Any], fmt: str) -> StateDict:
    # The teacher is what the papers evaluate (facebookresearch/dino#44); ViT teachers carry no `module.`.
    return _strip(_unwrap(raw, "teacher", fmt), "backbone.", fmt)


def convert_dino(raw: Any) -> StateDict:
    """Bare backbone state dict, or a full checkpoint (``teacher``, strip ``backbone.``, drop ``head.*``)."""
    if isinstance(raw, Mapping) and "teacher" in raw:
        return _teacher_backbone(raw, "dino")
    return _state_dict(raw, "dino", "the checkpoint")


def convert_ibot(raw: Any) -> StateDict:
    """``state_dict`` (teacher or student, minus ``masked_embed``) or a full checkpoint's ``teacher``."""
    if isinstance(raw, Mapping) and "teacher" in raw and "state_dict" not in raw:
        sd = _teacher_backbone(raw, "ibot")
    else:
        sd = _unwrap(raw, "state_dict", "ibot")
    return {k: v for k, v in sd.items() if k != "masked_embed"}


def convert_ijepa(raw: Any) -> StateDict:
    """``target_encoder`` minus DDP's ``module.``: the encoder the I-JEPA paper evaluates (timm's own filter
    takes the context ``encoder``); predictor, optimizer state and the context encoder are dropped."""
    return _strip(_unwrap(raw, "target_encoder", "ijepa"), "module.", "ijepa")


CONVERTERS: dict[str, Callable[[Any], StateDict]] = {
    "timm": convert_timm,
    "mocov3": convert_mocov3,
    "simmim": convert_simmim,
    "mae": convert_mae,
    "dino": convert_dino,
    "ibot": convert_ibot,
    "ijepa": convert_ijepa,
}


def convert(raw: Any, fmt: str) -> StateDict:
    if fmt not in CONVERTERS:
        raise BadCheckpoint(f"unknown checkpoint format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return CONVERTERS[fmt](raw)


# ------------------------------------------------------------------------------------------- reading files
def sniff_format(path: Path) -> str:
    """What a file holds, from its first bytes (never its name): "safetensors", "zip" (a torch.save
    checkpoint), "pickle" (a legacy torch.save file or a raw pickle), or "unknown"."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    size = path.stat().st_size
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) == 9 and head[8:9] == b"{" and 8 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"  # an 8-byte little-endian header length, then the JSON header
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"  # PROTO opcode with a protocol number
    return "unknown"


def read_checkpoint(path: Path, *, trusted: bool = False) -> Any:
    """safetensors via safetensors.torch; pickles with ``weights_only=True`` (+ argparse.Namespace, which DINO
    and iBOT full checkpoints hold). ``trusted`` allows any pickle (still needs the referenced modules).
    The format is read from the file's first bytes, not from its extension."""
    path = Path(path)
    if not path.is_file():
        raise BadCheckpoint(f"checkpoint file {str(path)!r} does not exist or is not a file")
    kind = sniff_format(path)
    if kind == "unknown":
        raise BadCheckpoint(
            f"{path.name} is not a PyTorch checkpoint or safetensors file: its first bytes are neither a "
            "safetensors header, a zip checkpoint (torch.save) nor a pickle (a legacy torch.save file)"
        )
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise BadCheckpoint(f"{path.name} is not a readable safetensors file: {exc}") from exc
    try:
        # An open file, not the path: torch picks a loader from a ".safetensors" name.
        with torch.serialization.safe_globals([argparse.Namespace]), open(path, "rb") as fh:
            return torch.load(fh, map_location="cpu", weights_only=True)
    except Exception as exc:  # bad files raise UnpicklingError, KeyError, RuntimeError, EOFError, ...
        unsafe = _unsafe_globals(path, kind)
        if not unsafe:
            raise BadCheckpoint(
                f"{path.name} is not a PyTorch checkpoint or safetensors file ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''})"
            ) from exc
        if not trusted:
            raise BadCheckpoint(
                f"{path.name} needs pickle globals that are not allowed when loading untrusted files: "
                f"{', '.join(unsafe)}. Only if you trust the file, import it with --trusted "
                "(import_checkpoint(..., trusted=True)); it is then converted to safetensors once."
            ) from exc
    try:
        with open(path, "rb") as fh:
            return torch.load(fh, map_location="cpu", weights_only=False)  # trusted by the user
    except (ModuleNotFoundError, AttributeError) as exc:
        raise BadCheckpoint(f"{path.name} needs code that is not installed to unpickle: {exc}") from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise BadCheckpoint(f"{path.name} could not be unpickled: {exc}") from exc


def _allowed_globals() -> set[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except (ImportError, AttributeError):  # a torch without it: report every global
        allowed = set()
    return allowed | {"argparse.Namespace"}


def _unsafe_globals(path: Path, kind: str) -> list[str]:
    """Globals the file's pickles name that weights_only refuses, found without running them."""
    if kind == "zip":
        try:
            with open(path, "rb") as fh:
                return list(torch.serialization.get_unsafe_globals_in_checkpoint(fh))
        except Exception:  # a damaged zip
            return []
    allowed = _allowed_globals()
    return [g for g in _pickle_globals(path) if g not in allowed]


def _pickle_globals(path: Path, max_pickles: int = 8) -> list[str]:
    """``module.name`` of every GLOBAL / STACK_GLOBAL in the pickles at the start of a file (a legacy
    torch.save file is several pickles in a row, then raw storage bytes), read with pickletools: no code
    runs."""
    import pickletools

    found: list[str] = []
    with open(path, "rb") as fh:
        for _ in range(max_pickles):
            strings: list[str] = []
            try:
                for op, arg, _pos in pickletools.genops(fh):
                    if op.name == "GLOBAL":
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
            except Exception:  # the end of the pickles (storage bytes) or a damaged file
                break
    return list(dict.fromkeys(found))


# ------------------------------------------------------------------------------------------- strict load
def arch_filter(sd: StateDict, model: nn.Module) -> StateDict:
    """The model's timm ``checkpoint_filter_fn`` (pos-embed / rel-pos / patch-embed resize, key renames)."""
    module = sys.modules.get(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    return dict(filter_fn(sd, model)) if filter_fn is not None else sd


def load_strict(model: nn.Module, sd: StateDict, fmt: str, arch: str) -> StateDict:
    """Filter, drop any head (models are built with num_classes=0), load, and require an exact key match.

    Returns the state dict as loaded (after the filter). Raises BadCheckpoint listing the offending keys.
    """
    try:
        sd = arch_filter(sd, model)
    except Exception as exc:  # timm filters raise anything (KeyError, AttributeError, ...) on bad input
        raise _bad(fmt, f"timm's checkpoint filter for {arch} failed ({type(exc).__name__}: {exc})") from exc
    sd = {k: v for k, v in sd.items() if not k.startswith(HEAD_PREFIXES)}
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        raise BadCheckpoint(
            f"checkpoint ({fmt}) does not fit {arch}: {' '.join(str(exc).split())} Check --arch and its "
            "kwargs (embed dim, depth, patch size)"
        ) from exc
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = [f"missing keys: {_preview(missing)}"] if missing else []
        parts += [f"unexpected keys: {_preview(unexpected)}"] if unexpected else []
        raise BadCheckpoint(
            f"checkpoint does not fit {arch} as format '{fmt}': {'; '.join(parts)}. Expected {LAYOUTS[fmt]}"
        )
    return sd
