"""Rate limits by name: buckets in this process, or in Redis when the policy shares state.

Names are stable across reloads (``route:<name>:<key>``, ``upstream:<name>``),
so a reload keeps the buckets' levels; a changed limit starts a fresh bucket.
With Redis, one Lua script checks and charges both buckets atomically on the
server (no read-modify-write race between replicas); when Redis is
unavailable the local buckets answer (fail-open to local state).

Client keys and header values are hashed before they become names, and the
local buckets are bounded (``MAX_LOCAL_KEYS``): past the bound the least
recently used *full* bucket goes, so a flood of new keys cannot refill the
bucket of a client who is being limited (see ``sidecar/resilience/lru.py``).
"""

from __future__ import annotations

from typing import Final

from sidecar.policy.model import RateLimit
from sidecar.resilience.clock import Clock
from sidecar.resilience.lru import BoundedLRU
from sidecar.shared.redis import SharedStore
from sidecar.traffic.bucket import Buckets

MAX_LOCAL_KEYS: Final = 10_000  # local buckets kept; past it a full, least recently used one goes

# KEYS[1]: the bucket hash. ARGV: request rate/s, request capacity, token rate/s,
# token capacity, token cost (rates 0 = no such limit). Returns the wait in seconds
# as a string ("0": admitted and charged). Levels refill from the server's clock.
TAKE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', KEYS[1], 'r', 'k', 'ts')
local rr, rc = tonumber(ARGV[1]), tonumber(ARGV[2])
local kr, kc = tonumber(ARGV[3]), tonumber(ARGV[4])
local cost = math.min(tonumber(ARGV[5]), kc)
local ts = tonumber(h[3]) or now
local dt = math.max(0, now - ts)
local r = math.min(rc, (tonumber(h[1]) or rc) + dt * rr)
local k = math.min(kc, (tonumber(h[2]) or kc) + dt * kr)
local wait = 0
if rr > 0 and r < 1 then wait = (1 - r) / rr end
if kr > 0 and k < cost then wait = math.max(wait, (cost - k) / kr) end
if wait == 0 then
  if rr > 0 then r = r - 1 end
  if kr > 0 then k = k - cost end
end
redis.call('HSET', KEYS[1], 'r', r, 'k', k, 'ts', now)
local full = 1
if rr > 0 then full = math.max(full, rc / rr) end
if kr > 0 then full = math.max(full, kc / kr) end
redis.call('PEXPIRE', KEYS[1], math.ceil(full * 1000) + 1000)
return tostring(wait)
"""

# KEYS[1]: the bucket hash. ARGV: token delta (positive: charge more), token capacity.
ADJUST: Final = """
local k = tonumber(redis.call('HGET', KEYS[1], 'k'))
if k == nil then return 0 end
redis.call('HSET', KEYS[1], 'k', math.min(tonumber(ARGV[2]), k - tonumber(ARGV[1])))
return 1
"""


class Limiter:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        # A full bucket is what a new one would be: evicting it loses nothing.
        self._local: BoundedLRU[str, Buckets] = BoundedLRU(MAX_LOCAL_KEYS, _partly_spent)

    def _buckets(self, name: str, limit: RateLimit) -> Buckets:
        buckets = self._local.get(name)
        if buckets is None or buckets.limit != limit:
            buckets = Buckets(limit, self._clock)
            self._local.put(name, buckets)
        return buckets

    def __len__(self) -> int:
        """Local buckets kept now (at most ``MAX_LOCAL_KEYS``)."""
        return len(self._local)

    async def take(
        self, name: str, limit: RateLimit, tokens: int, shared: SharedStore | None
    ) -> float:
        """0 when admitted (charged); else the seconds until the request would be."""
        if shared is not None:
            result = await shared.run(
                TAKE, [shared.key("rl", name)], _arguments(limit, tokens), "rate_limit"
            )
            if result is not None:
                return float(result)
        return self._buckets(name, limit).take(tokens)

    async def adjust(
        self, name: str, limit: RateLimit, tokens: int, shared: SharedStore | None
    ) -> None:
        """Charge *tokens* more (negative: refund) once the real usage is known."""
        if limit.tokens_per_minute is None or tokens == 0:
            return
        if shared is not None:
            capacity = max(1.0, limit.tokens_per_minute * limit.burst)
            done = await shared.run(
                ADJUST, [shared.key("rl", name)], [tokens, capacity], "rate_limit_adjust"
            )
            if done is not None:
                return
        self._buckets(name, limit).adjust(tokens)

    def adjust_local(self, name: str, limit: RateLimit, tokens: int) -> None:
        if limit.tokens_per_minute is not None and tokens:
            self._buckets(name, limit).adjust(tokens)


def _partly_spent(buckets: Buckets) -> bool:
    return not buckets.full


def _arguments(limit: RateLimit, tokens: int) -> list[str | int | float]:
    arguments: list[str | int | float] = []
    for per_minute in (limit.requests_per_minute, limit.tokens_per_minute):
        if per_minute is None:
            arguments += [0, 1]
        else:
            arguments += [per_minute / 60.0, max(1.0, per_minute * limit.burst)]
    return [*arguments, max(0, tokens)]
