"""Set definitions (ordered image id lists) in ``<data_dir>/sets/<set id>.json``, plus a memory index."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class SetFolder:
    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "sets"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[str, list[str]] = {}

    def get(self, set_id: str) -> list[str] | None:
        members = self._index.get(set_id)
        if members is not None:
            return members
        path = self.root / f"{set_id}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if isinstance(data, list) and all(isinstance(v, str) for v in data):
            self._index[set_id] = data
            return data
        log.warning("ignoring malformed set file %s", path)
        return None

    def put(self, set_id: str, members: list[str]) -> None:
        with self._lock:
            self._index[set_id] = list(members)
            path = self.root / f"{set_id}.json"
            if path.exists():
                return
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(members))
            os.replace(tmp, path)
