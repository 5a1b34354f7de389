"""The model catalogue as the API serves it: ids, weights on disk, what is loaded, downloads as jobs."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import PurePath
from typing import Any

from backend.cache import SingleFlight
from backend.config import Settings
from backend.errors import BadRequest, ClassModeRefused, DownloadsDisabled, ModelNotFound
from backend.runner import RunnerPool
from backend.service.bundle import ModelInfo, model_info_of
from backend.service.jobs import Job, JobManager

_PATCH_RE = re.compile(r"patch(\d+)")
_LISTING_TTL = 5.0  # seconds a listing of the weights on disk is reused
PULL_PROGRESS_S = 0.25  # how often a download job measures what it has written


def missing_weights(spec: Any) -> tuple[str, str]:
    """Why a model cannot run (naming the file expected) and the command that fetches or imports it."""
    from backend.models.weights import expected_file

    if spec.source == "file":
        return (
            f"the weights file {spec.location} is missing",
            f"vitscope models import FILE --format timm --arch {spec.arch} --as {spec.id}",
        )
    expected = expected_file(spec)
    reason = f"no weights in the models cache (expected {expected})"
    if spec.source == "manual":
        name = PurePath(expected).name
        return (
            f"{reason}; {name} has no direct download: get it by hand from {spec.location}",
            f"vitscope models import {name} --format {spec.converter} --as {spec.id}",
        )
    return reason, f"vitscope models pull {spec.id}"


def snapshot_curves(card: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The per-layer curves of each analysed training snapshot in a trained model's card
    (``training.snapshots``, written by ``vitscope train --snapshot-epochs``), by epoch: relative attention
    distance and NMI per block, delta log amplitude per depth, each the mean over the snapshot's images."""
    snapshots = ((card or {}).get("training") or {}).get("snapshots") or []
    curves = [
        {
            "epoch": float(snap["epoch"]),
            "images_seen": int(snap.get("images_seen", 0)),
            "attention_distance_relative": list(snap["metrics"]["attention_distance_relative"]["mean"]),
            "nmi": list(snap["metrics"]["nmi"]["mean"]),
            "delta_log_amplitude": list(snap["metrics"]["delta_log_amplitude"]["value"]),
        }
        for snap in snapshots
        if isinstance(snap.get("metrics"), dict)
    ]
    return sorted(curves, key=lambda c: c["epoch"])


def _state(spec: Any) -> tuple[Any, bool, tuple[str, str] | None]:
    from backend.models import weights_available

    available = weights_available(spec)
    return spec, available, None if available else missing_weights(spec)


def _catalogue() -> list[tuple[Any, bool, tuple[str, str] | None]]:
    from backend.models import list_specs

    return [_state(spec) for spec in list_specs()]


class ModelService:
    def __init__(self, settings: Settings, pool: RunnerPool, jobs: JobManager) -> None:
        self.settings = settings
        self.pool = pool
        self.jobs = jobs
        self._infos: dict[str, ModelInfo] = {}
        self._flight = SingleFlight()
        self._listing: tuple[float, list[tuple[Any, bool, tuple[str, str] | None]]] | None = None

    @property
    def default_model(self) -> str:
        return self.settings.default_models[0] if self.settings.default_models else "random-vit-s16"

    def known_info(self, model_id: str) -> ModelInfo | None:
        """Cheap (memory only): the ranges of a model loaded before."""
        return self._infos.get(model_id)

    async def info(self, model_id: str) -> ModelInfo:
        info = self._infos.get(model_id)
        if info is not None:
            return info
        return await self._flight.run(("model-info", model_id), lambda: self._load_info(model_id))

    async def spec(self, model_id: str) -> Any:
        """The catalogue entry (``ModelSpec``) of a model id, or ``ModelNotFound``."""
        from backend.models import get_spec
        from backend.models.catalog import check_name

        try:
            check_name(model_id)
        except BadRequest:
            raise ModelNotFound(
                f"unknown model {model_id!r}: model ids are 1-80 lowercase letters, digits, '.', '_' or '-'; "
                "GET /api/v1/models lists them"
            ) from None
        return await asyncio.to_thread(get_spec, model_id)

    async def _load_info(self, model_id: str) -> ModelInfo:
        await self.spec(model_id)  # ModelNotFound before touching the runner
        runner = self.pool.pick(model_id)
        info = await runner.with_model(model_id, model_info_of)
        self._infos[model_id] = info
        return info

    # -- listing ---------------------------------------------------------------------------------------------
    async def listing(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._listing is None or now - self._listing[0] > _LISTING_TTL:
            self._listing = (now, await asyncio.to_thread(_catalogue))
        loaded = set(self.pool.loaded())
        return [self._entry(spec, ok, loaded, missing) for spec, ok, missing in self._listing[1]]

    async def entry(self, model_id: str) -> dict[str, Any]:
        spec = await self.spec(model_id)
        spec, available, missing = await asyncio.to_thread(_state, spec)
        return self._entry(spec, available, set(self.pool.loaded()), missing)

    def _entry(
        self, spec: Any, available: bool, loaded: set[str], missing: tuple[str, str] | None
    ) -> dict[str, Any]:
        info = self.known_info(spec.id)
        # Not loaded yet: arch_kwargs override the name (the demo models are patch 4 on a patch16 arch).
        match = _PATCH_RE.search(spec.arch)
        declared = spec.arch_kwargs.get("patch_size", int(match.group(1)) if match else None)
        patch = info.patch_size if info is not None else declared
        reason, command = missing if missing is not None and not available else (None, None)
        return {
            "id": spec.id,
            "family": spec.family,
            "arch": spec.arch,
            "patch_size": patch,
            "input_size": _input_size(spec, info),
            "available": available,
            "loaded": spec.id in loaded,
            "license": spec.license,
            "source": spec.source,
            "untrained": spec.untrained,
            "paper": spec.paper,
            "description": spec.description,
            "info": info.as_dict() if info is not None else None,
            "default": spec.id in self.settings.default_models,
            "unavailable_reason": reason,
            "fetch_command": command,
            "snapshots": snapshot_curves(spec.card),
        }

    # -- downloads -------------------------------------------------------------------------------------------
    async def pull(self, model_id: str) -> Job | None:
        """None when the weights are already there; else a download job (downloads must be allowed)."""
        from backend.models import pull, weights_available

        if self.settings.class_mode:
            raise ClassModeRefused(
                f"this server runs in class mode (VITSCOPE_CLASS_MODE), which offers only the preloaded "
                f"models and never downloads; an operator can run `vitscope models pull {model_id}` before "
                "the lesson"
            )
        spec = await self.spec(model_id)
        if await asyncio.to_thread(weights_available, spec):
            return None
        if not self.settings.allow_downloads:
            raise DownloadsDisabled(
                "downloads are disabled on this server; an operator can run "
                f"`vitscope models pull {model_id}`, "
                "or start the server with VITSCOPE_ALLOW_DOWNLOADS=1"
            )

        total = int((spec.size_mb or 0) * 1_000_000)

        async def work(job: Job) -> None:
            # Progress in bytes: what the download has written so far against the catalogue's size (the job
            # ends at the real end, never at a guess).
            task = asyncio.ensure_future(asyncio.to_thread(pull, model_id, False))
            while not task.done():
                await asyncio.wait({task}, timeout=PULL_PROGRESS_S)
                if total:
                    job.advance(min(await asyncio.to_thread(_partial_bytes, spec), total - 1), total)
            await task
            job.advance(max(total, 1), max(total, 1))

        return self.jobs.ensure(
            ("pull", model_id),
            "pull",
            f"download weights of {model_id}",
            work,
            result_url=f"/api/v1/models/{model_id}",
            total=max(total, 1),
        )


def _input_size(spec: Any, info: Any) -> list[int] | None:
    """[H, W] the model reads: from its grid once loaded, else the card's ``img_size``; None when unknown."""
    if info is not None:
        return [info.grid[0] * info.patch_size, info.grid[1] * info.patch_size]
    size = spec.arch_kwargs.get("img_size")
    if isinstance(size, int):
        return [size, size]
    return [int(size[0]), int(size[1])] if size else None


def _partial_bytes(spec: Any) -> int:
    """Bytes a download of ``spec`` has written so far: huggingface_hub's ``blobs/*.incomplete`` in the repo's
    cache folder, or torch.hub's ``<file>.<hex>.partial`` beside the release file."""
    from backend.models.weights import _hub_folder, _hub_repo, release_file

    if spec.source == "timm":
        files = list(_hub_folder(_hub_repo(spec)[0]).glob("blobs/*.incomplete"))
    else:
        dest = release_file(spec)
        files = list(dest.parent.glob(dest.name + ".*.partial"))
    done = 0
    for f in files:
        try:
            done += f.stat().st_size
        except OSError:  # renamed into place meanwhile
            continue
    return done
