"""What each analysis beyond the paper adds to a capture, and what they say about given models and images.

Cost (default): per model and batch, the median over interleaved repeats of

    ratio = time(X) / time(bare fused forward)

for X = the capture, the paper's metrics (``summarize(per_image_values)``), and each new analysis alone on the
captured trace (token norms, effective rank, head diversity, CLS selectivity + self, positional share), all in
one run. Random-init weights (timing does not depend on the values).

    python bench/analyses.py [--device cpu|cuda] [--repeats 5] [--batch 8]

Values (``--images DIR``): the shipped demo models (or ``--models``) on the first ``--n`` images of an
ImageFolder tree (round robin over the classes), printed per depth, plus linear CKA between the models:

    python bench/analyses.py --images /tmp/cifar10/test --n 64
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch

from backend.analysis.cka import cka_with_null, image_means
from backend.analysis.heads import cls_selectivity, cls_self, head_diversity
from backend.analysis.modern import modern_values, summarize_modern
from backend.analysis.representation import effective_rank, positional_share_of, token_norms
from backend.analysis.summary import per_image_values, summarize
from backend.capture import Trace, capture

COST_MODELS: list[tuple[str, dict[str, Any], int]] = [
    ("vit_small_patch16_224", {}, 224),
    ("vit_base_patch16_224", {}, 224),
]
DEMO_MODELS = ["cifar-cl-vit-t4", "cifar-mim-vit-t4", "cifar-hybrid-vit-t4"]


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def analyses(trace: Trace) -> dict[str, Callable[[], object]]:
    p = trace.num_prefix_tokens
    return {
        "paper metrics": lambda: summarize(
            per_image_values(trace), model="", family="", preprocessing={}, grid=trace.grid, patch_size=16
        ),
        "token_norm": lambda: token_norms(trace.x_out, p),
        "effective_rank": lambda: effective_rank(trace.x_out, p),
        "head_diversity": lambda: [head_diversity(a, p) for a in trace.attentions],
        "cls_selectivity+self": lambda: [(cls_selectivity(a, p), cls_self(a, p)) for a in trace.attentions],
        "positional_share": lambda: positional_share_of(trace.x_out, p),
        "all new (metrics.json)": lambda: summarize_modern(modern_values(trace)),
    }


def bench_model(
    name: str, kwargs: dict[str, Any], size: int, device: torch.device, repeats: int, batch: int
) -> None:
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).to(device).eval()
    pixels = torch.randn(batch, 3, size, size, device=device)

    def forward() -> object:
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                setattr(m, "fused_attn", True)  # noqa: B010 (a Final attribute for type checkers)
        return model(pixels)

    trace = capture(model, pixels)
    runs: dict[str, Callable[[], object]] = {"forward": forward, "capture": lambda: capture(model, pixels)}
    runs.update(analyses(trace))
    for fn in runs.values():  # warm-up
        fn()
    ratios: dict[str, list[float]] = {k: [] for k in runs if k != "forward"}
    base: list[float] = []
    for _ in range(repeats):
        t = {k: timed(fn, device) for k, fn in runs.items()}
        base.append(t["forward"])
        for k in ratios:
            ratios[k].append(t[k] / t["forward"])
    print(f"\n{name} ({size} px, grid {trace.grid}): forward {1e3 * statistics.median(base):.1f} ms")
    for k, r in ratios.items():
        print(f"  {k:<24} {statistics.median(r):6.3f} x forward")


def cost(device: torch.device, repeats: int, batch: int) -> None:
    print(
        f"device {device}, batch {batch}, median of {repeats} interleaved repeats; ratio to a fused forward"
    )
    for name, kwargs, size in COST_MODELS:
        bench_model(name, kwargs, size, device, repeats, batch)


def first_images(root: Path, n: int) -> list[Path]:
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    files = [sorted(c.glob("*.*")) for c in classes]
    return [files[i % len(classes)][i // len(classes)] for i in range(n)]


def values(root: Path, n: int, model_ids: list[str]) -> None:
    from PIL import Image

    from backend.imaging import model_preprocessing, preprocess
    from backend.models import load_model

    paths = first_images(root, n)
    images = [Image.open(p).convert("RGB") for p in paths]
    print(f"{len(images)} images from {root} (round robin over {len({p.parent for p in paths})} classes)")
    means = {}
    for model_id in model_ids:
        loaded = load_model(model_id, "cpu")
        trace = capture(loaded.model, preprocess(images, model_preprocessing(loaded)))
        m = summarize_modern(modern_values(trace))
        means[model_id] = image_means(trace.x_out, trace.num_prefix_tokens).double()
        tn = m["token_norm"]

        def row(label: str, xs: list[float] | None, fmt: str = "{:.3f}") -> None:
            cells = " ".join(fmt.format(x) for x in xs) if xs is not None else "null"
            print(f"  {label:<26} {cells}")

        print(f"\n{model_id} ({loaded.spec.family}; grid {trace.grid}, {trace.num_prefix_tokens} prefix)")
        print(f"  {'depth':<26} " + " ".join(f"{d:>5}" for d in tn["depth"]))
        row("token norm mean", tn["mean"]["value"], "{:5.2f}")
        row(
            "token norm p99 / mean",
            [p / x for p, x in zip(tn["p99"]["value"], tn["mean"]["value"], strict=True)],
            "{:5.2f}",
        )
        row("token norm max", tn["max"]["value"], "{:5.2f}")
        row("outlier fraction (>4x med)", tn["outlier_fraction"]["value"], "{:5.3f}")
        row("effective rank", m["effective_rank"]["value"], "{:5.1f}")
        row("positional share", m["positional_share"]["value"], "{:5.3f}")
        print(f"  {'block':<26} " + " ".join(f"{d:>5}" for d in m["head_diversity"]["depth"]))
        row("head diversity (nats)", m["head_diversity"]["value"], "{:5.3f}")
        sel = m["cls_selectivity"]
        row("cls selectivity", None if sel is None else sel["mean"], "{:5.3f}")
        row("cls self", None if m["cls_self"] is None else m["cls_self"]["mean"], "{:5.3f}")
    ids = list(means)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            res = cka_with_null(means[a], means[b])
            diag = [round(float(res.cka[d, d]), 3) for d in range(min(res.cka.shape))]
            cal = [round(float(res.calibrated[d, d]), 3) for d in range(min(res.cka.shape))]
            null = float(res.null.mean())
            print(f"\nCKA {a} vs {b}, same depth 0..: {diag}\n  calibrated: {cal}; null mean {null:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=Path, help="ImageFolder tree: print the values instead of the cost")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--models", nargs="*", default=DEMO_MODELS)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.images is not None:
        values(args.images, args.n, args.models)
    else:
        cost(torch.device(args.device), args.repeats, args.batch)


if __name__ == "__main__":
    main()
