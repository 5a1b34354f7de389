"""The driver of ``vitscope analyze``: list the images, skip what the output already has, stream batches
through an engine with a bounded window, write per-image rows as they finish, then aggregate.

The aggregate is always computed from ``per_image.parquet`` (this run's rows and any earlier run's), so a
resumed run and a run in one go write the same ``metrics.json``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from backend.analysis.modern import summarize_modern
from backend.analysis.summary import summarize
from backend.engine.engines import LocalEngine, RayEngine, WorkerArgs, default_readers
from backend.engine.set_stats import SET_IMAGES, check_set_images, set_statistics
from backend.engine.sources import ImageRef, expand
from backend.engine.store import Store, rows_of, setup_of
from backend.errors import BadRequest

FLUSH_ROWS = 512  # rows per part file at most...
FLUSH_SECONDS = 30.0  # ...and at least this often, so that a killed run loses little


@dataclass(frozen=True)
class Options:
    datasets: tuple[str, ...]
    out: Path
    model_ids: tuple[str, ...]
    engine: str = "local"  # local | ray
    device: str = "auto"
    preprocessing: str = "auto"
    download: bool = False
    batch_size: int = 8
    strict: bool = False
    ray_address: str | None = None
    ray_num_cpus: int | None = None  # only when Ray starts locally
    actors: int | None = None
    actor_cpus: float = 1.0
    figures: bool = True
    progress: bool = True
    set_images: int = SET_IMAGES  # the sample of the set statistics (0: none)


@dataclass
class Outcome:
    document: dict[str, Any]  # what metrics.json holds
    analysed: int  # images with rows for every model
    new_rows: int  # rows this run added


def warn(message: str) -> None:
    tqdm.write(f"vitscope: warning: {message}", file=sys.stderr)


def make_engine(opts: Options) -> LocalEngine | RayEngine:
    args = WorkerArgs(opts.model_ids, opts.device, opts.preprocessing, opts.download)
    if opts.engine == "ray":
        return RayEngine(args, opts.ray_address, opts.actors, opts.actor_cpus, opts.ray_num_cpus)
    if opts.engine != "local":
        raise BadRequest(f"--engine must be local or ray, got {opts.engine!r}")
    return LocalEngine(args, default_readers())


def _batches(
    pending: Sequence[tuple[ImageRef, frozenset[str]]], size: int
) -> list[Sequence[tuple[ImageRef, frozenset[str]]]]:
    return [pending[i : i + size] for i in range(0, len(pending), size)]


def stream(
    engine: LocalEngine | RayEngine,
    store: Store,
    pending: Sequence[tuple[ImageRef, frozenset[str]]],
    opts: Options,
    on_skip: Callable[[str, str], None],
) -> int:
    """Every pending (image, models) through ``engine``, ``engine.window`` batches in flight, rows written to
    ``store`` in dataset order. Returns the number of rows written."""
    todo = deque(_batches(pending, opts.batch_size))
    inflight: deque[tuple[int, Any]] = deque()
    buffer: list[dict[str, Any]] = []
    written, flushed_at = 0, time.monotonic()
    bar = tqdm(total=len(pending), unit="img", desc="analyze", disable=not opts.progress, file=sys.stderr)
    try:
        while todo or inflight:
            while todo and len(inflight) < engine.window:
                batch = todo.popleft()
                refs, wanted = [r for r, _ in batch], [w for _, w in batch]
                inflight.append((len(batch), engine.submit(refs, wanted)))
            size, handle = inflight.popleft()
            meta, values = engine.result(handle)
            for path, reason in meta.skipped:
                on_skip(path, reason)
            for model_id, (rows, per_image, modern) in values.items():
                paths, digests = [meta.paths[k] for k in rows], [meta.sha256[k] for k in rows]
                buffer += rows_of(engine.infos[model_id], paths, digests, per_image, modern)
            bar.update(size)
            if len(buffer) >= FLUSH_ROWS or time.monotonic() - flushed_at > FLUSH_SECONDS:
                store.write(buffer)
                written, buffer, flushed_at = written + len(buffer), [], time.monotonic()
    finally:
        bar.close()
        store.write(buffer)  # also when stopped: what finished is kept for the next run
        written += len(buffer)
    return written


def analyze_dataset(opts: Options) -> Outcome:
    from backend.models import get_spec

    if opts.batch_size < 1:
        raise BadRequest(f"--batch-size must be at least 1, got {opts.batch_size}")
    if not opts.model_ids:
        raise BadRequest("--models needs at least one model id")
    check_set_images(opts.set_images)
    for model_id in opts.model_ids:
        get_spec(model_id)  # an unknown id fails before any model loads or Ray starts
    refs = expand(opts.datasets)
    opts.out.mkdir(parents=True, exist_ok=True)
    store = Store(opts.out)
    skipped: list[dict[str, str]] = []

    def on_skip(path: str, reason: str) -> None:
        if opts.strict:
            raise BadRequest(f"{path}: {reason} (--strict stops at the first image that cannot be read)")
        skipped.append({"image": path, "reason": reason})
        warn(f"skipped {path}: {reason}")

    engine = make_engine(opts)  # the models' setups (weights, preprocessing) decide what is done already
    try:
        done = store.done({m: setup_of(info) for m, info in engine.infos.items()})
        pending = [
            (r, w) for r in refs if (w := frozenset(m for m in opts.model_ids if (r.path, m) not in done))
        ]
        if len(pending) < len(refs):
            print(
                f"resuming: {len(refs) - len(pending)} of {len(refs)} image(s) already in {store.file} "
                "for every model",
                file=sys.stderr,
            )
        try:
            new_rows = stream(engine, store, pending, opts, on_skip)
        finally:
            store.merge()
        document, analysed = aggregate(engine, store, refs, opts.model_ids, skipped)
        document["set_statistics"] = None
        if analysed and opts.set_images:
            set_statistics(engine, refs, document, opts.set_images, opts.batch_size)
        if analysed and opts.figures:
            write_figures(engine, refs, document, opts)
    finally:
        engine.close()
    return Outcome(document, analysed, new_rows)


def aggregate(
    engine: LocalEngine | RayEngine,
    store: Store,
    refs: Sequence[ImageRef],
    model_ids: Sequence[str],
    skipped: list[dict[str, str]],
) -> tuple[dict[str, Any], int]:
    """``metrics.json`` from the stored rows of ``refs``: per model, mean and std over its images."""
    paths = [r.path for r in refs]
    models, images = [], None
    for model_id in model_ids:
        info = engine.infos[model_id]
        found = store.values(info, paths)
        if found is None:
            continue
        model_paths, values, modern = found
        metrics = summarize(
            values,
            model=model_id,
            family=info.family,
            preprocessing=info.preprocessing.as_dict(),
            grid=info.grid,
            patch_size=info.patch_size,
        )
        metrics.update(summarize_modern(modern))  # positional_share: None here (a set statistic: set_stats)
        metrics["untrained"] = info.untrained
        metrics["weights_digest"] = info.weights_digest
        models.append(metrics)
        present = set(model_paths)
        images = model_paths if images is None else [p for p in images if p in present]
    document = {
        "images": images or [],
        "device": engine.device,
        "engine": engine.name,
        "skipped": skipped,
        "models": models,
    }
    return document, len(images or []) if len(models) == len(model_ids) else 0


def write_figures(
    engine: LocalEngine | RayEngine, refs: Sequence[ImageRef], document: dict[str, Any], opts: Options
) -> None:
    """curves.png (every image), cka.png (the set statistics' pairs, where there are), and from the first
    batch of readable images: attention_<model>.png (its first image) and spectra.png (mean over that
    batch)."""
    from backend.figures import AttentionPanel, plot_attention, plot_cka, plot_curves, plot_spectra
    from backend.imaging import model_view
    from backend.uploads import decode_image

    analysed = set(document["images"])
    first = [r for r in refs if r.path in analysed][: opts.batch_size]
    data = engine.figure_data(first)
    image = decode_image(first[0].read()).image
    spectra = {}
    for model_id, (maps, spectrum) in data.items():
        info = engine.infos[model_id]
        view = model_view(image, info.preprocessing)
        panel = AttentionPanel(
            model=model_id,
            image=view,
            patch_size=info.patch_size,
            grid=info.grid,
            maps=maps,
            image_name=Path(first[0].path).name,
        )
        plot_attention(panel, opts.out / f"attention_{safe_name(model_id)}.png")
        spectra[model_id] = spectrum
    plot_curves(document["models"], opts.out / "curves.png")
    plot_spectra(spectra, opts.out / "spectra.png")
    stats = document.get("set_statistics")
    if stats and stats["cka"]:
        plot_cka(stats["cka"], len(stats["images"]), opts.out / "cka.png")


def write_document(document: dict[str, Any], out: Path) -> Path:
    path = out / "metrics.json"
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(document, indent=1))
    tmp.replace(path)
    return path


def safe_name(model_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
