"""The model catalogue: named models, shipped demo models, imported models and any timm ViT name.

A model id resolves in this order: built-in catalogue, demo models (``<repo>/demo_models/*.json``),
imported and trained models (``models_cache/imported/*.json`` plus ``models_cache/catalog.json``), timm ViT
names.
Family of a bare timm name comes from its pretrained tag (``family_from_tag``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from backend.errors import BadRequest, ModelNotFound

log = logging.getLogger(__name__)

# What each model is trained with: contrastive / self-distillation (cl), masked prediction of pixels or
# features (mim), both (hybrid), labels (supervised), autoregressive prediction of the next patches and
# caption tokens (autoregressive: AIMv2), or nothing (baseline).
FAMILIES = ("cl", "mim", "hybrid", "supervised", "autoregressive", "baseline")
SOURCES = ("timm", "url", "manual", "file", "random")

REPO_ROOT = Path(__file__).resolve().parents[2]
IN_MEAN = (0.485, 0.456, 0.406)
IN_STD = (0.229, 0.224, 0.225)
# MoCo v3, SimMIM and iBOT have no timm tag whose cfg carries their (ImageNet) normalisation (WEIGHTS.md 5.5).
IN_NORM = {"pretrained_cfg_overlay": {"mean": IN_MEAN, "std": IN_STD}}
# SimMIM ViT-B/16 as timm Beit: one shared relative position bias, no abs pos embed, layer scale
# (WEIGHTS.md 3.4).
SIMMIM_BEIT_KWARGS: dict[str, Any] = {
    "use_abs_pos_emb": False,
    "use_rel_pos_bias": False,
    "use_shared_rel_pos_bias": True,
    "init_values": 0.1,
    "global_pool": "token",
}
# timm model modules whose models the capture supports (blocks with an `attn` that has `fused_attn`).
VIT_MODULES = ("vision_transformer", "deit", "beit", "eva")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    paper: str
    arch: str  # timm name incl. pretrained tag where one exists
    arch_kwargs: dict[str, Any]
    source: str  # "timm" | "url" | "manual" | "file" | "random"
    location: str  # hub repo / release URL / download page / local path / "seed=<n>"
    converter: str  # "timm" | "mocov3" | "simmim" | "mae" | "dino" | "ibot"
    license: str
    description: str = ""
    untrained: bool = False
    card: dict[str, Any] | None = field(default=None, compare=False)
    # Estimated size in MB (10^6 bytes) of the file `pull` fetches (WEIGHTS.md sections 2-3); None: unknown.
    size_mb: float | None = None


def models_cache_dir() -> Path:
    """``$VITSCOPE_MODELS_CACHE`` or ``<repo>/models_cache``; created on use."""
    path = Path(os.environ.get("VITSCOPE_MODELS_CACHE") or REPO_ROOT / "models_cache").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_models_dir() -> Path:
    """Shipped demo models (``<id>.safetensors`` + ``<id>.json``, in git); ``$VITSCOPE_DEMO_MODELS`` overrides
    the folder. It may be absent."""
    return Path(os.environ.get("VITSCOPE_DEMO_MODELS") or REPO_ROOT / "demo_models").expanduser()


def imported_dir() -> Path:
    return models_cache_dir() / "imported"


def index_path() -> Path:
    """Persisted list of imported / trained models stored outside ``imported/`` (id -> card path)."""
    return models_cache_dir() / "catalog.json"


def check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise BadRequest(
            f"invalid model name {name!r}: use 1-80 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


_MOCOV3 = (
    "Chen, Xie, He. An Empirical Study of Training Self-Supervised Vision Transformers. ICCV 2021 "
    "(arXiv:2104.02057)"
)
_DINO = (
    "Caron et al. Emerging Properties in Self-Supervised Vision Transformers. ICCV 2021 (arXiv:2104.14294)"
)
_MAE = "He et al. Masked Autoencoders Are Scalable Vision Learners. CVPR 2022 (arXiv:2111.06377)"
_SIMMIM = "Xie et al. SimMIM: A Simple Framework for Masked Image Modeling. CVPR 2022 (arXiv:2111.09886)"
_DINOV2 = (
    "Oquab et al. DINOv2: Learning Robust Visual Features without Supervision. TMLR 2024 (arXiv:2304.07193)"
)
_REG = "Darcet et al. Vision Transformers Need Registers. ICLR 2024 (arXiv:2309.16588)"
_IBOT = "Zhou et al. iBOT: Image BERT Pre-Training with Online Tokenizer. ICLR 2022 (arXiv:2111.07832)"
_DEIT = (
    "Touvron et al. Training data-efficient image transformers & distillation through attention. ICML 2021 "
    "(arXiv:2012.12877)"
)
_PARK = "Park et al. What Do Self-Supervised Vision Transformers Learn? ICLR 2023 (arXiv:2305.00729)"
_DINOV3 = "Simeoni et al. DINOv3. arXiv:2508.10104 (2025)"
_IJEPA = (
    "Assran et al. Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture. "
    "CVPR 2023 (arXiv:2301.08243)"
)
_EVA02 = "Fang et al. EVA-02: A Visual Representation for Neon Genesis. IVC 2024 (arXiv:2303.11331)"
_AIMV2 = (
    "Fini et al. Multimodal Autoregressive Pre-training of Large Vision Encoders. CVPR 2025 "
    "(arXiv:2411.14402)"
)
PAPERS = {
    "mocov3": _MOCOV3,
    "dino": _DINO,
    "mae": _MAE,
    "simmim": _SIMMIM,
    "ibot": _IBOT,
    "ijepa": _IJEPA,
    "timm": "",
}

_MOCO_URL = "https://dl.fbaipublicfiles.com/moco-v3/vit-{s}-300ep/vit-{s}-300ep.pth.tar"
_IBOT_URL = (
    "https://lf3-nlp-opensource.bytetos.com/obj/nlp-opensource/archive/2022/ibot/{d}/checkpoint_teacher.pth"
)
SIMMIM_FILE = "simmim_pretrain__vit_base__img224__800ep.pth"
_SIMMIM_PAGE = (
    "https://drive.google.com/file/d/1dJn6GYkwMIcoP3zqOEyW1_iQfpBi8UOw/view (see github.com/microsoft/SimMIM)"
)
_DINOV2_224 = {"pretrained_cfg_overlay": {"input_size": (3, 224, 224)}}  # not img_size: WEIGHTS.md 5.4 trap 4

# Estimated file sizes in MB (10^6 bytes), from WEIGHTS.md: fp32 ViT-S/16 86.7 (88.2 with the 1000-class
# head; DINOv2 ViT-S/14 88.2), ViT-B/16 343 (346 with a head), SimMIM ViT-B about 345. A MoCo v3 release file
# holds base + momentum encoders, projectors and predictor: ViT-B about 863 (team notes), ViT-S computed the
# same way (about 84 M fp32 values: 337).
_MB_S, _MB_S_HEAD, _MB_B, _MB_B_HEAD = 86.7, 88.2, 343.0, 346.0
_MB_DINOV2_S, _MB_MOCO_S, _MB_MOCO_B, _MB_SIMMIM = 88.2, 337.0, 863.0, 345.0
# Newer families: fp32 parameters of the timm architecture (counted on the meta device; DINOv3-S 86.4 and
# EVA-02 sizes agree with WEIGHTS.md 2.1). The I-JEPA release is a training checkpoint (encoder, target
# encoder, predictor, AdamW moments: facebookresearch/ijepa src/train.py save_checkpoint): about 2 x 2523 MB
# encoders + 89 MB predictor + 2 x 2616 MB moments, an estimate from that layout, not a measured file.
_MB_DINOV3 = {"s": 86.3, "b": 342.6, "l": 1212.3}
_MB_EVA02 = {"t": 22.0, "s": 86.5, "b": 343.0}
_MB_IJEPA_H, _MB_AIMV2_L = 10368.0, 1236.8
_IJEPA_URL = "https://dl.fbaipublicfiles.com/ijepa/IN1K-vit.h.14-300e.pth.tar"
DINOV3_LICENSE = "dinov3-license (ai.meta.com/resources/models-and-libraries/dinov3-license)"


def _timm(
    model_id: str,
    family: str,
    paper: str,
    arch: str,
    license: str,
    description: str,
    size_mb: float,
    arch_kwargs: dict[str, Any] | None = None,
) -> ModelSpec:
    hub_repo = f"timm/{arch}"
    return ModelSpec(
        model_id,
        family,
        paper,
        arch,
        arch_kwargs or {},
        "timm",
        hub_repo,
        "timm",
        license,
        description,
        size_mb=size_mb,
    )


def _release(
    model_id: str,
    family: str,
    paper: str,
    arch: str,
    arch_kwargs: dict[str, Any],
    url: str,
    converter: str,
    license: str,
    description: str,
    size_mb: float,
) -> ModelSpec:
    return ModelSpec(
        model_id,
        family,
        paper,
        arch,
        arch_kwargs,
        "url",
        url,
        converter,
        license,
        description,
        size_mb=size_mb,
    )


_BUILTIN: tuple[ModelSpec, ...] = (
    _release(
        "mocov3-vit-s16",
        "cl",
        _MOCOV3,
        "vit_small_patch16_224",
        {"num_heads": 12, **IN_NORM},
        _MOCO_URL.format(s="s"),
        "mocov3",
        "cc-by-nc-4.0",
        "MoCo v3 ViT-S/16, 300 ep IN-1k, base encoder; 12 heads (head dim 32), frozen random patch embed.",
        _MB_MOCO_S,
    ),
    _release(
        "mocov3-vit-b16",
        "cl",
        _MOCOV3,
        "vit_base_patch16_224",
        dict(IN_NORM),
        _MOCO_URL.format(s="b"),
        "mocov3",
        "cc-by-nc-4.0",
        "MoCo v3 ViT-B/16, 300 ep IN-1k, base (online) encoder; the paper's CL model.",
        _MB_MOCO_B,
    ),
    _timm(
        "dino-vit-s16",
        "cl",
        _DINO,
        "vit_small_patch16_224.dino",
        "apache-2.0",
        "DINO ViT-S/16 teacher backbone, IN-1k.",
        _MB_S,
    ),
    _timm(
        "dino-vit-b16",
        "cl",
        _DINO,
        "vit_base_patch16_224.dino",
        "apache-2.0",
        "DINO ViT-B/16 teacher backbone, IN-1k.",
        _MB_B,
    ),
    _timm(
        "mae-vit-b16",
        "mim",
        _MAE,
        "vit_base_patch16_224.mae",
        "cc-by-nc-4.0 (non-commercial)",
        "MAE ViT-B/16 encoder (pretrain only, norm-pix loss), IN-1k.",
        _MB_B,
    ),
    ModelSpec(
        "simmim-vit-b16",
        "mim",
        _SIMMIM,
        "beit_base_patch16_224",
        {**SIMMIM_BEIT_KWARGS, **IN_NORM},
        "manual",
        _SIMMIM_PAGE,
        "simmim",
        "mit",
        f"SimMIM ViT-B/16, 800 ep IN-1k (the paper's MIM model), as timm Beit with one shared relative "
        f"position bias. Google Drive only: download {SIMMIM_FILE} by hand and import it.",
        size_mb=_MB_SIMMIM,
    ),
    _timm(
        "dinov2-vit-s14",
        "hybrid",
        _DINOV2,
        "vit_small_patch14_dinov2.lvd142m",
        "apache-2.0",
        "DINOv2 ViT-S/14 (DINO + iBOT losses, LVD-142M, distilled from ViT-g), run at 224 px (16x16).",
        _MB_DINOV2_S,
        _DINOV2_224,
    ),
    _timm(
        "dinov2-vit-s14-reg4",
        "hybrid",
        f"{_DINOV2}; {_REG}",
        "vit_small_patch14_reg4_dinov2.lvd142m",
        "apache-2.0",
        "DINOv2 ViT-S/14 with 4 register tokens (5 prefix tokens), run at 224 px.",
        _MB_DINOV2_S,
        _DINOV2_224,
    ),
    _release(
        "ibot-vit-s16",
        "hybrid",
        _IBOT,
        "vit_small_patch16_224",
        dict(IN_NORM),
        _IBOT_URL.format(d="vits_16"),
        "ibot",
        "apache-2.0",
        "iBOT ViT-S/16 teacher backbone, IN-1k.",
        _MB_S,
    ),
    _release(
        "ibot-vit-b16",
        "hybrid",
        _IBOT,
        "vit_base_patch16_224",
        dict(IN_NORM),
        _IBOT_URL.format(d="vitb_16"),
        "ibot",
        "apache-2.0",
        "iBOT ViT-B/16 teacher backbone, IN-1k: CL (DINO loss) + MIM (masked-token loss) at /16.",
        _MB_B,
    ),
    _timm(
        "deit-vit-s16",
        "supervised",
        _DEIT,
        "deit_small_patch16_224.fb_in1k",
        "apache-2.0",
        "DeiT-S/16 supervised on IN-1k (same architecture as DINO ViT-S), head removed.",
        _MB_S_HEAD,
    ),
    _timm(
        "deit-vit-b16",
        "supervised",
        _DEIT,
        "deit_base_patch16_224.fb_in1k",
        "apache-2.0",
        "DeiT-B/16 supervised on IN-1k, head removed.",
        _MB_B_HEAD,
    ),
    *(
        _timm(
            f"dinov3-vit-{s}16",
            "hybrid",
            _DINOV3,
            f"vit_{size}_patch16_dinov3.lvd1689m",
            DINOV3_LICENSE,
            f"DINOv3 ViT-{s.upper()}/16 (DINO + iBOT + KoLeo losses, Gram anchoring, LVD-1689M, distilled "
            "from ViT-7B): RoPE (no absolute position embedding), CLS + 4 registers, 256 px (16x16).",
            _MB_DINOV3[s],
        )
        for s, size in (("s", "small"), ("b", "base"), ("l", "large"))
    ),
    _release(
        "ijepa-vit-h14",
        "mim",
        _IJEPA,
        "vit_huge_patch14_gap_224.in1k_ijepa",
        {},
        _IJEPA_URL,
        "ijepa",
        "cc-by-nc-4.0 (non-commercial)",
        "I-JEPA ViT-H/14, 300 ep IN-1k, target encoder: predicts the representations of masked blocks "
        "from a context block (masked prediction in feature space, no pixels). No CLS token (avg pool): "
        "query a patch or use the mean.",
        _MB_IJEPA_H,
    ),
    *(
        _timm(
            f"eva02-vit-{s}14-mim",
            "mim",
            _EVA02,
            f"eva02_{size}_patch14_224.mim_in22k",
            "mit",
            f"EVA-02 ViT-{s.upper()}/14 MIM pretrain on IN-22k: masked tokens regress the features of an "
            "EVA-CLIP teacher (MIM with a language-supervised target); RoPE + absolute position embedding.",
            _MB_EVA02[s],
        )
        for s, size in (("t", "tiny"), ("s", "small"), ("b", "base"))
    ),
    _timm(
        "aimv2-vit-l14",
        "autoregressive",
        _AIMV2,
        "aimv2_large_patch14_224.apple_pt",
        "apple-ascl",
        "AIMv2 ViT-L/14: a causal multimodal decoder predicts the next image patches (pixels) and "
        "caption tokens from this encoder's prefix-attention features. No CLS token: query a patch or use "
        "the mean.",
        _MB_AIMV2_L,
    ),
    ModelSpec(
        "random-vit-s16",
        "baseline",
        _PARK,
        "vit_small_patch16_224",
        dict(IN_NORM),
        "random",
        "seed=0",
        "timm",
        "n/a (random initialisation, no weights)",
        "Untrained: ViT-S/16 with timm's random init (seed 0); the no-learning baseline.",
        untrained=True,
    ),
)
BUILTIN: dict[str, ModelSpec] = {s.id: s for s in _BUILTIN}

# `vitscope models pull --preset NAME`: named sets of catalogue ids, fetched in this order.
PRESETS: dict[str, tuple[str, ...]] = {
    # The paper's ViT-B/16 set: CL (MoCo v3, DINO), MIM (SimMIM, MAE), hybrid (iBOT), supervised (DeiT).
    "paper": (
        "mocov3-vit-b16",
        "simmim-vit-b16",
        "mae-vit-b16",
        "dino-vit-b16",
        "ibot-vit-b16",
        "deit-vit-b16",
    ),
    # Small and quick, all timm downloads: CL (DINO ViT-S), hybrid (DINOv2 ViT-S), supervised (DeiT-S).
    "small": ("dino-vit-s16", "dinov2-vit-s14", "deit-vit-s16"),
    # Beyond the paper: DINOv3 (hybrid, RoPE + registers), I-JEPA and EVA-02 (MIM in feature space), AIMv2
    # (autoregressive).
    "modern": ("dinov3-vit-s16", "dinov3-vit-b16", "ijepa-vit-h14", "eva02-vit-b14-mim", "aimv2-vit-l14"),
}


# ---------------------------------------------------------------------------------------------- cards
def _tuples(value: Any) -> Any:
    """JSON turns tuples into lists; timm cfgs (input_size, mean, std) expect tuples."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def read_card(card_path: Path) -> dict[str, Any]:
    card = json.loads(card_path.read_text())
    if not isinstance(card, dict):
        raise ValueError("a model card must be a JSON object")
    return card


def spec_from_card(card: dict[str, Any], card_path: Path) -> ModelSpec:
    """A card (demo, imported or trained model) names its safetensors file relative to the card."""
    model_id = str(card.get("id") or card_path.stem)
    family = str(card["family"])
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {FAMILIES}")
    weights = card_path.parent / str(card.get("weights") or f"{model_id}.safetensors")
    return ModelSpec(
        id=model_id,
        family=family,
        paper=str(card.get("paper", "")),
        arch=str(card["arch"]),
        arch_kwargs=_tuples(dict(card.get("arch_kwargs") or {})),
        source="file",
        location=str(weights),
        converter="timm",
        license=str(card.get("license", "unknown")),
        description=str(card.get("description", "")),
        untrained=bool(card.get("untrained", False)),
        card=card,
    )


def _cards_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def read_index() -> dict[str, str]:
    try:
        data = json.loads(index_path().read_text())
        return {str(k): str(v) for k, v in data.get("models", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _card_paths() -> list[tuple[str, Path]]:
    """(origin, card path) for demo cards, then imported cards, then cards the index points to elsewhere."""
    found = [("demo", p) for p in _cards_in(demo_models_dir())]
    found += [("imported", p) for p in _cards_in(imported_dir())]
    seen = {p.resolve() for _, p in found}
    for path in map(Path, read_index().values()):
        if path.is_file() and path.resolve() not in seen:
            found.append(("imported", path))
    return found


def _card_specs() -> tuple[dict[str, tuple[str, ModelSpec]], dict[str, dict[str, Any]]]:
    """(origin, spec) by id from cards, and imported cards that carry weights for a built-in id
    (``vitscope models import FILE --as <builtin id>``)."""
    specs: dict[str, tuple[str, ModelSpec]] = {}
    builtin_cards: dict[str, dict[str, Any]] = {}
    for origin, path in _card_paths():
        try:
            card = read_card(path)
            spec = spec_from_card(card, path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping model card %s: %s", path, exc)
            continue
        if spec.id in BUILTIN:
            if origin == "imported":
                builtin_cards[spec.id] = card
            continue
        specs.setdefault(spec.id, (origin, spec))  # demo cards win over imported ones of the same id
    return specs, builtin_cards


# ---------------------------------------------------------------------------------------------- timm names
def family_from_tag(arch: str, tag: str) -> tuple[str, str]:
    """Family of a timm model from its pretrained tag, and a note for the description.

    Pure-pretrain tags map to their method (dino -> cl, mae/mim/ijepa/beit3 pt -> mim, DINOv2/v3 -> hybrid,
    AIMv2 -> autoregressive, CLIP/SigLIP image-text -> cl); any fine-tuned (``_ft_``) or other labelled tag ->
    supervised; no weights (tag ``untrained``) -> baseline.
    """
    if not tag or tag == "untrained":
        return "baseline", "untrained: random init (timm has no weights for it)"
    if "_ft_" in f"_{tag}_" or tag.startswith("ft_"):
        return "supervised", "fine-tuned with labels after pretraining: not a pure pretrain representation"
    if "dinov2" in arch or "dinov3" in arch or tag.startswith(("lvd", "sat")):
        return "hybrid", "DINOv2/v3: DINO image loss + iBOT masked-token loss"
    if tag.startswith("dino"):
        return "cl", "DINO self-distillation"
    if tag.startswith(("mae", "mim")) or "ijepa" in tag or tag in ("pt", "indomain_pt"):
        return "mim", "masked image modelling pretrain"
    if arch.startswith("aimv2"):
        return "autoregressive", "AIMv2: autoregressive prediction of image patches and caption tokens"
    if any(t in tag for t in ("openai", "laion", "datacomp", "dfn", "metaclip", "webli", "commonpool")):
        return "cl", "language-image contrastive pretrain"
    return "supervised", "family guessed from the tag: labelled pretraining"


def _timm_spec(name: str) -> ModelSpec | None:
    import timm.models as tm

    try:
        if not tm.is_model(name):
            return None
        module = tm.model_entrypoint(tm.get_arch_name(name)).__module__.rsplit(".", 1)[-1]
        cfg = tm.get_pretrained_cfg(name, allow_unregistered=False) if module in VIT_MODULES else None
    except RuntimeError:  # unknown tag for a known architecture
        return None
    if cfg is None:
        return None
    arch = f"{cfg.architecture}.{cfg.tag}" if cfg.tag and cfg.tag != "untrained" else str(cfg.architecture)
    family, note = family_from_tag(str(cfg.architecture), cfg.tag or "")
    papers = cfg.paper_ids if isinstance(cfg.paper_ids, list | tuple) else [cfg.paper_ids or ""]
    if cfg.hf_hub_id:
        source, location, untrained = "timm", str(cfg.hf_hub_id), False
    elif cfg.url:
        source, location, untrained = "url", str(cfg.url), False
    else:
        source, location, untrained = "random", "seed=0", True
    return ModelSpec(
        id=name,
        family=family,
        paper=", ".join(map(str, papers)),
        arch=arch,
        arch_kwargs={},
        source=source,
        location=location,
        converter="timm",
        license=str(cfg.license or "see the timm model card"),
        description=f"timm {arch}: {note}",
        untrained=untrained,
    )


# ---------------------------------------------------------------------------------------------- lookup
def _with_card(spec: ModelSpec, card: dict[str, Any] | None) -> ModelSpec:
    """A built-in model whose weights were imported: the card's kwargs are the ones the import validated."""
    if card is None:
        return spec
    return replace(spec, card=card, arch_kwargs=_tuples(dict(card.get("arch_kwargs") or spec.arch_kwargs)))


def get_spec(model_id: str) -> ModelSpec:
    cards, builtin_cards = _card_specs()
    if model_id in BUILTIN:
        return _with_card(BUILTIN[model_id], builtin_cards.get(model_id))
    if model_id in cards:
        return cards[model_id][1]
    spec = _timm_spec(model_id)
    if spec is not None:
        return spec
    known = ", ".join(list(BUILTIN) + sorted(cards))
    raise ModelNotFound(
        f"unknown model {model_id!r}; known ids: {known}; or any timm ViT/DeiT/BEiT/EVA name with an "
        "optional pretrained tag (e.g. vit_small_patch16_224.dino)"
    )


def list_specs() -> list[ModelSpec]:
    """Built-in catalogue, then demo models, then imported / trained models (timm names are not listed)."""
    cards, builtin_cards = _card_specs()
    builtins = [_with_card(s, builtin_cards.get(s.id)) for s in _BUILTIN]
    demo = [spec for origin, spec in cards.values() if origin == "demo"]
    other = [spec for origin, spec in cards.values() if origin != "demo"]
    return builtins + sorted(demo, key=lambda s: s.id) + sorted(other, key=lambda s: s.id)
