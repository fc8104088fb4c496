"""Circuit breakers shared by replicas through Redis; the local breaker follows them.

Theory of operation
-------------------
One Redis hash per breaker, ``<prefix>:breaker:<key>``, holds the shared state:
``s`` (closed / open / half_open), ``f`` (consecutive failures, all replicas),
``u`` (open until, on Redis's clock), ``p`` (probes in flight), ``w`` (probe
successes), ``g`` (generation: +1 at every state change and every probe lease
that runs out), ``h`` (the generation the current state began with) and ``l``
(the probe lease's end). Lua scripts change it atomically and read the time
with ``TIME``.

Each replica keeps a copy of the state it last saw (``SharedState``), taken
from every script reply and read again at most every ``REFRESH`` seconds, so a
request does not wait for Redis while all is closed. The copies are kept for at
most ``MAX_BREAKERS`` keys (least recently used first out: a dropped copy is
read again):

    cached state   decision (``decide``)                       Redis call
    -------------  ------------------------------------------  ------------------
    none / closed  the local breaker (mirrored closed) admits  none
    open, waiting  reject: no upstream call                    none
    open, due      ask: ACQUIRE moves it to half-open and      ACQUIRE
    / half_open    grants a probe while fewer than
                   ``half_open.probes`` are in flight (across
                   replicas); else reject

After the attempt: a failure is counted by RECORD (it opens the breaker at
``consecutive_failures``); a success resets the count, written only when the
last seen count was not 0 (no write per successful request); a probe's result
goes to PROBE (all probes succeed: closed; one fails: open again). With a
``window`` breaker the local window decides when to trip and RECORD ``trip``
opens the shared one. The probe lease ends ``open_for`` after the latest
probe grant; the next ACQUIRE after it (a replica died mid-probe) frees every
slot and moves ``g`` on. A probe carries the ``g`` it was granted in, so PROBE
tells the cases apart, as the local breaker does with its permits:

    probe's generation   its slot            its result
    -------------------  ------------------  ----------------------------------
    == g                 released            decides
    in [h, g)            freed by the lease  decides (same half-open period)
    < h                  -                   ignored (so is any, not half-open)

A hash written before ``h`` existed reads as ``h = g``: only probes of the
current lease decide until the next state change.

Every reply (and every refresh) is mirrored into the local ``CircuitBreaker``
with ``follow()``, which emits its usual events; when Redis is unavailable
(``SharedStore.run`` returns None) the local breaker decides alone, from the
state it last mirrored (fail-open to local state).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from sidecar.policy.model import Breaker as BreakerPolicy
from sidecar.resilience.breaker import MAX_BREAKERS, CircuitBreaker, State
from sidecar.resilience.clock import Clock
from sidecar.resilience.lru import BoundedLRU
from sidecar.shared.redis import SharedStore

REFRESH: Final = 0.2  # seconds a replica trusts its copy of a shared state
KEEP: Final = 3600.0  # seconds a breaker's hash outlives its last change (plus open_for)

Decision = Literal["local", "reject", "ask"]
Op = Literal["failure", "success", "trip", "open", "close"]

# Shared by the scripts. KEYS[1]: the hash; ARGV[1]: milliseconds to keep it.
_PRELUDE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local r = redis.call('HMGET', KEYS[1], 's', 'f', 'u', 'p', 'w', 'g', 'l', 'h')
local s = r[1] or 'closed'
local f, u, p = tonumber(r[2]) or 0, tonumber(r[3]) or 0, tonumber(r[4]) or 0
local w, g, l = tonumber(r[5]) or 0, tonumber(r[6]) or 0, tonumber(r[7]) or 0
local h = tonumber(r[8]) or g
local function save()
  redis.call('HSET', KEYS[1], 's', s, 'f', f, 'u', u, 'p', p, 'w', w, 'g', g, 'l', l, 'h', h)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local function enter(state)
  s = state; p = 0; w = 0; g = g + 1; h = g
end
local function reply(extra)
  return {s, f, tostring(math.max(0, u - now)), p, g, extra}
end
"""

# Reply: {state, failures, seconds until half-open, probes, generation, 0}.
READ: Final = _PRELUDE + "return reply(0)\n"

# ARGV[2]: failure | success | trip | open | close; ARGV[3]: threshold; ARGV[4]: open_for.
# Extra: 1 when this call opened the breaker. Results while not closed are late: ignored.
RECORD: Final = (
    _PRELUDE
    + """
local op, threshold, open_for = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local opened = 0
if op == 'open' or (s == 'closed' and op == 'trip') then
  enter('open'); u = now + open_for; opened = 1
elseif op == 'close' then
  enter('closed'); f = 0
elseif s == 'closed' and op == 'success' then
  if f == 0 then return reply(0) end
  f = 0
elseif s == 'closed' and op == 'failure' then
  f = f + 1
  if f >= threshold then enter('open'); u = now + open_for; opened = 1 end
else
  return reply(0)
end
save()
return reply(opened)
"""
)

# ARGV[2]: probes allowed; ARGV[3]: open_for. Extra: 0 rejected, 1 closed (a normal
# attempt), 2 a probe of this generation.
ACQUIRE: Final = (
    _PRELUDE
    + """
if s == 'closed' then return reply(1) end
if s == 'open' and now >= u then enter('half_open') end
if s ~= 'half_open' then return reply(0) end
if p > 0 and now >= l then p = 0; g = g + 1 end
if p >= tonumber(ARGV[2]) then return reply(0) end
p = p + 1; l = now + tonumber(ARGV[3])
save()
return reply(2)
"""
)

# ARGV[2]: the probe's generation; ARGV[3]: success | failure | ignored; ARGV[4]: probes
# needed to close; ARGV[5]: open_for. Extra: 1 when this probe re-opened the breaker.
PROBE: Final = (
    _PRELUDE
    + """
local probe = tonumber(ARGV[2])
if s ~= 'half_open' or probe < h or probe > g then return reply(0) end
if probe == g then p = math.max(0, p - 1) end
local opened = 0
if ARGV[3] == 'failure' then
  enter('open'); u = now + tonumber(ARGV[5]); opened = 1
elseif ARGV[3] == 'success' then
  w = w + 1
  if w >= tonumber(ARGV[4]) then enter('closed'); f = 0 end
end
save()
return reply(opened)
"""
)


@dataclass(frozen=True, slots=True)
class SharedState:
    """A replica's copy of one shared breaker, as of ``seen_at`` (local clock)."""

    state: State
    failures: int
    retry_in: float  # seconds until an open breaker may go half-open, when seen
    probes: int
    generation: int
    seen_at: float

    def remaining(self, now: float) -> float:
        """Seconds until half-open, by the local clock (0 unless open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.retry_in - (now - self.seen_at))

    def fresh(self, now: float) -> bool:
        return now - self.seen_at < REFRESH


def parse(reply: Sequence[object], now: float) -> tuple[SharedState, int]:
    """A script's reply as (state, extra)."""
    raw = reply[0]
    name = raw.decode() if isinstance(raw, bytes) else str(raw)
    state: State = name if name in ("open", "half_open") else "closed"  # type: ignore[assignment]
    numbers = [_number(item) for item in reply[1:6]]
    failures, retry_in, probes, generation, extra = numbers
    return SharedState(state, int(failures), retry_in, int(probes), int(generation), now), int(
        extra
    )


def _number(item: object) -> float:
    if isinstance(item, bytes):
        return float(item.decode())
    if isinstance(item, int | float | str):
        return float(item)
    raise ValueError(f"unexpected reply item {item!r}")


def decide(view: SharedState | None, probes: int, now: float) -> Decision:
    """Before an attempt: admit locally, reject, or ask Redis for a probe slot."""
    if view is None or view.state == "closed":
        return "local"
    if view.state == "open" and view.remaining(now) > 0:
        return "reject"
    if view.state == "half_open" and view.probes >= probes and view.fresh(now):
        return "reject"
    return "ask"


def ttl_ms(policy: BreakerPolicy) -> int:
    return int((KEEP + policy.open_for) * 1000)


class SharedBreakers:
    """The copies of the shared breaker states, and the scripts that change them."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        # A copy is only a cache of Redis: dropping one costs a read, never state.
        self._views: BoundedLRU[str, SharedState] = BoundedLRU(MAX_BREAKERS)
        self._reading: set[str] = set()

    def view(self, store: SharedStore, key: str) -> SharedState | None:
        """The last state seen (no Redis call); None when unknown or Redis failed."""
        return self._views.peek(store.key("breaker", key))

    async def current(
        self, store: SharedStore, key: str, *, force: bool = False
    ) -> SharedState | None:
        """The copy, read again when older than REFRESH (one read at a time per key)."""
        name = store.key("breaker", key)
        view = self._views.get(name)
        if not force and (
            name in self._reading or (view is not None and view.fresh(self._clock.now()))
        ):
            return view
        self._reading.add(name)
        try:
            reply = await store.run(READ, [name], [3600000], "breaker_read")
        finally:
            self._reading.discard(name)
        return self._keep(name, reply)[0]

    async def acquire(
        self, store: SharedStore, key: str, policy: BreakerPolicy
    ) -> tuple[SharedState | None, int]:
        """A probe slot: extra 2 granted, 1 closed (normal attempt), 0 rejected."""
        name = store.key("breaker", key)
        arguments = [ttl_ms(policy), policy.half_open_probes, policy.open_for]
        return self._keep(name, await store.run(ACQUIRE, [name], arguments, "breaker_acquire"))

    async def record(
        self, store: SharedStore, key: str, policy: BreakerPolicy, op: Op
    ) -> tuple[SharedState | None, int]:
        """A result of a normal attempt (or an operator's open/close); extra 1: opened."""
        name = store.key("breaker", key)
        threshold = policy.consecutive_failures or 1
        arguments: list[str | int | float] = [ttl_ms(policy), op, threshold, policy.open_for]
        return self._keep(name, await store.run(RECORD, [name], arguments, "breaker_record"))

    async def probe_done(
        self, store: SharedStore, key: str, policy: BreakerPolicy, generation: int, result: str
    ) -> tuple[SharedState | None, int]:
        """A probe's result; extra 1: it re-opened the breaker."""
        name = store.key("breaker", key)
        arguments: list[str | int | float] = [
            ttl_ms(policy),
            generation,
            result,
            policy.half_open_probes,
            policy.open_for,
        ]
        return self._keep(name, await store.run(PROBE, [name], arguments, "breaker_probe"))

    async def sync(self, store: SharedStore, breaker: CircuitBreaker, force: bool = False) -> None:
        """Mirror the shared state into *breaker* (admin and metrics read it)."""
        view = await self.current(store, breaker.key, force=force)
        if view is not None:
            follow(breaker, view, self._clock.now())

    def _keep(self, name: str, reply: object) -> tuple[SharedState | None, int]:
        if not isinstance(reply, list | tuple):  # None: Redis unavailable, forget the copy
            self._views.pop(name)
            return None, 0
        view, extra = parse(reply, self._clock.now())
        self._views.put(name, view)
        return view, extra


def follow(breaker: CircuitBreaker, view: SharedState, now: float, reason: str = "") -> None:
    """Mirror *view* into the local breaker (its events fire on a change)."""
    breaker.follow(
        view.state, view.remaining(now), reason or "the shared breaker opened (another replica)"
    )
