"""Cached answers: an LRU in memory with a TTL on the injected clock, or Redis when shared.

Theory of operation
-------------------
An ``Entry`` is the final JSON answer in the client's wire format (the one
canonical form: a stream is assembled into it, and rendered from it again on
replay) plus the upstream that gave it. Each route has its own
``ResponseCache``. With the memory backend it is an LRU of at most
``max_entries`` entries, each expiring ``ttl`` seconds after it was stored
(read from the injected clock, so tests advance time). With Redis, entries are
``SET key value PX ttl`` / ``GET key`` under ``<prefix>:cache:<route>:<key>``
and Redis expires them; when Redis fails (``SharedStore`` answers None and is
no longer available) the local LRU serves instead, so a request never fails
because of the cache. An entry larger than ``max_entry_size`` is refused.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from sidecar.policy.model import Cache
from sidecar.resilience.clock import Clock
from sidecar.shared.redis import SharedStore

_FORMAT: Final = b"c1"  # the encoding's version, first line of a Redis value


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer: its JSON body in the client's format and where it came from."""

    body: bytes
    upstream: str
    replayable: bool = True  # the answer can be rendered as a stream
    lacks_usage: bool = False  # assembled from a stream that carried no usage

    def encode(self) -> bytes:
        flags = b"%d%d" % (self.replayable, self.lacks_usage)
        return b"\n".join((_FORMAT, self.upstream.encode(), flags, self.body))

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        """The entry *data* holds; None when it is not one (another version, garbage)."""
        parts = data.split(b"\n", 3)
        if len(parts) != 4 or parts[0] != _FORMAT or len(parts[2]) != 2:
            return None
        flags = parts[2]
        upstream = parts[1].decode(errors="replace")
        return cls(parts[3], upstream, flags[0:1] == b"1", flags[1:2] == b"1")


class LRU:
    """At most *max_entries* entries, least recently used first out, each with a deadline."""

    def __init__(self, clock: Clock, max_entries: int) -> None:
        self._clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Entry]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, entry = found
        if self._clock.now() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry, ttl: float) -> None:
        self._entries[key] = (self._clock.now() + ttl, entry)
        self._entries.move_to_end(key)
        self._trim()

    def resize(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._trim()

    def _trim(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class ResponseCache:
    """One route's cached answers (memory, or Redis with the memory LRU as fallback)."""

    def __init__(self, route: str, config: Cache, clock: Clock) -> None:
        self.route = route
        self.config = config
        self.local = LRU(clock, config.max_entries)

    def reconfigure(self, config: Cache) -> None:
        self.config = config
        self.local.resize(config.max_entries)

    def fits(self, size: int) -> bool:
        return size <= self.config.max_entry_size

    async def get(self, key: str, shared: SharedStore | None) -> Entry | None:
        if shared is not None:
            found = await shared.command("cache_get", "GET", shared.key("cache", self.route, key))
            if isinstance(found, bytes):
                return Entry.decode(found)
            if shared.available:
                return None  # Redis answered: not there
        return self.local.get(key)

    async def put(self, key: str, entry: Entry, shared: SharedStore | None) -> bool:
        """Store *entry*; False when it is larger than ``max_entry_size`` (refused)."""
        if not self.fits(len(entry.body)):
            return False
        if shared is not None:
            milliseconds = max(1, round(self.config.ttl * 1000))
            redis_key = shared.key("cache", self.route, key)
            done = await shared.command(
                "cache_set", "SET", redis_key, entry.encode(), "PX", milliseconds
            )
            if done is not None:
                return True
        return self.remember(key, entry)

    def remember(self, key: str, entry: Entry) -> bool:
        """Store *entry* in the local LRU only; False when it is too large."""
        if not self.fits(len(entry.body)):
            return False
        self.local.put(key, entry, self.config.ttl)
        return True


class Caches:
    """The routes' caches by name: a reload keeps a route's entries (and resizes its LRU)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._caches: dict[str, ResponseCache] = {}

    def for_route(self, route: str, config: Cache) -> ResponseCache:
        cache = self._caches.get(route)
        if cache is None:
            cache = self._caches[route] = ResponseCache(route, config, self._clock)
        else:
            cache.reconfigure(config)
        return cache
