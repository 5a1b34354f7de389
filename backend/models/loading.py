"""Build a timm model for a spec and load its weights strictly, ready for capture (eval, unfused attn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from backend.errors import BadRequest, ModelNotFound
from backend.models.catalog import ModelSpec, get_spec
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


def load_model(model_id: str, device: str | torch.device = "cpu", *, download: bool = False) -> LoadedModel:
    """Load a catalogue / demo / imported model or any timm ViT name.

    Weights absent and ``download`` False (or offline) -> WeightsUnavailable at once, before any network call
    or model construction.
    """
    spec = get_spec(model_id)
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
