"""The training loop: AdamW + warmup/cosine LR, bf16 autocast on CUDA, resumable checkpoints, exports.

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

PAPER = (
    "Park, Kim, Heo, Kim, Yun, 'What Do Self-Supervised Vision Transformers Learn?', ICLR 2023 "
    "(arXiv 2305.00729)"
)
CHECKPOINT = "checkpoint.pt"


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
    arch: str = enc.DEFAULT_ARCH
    arch_kwargs: dict[str, Any] = field(default_factory=lambda: dict(enc.DEFAULT_ARCH_KWARGS))
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
    def image_size(self) -> int:
        size = self.arch_kwargs.get("img_size", 224)
        return int(size if isinstance(size, int) else size[0])


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


class Trainer:
    def __init__(self, cfg: TrainConfig, data: ImageSet | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        if data is None:
            data = load_images(cfg.data, "train", cfg.image_size)
        self.data = data.subset(cfg.train_images, cfg.seed)
        self.images = self.data.images.to(self.device)
        self.lam = cfg.lam_value
        self.model = SelfSupervised(
            enc.build_encoder(cfg.arch, cfg.arch_kwargs), self.lam, cfg.objective_cfg
        ).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.optim_groups(cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95)
        )
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

    def train_step(
        self,
        model: SelfSupervised | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        step: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        model = model or self.model
        optimizer = optimizer or self.optimizer
        step = self.step if step is None else step
        for group in optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        model.train()
        with self._autocast():
            loss, parts = model(self.batch_at(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], self.cfg.grad_clip
            )
        optimizer.step()
        model.update_momentum(model.momentum_at(step, self.total_steps))
        return loss.detach(), parts

    def calibrate(self, warmup: int = 3, min_seconds: float = 2.0, max_steps: int = 30) -> float:
        """Images per second on a throw-away copy (model, optimizer and RNG are left as they were)."""
        rng = _rng_state()
        model = copy.deepcopy(self.model)
        opt = torch.optim.AdamW(model.optim_groups(self.cfg.weight_decay), lr=self.cfg.lr, betas=(0.9, 0.95))
        for i in range(warmup):
            self.train_step(model, opt, i)
        self._sync()
        t0, n = time.perf_counter(), 0
        while n < max_steps and (n < 3 or time.perf_counter() - t0 < min_seconds):
            self.train_step(model, opt, warmup + n)
            n += 1
            if n % 5 == 0:
                self._sync()
        self._sync()
        ips = n * self.batch_size / (time.perf_counter() - t0)
        del model, opt
        _set_rng_state(rng)
        self._perm_epoch = -1
        return ips

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> None:
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
        t_last, step_last = time.perf_counter(), self.step
        t_start = time.perf_counter()
        while self.step < self.total_steps:
            loss, parts = self.train_step()
            self.step += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                now = time.perf_counter()  # .item() syncs: only every log_every steps
                ips = (self.step - step_last) * self.batch_size / max(now - t_last, 1e-9)
                t_last, step_last = now, self.step
                row = {
                    "step": self.step,
                    "loss": float(loss.item()),
                    "lr": self.lr_at(self.step - 1),
                    "images_per_s": ips,
                }
                row.update({k: float(v) for k, v in parts.items()})
                self.history.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{ips:.0f}")
            if (
                cfg.checkpoint_every
                and self.step % cfg.checkpoint_every == 0
                and self.step < self.total_steps
            ):
                self.save_checkpoint(out / CHECKPOINT)
        bar.close()
        self.wall_s += time.perf_counter() - t_start
        self.save_checkpoint(out / CHECKPOINT)

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "rng": _rng_state(),
            "history": self.history,
            "wall_s": self.wall_s,
            "measured_ips": self.measured_ips,
            "config": {k: v for k, v in asdict(self.cfg).items() if k != "objective_cfg"},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["config"]
        for key in ("objective", "arch", "batch_size", "seed"):
            if saved.get(key) != getattr(self.cfg, key):
                raise ValueError(
                    f"checkpoint was trained with {key}={saved.get(key)!r}, not {getattr(self.cfg, key)!r}"
                )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.total_steps = int(state["total_steps"])
        self.history = list(state["history"])
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

    def card_arch_kwargs(self) -> dict[str, Any]:
        """The training kwargs plus a timm cfg overlay, so every loader resolves the data config we trained
        with (input size, normalization, no crop)."""
        kwargs = dict(self.cfg.arch_kwargs)
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
            "optimizer": "AdamW(0.9, 0.95)",
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "warmup_steps": self.warmup_steps,
            "schedule": "cosine",
            "precision": "bf16 autocast" if self.device.type == "cuda" else "fp32",
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
                "mask_patch_px": oc.mask_patch_px or self.model.patch_px,
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
        return {
            "id": cfg.name,
            "family": family,
            "arch": cfg.arch,
            "arch_kwargs": self.card_arch_kwargs(),
            "paper": PAPER,
            "license": "Apache-2.0 (weights); trained on CIFAR-10 (Krizhevsky, 2009)"
            if cfg.data == "cifar10"
            else "Apache-2.0 (weights)",
            "description": _describe(family, self.lam, self.data.source, epochs),
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
        save_file(
            self.encoder_state(),
            str(weights),
            metadata={"arch": self.cfg.arch, "arch_kwargs": json.dumps(self.cfg.arch_kwargs)},
        )
        card_path = out / f"{self.cfg.name}.json"
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        (out / "train_log.json").write_text(json.dumps(self.history, indent=1) + "\n")
        return weights, card_path


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()})"


def _describe(family: str, lam: float, data: str, epochs: float) -> str:
    what = {
        "mim": "SimMIM (masked image modeling)",
        "cl": "MoCo v3 (contrastive learning)",
        "hybrid": f"hybrid (1 - {lam:g}) * SimMIM + {lam:g} * MoCo v3",
    }[family]
    return f"ViT trained by vitscope with {what} on {data} for {epochs:.1f} epochs."


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
