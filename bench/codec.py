"""Bytes the cache stores per (image, model), and the codec's cost: version 1 (zlib) and 2 (shuffle + zstd).

    python bench/codec.py [--arch vit_base_patch16_224] [--repeats 3]

One image of the shared cue-conflict set through a random-init timm model (offline); its bundle as the
service builds it (``build_bundles``), encoded as the service stores it (``encode_bundle``, codec version 2),
and the same arrays as version 1 wrote them (zlib level 1 when it saved 10%, tokens raw, always stored).
Prints bytes per kind of key, the total, and the encode and decode times (best of ``--repeats``; one thread).
Goal (issue 11): at most 10 MB per (image, ViT-B/16), lossless. Figures only, never assertions.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
IMAGES = ROOT.parent / "shared" / "data" / "cue_conflict"


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def version_1(a: np.ndarray, compress: bool) -> bytes:
    raw = np.ascontiguousarray(a).tobytes()
    packed = zlib.compress(raw, 1) if compress else raw
    return packed if len(packed) <= 0.9 * len(raw) else raw


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="vit_base_patch16_224")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import timm
    import torch

    from backend.cache import decode_array
    from backend.capture import capture
    from backend.imaging import preprocess, preprocessing_for
    from backend.service.bundle import ModelInfo, build_bundles, encode_bundle, encode_tokens
    from backend.uploads import decode_image

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model: Any = timm.create_model(args.arch, pretrained=False, num_classes=0).eval()
    prep = preprocessing_for(dict(timm.data.resolve_model_data_config(model)))
    image = decode_image(sorted(IMAGES.glob("*/*.png"))[0].read_bytes()).image
    with torch.inference_mode():
        trace = capture(model, preprocess([image], prep), model_id=args.arch, preprocessing=prep.as_dict())
    blocks = list(model.blocks)
    info = ModelInfo(
        id=args.arch, family="baseline", arch=args.arch, digest="random", preprocessing=prep.as_dict(),
        layers=len(blocks), heads=int(blocks[0].attn.num_heads), grid=trace.grid, patch_size=trace.patch_size,
        num_prefix=trace.num_prefix_tokens, embed_dim=int(model.embed_dim),
        num_parameters=sum(p.numel() for p in model.parameters()),
    )  # fmt: skip
    bundle = build_bundles(info, trace)[0]
    encoded = encode_bundle(info, "0" * 64, bundle) | encode_tokens(info, "0" * 64, bundle)
    kinds: dict[str, list[bytes]] = {}
    for key, value in encoded.items():
        kinds.setdefault(key.split(":")[1], []).append(value)
    old = {
        "attn": [version_1(a, True) for a in bundle.attention],
        "rollout": [version_1(a, True) for a in bundle.rollout],
        "tokens": [version_1(t, False) for t in bundle.tokens],
    }
    raw = {"attn": bundle.attention.nbytes, "rollout": bundle.rollout.nbytes, "tokens": bundle.tokens.nbytes}
    enc_v2 = best(lambda: encode_bundle(info, "0" * 64, bundle), args.repeats)
    arrays = [v for k, vs in kinds.items() if k != "metrics" for v in vs]
    dec_v2 = best(lambda: [decode_array(v) for v in arrays], args.repeats)
    enc_v1 = best(lambda: [version_1(a, True) for a in [*bundle.attention, *bundle.rollout]], args.repeats)
    dec_v1 = best(lambda: [zlib.decompress(v) for vs in old.values() for v in vs if v[:1] == b"\x78"], 1)

    print(f"{args.arch} (random init), one cue-conflict image, bytes per (image, model) in the cache")
    print(f"{'kind':10s} {'raw MB':>8s} {'v1 zlib MB':>11s} {'v2 zstd MB':>11s}")
    total_v1 = total_v2 = 0
    for kind, values in sorted(kinds.items()):
        v2 = sum(map(len, values))
        v1 = sum(map(len, old[kind])) if kind in old else v2
        total_v1, total_v2 = total_v1 + v1, total_v2 + v2
        r = raw.get(kind, v2)
        print(f"{kind:10s} {r / 1e6:8.2f} {v1 / 1e6:11.2f} {v2 / 1e6:11.2f}")
    print(f"{'total':10s} {'':8s} {total_v1 / 1e6:11.2f} {total_v2 / 1e6:11.2f}")
    viewed = total_v2 - sum(map(len, kinds["tokens"]))
    print(f"an image viewed (v2 stores the tokens only for a set analysis that reads them): "
          f"{viewed / 1e6:.2f} MB   (goal <= 10 MB)")  # fmt: skip
    print(
        f"encode: v1 {1000 * enc_v1:7.1f} ms (attention + rollout)   v2 {1000 * enc_v2:7.1f} ms (every key)"
    )
    print(
        f"decode: v1 {1000 * dec_v1:7.1f} ms (attention + rollout)   v2 {1000 * dec_v2:7.1f} ms (every key)"
    )


if __name__ == "__main__":
    main()
