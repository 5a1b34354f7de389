"""`vitscope analyze` throughput: the local engine and the Ray engine against a bare batched forward.

For the same images and model, in one process, interleaved (bare, local, bare, ray, bare) so that each
engine is compared with the bare forwards just before and after it (other load on the machine drifts):

- bare: ``forward_features`` (timm's fused attention) over the already-preprocessed batches: no decoding,
  no capture, no analyses: the floor;
- local: ``--engine local`` streaming the images (read + decode + preprocess in threads, capture + every
  analysis + Parquet rows);
- ray: ``--engine ray`` on a Ray instance started here (decode tasks + ``--actors`` CPU actors).

Prints images/s of each, the engines' start-up (models loaded, Ray started) apart, and each engine's ratio
to the bare forward. Run: `python bench/engine.py [--images 48] [--models random-vit-s16] [--batch-size 8]
[--actors 1 --actor-cpus 1]`. Images: ../shared/data/cue_conflict (224 px PNGs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from backend.engine.pipeline import Options, make_engine, stream
from backend.engine.sources import expand
from backend.engine.store import Store
from backend.imaging import model_preprocessing, preprocess
from backend.models import load_model
from backend.uploads import decode_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cue_conflict"


@torch.no_grad()
def bare(model_ids: list[str], paths: list[Path], batch_size: int) -> float:
    """Seconds of the fused forwards alone over every batch of every model."""
    total = 0.0
    images = [decode_image(p.read_bytes()).image for p in paths]
    for model_id in model_ids:
        loaded = load_model(model_id)
        model: Any = loaded.model
        pixels = preprocess(images, model_preprocessing(loaded))
        model.forward_features(pixels[:batch_size])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            model.forward_features(pixels[i : i + batch_size])
        total += time.perf_counter() - start
    return total


def engine_run(opts: Options) -> tuple[float, float]:
    """(start-up seconds, streaming seconds) of one engine over every image, into a fresh output."""
    start = time.perf_counter()
    engine = make_engine(opts)
    started = time.perf_counter()
    try:
        refs = expand(opts.datasets)
        pending = [(r, frozenset(opts.model_ids)) for r in refs]
        rows = stream(engine, Store(opts.out), pending, opts, on_skip=lambda path, why: None)
        assert rows == len(refs) * len(opts.model_ids), f"{rows} rows for {len(refs)} images"
    finally:
        engine.close()
    return started - start, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--models", default="random-vit-s16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--actor-cpus", type=float, default=1.0)
    args = parser.parse_args()
    paths = sorted(DATA.glob("*/*.png"))[: args.images]
    model_ids = [m for m in args.models.split(",") if m]
    n = len(paths) * len(model_ids)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for p in paths:
            (folder / f"{p.parent.name}-{p.name}").write_bytes(p.read_bytes())
        common = {"datasets": (str(folder),), "model_ids": tuple(model_ids), "device": "cpu",
                  "batch_size": args.batch_size, "figures": False, "progress": False}  # fmt: skip
        bares = [bare(model_ids, paths, args.batch_size)]
        local = engine_run(Options(out=Path(tmp) / "local", engine="local", **common))
        bares.append(bare(model_ids, paths, args.batch_size))
        ray = engine_run(
            Options(out=Path(tmp) / "ray", engine="ray", actors=args.actors, actor_cpus=args.actor_cpus,
                    ray_num_cpus=os.cpu_count(), **common)
        )  # fmt: skip
        bares.append(bare(model_ids, paths, args.batch_size))
    print(
        f"{len(paths)} images x {args.models}, batch {args.batch_size}, {os.cpu_count()} CPUs, one run each"
    )
    print("bare fused forward: " + ", ".join(f"{n / b:.2f}" for b in bares) + " images/s (three runs)")
    ray_name = f"ray engine ({args.actors} actor(s) x {args.actor_cpus:g} CPU)"
    for i, (name, (startup, seconds)) in enumerate((("local engine", local), (ray_name, ray))):
        bare_s = (bares[i] + bares[i + 1]) / 2  # the bare runs on either side
        rate = f"{n / seconds:7.2f} images/s  {bare_s / seconds:5.2f}x the bare forward's rate"
        print(f"{name:34s} {rate}  (start-up {startup:.1f} s)")


if __name__ == "__main__":
    main()
