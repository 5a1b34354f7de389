"""`vitscope models pull`: what a pull would fetch and how big it is, the checks before any byte is
downloaded (offline mode, disk space, reachable hosts), and the downloads themselves.

Planning is pure filesystem work; only ``check_can_download`` (one small request per host) and ``download``
touch the network.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from backend.errors import BadRequest, VitscopeError, WeightsUnavailable
from backend.models.catalog import PRESETS, ModelSpec, get_spec, models_cache_dir
from backend.models.weights import (
    expected_file,
    find_weights,
    offline,
    pull_spec,
    read_sidecar,
    recorded_digest,
)

PRESENT, DOWNLOAD, MANUAL, MISSING = "present", "download", "by hand", "missing"
PROBE_TIMEOUT_S = 5.0
DISK_MARGIN = 1.05  # temp files are renamed into place, so a download needs about its own size


@dataclass(frozen=True)
class PlanItem:
    spec: ModelSpec
    action: str  # PRESENT | DOWNLOAD | MANUAL | MISSING
    where: str  # the file that is present, or where the weights come from

    @property
    def size_mb(self) -> float | None:
        return self.spec.size_mb


# ---------------------------------------------------------------------------------------------- plan
def resolve_ids(ids: Sequence[str], preset: str | None) -> list[str]:
    """The preset's ids, then the ids given, each once."""
    if preset is not None and preset not in PRESETS:
        raise BadRequest(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    names = [*(PRESETS[preset] if preset else ()), *ids]
    if not names:
        raise BadRequest(f"name the models to pull, or a preset (--preset {' | '.join(PRESETS)})")
    return list(dict.fromkeys(names))


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def _plan_item(spec: ModelSpec) -> PlanItem:
    if spec.source == "random":
        raise BadRequest(f"model '{spec.id}' is a random initialisation ({spec.location}): nothing to pull")
    found = find_weights(spec)
    if found is not None:
        return PlanItem(spec, PRESENT, str(found.path))
    if spec.source == "manual":
        return PlanItem(spec, MANUAL, spec.location)
    if spec.source == "file":
        return PlanItem(spec, MISSING, spec.location)
    if spec.source == "timm":
        return PlanItem(spec, DOWNLOAD, f"{_hub_endpoint()}/{spec.location.partition('@')[0]}")
    return PlanItem(spec, DOWNLOAD, spec.location)


def plan_pull(ids: Iterable[str]) -> list[PlanItem]:
    """One item per model: already present (skipped), to download, to fetch by hand, or missing for good."""
    return [_plan_item(get_spec(model_id)) for model_id in ids]


def to_download(items: Iterable[PlanItem]) -> list[PlanItem]:
    return [item for item in items if item.action == DOWNLOAD]


def total_mb(items: Iterable[PlanItem]) -> tuple[float, int]:
    """Sum of the known size estimates, and how many items have none."""
    sizes = [item.size_mb for item in items]
    return sum(s for s in sizes if s is not None), sum(s is None for s in sizes)


# ---------------------------------------------------------------------------------------------- text
def format_mb(mb: float | None) -> str:
    if mb is None:
        return "?"
    if mb >= 1000:
        return f"{mb / 1000:.2f} GB"
    return f"{mb:.0f} MB" if mb >= 100 else f"{mb:.1f} MB"


def _about(items: Sequence[PlanItem]) -> str:
    known, unknown = total_mb(items)
    text = f"about {format_mb(known)}"
    return text + (f" + {unknown} of unknown size" if unknown else "")


def plan_table(items: Sequence[PlanItem]) -> list[str]:
    """The plan as an aligned table, one row per model, with the size estimate of each file."""
    rows = [("ID", "FAMILY", "SOURCE", "SIZE (EST.)", "STATUS", "FROM / AT")]
    rows += [
        (i.spec.id, i.spec.family, i.spec.source, format_mb(i.size_mb), i.action, i.where) for i in items
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [row[c].rjust(w) if c == 3 else row[c].ljust(w) for c, w in enumerate(widths)]
        lines.append("  ".join(cells) + "  " + row[-1])
    return lines


def plan_summary(items: Sequence[PlanItem]) -> str:
    downloads = to_download(items)
    parts = [f"To download: {len(downloads)} file{'s' * (len(downloads) != 1)}, {_about(downloads)}."]
    if present := [i for i in items if i.action == PRESENT]:
        parts.append(f"Already present (skipped): {len(present)}.")
    if manual := [i for i in items if i.action == MANUAL]:
        parts.append(f"By hand: {len(manual)} ({_about(manual)}; see below).")
    if missing := [i for i in items if i.action == MISSING]:
        parts.append(f"Missing, cannot be downloaded: {', '.join(i.spec.id for i in missing)}.")
    return " ".join(parts)


def manual_instructions(item: PlanItem) -> list[str]:
    """How to add a model that has no direct download link: the page, then the import command."""
    spec = item.spec
    return [
        f"{spec.id} has no direct download link; add it by hand:",
        f"  1. download {Path(expected_file(spec)).name} ({_about([item])}) from {spec.location}",
        f"  2. vitscope models import FILE --format {spec.converter} --as {spec.id}",
        "     (FILE: the downloaded file; add --trusted only if it holds pickled objects you trust)",
    ]


def missing_instructions(item: PlanItem) -> str:
    return (
        f"{item.spec.id}: weights file {item.where} is missing and has no download source; restore it or "
        "register the model again with `vitscope models import`"
    )


# ---------------------------------------------------------------------------------------------- checks
def _host(item: PlanItem) -> str:
    url = urlparse(item.where)
    return f"{url.scheme}://{url.netloc}"


def probe(base_url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the host answers at all (any HTTP status); else why it cannot be reached. Honours the
    HTTP(S)_PROXY environment like the downloads do."""
    try:
        with urllib.request.urlopen(urllib.request.Request(base_url + "/", method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason) or type(reason).__name__


def _offline_error(downloads: Sequence[PlanItem]) -> WeightsUnavailable:
    ids = ", ".join(i.spec.id for i in downloads)
    return WeightsUnavailable(
        f"offline mode is set (HF_HUB_OFFLINE), so nothing can be downloaded; not present: {ids} "
        f"({_about(downloads)}). Pull on a machine with internet and copy its models_cache/ here "
        f"({models_cache_dir()}), or unset HF_HUB_OFFLINE"
    )


def _check_disk(downloads: Sequence[PlanItem]) -> None:
    needed_mb = total_mb(downloads)[0] * DISK_MARGIN
    free_mb = shutil.disk_usage(models_cache_dir()).free / 1e6
    if free_mb < needed_mb:
        raise WeightsUnavailable(
            f"not enough disk space in {models_cache_dir()}: the downloads need {format_mb(needed_mb)}, "
            f"{format_mb(free_mb)} is free"
        )


def _check_hosts(downloads: Sequence[PlanItem]) -> None:
    hosts = list(dict.fromkeys(_host(i) for i in downloads))
    with ThreadPoolExecutor(len(hosts)) as pool:  # one timeout in all, not one per host
        answers = dict(zip(hosts, pool.map(probe, hosts), strict=True))
    failed = {host: why for host, why in answers.items() if why is not None}
    if failed:
        lines = "; ".join(
            f"{host} ({why}) for {', '.join(i.spec.id for i in downloads if _host(i) == host)}"
            for host, why in failed.items()
        )
        raise WeightsUnavailable(
            f"cannot reach {lines}. Check the network (and HTTPS_PROXY if a proxy is needed), or copy a "
            f"filled models_cache/ from a machine with internet to {models_cache_dir()}"
        )


def check_can_download(items: Sequence[PlanItem]) -> None:
    """Fail at once, before any download, when offline mode is set, the disk is too small or a host does not
    answer (huggingface_hub 2.x would otherwise retry for about 47 s per file)."""
    downloads = to_download(items)
    if not downloads:
        return
    if offline():
        raise _offline_error(downloads)
    _check_disk(downloads)
    _check_hosts(downloads)


# ---------------------------------------------------------------------------------------------- downloads
def download(
    items: Sequence[PlanItem], *, progress: bool = True, echo: Callable[[str], None] = print
) -> list[str]:
    """Download every DOWNLOAD item in order (the sha256 of each file is recorded as it lands); a failure is
    reported and the others go on. Returns the failure messages."""
    downloads = to_download(items)
    failures: list[str] = []
    for n, item in enumerate(downloads, 1):
        echo(f"[{n}/{len(downloads)}] {item.spec.id}: downloading {_about([item])} from {item.where}")
        try:
            path = pull_spec(item.spec, progress=progress)
        except VitscopeError as exc:
            failures.append(f"{item.spec.id}: {exc}")
            echo(f"[{n}/{len(downloads)}] {item.spec.id}: FAILED: {exc}")
            continue
        digest = recorded_digest(read_sidecar(path)) or "not recorded"
        echo(f"[{n}/{len(downloads)}] {item.spec.id}: {path} (sha256 {digest})")
    return failures
