"""Cache keys are content addresses: a change in any input (image bytes, model, weights, preprocessing,
analysis version, layer...) gives a new key, so entries never need invalidating, only evicting.

    <prefix>:<kind>:sha256(json([ANALYSIS_VERSION, kind, image_id, model_id, weights_digest,
                                 preprocessing, *extra]))

The parts are hashed as one canonical JSON list (sorted keys, no spaces), which is unambiguous:
no two different part lists serialize to the same text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from backend import ANALYSIS_VERSION

PREFIX = "vitscope"

# A rendered view's revision: bumped when its answer gains or changes fields, so a stored body of the old
# shape is never served (ANALYSIS_VERSION stays: no analysis changed its numbers).
SPECTRUM_VIEW_REVISION = 2  # 2: the half-diagonal bins' `frequencies`
EMBEDDINGS_VIEW_REVISION = 2  # 2: the `singular_values` of each image's patch tokens


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def make_key(
    kind: str,
    image_id: str,
    model_id: str,
    weights_digest: str,
    preprocessing: Mapping[str, Any],
    *extra: str | int,
    prefix: str = PREFIX,
) -> str:
    """The key of one cached result; `extra` tells apart results of one kind (layer, state...)."""
    parts = [ANALYSIS_VERSION, kind, image_id, model_id, weights_digest, dict(preprocessing), *extra]
    digest = hashlib.sha256(_canonical(parts).encode()).hexdigest()
    return f"{prefix}:{kind}:{digest}"


def attention_key(
    image_id: str, model_id: str, weights_digest: str, preprocessing: Mapping[str, Any], layer: int
) -> str:
    """Attention probabilities of one block (all heads), float16."""
    return make_key("attn", image_id, model_id, weights_digest, preprocessing, int(layer))


def metrics_key(image_id: str, model_id: str, weights_digest: str, preprocessing: Mapping[str, Any]) -> str:
    """The per-model metrics.json object of one image."""
    return make_key("metrics", image_id, model_id, weights_digest, preprocessing)


def spectrum_key(
    image_id: str,
    model_id: str,
    weights_digest: str,
    preprocessing: Mapping[str, Any],
    state: str,
    depth: int,
) -> str:
    """The 2D log-amplitude map of one state ("out" | "attn") at one depth."""
    return make_key("spectrum", image_id, model_id, weights_digest, preprocessing, str(state), int(depth))


def tokens_key(
    image_id: str,
    model_id: str,
    weights_digest: str,
    preprocessing: Mapping[str, Any],
    state: str,
    layer: int,
) -> str:
    """Token representations of one state at one layer (for embeddings)."""
    return make_key("tokens", image_id, model_id, weights_digest, preprocessing, str(state), int(layer))


def rollout_key(
    image_id: str, model_id: str, weights_digest: str, preprocessing: Mapping[str, Any], layer: int
) -> str:
    """Attention rollout through block ``layer`` (heads fused by their mean), float16."""
    return make_key("rollout", image_id, model_id, weights_digest, preprocessing, int(layer))


def prefix_norms_key(
    image_id: str, model_id: str, weights_digest: str, preprocessing: Mapping[str, Any]
) -> str:
    """The L2 norms of the prefix tokens (CLS, registers) of ``x_out``, all depths: ``(L + 1, P)`` float32."""
    return make_key("prefix-norms", image_id, model_id, weights_digest, preprocessing)


def bundle_key(image_id: str, model_id: str, weights_digest: str, preprocessing: Mapping[str, Any]) -> str:
    """One capture of (image, model): names its single flight (in this process and across processes)."""
    return make_key("bundle", image_id, model_id, weights_digest, preprocessing)


def metrics_view_key(
    image_id: str, model_id: str, weights_digest: str, preprocessing: Mapping[str, Any]
) -> str:
    """The rendered ``GET /images/{id}/metrics`` body."""
    return make_key("view-metrics", image_id, model_id, weights_digest, preprocessing)


def attention_view_key(
    image_id: str,
    model_id: str,
    weights_digest: str,
    preprocessing: Mapping[str, Any],
    *params: str | int,
) -> str:
    """A rendered attention map; ``params``: the view's canonical parameters (``AttentionView.key_parts``)."""
    return make_key("view-attention", image_id, model_id, weights_digest, preprocessing, *params)


def spectrum_view_key(
    image_id: str,
    model_id: str,
    weights_digest: str,
    preprocessing: Mapping[str, Any],
    *params: str | int,
) -> str:
    """A rendered spectrum; ``params``: the view's canonical parameters (``SpectrumView.key_parts``)."""
    return make_key(
        "view-spectrum",
        image_id,
        model_id,
        weights_digest,
        preprocessing,
        *params,
        f"r{SPECTRUM_VIEW_REVISION}",
    )


def set_metrics_view_key(
    set_id_: str, model_id: str, weights_digest: str, preprocessing: Mapping[str, Any]
) -> str:
    """The rendered set metrics of one model (the set id takes the image id's place)."""
    return make_key("view-set-metrics", set_id_, model_id, weights_digest, preprocessing)


def embeddings_view_key(
    set_id_: str,
    model_id: str,
    weights_digest: str,
    preprocessing: Mapping[str, Any],
    layer: int,
    method: str,
) -> str:
    """The rendered 2D projection of a set's patch tokens at one layer, with their singular values."""
    return make_key(
        "view-embeddings",
        set_id_,
        model_id,
        weights_digest,
        preprocessing,
        int(layer),
        method,
        f"r{EMBEDDINGS_VIEW_REVISION}",
    )


def set_pca_view_key(
    set_id_: str,
    model_id: str,
    weights_digest: str,
    preprocessing: Mapping[str, Any],
    layer: int,
    threshold: float | None,
) -> str:
    """The rendered PCA of a set's patch tokens at one layer, fitted on the set (``threshold``: the foreground
    mask's, or None)."""
    mask = "none" if threshold is None else repr(float(threshold))
    return make_key("view-set-pca", set_id_, model_id, weights_digest, preprocessing, int(layer), mask)


def kind_of(key: str) -> str:
    """The kind of a key made by ``make_key`` (``vitscope:<kind>:<digest>``)."""
    return key.split(":", 2)[1]


def lock_key(key: str) -> str:
    """The cross-process lock of the work that fills ``key`` (``backend.cache.singleflight.SharedLocks``)."""
    return f"{key}:lock"


def job_key(job_id: str, *, prefix: str = PREFIX) -> str:
    """A job's record (JSON), readable by every process sharing the store."""
    return f"{prefix}:job:{job_id}"


def image_key(image_id: str, *, prefix: str = PREFIX) -> str:
    """The uploaded bytes themselves; the image id is already their sha256."""
    return f"{prefix}:image:{image_id}"


def set_id(image_ids: Sequence[str]) -> str:
    """A set of images is addressed by its ordered member ids: the same list gives the same set id."""
    return hashlib.sha256(_canonical(["set", list(image_ids)]).encode()).hexdigest()


def set_key(set_id_: str, *, prefix: str = PREFIX) -> str:
    """Where the member list (JSON) of a set lives."""
    return f"{prefix}:set:{set_id_}"
