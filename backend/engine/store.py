"""``DIR/per_image.parquet``: one row per (image, model) with every per-layer value, written so that a run
can stop anywhere and the next one resumes.

During a run each finished chunk of rows is written as a complete small Parquet file under
``DIR/.per_image.parts/`` (a killed run loses at most the rows not yet flushed); ``merge`` folds the parts
into ``per_image.parquet`` (written beside it and renamed, so it is always a whole file). Columns: ``image``
(path, or ``shard.tar/member``), ``sha256`` (of the file's bytes), ``model``, the setup the values depend on
(``weights_digest``, ``preprocessing`` as canonical JSON, ``analysis_version``), and one per field of
``PerImage`` holding that image's slice (``distance``, ``nmi``, ``entropy``: ``[L][heads]``; ``scalars``:
``[3L + 1]``, the rows that ``PerImage`` documents) and of ``ModernValues`` but its set sums
(``token_norm`` ``[L + 1][4]``, ``effective_rank`` ``[L + 1]``, ``head_diversity`` ``[L]``,
``cls_selectivity`` / ``cls_self`` ``[L][heads]``; null where the model has one head or no CLS), as
float64. A row counts as done only for the same setup: rerunning with other weights or another
``--preprocessing`` recomputes (and replaces) it. The positional share needs sums over the whole set, which
rows cannot rebuild: the aggregate leaves it null.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from backend import ANALYSIS_VERSION
from backend.analysis.modern import ModernValues
from backend.analysis.summary import PerImage
from backend.engine.worker import ModelInfo

FILE = "per_image.parquet"
PARTS = ".per_image.parts"
SETUP = ("weights_digest", "preprocessing", "analysis_version")
KEYS = ("image", "sha256", "model", *SETUP)
PER_IMAGE_FIELDS = tuple(f.name for f in dataclasses.fields(PerImage))
# ModernValues' per-image tensors (its positional-share sums are a set statistic, not a row)
MODERN_FIELDS = ("token_norm", "effective_rank", "head_diversity", "cls_selectivity", "cls_self")
VALUE_FIELDS = PER_IMAGE_FIELDS + MODERN_FIELDS
# list depth of each column's per-image value
DEPTHS = {"distance": 2, "nmi": 2, "entropy": 2, "scalars": 1, "token_norm": 2, "effective_rank": 1}
DEPTHS |= {"head_diversity": 1, "cls_selectivity": 2, "cls_self": 2}


def setup_of(info: ModelInfo) -> dict[str, str]:
    """What a model's values depend on besides the image: its weights, preprocessing and analysis version."""
    prep = json.dumps(info.preprocessing.as_dict(), sort_keys=True, separators=(",", ":"))
    return {
        "weights_digest": info.weights_digest,
        "preprocessing": prep,
        "analysis_version": ANALYSIS_VERSION,
    }


def rows_of(
    info: ModelInfo, paths: Sequence[str], sha256: Sequence[str], values: PerImage, modern: ModernValues
) -> list[dict[str, Any]]:
    """One row per image of ``values`` and ``modern`` (images are axis 1 of every field)."""
    columns: dict[str, torch.Tensor | None] = {n: getattr(values, n).double().cpu() for n in PER_IMAGE_FIELDS}
    for name in MODERN_FIELDS:
        t = getattr(modern, name)
        columns[name] = None if t is None else t.double().cpu()
    setup = setup_of(info)
    return [
        {"image": path, "sha256": digest, "model": info.model}
        | setup
        | {name: None if t is None else t[:, i].tolist() for name, t in columns.items()}
        for i, (path, digest) in enumerate(zip(paths, sha256, strict=True))
    ]


def _schema() -> pa.Schema:
    fields = [pa.field(k, pa.string()) for k in KEYS]
    for name, depth in DEPTHS.items():
        kind: pa.DataType = pa.float64()
        for _ in range(depth):
            kind = pa.list_(kind)
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


class Store:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.parts = out / PARTS
        self.run = uuid.uuid4().hex[:8]

    @property
    def file(self) -> Path:
        return self.out / FILE

    def _files(self) -> list[Path]:
        parts = sorted(self.parts.glob("*.parquet")) if self.parts.is_dir() else []
        return ([self.file] if self.file.is_file() else []) + parts

    def done(self, setups: Mapping[str, Mapping[str, str]]) -> set[tuple[str, str]]:
        """(image, model) pairs already in the output (merged, or in parts a stopped run left) with the
        model's current setup (``setup_of``)."""
        pairs: set[tuple[str, str]] = set()
        for path in self._files():
            for row in pq.read_table(path, columns=["image", "model", *SETUP]).to_pylist():
                setup = setups.get(row["model"])
                if setup is not None and all(row[k] == setup[k] for k in SETUP):
                    pairs.add((row["image"], row["model"]))
        return pairs

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rows as one complete part file (written under a temporary name, then renamed)."""
        if not rows:
            return
        self.parts.mkdir(parents=True, exist_ok=True)
        # named by the time written: the merge keeps the order in which runs wrote their rows
        name = self.parts / f"part-{time.time_ns():020d}-{self.run}.parquet"
        pq.write_table(pa.Table.from_pylist(list(rows), schema=_schema()), f"{name}.tmp")
        os.replace(f"{name}.tmp", name)

    def merge(self) -> None:
        """Fold every part into ``per_image.parquet`` (an (image, model) seen twice keeps its last row)."""
        files = self._files()
        parts = [p for p in files if p != self.file]
        if not parts:
            return
        table = pa.concat_tables([pq.read_table(p) for p in files], promote_options="permissive")
        keys = list(zip(table["image"].to_pylist(), table["model"].to_pylist(), strict=True))
        last = {key: i for i, key in enumerate(keys)}
        if len(last) != len(keys):
            table = table.take(sorted(last.values()))
        tmp = self.out / f".{FILE}.{self.run}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.file)
        for p in parts:
            p.unlink()
        self.parts.rmdir()

    def values(
        self, info: ModelInfo, images: Sequence[str]
    ) -> tuple[list[str], PerImage, ModernValues] | None:
        """The merged rows of a model (with its current setup) for ``images`` (in that order, those present),
        as one PerImage and one ModernValues (without the positional-share sums)."""
        if not self.file.is_file():
            return None
        setup = setup_of(info)
        filters = [("model", "==", info.model)] + [(k, "==", setup[k]) for k in SETUP]
        table = pq.read_table(self.file, filters=filters)
        position = {path: i for i, path in enumerate(table["image"].to_pylist())}
        order = [position[p] for p in images if p in position]
        if not order:
            return None
        table = table.take(order)

        def stacked(name: str) -> torch.Tensor | None:
            column = table[name].to_pylist()
            if any(v is None for v in column):
                return None
            return torch.tensor(column, dtype=torch.float64).movedim(0, 1)  # images back to axis 1

        per_image = PerImage(**{name: stacked(name) for name in PER_IMAGE_FIELDS})  # type: ignore[arg-type]
        modern = ModernValues(**{name: stacked(name) for name in MODERN_FIELDS}, positions=None)  # type: ignore[arg-type]
        return table["image"].to_pylist(), per_image, modern
