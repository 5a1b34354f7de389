"""Where each model's weights live in the models cache, their digests, and downloads.

Layout of ``models_cache/`` (see its README): ``hub/`` is the Hugging Face cache for timm tags,
``releases/`` holds original release files, ``imported/`` converted safetensors + cards. A built-in model
whose weights were imported (``vitscope models import FILE --as <id>``) is read from
``imported/<id>.safetensors`` first.

Nothing here touches the network unless ``pull`` is called.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from backend.errors import BadRequest, WeightsUnavailable
from backend.models.catalog import BUILTIN, SIMMIM_FILE, ModelSpec, get_spec, imported_dir, models_cache_dir

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # the order timm tries (WEIGHTS.md 5.2)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    fmt: str  # converter to apply to the file's contents


def hub_dir() -> Path:
    return models_cache_dir() / "hub"


def releases_dir() -> Path:
    return models_cache_dir() / "releases"


def _hub_repo(spec: ModelSpec) -> tuple[str, str | None]:
    repo, _, revision = spec.location.partition("@")
    return repo, revision or None


def _hub_folder(repo: str) -> Path:
    """Where huggingface_hub caches a model repo under ``hub_dir()``."""
    return hub_dir() / f"models--{repo.replace('/', '--')}"


def _hub_files(spec: ModelSpec) -> tuple[str, ...]:
    """timm's file order: the safetensors twin of the cfg's file first (``open_clip_*`` for OpenCLIP tags)."""
    import timm.models as tm

    cfg = tm.get_pretrained_cfg(spec.arch) if tm.is_model(spec.arch) else None
    name = getattr(cfg, "hf_hub_filename", None)
    if name == "open_clip_pytorch_model.bin":
        return ("open_clip_model.safetensors", name)
    return (name,) if name else HUB_FILES


def release_file(spec: ModelSpec) -> Path:
    """Original release file for ``url`` / ``manual`` sources: ``releases/<file name of the URL>``, prefixed
    with the URL's folder when catalogue models share a file name (``vitb_16-checkpoint_teacher.pth``)."""
    if spec.source == "manual":
        return releases_dir() / SIMMIM_FILE
    url_path = PurePosixPath(urlparse(spec.location).path)
    shared = any(
        other.source == "url"
        and other.location != spec.location
        and PurePosixPath(urlparse(other.location).path).name == url_path.name
        for other in BUILTIN.values()
    )
    return releases_dir() / (f"{url_path.parent.name}-{url_path.name}" if shared else url_path.name)


def expected_file(spec: ModelSpec) -> str:
    """The file a user should expect to see, for error messages."""
    if spec.source == "timm":
        repo, _ = _hub_repo(spec)
        return str(_hub_folder(repo) / "snapshots" / "<commit>" / _hub_files(spec)[0])
    if spec.source in ("url", "manual"):
        return str(release_file(spec))
    return spec.location


def find_weights(spec: ModelSpec) -> WeightsFile | None:
    """The weights file on disk, or None. Pure filesystem: never a network call."""
    if spec.source == "random":
        return None
    if spec.source == "file":
        path = Path(spec.location)
        return WeightsFile(path, "timm") if path.is_file() else None
    converted = imported_dir() / f"{spec.id}.safetensors"
    if spec.card is not None and converted.is_file():
        return WeightsFile(converted, "timm")
    if spec.source == "timm":
        repo, revision = _hub_repo(spec)
        if not _hub_folder(repo).is_dir():
            return None  # nothing of the repo is cached: no need to import timm for its file names
        from huggingface_hub import try_to_load_from_cache

        for name in _hub_files(spec):
            found = try_to_load_from_cache(repo, name, cache_dir=hub_dir(), revision=revision)
            if isinstance(found, str):
                return WeightsFile(Path(found), "timm")
        return None
    path = release_file(spec)
    return WeightsFile(path, spec.converter) if path.is_file() else None


def weights_available(spec: ModelSpec) -> bool:
    return spec.source == "random" or find_weights(spec) is not None


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or env


def unavailable(spec: ModelSpec, reason: str = "") -> WeightsUnavailable:
    """Name the model, the file expected and the command that fetches or imports it."""
    head = f"weights for model '{spec.id}' are not in the models cache (expected {expected_file(spec)})"
    if reason:
        head += f"; {reason}"
    if spec.source == "file":
        return WeightsUnavailable(
            f"weights file {spec.location} of model '{spec.id}' is missing; restore it, or register the "
            "model again with `vitscope models import FILE --format timm --arch ARCH --as NAME`"
        )
    if spec.source == "manual":
        how = (
            f"download {Path(expected_file(spec)).name} by hand from {spec.location}, then run "
            f"`vitscope models import FILE --format {spec.converter} --as {spec.id}` (add --trusted only if "
            f"the file holds pickled objects you trust), or save it as {expected_file(spec)}"
        )
    else:
        how = (
            f"fetch them with `vitscope models pull {spec.id}` (needs internet), or copy a filled "
            "models_cache/ here (VITSCOPE_MODELS_CACHE)"
        )
        if spec.id in BUILTIN:  # a copy fetched elsewhere can be imported under the catalogue id
            how += f", or run `vitscope models import FILE --format {spec.converter} --as {spec.id}`"
    return WeightsUnavailable(f"{head}. To get them: {how}")


# ---------------------------------------------------------------------------------------------- digests
# A sidecar ``<file>.sha256`` is JSON: ``sha256``/``size``/``mtime_ns`` cache the digest of the file as it is
# now (recomputed when size or mtime change), and ``recorded`` keeps the digest taken when the file was pulled
# or imported (``sha256``, ``size``, ``by``, ``at``): the reference `vitscope models verify` compares against.
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _digest_sidecar(path: Path) -> Path:
    """Next to the file inside the models cache; elsewhere (demo models in git) under models_cache/digests."""
    cache = models_cache_dir().resolve()
    if path.absolute().is_relative_to(cache) or path.resolve().is_relative_to(cache):
        return path.with_name(path.name + ".sha256")
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache / "digests" / f"{key}-{path.name}.sha256"


def sha256_of(path: Path) -> str:
    """sha256 hex of the file's bytes, computed now."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_sidecar(path: Path) -> dict[str, Any]:
    """The digest sidecar of a weights file; {} when there is none or it is unreadable."""
    try:
        data = json.loads(_digest_sidecar(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_sidecar(path: Path, data: dict[str, Any]) -> None:
    sidecar = _digest_sidecar(path)
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, sidecar)
    finally:
        tmp.unlink(missing_ok=True)


def recorded_digest(sidecar: dict[str, Any]) -> str | None:
    """The digest recorded at pull / import time, if the sidecar has one."""
    recorded = sidecar.get("recorded")
    digest = recorded.get("sha256") if isinstance(recorded, dict) else None
    return digest if isinstance(digest, str) else None


def file_digest(path: Path) -> str:
    """sha256 of a weights file, cached in a sidecar keyed by size and mtime so it is computed once.

    The digest recorded at pull / import time is kept; a file that no longer matches it is logged (the
    returned digest is always that of the current bytes, so cache keys follow the file)."""
    stat = path.stat()
    data = read_sidecar(path)
    cached = data.get("sha256")
    same_file = (data.get("size"), data.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns)
    if isinstance(cached, str) and same_file:
        return cached
    digest = sha256_of(path)
    recorded = recorded_digest(data)
    if recorded is not None and recorded != digest:
        log.warning(
            "weights file %s changed since its digest was recorded (sha256 %s, now %s); "
            "check it with `vitscope models verify`",
            path,
            recorded,
            digest,
        )
    with contextlib.suppress(OSError):  # read-only cache: recompute next time
        _write_sidecar(path, {**data, "sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return digest


def record_digest(path: Path, by: str) -> str:
    """Hash the file now and record that digest as its reference (called when it is pulled or imported)."""
    stat = path.stat()
    digest = sha256_of(path)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    recorded = {"sha256": digest, "size": stat.st_size, "by": by, "at": at}
    try:
        _write_sidecar(
            path, {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "recorded": recorded}
        )
    except OSError as exc:
        log.warning("could not record the sha256 of %s: %s", path, exc)
    return digest


def hub_blob_digest(path: Path) -> str | None:
    """For a Hugging Face cache file stored as an LFS blob, the sha256 its blob name says; else None.

    ``snapshots/<commit>/<file>`` links to ``blobs/<sha256>`` for LFS files (non-LFS blobs are named by a
    40-hex git hash, and caches without symlinks hold plain copies: neither names a sha256)."""
    if not path.is_symlink():
        return None
    blob = path.resolve()
    return blob.name if blob.parent.name == "blobs" and _SHA256_RE.match(blob.name) else None


# ---------------------------------------------------------------------------------------------- downloads
def pull(model_id: str, progress: bool = True) -> Path:
    """Download a model's weights into the models cache (hub cache_dir or release URL, with a tqdm progress
    bar); a no-op when they are there. Returns the weights file."""
    return pull_spec(get_spec(model_id), progress=progress)


def pull_spec(spec: ModelSpec, progress: bool = True) -> Path:
    found = find_weights(spec)
    if found is not None:
        return found.path
    if spec.source == "random":
        raise BadRequest(f"model '{spec.id}' is a random initialisation ({spec.location}): nothing to pull")
    if spec.source in ("file", "manual"):
        raise unavailable(spec)
    if offline():
        raise unavailable(spec, "offline mode is set (HF_HUB_OFFLINE), so nothing can be downloaded")
    try:
        path = _pull_hub(spec, progress) if spec.source == "timm" else _pull_url(spec, progress)
    except OSError as exc:  # network errors of huggingface_hub and urllib are OSErrors
        raise unavailable(spec, f"the download failed: {exc}") from exc
    _record_pulled(spec, path)
    return path


def _record_pulled(spec: ModelSpec, path: Path) -> None:
    """Record the digest of a fresh download; a hub blob whose bytes do not match its name is refused."""
    blob = hub_blob_digest(path)
    digest = record_digest(path, "pull")
    if blob is not None and blob != digest:
        for leftover in (path.resolve(), path, _digest_sidecar(path)):
            leftover.unlink(missing_ok=True)
        raise unavailable(
            spec,
            f"the downloaded file was corrupt (sha256 {digest}, its hub blob name says "
            f"{blob}) and was deleted; pull again",
        )


def _pull_hub(spec: ModelSpec, progress: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    repo, revision = _hub_repo(spec)
    names = _hub_files(spec)
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        for name in names:
            try:
                return Path(hf_hub_download(repo, name, cache_dir=hub_dir(), revision=revision))
            except LocalEntryNotFoundError:
                raise  # hub unreachable (it subclasses EntryNotFoundError in huggingface_hub 2.x)
            except EntryNotFoundError:
                continue  # no safetensors: fall back to the pickle like timm does
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()
    raise unavailable(spec, f"the hub repo {repo} has none of {', '.join(names)}")


def _pull_url(spec: ModelSpec, progress: bool) -> Path:
    from torch.hub import download_url_to_file

    dest = release_file(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    download_url_to_file(spec.location, str(dest), progress=progress)  # tqdm bar, temp file then rename
    return dest
