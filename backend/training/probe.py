"""Per-layer linear probes and kNN (ANALYSES.md A7) and frequency-band noise robustness (A8).

Features: for every depth ``k = 0..L``, the mean over patch tokens of ``x_out[k]`` (the residual stream after
block ``k``, before the final norm; depth 0 is the embedding), all depths from one forward pass. Each depth
gets a multinomial logistic regression on standardized features (full-batch L-BFGS, weight decay picked on a
held-out tenth of the train split), scored by top-1 on the test split. kNN: cosine similarity of standardized
last-block features, k = 20, votes weighted by exp(sim / 0.07) (DINO's rule). Accuracies are percentages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.training.augment import normalize, to_float
from backend.training.data import ImageSet, load_images
from backend.training.noise import band_noise

WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3)


@dataclass
class Preprocess:
    size: int
    mean: Sequence[float]
    std: Sequence[float]

    def __call__(self, images: Tensor) -> Tensor:
        x = to_float(images)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )
        return normalize(x, self.mean, self.std)


@torch.no_grad()
def layer_features(model: Any, pixels: Tensor) -> Tensor:
    """(L + 1, B, C): mean of patch tokens of x_out[0..L], from one forward pass (hooks on the blocks)."""
    blocks = list(model.blocks)
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    feats: list[Tensor | None] = [None] * (len(blocks) + 1)

    def pool(t: Tensor) -> Tensor:
        return t[:, prefix:].float().mean(1)

    def keep_out(i: int):  # noqa: ANN202 - hook factory
        def hook(_m: nn.Module, _inp: Any, out: Tensor) -> None:
            feats[i] = pool(out)

        return hook

    def keep_in(_m: nn.Module, inp: tuple[Tensor, ...]) -> None:
        feats[0] = pool(inp[0])

    handles = [blocks[0].register_forward_pre_hook(keep_in)]
    handles += [b.register_forward_hook(keep_out(i + 1)) for i, b in enumerate(blocks)]
    try:
        model.forward_features(pixels)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([f for f in feats if f is not None])


@torch.no_grad()
def extract(
    model: nn.Module,
    images: Tensor,
    prep: Preprocess,
    device: torch.device,
    batch_size: int = 512,
    noise: Tensor | None = None,
) -> Tensor:
    """Per-layer features of a uint8 image set (L + 1, N, C) on ``device``; ``noise`` is added after
    normalization (one (3, H, W) pattern or one per image)."""
    model.eval()
    out = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for i in range(0, images.shape[0], batch_size):
        x = prep(images[i : i + batch_size].to(device))
        if noise is not None:
            x = x + (noise[i : i + batch_size] if noise.dim() == 4 else noise).to(device)
        with autocast:
            out.append(layer_features(model, x).float())
    return torch.cat(out, 1)


@dataclass
class LinearProbes:
    """One linear classifier per depth on standardized features."""

    mean: Tensor  # (D, 1, C)
    std: Tensor  # (D, 1, C)
    weight: Tensor  # (D, C, K)
    bias: Tensor  # (D, 1, K)
    weight_decay: list[float]

    def standardize(self, feats: Tensor) -> Tensor:
        return (feats - self.mean) / self.std

    def logits(self, feats: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, self.standardize(feats), self.weight)

    def accuracy(self, feats: Tensor, labels: Tensor) -> Tensor:
        """(D,) top-1 in percent."""
        return (self.logits(feats).argmax(-1) == labels.to(feats.device)).float().mean(1) * 100


def _fit_logistic(
    x: Tensor, y: Tensor, classes: int, weight_decay: float, max_iter: int
) -> tuple[Tensor, Tensor]:
    # The depths are independent problems; one L-BFGS on their sum solves them together (one launch each).
    d, _, c = x.shape
    w = torch.zeros(d, c, classes, device=x.device, requires_grad=True)
    b = torch.zeros(d, 1, classes, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
    )
    target = y.expand(d, -1).reshape(-1)

    def closure() -> Tensor:
        opt.zero_grad()
        logits = torch.baddbmm(b, x, w)
        loss = F.cross_entropy(logits.reshape(-1, classes), target) * d + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def fit_linear_probes(
    feats: Tensor,
    labels: Tensor,
    classes: int,
    *,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    max_iter: int = 200,
    seed: int = 0,
) -> LinearProbes:
    """Fit one probe per depth; the weight decay of each depth is chosen on a held-out tenth."""
    labels = labels.to(feats.device)
    mean = feats.mean(1, keepdim=True)
    std = feats.std(1, keepdim=True).clamp(min=1e-6)
    x = (feats - mean) / std
    n = x.shape[1]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).to(feats.device)
    n_val = max(1, n // 10) if len(weight_decays) > 1 else 0
    val, fit = perm[:n_val], perm[n_val:]
    if n_val:
        scores = []
        for wd in weight_decays:
            w, b = _fit_logistic(x[:, fit], labels[fit], classes, wd, max_iter)
            pred = torch.baddbmm(b, x[:, val], w).argmax(-1)
            scores.append((pred == labels[val]).float().mean(1))
        best = torch.stack(scores).argmax(0).tolist()  # per depth
    else:
        best = [0] * x.shape[0]
    weight = torch.zeros(x.shape[0], x.shape[2], classes, device=x.device)
    bias = torch.zeros(x.shape[0], 1, classes, device=x.device)
    for i in sorted(set(best)):
        w, b = _fit_logistic(x, labels, classes, weight_decays[i], max_iter)
        rows = [d for d, j in enumerate(best) if j == i]
        weight[rows], bias[rows] = w[rows], b[rows]
    return LinearProbes(mean, std, weight, bias, [float(weight_decays[i]) for i in best])


@torch.no_grad()
def knn_accuracy(
    train: Tensor,
    train_labels: Tensor,
    test: Tensor,
    test_labels: Tensor,
    classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Weighted kNN top-1 (percent) with cosine similarity."""
    train = F.normalize(train, dim=1)
    test = F.normalize(test, dim=1)
    train_labels = train_labels.to(train.device)
    k = min(k, train.shape[0])
    correct = 0
    for i in range(0, test.shape[0], chunk):
        sim, idx = (test[i : i + chunk] @ train.t()).topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], classes, device=train.device)
        votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == test_labels[i : i + chunk].to(train.device)).sum())
    return 100.0 * correct / test.shape[0]


def run_probes(
    model: nn.Module,
    train: ImageSet,
    test: ImageSet,
    prep: Preprocess,
    device: torch.device,
    *,
    knn_k: int = 20,
    noise_eps: Sequence[float] = (0.1, 0.5),
    noise_freqs: int = 11,
    noise_images: int | None = 2000,
    half_width: float = 0.2,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, Any]:
    """A7 + A8 for one encoder: the JSON the model card's ``probes`` field holds."""
    classes = len(train.classes)
    model = model.to(device).eval()
    train_f = extract(model, train.images, prep, device, batch_size)
    test_f = extract(model, test.images, prep, device, batch_size)
    probes = fit_linear_probes(train_f, train.labels, classes, seed=seed)
    top1 = probes.accuracy(test_f, test.labels).tolist()
    last = train_f.shape[0] - 1
    knn = knn_accuracy(
        probes.standardize(train_f)[last],
        train.labels,
        probes.standardize(test_f)[last],
        test.labels,
        classes,
        k=knn_k,
    )
    result: dict[str, Any] = {
        "data": {
            "train": train.source,
            "test": test.source,
            "train_images": len(train),
            "test_images": len(test),
            "input_size": prep.size,
            "classes": classes,
        },
        "features": "mean of patch tokens of x_out[k] (block outputs before the final norm), standardized",
        "chance": 100.0 / classes,
        "linear": {
            "depth": list(range(last + 1)),
            "top1": [round(a, 2) for a in top1],
            "weight_decay": probes.weight_decay,
            "classifier": "multinomial logistic regression, full-batch L-BFGS",
        },
        "knn": {"k": knn_k, "temperature": 0.07, "metric": "cosine", "depth": last, "top1": round(knn, 2)},
    }
    if noise_eps:
        result["noise"] = noise_robustness(
            model,
            probes,
            test.subset(noise_images, seed),
            prep,
            device,
            eps=noise_eps,
            freqs=noise_freqs,
            half_width=half_width,
            seed=seed,
            batch_size=batch_size,
        )
    return result


def preprocess_for_card(card: dict[str, Any]) -> Preprocess:
    """The data config a vitscope-trained card records (timm cfg overlay in its arch kwargs)."""
    overlay = (card.get("arch_kwargs") or {}).get("pretrained_cfg_overlay") or {}
    size = int(overlay.get("input_size", [3, 32, 32])[-1])
    return Preprocess(size, tuple(overlay.get("mean", (0.5,) * 3)), tuple(overlay.get("std", (0.5,) * 3)))


def probe_encoder(
    model: nn.Module,
    card: dict[str, Any],
    data: str,
    device: torch.device,
    *,
    train_images: int | None = None,
    test_images: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Probe a freshly trained encoder on ``data``'s train and test splits."""
    prep = preprocess_for_card(card)
    train = load_images(data, "train", prep.size).subset(train_images, seed)
    test = load_images(data, "test", prep.size).subset(test_images, seed)
    return run_probes(model, train, test, prep, device, seed=seed, **kwargs)


@torch.no_grad()
def noise_robustness(
    model: nn.Module,
    probes: LinearProbes,
    data: ImageSet,
    prep: Preprocess,
    device: torch.device,
    *,
    eps: Sequence[float] = (0.1,),
    freqs: int = 11,
    half_width: float = 0.2,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Top-1 drop of the final-block probe when band-limited sign noise is added (A8)."""
    last = probes.weight.shape[0] - 1

    def top1(noise: Tensor | None) -> float:
        f = extract(model, data.images, prep, device, batch_size, noise)[last]
        logits = ((f - probes.mean[last]) / probes.std[last]) @ probes.weight[last] + probes.bias[last]
        return float((logits.argmax(-1) == data.labels.to(device)).float().mean() * 100)

    clean = top1(None)
    centres = [math.pi * i / (freqs - 1) for i in range(freqs)] if freqs > 1 else [0.0]
    shape = (len(data), 3, prep.size, prep.size)
    accs = []
    for e in eps:
        row = []
        for f in centres:
            g = torch.Generator().manual_seed(seed)  # the same sign pattern for every band
            row.append(top1(band_noise(shape, e, f, half_width, g, device)))
        accs.append(row)
    return {
        "eps": list(eps),
        "half_width": half_width,
        "freq": [round(f, 4) for f in centres],
        "space": "normalized input",
        "images": len(data),
        "clean_top1": round(clean, 2),
        "top1": [[round(a, 2) for a in row] for row in accs],
        "drop": [[round(clean - a, 2) for a in row] for row in accs],
    }


def plot_probes(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Per-layer probe curves and noise-drop curves, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_noise = any("noise" in r for r in results.values())
    fig, axes = plt.subplots(1, 2 if has_noise else 1, figsize=(11 if has_noise else 5.5, 4), squeeze=False)
    ax = axes[0, 0]
    for name, r in results.items():
        ax.plot(
            r["linear"]["depth"],
            r["linear"]["top1"],
            marker="o",
            label=f"{name} (kNN {r['knn']['top1']:.1f})",
        )
    chance = next(iter(results.values()))["chance"]
    ax.axhline(chance, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("depth (block output; 0 = embedding)")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.set_title("A7: per-layer linear probe")
    ax.legend(fontsize=7)
    if has_noise:
        ax = axes[0, 1]
        for name, r in results.items():
            if "noise" not in r:
                continue
            n = r["noise"]
            for e, drop in zip(n["eps"], n["drop"], strict=True):
                ax.plot(n["freq"], drop, marker=".", label=f"{name} eps={e:g}")
        ax.set_xlabel("noise frequency (rad / pixel)")
        ax.set_ylabel("top-1 drop (points)")
        ax.set_title("A8: frequency-band noise, final-block probe")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
