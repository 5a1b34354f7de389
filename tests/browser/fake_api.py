"""A stand-in for the REST API (issue 3 contract) with synthetic numbers, for UI development without torch.

The browser tests run against the real ``vitscope serve``; this is for working on the page quickly:
``python -m tests.browser.fake_api --port 8765`` then ``python -m app.main --api-url http://127.0.0.1:8765``.
Synthetic attention: CL models look wider (and the same for every query) in later blocks, MIM stays local.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
from typing import Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError

MODELS: list[dict[str, Any]] = [
    {
        "id": "fake-cl-s16",
        "family": "cl",
        "arch": "vit_small_patch16_224",
        "patch_size": 16,
        "available": True,
        "loaded": False,
        "license": "test",
        "layers": 12,
        "heads": 6,
    },
    {
        "id": "fake-mim-s16",
        "family": "mim",
        "arch": "vit_small_patch16_224",
        "patch_size": 16,
        "available": True,
        "loaded": False,
        "license": "test",
        "layers": 12,
        "heads": 6,
    },
    {
        "id": "random-vit-s16",
        "family": "baseline",
        "arch": "vit_small_patch16_224",
        "patch_size": 16,
        "available": True,
        "loaded": False,
        "license": "none",
        "layers": 12,
        "heads": 6,
    },
    {
        "id": "mocov3-vit-b16",
        "family": "cl",
        "arch": "vit_base_patch16_224",
        "patch_size": 16,
        "available": False,
        "loaded": False,
        "license": "cc-by-nc-4.0",
        "layers": 12,
        "heads": 12,
        "unavailable_reason": "weights not in models_cache/mocov3-vit-b16.pth.tar",
        "fetch_command": "vitscope models pull mocov3-vit-b16",
    },
]
GRID = (14, 14)


class ApiFail(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


def create_app() -> FastAPI:
    app = FastAPI()
    images: dict[str, bytes] = {}
    sets: dict[str, list[str]] = {}
    by_id = {m["id"]: m for m in MODELS}

    @app.exception_handler(ApiFail)
    async def fail(_r: Request, exc: ApiFail) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)

    def model(mid: str) -> dict[str, Any]:
        if mid not in by_id:
            raise ApiFail(404, "unknown_model", f"unknown model {mid!r}; known: {sorted(by_id)}")
        if not by_id[mid]["available"]:
            raise ApiFail(409, "weights_unavailable", by_id[mid]["unavailable_reason"])
        return by_id[mid]

    def image(iid: str) -> bytes:
        if iid not in images:
            raise ApiFail(
                404, "unknown_image", f"no image {iid!r} on this server; upload it with POST /images"
            )
        return images[iid]

    def seed(*parts: Any) -> np.random.Generator:
        return np.random.default_rng(int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16))

    def amap(iid: str, m: dict[str, Any], layer: int, head: Any, query: Any) -> np.ndarray:
        h, w = GRID
        yy, xx = np.mgrid[0:h, 0:w]
        if query == "cls":
            qr, qc = h / 2, w / 2
        else:
            qr, qc = divmod(int(query), w)
        heads = range(m["heads"]) if head == "mean" else [int(head)]
        total = np.zeros(GRID)
        for hd in heads:
            rng = seed(iid, m["id"], layer, hd)
            if m["family"] == "cl":
                width = 1.0 + 6.0 * layer / 12
                cr, cc = (qr, qc) if layer < 6 else (h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7))
            else:
                width, cr, cc = 1.0 + 0.3 * (hd % 3), qr, qc
            g = np.exp(-((yy - cr) ** 2 + (xx - cc) ** 2) / (2 * width**2)) + 0.05 * rng.random(GRID)
            total += g / g.sum()
        return total / total.sum()

    def metrics(m: dict[str, Any], n_images: int, iid: str) -> dict[str, Any]:
        L, H = m["layers"], m["heads"]
        rng = seed(iid, m["id"])
        cl = m["family"] == "cl"
        per_head = [
            [float(30 + (70 if cl else 10) * (k / L) + 10 * rng.random()) for _ in range(H)]
            for k in range(1, L + 1)
        ]
        nmi = [
            [float((0.3 - 0.25 * k / L if cl else 0.4) + 0.05 * rng.random()) for _ in range(H)]
            for k in range(1, L + 1)
        ]
        ent = [
            [float(2 + (3 if cl else 1) * k / L + 0.2 * rng.random()) for _ in range(H)]
            for k in range(1, L + 1)
        ]
        std = 0.0 if n_images == 1 else 0.1

        def summ(v: list[list[float]], s: float) -> dict[str, Any]:
            mean = [sum(r) / len(r) for r in v]
            return {"mean": mean, "per_head": v, "std": [s * abs(x) for x in mean]}

        dla = [float((-2.9 if cl else -2.1) + 0.2 * math.sin(k)) for k in range(L + 1)]
        return {
            "model": m["id"],
            "family": m["family"],
            "grid": list(GRID),
            "patch_size": 16,
            "layers": L,
            "heads": H,
            "num_images": n_images,
            "preprocessing": {
                "input_size": [224, 224],
                "resize": 256,
                "interpolation": "bilinear",
                "crop": "center",
                "crop_pct": 0.875,
                "mode": "paper",
            },
            "attention_distance": summ(per_head, std),
            "nmi": summ(nmi, std),
            "attention_entropy": summ(ent, std),
            "delta_log_amplitude": {"depth": list(range(L + 1)), "value": dla, "std": [std] * (L + 1)},
        }

    @app.get("/api/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/models")
    def models() -> dict[str, Any]:
        return {"models": MODELS}

    @app.post("/api/v1/images", status_code=201)
    async def upload(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
        data = await file.read()
        if not data:
            raise ApiFail(400, "bad_image", "the upload is empty; send an image file (JPEG, PNG, WebP, ...)")
        try:
            im = Image.open(io.BytesIO(data))
            im.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise ApiFail(
                415,
                "bad_image",
                f"{file.filename!r} is not an image this server can decode ({exc.__class__.__name__}); "
                "allowed: JPEG, PNG, WebP, BMP, GIF, TIFF",
            ) from exc
        iid = hashlib.sha256(data).hexdigest()
        images[iid] = data
        return {"id": iid, "width": im.width, "height": im.height, "format": im.format}

    @app.get("/api/v1/images/{iid}")
    def get_image(iid: str) -> Response:
        return Response(image(iid), media_type="application/octet-stream")

    @app.get("/api/v1/images/{iid}/metrics")
    def get_metrics(iid: str, model: str) -> dict[str, Any]:
        image(iid)
        return metrics(globals_model(model), 1, iid)

    def globals_model(mid: str) -> dict[str, Any]:
        return model(mid)

    @app.get("/api/v1/images/{iid}/attention")
    def attention(iid: str, model: str, layer: int, head: str = "mean", query: str = "cls") -> dict[str, Any]:
        image(iid)
        m = globals_model(model)
        if not 1 <= layer <= m["layers"]:
            raise ApiFail(422, "bad_request", f"layer {layer} is out of range 1..{m['layers']}")
        if head not in ("mean", "all") and not (head.isdigit() and int(head) < m["heads"]):
            raise ApiFail(422, "bad_request", f"head {head!r}: use 0..{m['heads'] - 1} or 'mean'")
        if query != "cls" and not (query.isdigit() and int(query) < GRID[0] * GRID[1]):
            raise ApiFail(422, "bad_request", f"query {query!r}: use 0..{GRID[0] * GRID[1] - 1} or 'cls'")
        if head == "all":
            maps = [amap(iid, m, layer, h, query).tolist() for h in range(m["heads"])]
            return {"grid": list(GRID), "layer": layer, "head": "all", "query": query, "maps": maps}
        return {
            "grid": list(GRID),
            "layer": layer,
            "head": head,
            "query": query,
            "map": amap(iid, m, layer, head, query).tolist(),
        }

    @app.get("/api/v1/images/{iid}/spectrum")
    def spectrum(iid: str, model: str, depth: int, state: str = "out") -> dict[str, Any]:
        image(iid)
        m = globals_model(model)
        h, w = GRID
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot(yy - h // 2, xx - w // 2)
        slope = 0.5 if m["family"] == "cl" else 0.2
        z = 3.0 - slope * r + 0.05 * seed(iid, model, depth, state).random(GRID)
        return {"grid": list(GRID), "depth": depth, "state": state, "map": z.tolist()}

    @app.post("/api/v1/sets", status_code=201)
    async def make_set(request: Request) -> dict[str, Any]:
        body = await request.json()
        ids = body.get("images") or body.get("image_ids") or []
        for i in ids:
            image(i)
        sid = hashlib.sha256(",".join(ids).encode()).hexdigest()[:16]
        sets[sid] = ids
        return {"id": sid, "images": ids}

    @app.get("/api/v1/sets/{sid}/metrics")
    def set_metrics(sid: str, model: str) -> dict[str, Any]:
        if sid not in sets:
            raise HTTPException(404)
        return metrics(globals_model(model), len(sets[sid]), sid)

    @app.get("/api/v1/sets/{sid}/embeddings")
    def embeddings(sid: str, model: str, layer: int, method: str = "pca") -> dict[str, Any]:
        m = globals_model(model)
        ids = sets[sid]
        rng = seed(sid, model, layer, method)
        pts, idx = [], []
        for k in range(len(ids)):
            centre = rng.normal(0, 5, 2) if m["family"] == "cl" else np.zeros(2)
            spread = 0.6 if m["family"] == "cl" else 3.0
            for p in rng.normal(0, spread, (GRID[0] * GRID[1], 2)) + centre:
                pts.append([float(p[0]), float(p[1])])
                idx.append(k)
        return {"method": method, "layer": layer, "points": pts, "image_index": idx}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
