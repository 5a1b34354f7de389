"""SimMIM (``mim``), MoCo v3 (``cl``) and their hybrid on one shared timm ViT encoder (ANALYSES.md A9).

``loss = (1 - lam) * L_MIM + lam * L_CL``: ``lam = 0`` builds only the MIM parts (SimMIM exactly), ``lam = 1``
only the CL parts (MoCo v3 exactly), anything between builds both and sums them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.training import encoder as enc
from backend.training.augment import CL_AUGMENT, MIM_AUGMENT, AugmentConfig, augment

OBJECTIVES = ("mim", "cl", "hybrid")


@dataclass(frozen=True)
class ObjectiveConfig:
    mask_ratio: float = 0.6
    # SimMIM masks 32 px squares (2 x 2 patches of 16 px) at 224 px: squares of 2 x 2 patches at any patch
    # size (at patch 4 on 32 px images, 8 px squares on a 4 x 4 mask grid). 1: one mask square per patch.
    mask_patches: int = 2
    temperature: float = 0.2
    proj_hidden: int = 1024
    proj_dim: int = 256
    momentum: float = 0.99
    momentum_cosine: bool = True  # MoCo v3: the momentum follows a cosine from `momentum` up to 1
    cl_augment: AugmentConfig = CL_AUGMENT
    mim_augment: AugmentConfig = MIM_AUGMENT


def family_for(lam: float) -> str:
    return "mim" if lam == 0 else "cl" if lam == 1 else "hybrid"


def lam_for(objective: str, lam: float | None) -> float:
    if objective == "mim":
        return 0.0
    if objective == "cl":
        return 1.0
    if objective == "hybrid":
        if lam is None or not 0.0 <= lam <= 1.0:
            raise ValueError("hybrid needs --lam in [0, 1]")
        return float(lam)
    raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")


class BlockMasker:
    """SimMIM's random mask: ``ceil(ratio * units)`` squares of ``scale x scale`` patches per image, expanded
    to the patch grid."""

    def __init__(self, grid: tuple[int, int], scale: int, ratio: float):
        if scale < 1:
            raise ValueError(f"a mask square is at least 1 patch wide, not {scale}")
        self.scale = scale
        if grid[0] % self.scale or grid[1] % self.scale:
            raise ValueError(
                f"the {grid[0]} x {grid[1]} patch grid does not divide into {scale} x {scale} squares"
            )
        self.units = (grid[0] // self.scale, grid[1] // self.scale)
        n = self.units[0] * self.units[1]
        self.count = int(math.ceil(n * ratio))
        self.ratio = self.count / n  # what is actually masked

    def __call__(self, batch: int, device: torch.device) -> Tensor:
        """(B, H, W) bool patch mask."""
        n = self.units[0] * self.units[1]
        order = torch.rand(batch, n, device=device).argsort(1)
        m = torch.zeros(batch, n, dtype=torch.bool, device=device)
        m.scatter_(1, order[:, : self.count], True)
        m = m.view(batch, *self.units)
        return m.repeat_interleave(self.scale, 1).repeat_interleave(self.scale, 2)


def mlp(num_layers: int, in_dim: int, hidden: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    """MoCo v3's heads: Linear-BN-ReLU blocks, an affine-free BN after the last layer of the projector."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden
        d_out = out_dim if i == num_layers - 1 else hidden
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, 3, H*p, W*p) -> (B, H*W, p*p*3), patches in timm's row-major token order."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def info_nce(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    """MoCo v3's contrastive loss: the other images of the batch are the negatives, scaled by 2T."""
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    logits = q @ k.t() / temperature
    labels = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, labels) * (2 * temperature)


@dataclass
class Views:
    mim: Tensor | None = None
    mask: Tensor | None = None
    cl1: Tensor | None = None
    cl2: Tensor | None = None


class SelfSupervised(nn.Module):
    """The encoder plus whatever heads its objective needs."""

    def __init__(
        self,
        encoder: enc.ViT,
        lam: float,
        cfg: ObjectiveConfig | None = None,
        mean: Sequence[float] = enc.DEFAULT_MEAN,
        std: Sequence[float] = enc.DEFAULT_STD,
    ):
        super().__init__()
        self.encoder = encoder
        self.lam = float(lam)
        self.cfg = cfg or ObjectiveConfig()
        self.mean, self.std = tuple(mean), tuple(std)
        dim = int(encoder.embed_dim)
        self.patch_px = enc.patch_size(encoder)
        if self.uses_mim:
            self.masker = BlockMasker(enc.grid_size(encoder), self.cfg.mask_patches, self.cfg.mask_ratio)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
            # SimMIM's light decoder: one linear map from each token to its patch's pixels.
            self.decoder = nn.Linear(dim, self.patch_px**2 * 3)
        if self.uses_cl:
            c = self.cfg
            self.projector = mlp(3, dim, c.proj_hidden, c.proj_dim, last_bn=True)
            self.predictor = mlp(2, c.proj_dim, c.proj_hidden, c.proj_dim, last_bn=False)
            self.momentum_encoder = copy.deepcopy(encoder)
            self.momentum_projector = copy.deepcopy(self.projector)
            for p in self._momentum_params():
                p.requires_grad_(False)
            # (online, key) parameter lists for one foreach update per step
            self._pairs = (
                [*encoder.parameters(), *self.projector.parameters()],
                [*self.momentum_encoder.parameters(), *self.momentum_projector.parameters()],
            )

    @property
    def uses_mim(self) -> bool:
        return self.lam < 1

    @property
    def uses_cl(self) -> bool:
        return self.lam > 0

    # -- randomness: drawn once per step, in a fixed order ------------------------------------------
    def draw(self, images: Tensor) -> Views:
        v = Views()
        if self.uses_mim:
            v.mim = augment(images, self.cfg.mim_augment, self.mean, self.std)
            v.mask = self.masker(images.shape[0], images.device)
        if self.uses_cl:
            v.cl1 = augment(images, self.cfg.cl_augment, self.mean, self.std)
            v.cl2 = augment(images, self.cfg.cl_augment, self.mean, self.std)
        return v

    # -- the two losses ------------------------------------------------------------------------------
    def mim_loss(self, x: Tensor, mask: Tensor) -> Tensor:
        """L1 between predicted and true (normalized) pixels, averaged over the masked pixels only."""
        tokens = enc.encode(self.encoder, x, mask, self.mask_token)
        pred = self.decoder(tokens[:, enc.num_prefix_tokens(self.encoder) :]).float()
        target = patchify(x.float(), self.patch_px)
        m = mask.flatten(1).float()
        per_patch = (pred - target).abs().mean(-1)
        return (per_patch * m).sum() / m.sum().clamp(min=1.0)

    def _online(self, x: Tensor) -> Tensor:
        return self.predictor(self.projector(enc.cls_feature(self.encoder, enc.encode(self.encoder, x))))

    @torch.no_grad()
    def _target(self, x: Tensor) -> Tensor:
        feats = enc.cls_feature(self.momentum_encoder, enc.encode(self.momentum_encoder, x))
        return self.momentum_projector(feats)

    def cl_loss(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Symmetric InfoNCE between each view's prediction and the other view's momentum key."""
        q1, q2 = self._online(x1), self._online(x2)
        k1, k2 = self._target(x1), self._target(x2)  # stop-grad: no_grad, momentum weights
        t = self.cfg.temperature
        return info_nce(q1, k2, t) + info_nce(q2, k1, t)

    def loss(self, views: Views) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective's loss and its detached parts ("mim", "cl"); a pure objective's loss is its part
        itself (no multiply by 1)."""
        parts: dict[str, Tensor] = {}
        if self.uses_mim:
            assert views.mim is not None and views.mask is not None
            parts["mim"] = self.mim_loss(views.mim, views.mask)
        if self.uses_cl:
            assert views.cl1 is not None and views.cl2 is not None
            parts["cl"] = self.cl_loss(views.cl1, views.cl2)
        if self.lam == 0:
            total = parts["mim"]
        elif self.lam == 1:
            total = parts["cl"]
        else:
            total = (1 - self.lam) * parts["mim"] + self.lam * parts["cl"]
        return total, {k: v.detach() for k, v in parts.items()}

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss(self.draw(images))

    # -- momentum encoder ---------------------------------------------------------------------------
    def _momentum_params(self) -> list[nn.Parameter]:
        return list(self.momentum_encoder.parameters()) + list(self.momentum_projector.parameters())

    def momentum_at(self, step: int, total_steps: int) -> float:
        m = self.cfg.momentum
        if not self.cfg.momentum_cosine or total_steps <= 0:
            return m
        return 1.0 - (1.0 - m) * (math.cos(math.pi * step / total_steps) + 1) / 2

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """key <- m * key + (1 - m) * online, for the encoder's and the projector's parameters (one foreach
        lerp: a few kernels instead of two per parameter)."""
        if not self.uses_cl:
            return
        online, key = self._pairs
        torch._foreach_lerp_(key, online, 1.0 - m)

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """No weight decay on biases, norms, position embeddings and special tokens."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim <= 1 or any(
                k in name
                for k in ("pos_embed", "cls_token", "reg_token", "mask_token", "relative_position_bias_table")
            )
            (no_decay if skip else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
