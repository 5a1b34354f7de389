"""Cache layer: content-address keys, a binary array codec, stores (Redis / in-memory) and single-flight."""

from backend.cache.codec import decode_array, decode_json, encode_array, encode_json
from backend.cache.singleflight import SharedLocks, SingleFlight
from backend.cache.store import MemoryStore, RedisStore, Store, make_store

__all__ = [
    "MemoryStore",
    "RedisStore",
    "SharedLocks",
    "SingleFlight",
    "Store",
    "decode_array",
    "decode_json",
    "encode_array",
    "encode_json",
    "make_store",
]
