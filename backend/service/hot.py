"""An in-process, byte-bounded LRU of rendered responses in front of the store (the cached path's fast lane).

Keys are tuples that already hold every part of a content address (image id, model id, weights digest, ...),
so an entry never goes stale; it is only evicted. Used from the event loop only (no lock).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from starlette.responses import Response


@dataclass(frozen=True, slots=True)
class View:
    """A rendered response body and its media type."""

    body: bytes
    media_type: str

    def as_response(self, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(self.body, status_code=status, media_type=self.media_type, headers=headers)


def view_key(kind: str, image_id: str, model_id: str, digest: str, *params: object) -> tuple[object, ...]:
    """The hot-lane key of a rendered image view; ``params``: the request's values as the route got them."""
    return (kind, image_id, model_id, digest, *params)


class HotCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, View] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> View | None:
        view = self._items.get(key)
        if view is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return view

    def put(self, key: Hashable, view: View) -> None:
        size = len(view.body)
        if size > self.max_bytes // 8:  # one large answer must not flush the lane
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body)
        self._items[key] = view
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped.body)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes
