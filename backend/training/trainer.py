"""The training loop: fused AdamW + warmup/cosine LR, bf16 autocast on CUDA, optional torch.compile, no host
sync per step (losses are summed on the device and read every ``log_every`` steps), resumable checkpoints,
snapshots of the encoder at chosen epochs with their analyses, and the exported weights + card.

Determinism: the data order of epoch ``e`` comes from a generator seeded with ``(seed, e)`` and every other
random draw from the global generators, whose states are saved in each checkpoint, so a resumed run continues
exactly where the saved one stood.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from backend.training import encoder as enc
from backend.training.data import ImageSet, load_images
from backend.training.objectives import ObjectiveConfig, SelfSupervised, family_for, lam_for
from backend.training.snapshots import analyse_weights

PAPER = (
    "Park, Kim, Heo, Kim, Yun, 'What Do Self-Supervised Vision Transformers Learn?', ICLR 2023 "
    "(arXiv 2305.00729)"
)
CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots"
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


@dataclass
class TrainConfig:
    objective: str = "cl"
    lam: float | None = None
    data: str = "cifar10"
    name: str = "model"
    out: str = "out/train"
    epochs: float = 100.0
    batch_size: int = 256
    lr: float = 5e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    grad_clip: float | None = 3.0
    seed: int = 0
    device: str = "auto"
    encoder: str | None = None  # "vit" | "beit"; None: the objective's (enc.OBJECTIVE_ENCODER)
    pos_embed: str | None = None  # "learnable" | "sincos-fixed" | "none"; None: the encoder's recipe
    patch_size: int = 4
    img_size: int = enc.DEFAULT_IMG_SIZE
    arch_overrides: dict[str, Any] = field(default_factory=dict)  # merged into the timm kwargs (e.g. dims)
    compile: str = "none"  # torch.compile mode of the loss computation, or "none"
    snapshot_epochs: tuple[float, ...] = ()
    analysis_images: int = 128  # test images each snapshot's analyses run on
    max_steps: int | None = None  # caps the schedule too: a short run still ends its cosine
    train_images: int | None = None
    time_budget_s: float | None = None  # fit the step count to this many seconds of measured throughput
    checkpoint_every: int = 500
    log_every: int = 25
    progress: bool = True
    objective_cfg: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    @property
    def lam_value(self) -> float:
        return lam_for(self.objective, self.lam)

    @property
    def encoder_kind(self) -> str:
        return self.encoder or enc.OBJECTIVE_ENCODER[self.objective]

    @property
    def pos_embed_kind(self) -> str:
        return self.pos_embed or enc.ENCODER_POS_EMBED[self.encoder_kind]

    def model_arch(self) -> tuple[str, dict[str, Any]]:
        """timm name and kwargs of the encoder this config trains (what the card stores)."""
        arch, kwargs = enc.arch_for(self.encoder_kind, self.pos_embed_kind, self.patch_size, self.img_size)
        return arch, {**kwargs, **self.arch_overrides}

    @property
    def image_size(self) -> int:
        return int(self.model_arch()[1]["img_size"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(model: SelfSupervised, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW(0.9, 0.95); the fused kernel (one launch for all parameters, step counters on the device) where
    torch has one."""
    return torch.optim.AdamW(
        model.optim_groups(cfg.weight_decay),
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.type in ("cuda", "cpu"),
    )


class Trainer:
    def __init__(self, cfg: TrainConfig, data: ImageSet | None = None, analysis: ImageSet | None = None):
        """``analysis``: the images snapshots are analysed on (default: the test split of ``cfg.data``)."""
        if cfg.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, not {cfg.compile!r}")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 parts (heads, losses) on tensor cores
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(cfg.seed)
        if data is None:
            data = load_images(cfg.data, "train", cfg.image_size)
        self.data = data.subset(cfg.train_images, cfg.seed)
        self.images = self.data.images.to(self.device)  # the whole set lives on the device
        self.lam = cfg.lam_value
        self.arch, self.arch_kwargs = cfg.model_arch()
        encoder = enc.build_encoder(self.arch, self.arch_kwargs, pos_embed=cfg.pos_embed_kind)
        self.model = SelfSupervised(encoder, self.lam, cfg.objective_cfg).to(self.device)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.step_fn: Any = (
            self.model if cfg.compile == "none" else torch.compile(self.model, mode=cfg.compile)
        )
        self._clip_params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.analysis = analysis
        self.snapshots: list[dict[str, Any]] = []
        self.batch_size = min(cfg.batch_size, len(self.data))
        self.steps_per_epoch = max(1, len(self.data) // self.batch_size)  # drop the last partial batch
        self.total_steps = 1
        self.set_epochs(cfg.epochs)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.measured_ips: float | None = None
        self.wall_s = 0.0
        self._perm_epoch = -1
        self._perm: torch.Tensor | None = None

    def set_epochs(self, epochs: float) -> None:
        """Plan the schedule for this many epochs (capped by ``max_steps``); only before the first step."""
        self.total_steps = max(1, math.ceil(epochs * self.steps_per_epoch))
        if self.cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, self.cfg.max_steps)

    # -- schedule and data -------------------------------------------------------------------------
    @property
    def warmup_steps(self) -> int:
        return int(self.cfg.warmup_frac * self.total_steps)

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if step < self.warmup_steps:
            return cfg.lr * (step + 1) / self.warmup_steps
        t = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    def batch_at(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.data), generator=g).to(self.device)
            self._perm_epoch = epoch
        assert self._perm is not None
        idx = self._perm[i * self.batch_size : (i + 1) * self.batch_size]
        return self.images[idx]

    # -- one step ------------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def train_step(self, step: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step; returns the (detached, on-device) loss and its parts. Nothing here waits for
        the device: no ``.item()``, no tensors made from host data."""
        step = self.step if step is None else step
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        self.model.train()
        with self._autocast():
            loss, parts = self.step_fn(self.batch_at(step))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self._clip_params, self.cfg.grad_clip, foreach=True)
        self.optimizer.step()
        self.model.update_momentum(self.model.momentum_at(step, self.total_steps))
        return loss.detach(), {k: v for k, v in parts.items() if isinstance(v, torch.Tensor)}

    def calibrate(self, warmup: int = 3, min_seconds: float = 2.0, max_steps: int = 30) -> float:
        """Images per second of full steps (warm-up first: it includes any compilation). The model, optimizer
        and RNG are put back as they were, so the run itself is unchanged."""
        rng = _rng_state()
        model_state = copy.deepcopy(self.model.state_dict())
        opt_state = copy.deepcopy(self.optimizer.state_dict())
        for i in range(warmup):
            self.train_step(i)
        self._sync()
        t0, n = time.perf_counter(), 0
        while n < max_steps and (n < 3 or time.perf_counter() - t0 < min_seconds):
            self.train_step(warmup + n)
            n += 1
        self._sync()
        ips = n * self.batch_size / (time.perf_counter() - t0)
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(opt_state)
        _set_rng_state(rng)
        self._perm_epoch = -1
        return ips

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self, until: int | None = None) -> None:
        """Train to the end of the schedule (or only up to step ``until``: a run cut short, checkpointed)."""
        cfg = self.cfg
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        if cfg.time_budget_s and self.step == 0:
            self.measured_ips = self.calibrate()
            fit_steps = max(1, int(cfg.time_budget_s * self.measured_ips / self.batch_size))
            self.total_steps = min(self.total_steps, fit_steps)
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not cfg.progress,
            desc=cfg.name,
            unit="step",
            dynamic_ncols=True,
        )
        snapshot_at = self.snapshot_steps()
        t_last, step_last = time.perf_counter(), self.step
        t_start = time.perf_counter()
        window: dict[str, torch.Tensor] = {}  # losses summed on the device since the last log row
        stop = self.total_steps if until is None else min(until, self.total_steps)
        while self.step < stop:
            loss, parts = self.train_step()
            for key, value in {"loss": loss, **parts}.items():
                window[key] = window[key] + value if key in window else value.clone()
            self.step += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == self.total_steps or self.step in snapshot_at:
                n = self.step - step_last
                keys = list(window)
                means = (torch.stack([window[k].float() for k in keys]) / n).tolist()  # the one host sync
                now = time.perf_counter()
                row = {
                    "step": self.step,
                    "lr": self.lr_at(self.step - 1),
                    "images_per_s": n * self.batch_size / max(now - t_last, 1e-9),
                    **dict(zip(keys, means, strict=True)),
                }
                t_last, step_last, window = now, self.step, {}
                self.history.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
            if self.step in snapshot_at:
                self.take_snapshot(snapshot_at[self.step], out)
                self.save_checkpoint(out / CHECKPOINT)
                t_last = time.perf_counter()  # the analysis is not training time
            elif (
                cfg.checkpoint_every
                and self.step % cfg.checkpoint_every == 0
                and self.step < self.total_steps
            ):
                self.save_checkpoint(out / CHECKPOINT)
        bar.close()
        self.wall_s += time.perf_counter() - t_start
        self.save_checkpoint(out / CHECKPOINT)

    # -- snapshots ---------------------------------------------------------------------------------
    def snapshot_steps(self) -> dict[int, float]:
        """Step -> epoch of each snapshot epoch the planned schedule reaches and that is not taken yet."""
        taken = {s["step"] for s in self.snapshots}
        at = {max(1, round(e * self.steps_per_epoch)): float(e) for e in self.cfg.snapshot_epochs}
        return {s: e for s, e in at.items() if s <= self.total_steps and s not in taken}

    def take_snapshot(self, epoch: float, out: Path) -> dict[str, Any]:
        """float16 encoder weights at this epoch and vitscope's analyses of them (capture + compute_metrics on
        the file as the catalogue loads it), recorded for the card."""
        name = f"{self.cfg.name}-ep{epoch:g}"
        path = out / SNAPSHOTS / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._save_encoder(path)
        last = self.history[-1] if self.history else {}
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": self.step,
            "images_seen": self.step * self.batch_size,
            "weights": f"{SNAPSHOTS}/{path.name}",
            "loss": {k: last[k] for k in ("loss", "mim", "cl") if k in last},
        }
        images = self.analysis_set()
        if images is not None:
            card = {
                "id": name,
                "family": family_for(self.lam),
                "arch": self.arch,
                "arch_kwargs": self.card_arch_kwargs(),
            }
            with torch.random.fork_rng(devices=[]):  # building the model must not move the training RNG
                record["metrics"] = analyse_weights(path, card, images.images, self.device, images.source)
        self.snapshots.append(record)
        return record

    def analysis_set(self) -> ImageSet | None:
        if self.analysis is None and self.cfg.analysis_images > 0:
            self.analysis = load_images(self.cfg.data, "test", self.cfg.image_size)
        if self.analysis is None:
            return None
        return self.analysis.subset(self.cfg.analysis_images, self.cfg.seed + 1)

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "rng": _rng_state(),
            "history": self.history,
            "snapshots": self.snapshots,
            "wall_s": self.wall_s,
            "measured_ips": self.measured_ips,
            "config": {k: v for k, v in asdict(self.cfg).items() if k != "objective_cfg"},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["config"]
        for key in ("objective", "encoder", "pos_embed", "patch_size", "batch_size", "seed"):
            if saved.get(key) != getattr(self.cfg, key):
                raise ValueError(
                    f"checkpoint was trained with {key}={saved.get(key)!r}, not {getattr(self.cfg, key)!r}"
                )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.total_steps = int(state["total_steps"])
        self.history = list(state["history"])
        self.snapshots = list(state.get("snapshots", []))
        self.wall_s = float(state.get("wall_s", 0.0))
        self.measured_ips = state.get("measured_ips")
        _set_rng_state(state["rng"])
        self._perm_epoch = -1

    def save_checkpoint(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)  # never a half-written checkpoint

    def load_checkpoint(self, path: Path) -> None:
        # Our own file, but numpy RNG state needs the full unpickler.
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=False))

    # -- export -----------------------------------------------------------------------------------
    def encoder_state(self) -> dict[str, torch.Tensor]:
        return {
            k: v.detach().to("cpu", torch.float16).contiguous()
            for k, v in self.model.encoder.state_dict().items()
        }

    def _save_encoder(self, path: Path) -> None:
        metadata = {"arch": self.arch, "arch_kwargs": json.dumps(self.arch_kwargs)}
        tmp = path.with_suffix(".tmp")
        save_file(self.encoder_state(), str(tmp), metadata=metadata)
        tmp.replace(path)

    def card_arch_kwargs(self) -> dict[str, Any]:
        """The training kwargs plus a timm cfg overlay, so every loader resolves the data config we trained
        with (input size, normalization, no crop)."""
        kwargs = dict(self.arch_kwargs)
        overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
        size = self.cfg.image_size
        overlay.update(
            {
                "input_size": [3, size, size],
                "mean": list(self.model.mean),
                "std": list(self.model.std),
                "crop_pct": 1.0,
                "interpolation": "bilinear",
            }
        )
        kwargs["pretrained_cfg_overlay"] = overlay
        return kwargs

    def encoder_record(self) -> dict[str, Any]:
        kw = self.arch_kwargs
        record: dict[str, Any] = {
            "class": type(self.model.encoder).__name__,
            "patch_size": int(kw["patch_size"]),
            "pos_embed": self.cfg.pos_embed_kind,
            "drop_path": float(kw.get("drop_path_rate", 0.0)),
        }
        if self.cfg.encoder_kind == "beit":
            record["relative_position_bias"] = "one table shared by all blocks"
            record["layer_scale"] = float(kw.get("init_values") or 0.0)
        return record

    def card(self) -> dict[str, Any]:
        cfg, oc = self.cfg, self.cfg.objective_cfg
        last = self.history[-1] if self.history else {}
        epochs = self.step / self.steps_per_epoch
        family = family_for(self.lam)
        training: dict[str, Any] = {
            "objective": cfg.objective,
            "lambda": self.lam,
            "epochs": round(epochs, 3),
            "data": self.data.source,
            "seed": cfg.seed,
            "images_seen": self.step * self.batch_size,
            "steps": self.step,
            "batch_size": self.batch_size,
            "encoder": self.encoder_record(),
            "optimizer": "AdamW(0.9, 0.95)" + (", fused" if self.optimizer.defaults.get("fused") else ""),
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "warmup_steps": self.warmup_steps,
            "schedule": "cosine",
            "precision": "bf16 autocast" if self.device.type == "cuda" else "fp32",
            "compile": cfg.compile,
            "final_loss": {k: last[k] for k in ("loss", "mim", "cl") if k in last},
            "wall_s": round(self.wall_s, 1),
            "device": _device_name(self.device),
            "torch": torch.__version__,
            "timm": timm.__version__,
        }
        if self.model.uses_mim:
            training["mim"] = {
                "method": "SimMIM",
                "mask_ratio": oc.mask_ratio,
                "mask_ratio_actual": self.model.masker.ratio,
                "mask_unit_patches": oc.mask_patches,
                "mask_unit_px": oc.mask_patches * self.model.patch_px,
                "decoder": "linear to patch pixels",
                "loss": "L1 on masked normalized pixels",
            }
        if self.model.uses_cl:
            training["cl"] = {
                "method": "MoCo v3",
                "temperature": oc.temperature,
                "momentum": oc.momentum,
                "momentum_cosine": oc.momentum_cosine,
                "projector": f"3-layer MLP {oc.proj_hidden}-{oc.proj_dim}",
                "predictor": f"2-layer MLP {oc.proj_hidden}-{oc.proj_dim}",
            }
        if self.snapshots:
            training["snapshots"] = self.snapshots
        return {
            "id": cfg.name,
            "family": family,
            "arch": self.arch,
            "arch_kwargs": self.card_arch_kwargs(),
            "paper": PAPER,
            "license": "Apache-2.0 (weights); trained on CIFAR-10 (Krizhevsky, 2009)"
            if cfg.data == "cifar10"
            else "Apache-2.0 (weights)",
            "description": _describe(family, self.lam, self.data.source, epochs, self.encoder_record()),
            "weights": f"{cfg.name}.safetensors",
            "training": training,
            "probes": {},
        }

    def export(self, out: Path | None = None) -> tuple[Path, Path]:
        """float16 safetensors of the encoder (timm keys, strict-loadable) and the model card beside it."""
        out = Path(out or self.cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        card = self.card()
        weights = out / card["weights"]
        self._save_encoder(weights)
        card_path = out / f"{self.cfg.name}.json"
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        (out / "train_log.json").write_text(json.dumps(self.history, indent=1) + "\n")
        return weights, card_path


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()})"


def _describe(family: str, lam: float, data: str, epochs: float, encoder: dict[str, Any]) -> str:
    what = {
        "mim": "SimMIM (masked image modeling)",
        "cl": "MoCo v3 (contrastive learning)",
        "hybrid": f"hybrid (1 - {lam:g}) * SimMIM + {lam:g} * MoCo v3",
    }[family]
    return (
        f"ViT trained by vitscope with {what} on {data} for {epochs:.1f} epochs; timm {encoder['class']}, "
        f"patch {encoder['patch_size']}, position embedding {encoder['pos_embed']}"
        + (", shared relative position bias" if encoder.get("relative_position_bias") else "")
        + "."
    )


def train(cfg: TrainConfig, *, resume: bool = False, data: ImageSet | None = None) -> Trainer:
    """Build, optionally resume, fit and export; returns the trainer (its model, card and history)."""
    trainer = Trainer(cfg, data)
    ckpt = Path(cfg.out) / CHECKPOINT
    if resume and ckpt.exists():
        trainer.load_checkpoint(ckpt)
    trainer.fit()
    trainer.export()
    return trainer


def with_overrides(cfg: TrainConfig, **kw: Any) -> TrainConfig:
    return replace(cfg, **kw)
