"""A map with a fixed capacity for state keyed by client-controlled values (DESIGN rule 13).

Theory of operation
-------------------
Entries are kept in least-recently-used order: ``get`` and ``put`` move a key to
the recent end, ``peek`` does not. When a ``put`` takes the map past
``capacity``, one entry goes: the least recently used of the oldest ``scan``
entries that ``keep`` does not protect (a closed breaker, a full bucket: state
equal to a fresh one, so nothing is lost). When all of those are protected the
oldest goes anyway — the bound wins over the state, and ``forced`` counts it.
Each eviction looks at no more than ``scan`` entries, so a flood of new keys
costs constant time per key. No I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Final, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

SCAN: Final = 64  # entries an eviction looks at for one it may drop


def _never(_: object) -> bool:
    return False


class BoundedLRU(Generic[K, V]):
    """At most *capacity* entries; past it the least recently used one *keep* spares goes."""

    __slots__ = ("_entries", "_keep", "capacity", "evicted", "forced")

    def __init__(self, capacity: int, keep: Callable[[V], bool] = _never) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._keep = keep
        self._entries: OrderedDict[K, V] = OrderedDict()
        self.evicted = 0  # entries dropped to stay within capacity
        self.forced = 0  # of those, entries *keep* wanted kept

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None when absent."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value without touching its place in the order."""
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        """Store *value* as the most recently used, evicting one entry past capacity."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._evict(key)

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def values(self) -> list[V]:
        return list(self._entries.values())

    def _evict(self, newest: K) -> None:
        oldest = next(iter(self._entries))
        victim = oldest
        for key in islice(self._entries, SCAN):
            if key != newest and not self._keep(self._entries[key]):
                victim = key
                break
        else:
            self.forced += 1
        del self._entries[victim]
        self.evicted += 1
