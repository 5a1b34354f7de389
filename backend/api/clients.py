"""Who sent a request (the client address, through trusted proxies) and the per-client upload caps.

The client of a request is its direct peer, unless that peer is a trusted proxy
(``VITSCOPE_TRUSTED_PROXIES``, empty by default: loopback is not trusted either) or the request carries the
API token (the UI mounted in the same process, which passes the browser's address on): then
``X-Forwarded-For`` is read from the right, skipping trusted proxies, and the first address that is not one
is the client. A client cannot choose its own address by sending the header itself: only what a trusted
proxy appended is believed.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.errors import error_response

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HOUR = 3600.0
_MAX_CLIENTS = 10_000  # clients remembered at once (least recently seen forgotten first)


def parse_address(text: str) -> IPAddress | None:
    """``1.2.3.4``, ``1.2.3.4:5678``, ``::1``, ``[::1]:80`` -> the address; anything else -> None."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """IPs and networks, plus host names resolved when needed (cached for ``ttl`` seconds).

    Host names let compose name the ui service (``ui``), whose address is only known at run time.
    """

    def __init__(self, entries: Iterable[str], *, ttl: float = 30.0) -> None:
        self.networks: list[IPNetwork] = []
        self.hosts: list[str] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.append(entry)
        self.ttl = ttl
        self._resolved: dict[str, tuple[float, frozenset[IPAddress]]] = {}

    async def contains(self, address: IPAddress | None) -> bool:
        if address is None:
            return False
        if any(address in net for net in self.networks):
            return True
        for host in self.hosts:
            if address in await self._resolve(host):
                return True
        return False

    async def _resolve(self, host: str) -> frozenset[IPAddress]:
        now = time.monotonic()
        hit = self._resolved.get(host)
        if hit is not None and hit[0] > now:
            return hit[1]
        found: set[IPAddress] = set()
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, None), timeout=2.0)
            for info in infos:
                address = parse_address(str(info[4][0]))
                if address is not None:
                    found.add(address)
        except (OSError, TimeoutError) as exc:
            log.warning("trusted proxy %r does not resolve (%s); its X-Forwarded-For is ignored", host, exc)
        self._resolved[host] = (now + self.ttl, frozenset(found))
        return frozenset(found)


def _forwarded_for(scope: Scope) -> list[str]:
    hops: list[str] = []
    for key, value in scope["headers"]:
        if key == b"x-forwarded-for":
            hops.extend(part.strip() for part in value.decode("latin-1").split(","))
    return [h for h in hops if h]


async def client_address(scope: Scope, trusted: TrustedProxies, *, vouched: bool = False) -> str:
    """The client of a request: the peer, or what trusted proxies say in ``X-Forwarded-For``. ``vouched``:
    the peer holds the API token, so it is believed like a trusted proxy."""
    peer = scope.get("client")
    peer_text = str(peer[0]) if peer else "unknown"
    current = parse_address(peer_text)
    if not vouched and not await trusted.contains(current):
        return str(current) if current is not None else peer_text
    for hop in reversed(_forwarded_for(scope)):
        address = parse_address(hop)
        if address is None:
            return hop[:64]  # garbage appended by a trusted proxy still tells its clients apart
        current = address
        if not await trusted.contains(address):
            return str(address)
    return str(current) if current is not None else peer_text


@dataclass
class _Usage:
    events: deque[list[float]] = field(default_factory=deque)  # [time, bytes], oldest first

    def prune(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - HOUR:
            self.events.popleft()

    @property
    def count(self) -> int:
        return len(self.events)

    @property
    def bytes(self) -> int:
        return int(sum(e[1] for e in self.events))


class UploadLedger:
    """Uploads (or, with ``what="sets"``, set creations) per client in the last hour (a sliding window), in
    memory: one process counts its own. ``setting`` names the count cap's variable in the messages."""

    def __init__(
        self,
        per_hour: int,
        bytes_per_hour: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        what: str = "uploads",
        setting: str = "VITSCOPE_CLIENT_UPLOADS_PER_HOUR",
    ) -> None:
        self.per_hour = per_hour
        self.bytes_per_hour = bytes_per_hour
        self.clock = clock
        self.what = what
        self.setting = setting
        self._clients: OrderedDict[str, _Usage] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.per_hour > 0 or self.bytes_per_hour > 0

    def _usage(self, client: str, now: float) -> _Usage:
        usage = self._clients.get(client)
        if usage is None:
            usage = self._clients[client] = _Usage()
            while len(self._clients) > _MAX_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        usage.prune(now)
        return usage

    def admit(self, client: str, declared: int) -> tuple[list[float] | None, str, int]:
        """Reserve one upload of about ``declared`` bytes: (entry, "", 0) or (None, why, seconds to wait)."""
        now = self.clock()
        usage = self._usage(client, now)
        if self.per_hour and usage.count >= self.per_hour:
            wait = usage.events[0][0] + HOUR - now
            return None, self._too_many(client, usage.count), max(1, math.ceil(wait))
        # A client's first upload in the window always fits (its size is bounded by max_upload_bytes).
        if self.bytes_per_hour and usage.events and usage.bytes + declared > self.bytes_per_hour:
            # Wait until enough of the oldest uploads leave the window for this one to fit.
            excess = usage.bytes + declared - self.bytes_per_hour
            freed, wait = 0.0, 0.0
            for at, size in usage.events:
                freed += size
                wait = at + HOUR - now
                if freed >= excess:
                    break
            why = _too_big(client, usage.bytes, declared, self.bytes_per_hour)
            return None, why, max(1, math.ceil(wait))
        entry = [now, float(declared)]
        usage.events.append(entry)
        return entry, "", 0

    async def reserve(self, client: str, declared: int) -> tuple[Any, str, int]:
        return self.admit(client, declared)

    async def settle(self, entry: Any, seen: int) -> None:
        """The upload's real size, once its body has streamed."""
        entry[1] = float(seen)

    async def close(self) -> None:
        return None

    def _too_many(self, client: str, count: int) -> str:
        return (
            f"client {client} made {count} {self.what} in the last hour; at most {self.per_hour} per hour "
            f"are allowed ({self.setting})"
        )


def _too_big(client: str, total: int, declared: int, bytes_per_hour: int) -> str:
    return (
        f"client {client} uploaded {total:,} bytes in the last hour and this upload is {declared:,} bytes; "
        f"at most {bytes_per_hour:,} bytes per hour are allowed (VITSCOPE_CLIENT_UPLOAD_BYTES_PER_HOUR)"
    )


# One client's window in Redis: a sorted set of "<id>:<bytes>" members scored by upload time. The script
# prunes, checks both caps and reserves in one step, so replicas never both take the last slot.
_RESERVE = """
local key, now, hour = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local per_hour, bytes_per_hour, declared = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - hour)
local items = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local count, total = #items / 2, 0
for i = 1, #items, 2 do total = total + tonumber(string.match(items[i], ':(%d+)$')) end
if per_hour > 0 and count >= per_hour then
  return {0, 1, count, total, tostring(tonumber(items[2]) + hour - now)}
end
if bytes_per_hour > 0 and count > 0 and total + declared > bytes_per_hour then
  local excess, freed, wait = total + declared - bytes_per_hour, 0, 0
  for i = 1, #items, 2 do
    freed = freed + tonumber(string.match(items[i], ':(%d+)$'))
    wait = tonumber(items[i + 1]) + hour - now
    if freed >= excess then break end
  end
  return {0, 2, count, total, tostring(wait)}
end
redis.call('ZADD', key, now, ARGV[6] .. ':' .. declared)
redis.call('EXPIRE', key, math.ceil(hour))
return {1, 0, count, total, '0'}
"""
_SETTLE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[1], score, ARGV[2])
end
return 0
"""


class RedisUploadLedger(UploadLedger):
    """The same caps kept in Redis, so that a restart or a second replica does not reset them.

    While Redis does not answer (down, slow: ``timeout``), the in-memory window of this process counts
    instead: an upload is never refused or failed because of Redis.
    """

    def __init__(
        self,
        url: str,
        per_hour: int,
        bytes_per_hour: int,
        *,
        timeout: float = 0.25,
        prefix: str = "vitscope:uploads:",
        clock: Callable[[], float] = time.time,
        what: str = "uploads",
        setting: str = "VITSCOPE_CLIENT_UPLOADS_PER_HOUR",
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        super().__init__(per_hour, bytes_per_hour, clock=clock, what=what, setting=setting)
        self.prefix = prefix
        self.timeout = timeout
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)

    async def reserve(self, client: str, declared: int) -> tuple[Any, str, int]:
        key = self.prefix + client
        member = uuid.uuid4().hex
        args: list[str | int | float] = [
            self.clock(),
            HOUR,
            self.per_hour,
            self.bytes_per_hour,
            max(0, declared),
            member,
        ]
        try:
            async with asyncio.timeout(self.timeout * 2):
                ok, which, count, total, wait = await self._reserve(keys=[key], args=args)
        except Exception as exc:  # Redis down or slow: this process's own window decides
            log.warning("upload caps: redis unavailable (%s); counting in memory", type(exc).__name__)
            return await super().reserve(client, declared)
        if ok:
            return ("redis", key, f"{member}:{max(0, declared)}", member), "", 0
        retry = max(1, math.ceil(float(wait)))
        if int(which) == 1:
            return None, self._too_many(client, int(count)), retry
        return None, _too_big(client, int(total), declared, self.bytes_per_hour), retry

    async def settle(self, entry: Any, seen: int) -> None:
        if not (isinstance(entry, tuple) and entry[0] == "redis"):
            return await super().settle(entry, seen)
        _, key, old, member = entry
        try:
            async with asyncio.timeout(self.timeout * 2):
                await self._settle(keys=[key], args=[old, f"{member}:{seen}"])
        except Exception as exc:  # the reservation keeps the declared size
            log.warning("upload caps: redis unavailable (%s); size not updated", type(exc).__name__)

    async def close(self) -> None:
        await self._redis.aclose()


class UploadCaps:
    """Pure ASGI middleware: 429 + ``Retry-After`` when a client passes its hourly caps on ``POST`` to a path
    that ``pattern`` matches in full.

    Each ``POST`` to such a path (``/api/v1/images`` and ``/api/v1/images/{id}/perturb``, ``/api/v1/sets``)
    that gets through counts once, with the bytes of its body as they arrive (a declared ``Content-Length``
    is checked first, before one byte is read).
    """

    def __init__(
        self,
        app: ASGIApp,
        pattern: str,
        ledger: UploadLedger,
        trusted: TrustedProxies,
        token: str | None = None,
    ) -> None:
        self.app = app
        self.pattern = re.compile(pattern)
        self.ledger = ledger
        self.trusted = trusted
        self._bearer = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not self.pattern.fullmatch(scope["path"].rstrip("/"))
            or not self.ledger.enabled
        ):
            await self.app(scope, receive, send)
            return
        declared = 0
        vouched = False
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit():
                declared = int(value)
            elif key == b"authorization" and self._bearer is not None:
                vouched = hmac.compare_digest(bytes(value), self._bearer)
        client = await client_address(scope, self.trusted, vouched=vouched)
        entry, why, retry = await self.ledger.reserve(client, declared)
        if entry is None:
            message = f"{why}; retry in {retry} s"
            await error_response(429, f"too_many_{self.ledger.what}", message, {"Retry-After": str(retry)})(
                scope, receive, send
            )
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
            return message

        try:
            await self.app(scope, counted, send)
        finally:
            await self.ledger.settle(entry, seen)
