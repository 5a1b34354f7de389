"""Build a timm model for a spec and load its weights strictly, ready for capture (eval, unfused attn)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from backend.errors import (
    BadRequest,
    ModelNotFound,
    ModelTooLarge,
    NonFiniteWeights,
    RandomInitDisabled,
    UnsupportedArchitecture,
)
from backend.models.catalog import BUILTIN, ModelSpec, get_spec
from backend.models.converters import convert, load_strict, read_checkpoint
from backend.models.weights import file_digest, find_weights, pull_spec, unavailable


@dataclass
class LoadedModel:
    model: nn.Module
    spec: ModelSpec
    data_config: dict[str, Any]  # timm resolve_model_data_config: input_size, mean, std, crop_pct, ...
    weights_digest: str  # sha256 of the weights file, or "random-seed-<n>"
    num_parameters: int
    nbytes: int  # parameters + buffers


def build_model(arch: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    """Random-init timm model without a head. The full tag name gives the right pretrained_cfg (mean/std)."""
    import timm

    kwargs = {**arch_kwargs, "num_classes": 0}
    try:
        return timm.create_model(arch, pretrained=False, **kwargs)
    except RuntimeError as exc:  # "Unknown model" / "Invalid pretrained tag"
        raise ModelNotFound(f"timm cannot build {arch!r}: {exc}") from exc
    except TypeError as exc:
        raise BadRequest(f"architecture kwargs {kwargs} do not fit {arch}: {exc}") from exc


# (arch, kwargs) -> (bytes, why the capture cannot trace it or ""): refusals are remembered too.
_ARCH_BYTES: dict[str, tuple[int, str]] = {}


def _measure(arch: str, arch_kwargs: dict[str, Any]) -> tuple[int, str]:
    from backend.capture import _attention_module, _blocks

    # The meta device allocates nothing: a 1.8 B-parameter ViT is sized in a fraction of a second.
    with torch.device("meta"):
        model = build_model(arch, arch_kwargs)
    nbytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    try:
        for block in _blocks(model):
            _attention_module(block)
    except TypeError as exc:
        return nbytes, str(exc)
    return nbytes, ""


def architecture_bytes(arch: str, arch_kwargs: dict[str, Any]) -> int:
    """Bytes of parameters and buffers of ``arch`` built with ``arch_kwargs``, without allocating them.

    Raises UnsupportedArchitecture when the capture could not trace it, ModelNotFound / BadRequest as
    ``build_model`` does.
    """
    key = f"{arch} {json.dumps(arch_kwargs, sort_keys=True, default=str)}"
    found = _ARCH_BYTES.get(key)
    if found is None:
        found = _ARCH_BYTES[key] = _measure(arch, arch_kwargs)
        while len(_ARCH_BYTES) > 512:
            del _ARCH_BYTES[next(iter(_ARCH_BYTES))]
    nbytes, why = found
    if why:
        raise UnsupportedArchitecture(
            f"{arch} cannot be analysed: {why}. vitscope traces timm ViT, DeiT, BEiT and EVA models whose "
            "blocks each have one attention module (parallel-block variants such as *_18x2_* and *_xp_* "
            "do not)"
        )
    return nbytes


def check_loadable(spec: ModelSpec, *, max_bytes: int | None = None, allow_random_init: bool = True) -> int:
    """Refuse, before any weights are read or tensors allocated, what the server must not build.

    ``max_bytes``: the model memory bound; ``allow_random_init`` False refuses timm names that have no
    weights (the catalogue's random baseline stays allowed). Returns the model's size in bytes.
    """
    if spec.source == "random" and spec.id not in BUILTIN and not allow_random_init:
        raise RandomInitDisabled(
            f"timm has no weights for {spec.id!r}, and this server does not build random-init models of "
            "arbitrary timm names (VITSCOPE_ALLOW_RANDOM_INIT is off); use a catalogue, demo or imported "
            "model (GET /api/v1/models), or random-vit-s16 for the untrained baseline"
        )
    nbytes = architecture_bytes(spec.arch, spec.arch_kwargs)
    if max_bytes is not None and nbytes > max_bytes:
        raise ModelTooLarge(
            f"{spec.id} needs {nbytes / 2**20:,.0f} MiB for its parameters, more than the "
            f"{max_bytes / 2**20:,.0f} MiB this server keeps for models (VITSCOPE_MODEL_MEMORY_BYTES); "
            "pick a smaller model"
        )
    return nbytes


def check_finite(state_dict: dict[str, torch.Tensor], what: str) -> None:
    """NaN or Inf weights give NaN attention maps and metrics: refuse them where they enter."""
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise NonFiniteWeights(
            f"{what} holds NaN or infinite values in {shown}; every weight must be a finite number "
            "(the checkpoint is damaged or diverged in training)"
        )


def random_seed(spec: ModelSpec) -> int:
    key, _, value = spec.location.partition("=")
    if key != "seed" or not value.isdigit():
        raise BadRequest(f"random model {spec.id!r} needs location 'seed=<n>', got {spec.location!r}")
    return int(value)


def prepare_for_capture(model: nn.Module) -> nn.Module:
    """Eval mode and the non-fused attention path: capture needs the attention probabilities."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            setattr(module, "fused_attn", False)  # noqa: B010 (a Final attribute for type checkers)
    return model.eval()


def load_model(
    model_id: str,
    device: str | torch.device = "cpu",
    *,
    download: bool = False,
    max_bytes: int | None = None,
    allow_random_init: bool = True,
) -> LoadedModel:
    """Load a catalogue / demo / imported model or any timm ViT name.

    Weights absent and ``download`` False (or offline) -> WeightsUnavailable at once, before any network call
    or model construction; ``max_bytes`` and ``allow_random_init`` as in :func:`check_loadable`.
    """
    spec = get_spec(model_id)
    check_loadable(spec, max_bytes=max_bytes, allow_random_init=allow_random_init)
    if spec.source == "random":
        seed = random_seed(spec)
        with torch.random.fork_rng(devices=[]):  # deterministic init without disturbing the caller's RNG
            torch.manual_seed(seed)
            model = build_model(spec.arch, spec.arch_kwargs)
        digest = f"random-seed-{seed}"
    else:
        found = find_weights(spec)
        if found is None:
            if not download:
                raise unavailable(spec)
            pull_spec(spec)
            found = find_weights(spec)
            if found is None:
                raise unavailable(spec, "the download finished but the file is not where it was expected")
        state_dict = convert(read_checkpoint(found.path), found.fmt)
        check_finite(state_dict, f"the weights of {spec.id} ({found.path.name})")
        model = build_model(spec.arch, spec.arch_kwargs)
        load_strict(model, state_dict, found.fmt, spec.arch)
        del state_dict
        digest = file_digest(found.path)
    model = prepare_for_capture(model).to(device)
    import timm.data

    data_config = dict(timm.data.resolve_model_data_config(model))
    data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in data_config.items()}
    # A model built with img_size= (tiny imports, 32 px models) keeps its tag's input_size in the cfg: the
    # input must match the patch embedding's fixed size, so that size wins.
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None and not getattr(model.patch_embed, "dynamic_img_size", False):
        data_config["input_size"] = (3, int(img_size[0]), int(img_size[1]))
    tensors = [*model.parameters(), *model.buffers()]
    return LoadedModel(
        model=model,
        spec=spec,
        data_config=data_config,
        weights_digest=digest,
        num_parameters=sum(p.numel() for p in model.parameters()),
        nbytes=sum(t.numel() * t.element_size() for t in tensors),
    )
