"""The images class mode lets in: the UI's example gallery (``app.gallery``), by the sha256 of their bytes.

Class mode (``VITSCOPE_CLASS_MODE``) refuses every upload but these, whoever sends it, so the UI can still add
an example photograph through ``POST /images`` while no one can bring images of their own. The list of
examples is the UI's (one list, stdlib only); when it cannot be read, nothing is let in.
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def gallery_digests() -> frozenset[str]:
    """sha256 (hex) of every example image the UI's gallery offers on this machine."""
    try:
        from app import gallery  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        log.warning("class mode: the example gallery cannot be read (%s); every upload is refused", exc)
        return frozenset()
    digests = set()
    for example in gallery.available():
        try:
            data, _name = gallery.read(example.key)
        except OSError as exc:
            log.warning("class mode: gallery image %s cannot be read (%s)", example.key, exc)
            continue
        digests.add(hashlib.sha256(data).hexdigest())
    return frozenset(digests)
