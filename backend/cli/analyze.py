"""`vitscope analyze IMAGES... --models ID[,ID...] --out DIR`: metrics.json and figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from backend.analysis import head_mean, log_amplitude_spectrum, query_map
from backend.analysis.summary import PerImage, per_image_values, summarize
from backend.capture import capture
from backend.errors import BadRequest
from backend.figures import AttentionPanel, plot_attention, plot_curves, plot_spectra
from backend.imaging import PREPROCESSING_MODES, model_preprocessing, model_view, preprocess
from backend.models import load_model
from backend.uploads import DecodedImage, decode_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="run the paper's analyses on images with one or more models")
    p.add_argument("images", nargs="+", type=Path, help="image files or folders (searched recursively)")
    p.add_argument("--models", required=True, help="comma-separated model ids (see `vitscope models list`)")
    p.add_argument("--out", required=True, type=Path, help="output folder for metrics.json and figures")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--preprocessing",
        default="auto",
        choices=PREPROCESSING_MODES,
        help="auto: the model's own eval preprocessing where its card sets one or its input is not 224 px "
        "(the demo models: 32 px, no crop), else paper; paper: resize 256 bilinear + centre crop 224 "
        "(scaled to the model's input); model: the model's card / timm data config (default: %(default)s)",
    )
    p.add_argument("--download", action="store_true", help="download missing weights")
    p.set_defaults(func=run)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadRequest(
            "--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto"
        )
    return torch.device(name)


def collect_images(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise BadRequest(f"{path} is neither an image file nor a folder")
    if not found:
        raise BadRequest(
            f"no images found in {', '.join(map(str, paths))} (looked for {sorted(IMAGE_SUFFIXES)})"
        )
    return found


def analyze_model(
    model_id: str,
    images: list[DecodedImage],
    device: torch.device,
    batch_size: int,
    mode: str,
    download: bool,
) -> tuple[dict[str, Any], AttentionPanel, np.ndarray]:
    """One model over all images: the metrics object, the first image's attention panel, the mean spectra."""
    loaded = load_model(model_id, device, download=download)
    prep = model_preprocessing(loaded, mode)
    parts: list[PerImage] = []
    spectra_sum: torch.Tensor | None = None
    panel: AttentionPanel | None = None
    grid, patch = (0, 0), 0
    for start in tqdm(range(0, len(images), batch_size), desc=model_id, unit="batch", leave=False):
        batch = [im.image for im in images[start : start + batch_size]]
        trace = capture(
            loaded.model, preprocess(batch, prep).to(device), model_id=model_id, preprocessing=prep.as_dict()
        )
        grid, patch = trace.grid, trace.patch_size
        parts.append(per_image_values(trace))
        spec = torch.stack(
            [log_amplitude_spectrum(z, grid, trace.num_prefix_tokens).sum(0) for z in trace.x_out]
        )
        spectra_sum = spec if spectra_sum is None else spectra_sum + spec
        if panel is None:
            panel = attention_panel(trace, model_id, model_view(batch[0], prep))
    assert spectra_sum is not None and panel is not None
    metrics = summarize(
        PerImage.concat(parts),
        model=model_id,
        family=loaded.spec.family,
        preprocessing=prep.as_dict(),
        grid=grid,
        patch_size=patch,
    )
    metrics["untrained"] = loaded.spec.untrained
    metrics["weights_digest"] = loaded.weights_digest
    return metrics, panel, (spectra_sum / len(images)).cpu().numpy()


def attention_panel(trace: Any, model_id: str, image: Any) -> AttentionPanel:
    """Head-mean maps of the first image for the centre patch, an off-centre patch and CLS, at every layer."""
    h, w = trace.grid
    queries: dict[str, tuple[int, int] | None] = {"centre": (h // 2, w // 2), "corner": (h // 4, w // 4)}
    if trace.num_prefix_tokens:
        queries["CLS"] = None
    maps = {}
    for label, cell in queries.items():
        q = None if cell is None else cell[0] * w + cell[1]
        stack = torch.stack(
            [query_map(head_mean(a[:1]), trace.grid, trace.num_prefix_tokens, q)[0] for a in trace.attentions]
        )
        maps[label] = (cell, stack.cpu().numpy())
    return AttentionPanel(
        model=model_id, image=image, patch_size=trace.patch_size, grid=trace.grid, maps=maps
    )


def run(args: argparse.Namespace) -> int:
    model_ids = [m.strip() for m in args.models.split(",") if m.strip()]
    if not model_ids:
        raise BadRequest("--models needs at least one model id")
    if args.batch_size < 1:
        raise BadRequest(f"--batch-size must be at least 1, got {args.batch_size}")
    device = resolve_device(args.device)
    paths = collect_images(args.images)
    images = [decode_image(p.read_bytes()) for p in tqdm(paths, desc="decode", unit="img", leave=False)]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results, spectra = [], {}
    for model_id in tqdm(model_ids, desc="models", unit="model"):
        metrics, panel, spectrum = analyze_model(
            model_id, images, device, args.batch_size, args.preprocessing, args.download
        )
        results.append(metrics)
        spectra[model_id] = spectrum
        plot_attention(panel, out / f"attention_{safe_name(model_id)}.png")
    document = {"images": [str(p) for p in paths], "device": str(device), "models": results}
    (out / "metrics.json").write_text(json.dumps(document, indent=1))
    plot_curves(results, out / "curves.png")
    plot_spectra(spectra, out / "spectra.png")
    print(f"wrote {out / 'metrics.json'} and figures for {len(model_ids)} model(s) on {len(paths)} image(s)")
    return 0


def safe_name(model_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
