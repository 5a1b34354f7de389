"""`vitscope models verify`: recompute the sha256 of weights files and compare it with what was recorded.

Records, each checked when it exists: the digest recorded in the ``.sha256`` sidecar when the file was pulled
or imported (or, for older sidecars, the digest cached at first load while size and mtime still match), the
name of a Hugging Face LFS blob (``blobs/<sha256>``), and the card's ``weights_sha256`` / ``sha256`` for demo,
imported and trained models. Read-only: it never writes a sidecar.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from backend.models.catalog import ModelSpec, get_spec, imported_dir, list_specs
from backend.models.weights import (
    expected_file,
    find_weights,
    hub_blob_digest,
    read_sidecar,
    recorded_digest,
    sha256_of,
)

OK, MISMATCH, NO_RECORD, MISSING, SKIPPED = "OK", "MISMATCH", "NO RECORD", "MISSING", "SKIPPED"
CARD_KEYS = ("weights_sha256", "sha256")  # the first one a card has is its record of the weights' digest


@dataclass(frozen=True)
class Record:
    digest: str
    source: str  # e.g. "recorded at pull 2025-01-01T00:00:00+00:00", "hub blob name", "card sha256"


@dataclass(frozen=True)
class Verdict:
    model_id: str
    status: str  # OK | MISMATCH | NO RECORD | MISSING | SKIPPED
    path: Path | None = None
    digest: str | None = None  # of the bytes now
    records: tuple[Record, ...] = field(default=())
    note: str = ""

    @property
    def mismatches(self) -> list[Record]:
        return [r for r in self.records if r.digest != self.digest]

    def line(self, width: int = 0) -> str:
        return f"{self.model_id.ljust(width)}  {self.status.ljust(9)}  {self._detail()}"

    def _detail(self) -> str:
        if self.status == OK:
            return f"sha256 {self.digest} ({'; '.join(r.source for r in self.records)})  {self.path}"
        if self.status == MISMATCH:
            wrong = "; ".join(f"expected {r.digest} ({r.source})" for r in self.mismatches)
            return f"{wrong}, got {self.digest}  {self.path}"
        if self.status == NO_RECORD:
            return (
                f"sha256 {self.digest}, no recorded digest to compare with (pull or import it again to "
                f"record one)  {self.path}"
            )
        return self.note


# ---------------------------------------------------------------------------------------------- records
def _sidecar_record(path: Path) -> Record | None:
    sidecar = read_sidecar(path)
    recorded = recorded_digest(sidecar)
    if recorded is not None:
        info = sidecar["recorded"]
        return Record(recorded, f"recorded at {info.get('by', '?')} {info.get('at', '')}".rstrip())
    stat = path.stat()
    cached = sidecar.get("sha256")
    if (
        isinstance(cached, str)
        and sidecar.get("size") == stat.st_size
        and sidecar.get("mtime_ns") == stat.st_mtime_ns
    ):
        return Record(cached, "digest cached when first loaded")
    return None  # none, or a cache entry for an older version of the file


def _card_weights(spec: ModelSpec) -> Path:
    assert spec.card is not None
    if spec.source == "file":
        return Path(spec.location)
    return imported_dir() / str(spec.card.get("weights") or f"{spec.id}.safetensors")


def _card_record(spec: ModelSpec, path: Path) -> Record | None:
    """The card's digest, when the card describes this very file."""
    if spec.card is None or _card_weights(spec).resolve() != path.resolve():
        return None
    for key in CARD_KEYS:
        digest = spec.card.get(key)
        if isinstance(digest, str) and digest:
            return Record(digest.lower(), f"card {key}")
    return None


def records_for(spec: ModelSpec, path: Path) -> list[Record]:
    records = [_sidecar_record(path), _card_record(spec, path)]
    blob = hub_blob_digest(path)
    if blob is not None:
        records.append(Record(blob, "hub blob name"))
    return [r for r in records if r is not None]


# ---------------------------------------------------------------------------------------------- verify
def verify_spec(spec: ModelSpec) -> Verdict:
    if spec.source == "random":
        return Verdict(spec.id, SKIPPED, note=f"random initialisation ({spec.location}): no weights file")
    found = find_weights(spec)
    if found is None:
        return Verdict(spec.id, MISSING, note=f"weights not found (expected {expected_file(spec)})")
    records = tuple(records_for(spec, found.path))
    digest = sha256_of(found.path)
    status = OK if records else NO_RECORD
    if any(r.digest != digest for r in records):
        status = MISMATCH
    return Verdict(spec.id, status, found.path, digest, records)


def specs_to_verify(ids: Iterable[str]) -> list[ModelSpec]:
    """The given ids, or every listed model whose weights are present."""
    ids = list(ids)
    if ids:
        return [get_spec(model_id) for model_id in dict.fromkeys(ids)]
    return [s for s in list_specs() if s.source != "random" and find_weights(s) is not None]


def verify(ids: Iterable[str] = ()) -> Iterator[Verdict]:
    """One verdict per model, as each file is hashed (large files take seconds)."""
    return map(verify_spec, specs_to_verify(ids))
