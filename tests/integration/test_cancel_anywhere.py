"""Cancel anywhere: a client that leaves at any point where its request can wait leaks nothing.

For JSON, streamed, continued (prefill and restart), hedged, cache-filling,
rate-limited and Redis-state requests, the client goes away at each point where
the request waits — before the headers (an upstream call in flight), after k
events, during a retry's backoff, during a continuation's splice, while a hedge
races — and then, after each one:

* every breaker lets a call through once ``open_for`` has passed (no probe slot
  left taken), and none holds a probe in flight;
* no route counts a request in flight, no deployment an attempt in flight;
* no upstream request is open (the mocks are idle, the pools hold no connection);
* no task of the sidecar is left running;
* the route still answers, and a route limit still admits (nothing stayed charged
  beyond what the answers used).

The sidecar runs in-process on a fake clock that moves only when told
(``autoadvance=False``): a backoff or a hedge timer waits until the test moves
it, so "during backoff" and "while a hedge races" are points the test reaches
for certain, not by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler
from redis_support import REDIS_URL

from mock_provider.app import create_app as create_mock
from mock_provider.control import FailureConfig
from mock_provider.state import STATE, MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.policy.model import Breaker
from sidecar.resilience.clock import FakeClock
from sidecar.state import HOLDER, REGISTRIES
from sidecar.upstream import POOLS

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES = [{"role": "user", "content": "hello there"}]
OPEN_FOR = 10.0
HEDGE_AFTER = 1.0
CUT = 4  # events the breaking upstream sends before it cuts

POLICY = """\
version: 1
{state}
upstreams:
  a: {{url: "{a}", format: openai, capabilities: {{prefill: true}}}}
  b: {{url: "{b}", format: openai}}
defaults:
  retry: {{attempts: 2, backoff: {{base: 1s, max: 1s, jitter: none}}}}
  breaker: {{consecutive_failures: 3, open_for: {open_for}s}}
  timeouts: {{idle: 5s, first_byte: 10s}}
routes:
  - name: plain
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: plain}}}}
    fallback: [{{upstream: a}}, {{upstream: b}}]
  - name: prefill
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: prefill}}}}
    continuation: {{enabled: true}}
    fallback: [{{upstream: b}}, {{upstream: a}}]
  - name: restart
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: restart}}}}
    continuation: {{enabled: true}}
    fallback: [{{upstream: a}}, {{upstream: b}}]
  - name: hedged
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: hedged}}}}
    hedge: {{after: {hedge}s}}
    fallback: [{{upstream: a}}, {{upstream: b}}]
  - name: cached
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: cached}}}}
    cache: {{when: always}}
    fallback: [{{upstream: a}}, {{upstream: b}}]
  - name: limited
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: limited}}}}
    rate_limit: {{requests_per_minute: 600, tokens_per_minute: 20000}}
    fallback: [{{upstream: a}}, {{upstream: b}}]
"""


@dataclass
class Stack:
    sidecar: TestServer
    a: TestServer
    b: TestServer
    clock: FakeClock
    http: aiohttp.ClientSession
    baseline: int  # the sidecar's own tasks when idle
    handlers: set[asyncio.Task[object]]  # the sidecar's request handlers running now

    def fault(self, mock: TestServer, *script: dict[str, object]) -> None:
        mock.app[STATE].controller.configure(FailureConfig.parse({"script": list(script)}))

    def in_flight(self, mock: TestServer) -> int:
        return mock.app[STATE].stats.in_flight

    def url(self) -> str:
        return str(self.sidecar.make_url("/v1/chat/completions"))


def sidecar_tasks() -> int:
    """Tasks running code of the sidecar package (request handlers are aiohttp's)."""
    count = 0
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and "/sidecar/" in code.co_filename:
            count += 1
    return count


async def until(condition: Callable[[], object], what: str, limit: float = 5.0) -> None:
    """Wait for *condition* (a state the servers reach on their own), at most *limit* s.

    It polls: the states (a mock's in-flight count, a connector's acquired set, the
    loop's tasks) belong to code under test, which has no event to wait on for them.
    """
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - see above
            await asyncio.sleep(0.005)
    assert condition(), what


@pytest.fixture
async def make_stack(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    sessions: list[aiohttp.ClientSession] = []

    async def start(state: str = "", chunk_ms: int = 20) -> Stack:
        a = await aiohttp_server(create_mock(MockSettings(name="a", chunk_ms=chunk_ms)))
        b = await aiohttp_server(create_mock(MockSettings(name="b", chunk_ms=chunk_ms)))
        urls = {name: str(s.make_url("")).rstrip("/") for name, s in (("a", a), ("b", b))}
        policy = POLICY.format(state=state, open_for=OPEN_FOR, hedge=HEDGE_AFTER, **urls)
        (tmp_path / "p.yaml").write_text(policy)
        clock = FakeClock(autoadvance=False)
        config = SidecarConfig(
            policies=tmp_path, environ={}, clock=clock, watch=False, poll_interval=3600
        )
        app = create_sidecar(config)
        handlers: set[asyncio.Task[object]] = set()

        @web.middleware
        async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                return await handler(request)
            finally:
                handlers.discard(task)

        app.middlewares.append(track)
        sidecar = await aiohttp_server(app)
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Stack(sidecar, a, b, clock, http, sidecar_tasks(), handlers)

    yield start
    for session in sessions:
        await session.close()


# -- the client, and where it leaves ------------------------------------------------------


@dataclass(frozen=True)
class Leave:
    """Where the client goes away: after *events* events, or when *when* has happened."""

    events: int | None = None
    when: Callable[[Stack], Awaitable[None]] | None = None


async def upstream_called(s: Stack) -> None:
    await until(lambda: s.in_flight(s.a) or s.in_flight(s.b), "an upstream call in flight")


async def in_backoff(s: Stack) -> None:
    await until(lambda: s.clock.slept, "the retry is waiting out its backoff")


async def hedge_racing(s: Stack) -> None:
    await until(lambda: s.in_flight(s.a), "the first target called")
    await until(lambda: HEDGE_AFTER in s.clock.slept, "the hedge timer armed")
    s.clock.advance(HEDGE_AFTER)
    await until(lambda: s.in_flight(s.a) and s.in_flight(s.b), "both targets in flight")


async def leave(s: Stack, case: str, stream: bool, at: Leave) -> None:
    """Send one request and go away as *at* says (closing the connection)."""
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}

    async def client() -> None:
        async with s.http.post(s.url(), json=body, headers={"x-case": case}) as response:
            assert response.status == 200
            events = 0
            async for line in response.content:
                events += line == b"\n"
                if at.events is not None and events >= at.events:
                    response.close()  # the client goes away mid-stream
                    return
            pytest.fail("the answer ended before the client left")

    task = asyncio.create_task(client())
    if at.when is not None:
        waiting = asyncio.create_task(at.when(s))
        done, _ = await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        assert waiting in done, "the request ended before the point it was to leave at"
        waiting.result()
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def assert_released(s: Stack, case: str) -> None:
    """Everything the left request took is back, and the route still answers."""
    registries = s.sidecar.app[REGISTRIES]
    await until(lambda: not s.in_flight(s.a) and not s.in_flight(s.b), "upstream calls closed")
    await until(lambda: not any(registries.in_flight.values()), "route slots released")
    await until(lambda: sidecar_tasks() <= s.baseline, "the sidecar's tasks back to baseline")
    pools = s.sidecar.app[POOLS]
    for _, session in pools._sessions.values():
        connector = session.connector
        assert connector is not None
        await until(lambda c=connector: not c._acquired, "pooled connections released")
    for load in registries.balance.loads.values():
        assert load.in_flight == 0
    s.clock.advance(OPEN_FOR + 1)
    for breaker in registries.breakers.all():
        snapshot = breaker.snapshot()
        assert snapshot["probes_in_flight"] == 0, snapshot
        permit = breaker.acquire()
        assert permit is not None, f"breaker stuck: {snapshot}"
        breaker.record(permit, "ignored")
    # The route still answers, a stream to its end (the upstreams no longer fail).
    s.fault(s.a)
    s.fault(s.b)
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    async with s.http.post(s.url(), json=body, headers={"x-case": case}) as response:
        assert response.status == 200, await response.text()
        assert (await response.read()).endswith(b"data: [DONE]\n\n")


# -- the points ---------------------------------------------------------------------------

BEFORE_HEADERS = Leave(when=upstream_called)
DURING_BACKOFF = Leave(when=in_backoff)
SLOW = {"ttft_ms": 30_000}  # an upstream that has not answered yet
FAILING = {"fail": 503}
CUTTING = {"fail_chunk": CUT}

CASES: dict[str, tuple[str, bool, Leave, list[dict[str, object]], list[dict[str, object]]]] = {
    # id: (route, stream, where the client leaves, script of a, script of b)
    "json-before-headers": ("plain", False, BEFORE_HEADERS, [{"delay": 30_000}], []),
    "json-during-backoff": ("plain", False, DURING_BACKOFF, [FAILING], []),
    "stream-before-headers": ("plain", True, BEFORE_HEADERS, [SLOW], []),
    "stream-after-1-event": ("plain", True, Leave(events=1), [], []),
    "stream-after-5-events": ("plain", True, Leave(events=5), [], []),
    "stream-during-backoff": ("plain", True, DURING_BACKOFF, [FAILING], []),
    "prefill-during-splice": ("prefill", True, Leave(events=CUT + 2), [], [CUTTING]),
    "restart-during-splice": ("restart", True, Leave(events=CUT + 2), [CUTTING], []),
    "restart-before-the-continuation-answers": (
        "restart",
        True,
        Leave(events=CUT - 1),
        [CUTTING],
        [SLOW],
    ),
    "hedge-while-racing": ("hedged", True, Leave(when=hedge_racing), [SLOW], [SLOW]),
    "hedge-json-while-racing": (
        "hedged",
        False,
        Leave(when=hedge_racing),
        [{"delay": 30_000}],
        [{"delay": 30_000}],
    ),
    "cache-filling-after-3-events": ("cached", True, Leave(events=3), [], []),
    "rate-limited-after-3-events": ("limited", True, Leave(events=3), [], []),
    "rate-limited-before-headers": ("limited", True, BEFORE_HEADERS, [SLOW], []),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_cancel_anywhere_leaks_nothing(
    make_stack: Callable[..., Awaitable[Stack]], case: str
) -> None:
    route, stream, at, script_a, script_b = CASES[case]
    s = await make_stack()
    s.fault(s.a, *script_a)
    s.fault(s.b, *script_b)
    await leave(s, route, stream, at)
    await assert_released(s, route)


REDIS_CASES = [
    "json-during-backoff",
    "stream-before-headers",
    "stream-after-5-events",
    "restart-during-splice",
    "hedge-while-racing",
    "rate-limited-after-3-events",
]


@pytest.mark.parametrize("case", REDIS_CASES)
async def test_cancel_anywhere_with_state_on_redis(
    make_stack: Callable[..., Awaitable[Stack]], redis_prefix: str, case: str
) -> None:
    route, stream, at, script_a, script_b = CASES[case]
    state = f'state: {{backend: redis, url: "{REDIS_URL}", prefix: "{redis_prefix}"}}'
    s = await make_stack(state)
    s.fault(s.a, *script_a)
    s.fault(s.b, *script_b)
    await leave(s, route, stream, at)
    await assert_released(s, route)


async def test_a_half_open_probe_is_not_lost_when_the_client_leaves_during_the_splice(
    make_stack: Callable[..., Awaitable[Stack]],
) -> None:
    """Bug 1: the continuation took the half-open breaker's one probe, the client left
    mid-splice, and the breaker stayed half-open with the probe taken, for good."""
    s = await make_stack()
    registries = s.sidecar.app[REGISTRIES]
    body = {"model": "gpt-4o", "messages": MESSAGES}
    async with s.http.post(s.url(), json=body, headers={"x-case": "plain"}) as response:
        assert response.status == 200  # a answered: its breaker exists, closed
    breaker = registries.breakers.find("a")
    assert breaker is not None
    breaker.force("open")  # as after failures (an operator's drill does the same)
    s.clock.advance(OPEN_FOR)  # half-open now: one probe allowed
    assert breaker.state == "half_open"
    s.fault(s.b, CUTTING)  # the primary of "prefill" cuts; a continues it (the probe)
    await leave(s, "prefill", True, Leave(events=CUT + 2))
    await until(lambda: not s.in_flight(s.a), "the continuation's upstream call closed")
    assert breaker.snapshot()["probes_in_flight"] == 0
    assert breaker.acquire() is not None  # a later call to a gets through


# -- the sweep: every point, not only the named ones ---------------------------------------
#
# The named points above are where a request waits for something outside it. Between
# them a request passes through many more awaits (a task started, a hedge's loser being
# cancelled, a result recorded in Redis, a response closing ...), and a leak can hide at
# any one of them. The sweep sends the same request again and again and has the client
# leave after 0, 1, 2, ... turns of the event loop, up to the turn its answer completes:
# everything runs in this one loop (mock providers, sidecar, client), so the n-th turn is
# the same point of the request each time, and together they are every point.

SWEEP_CASES: dict[str, tuple[str, bool, list[dict[str, object]], list[dict[str, object]]]] = {
    # id: (route, stream, script of a, script of b) — run again before each request
    "json": ("plain", False, [], []),
    "json-retried": ("plain", False, [FAILING], []),
    "stream": ("plain", True, [], []),
    "stream-retried-then-failed-over": ("plain", True, [FAILING, FAILING], []),
    "prefill": ("prefill", True, [], [CUTTING]),
    "restart": ("restart", True, [CUTTING], []),
    "hedged-stream": ("hedged", True, [{"ttft_ms": 5}], []),
    "hedged-json": ("hedged", False, [{"delay": 5}], []),
    "cache-filling": ("cached", True, [], []),
    "rate-limited": ("limited", True, [], []),
}


async def turns_until(task: asyncio.Task[None], limit: int | None) -> int:
    """Let the loop turn until *task* is done or *limit* turns have passed; the turns."""
    turns = 0
    while not task.done() and (limit is None or turns < limit):
        await asyncio.sleep(0)
        turns += 1
    return turns


async def answer_or_leave(s: Stack, case: str, stream: bool, after: int | None) -> int:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": stream}

    async def client() -> None:
        async with s.http.post(s.url(), json=body, headers={"x-case": case}) as response:
            await response.read()

    task = asyncio.create_task(client())
    turns = await turns_until(task, after)
    for handler in list(s.handlers):  # the server learns the client left: at this turn
        handler.cancel()
    task.cancel()  # and the client's connection closes
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return turns


async def assert_nothing_held(s: Stack) -> None:
    registries = s.sidecar.app[REGISTRIES]
    await until(lambda: not s.in_flight(s.a) and not s.in_flight(s.b), "upstream calls closed")
    await until(lambda: not any(registries.in_flight.values()), "route slots released")
    await until(lambda: sidecar_tasks() <= s.baseline, "the sidecar's tasks back to baseline")
    for _, session in s.sidecar.app[POOLS]._sessions.values():
        connector = session.connector
        assert connector is not None
        await until(lambda c=connector: not c._acquired, "pooled connections released")
    for breaker in registries.breakers.all():
        assert breaker.snapshot()["probes_in_flight"] == 0, breaker.snapshot()
        breaker.force("closed")  # the next request starts from the same state


@pytest.mark.parametrize("case", list(SWEEP_CASES))
async def test_cancel_sweep_every_turn_leaks_nothing(
    make_stack: Callable[..., Awaitable[Stack]], case: str
) -> None:
    route, stream, script_a, script_b = SWEEP_CASES[case]
    s = await make_stack(chunk_ms=0)  # no pacing: the loop's turns are the request's steps
    s.clock.autoadvance = True  # backoff and hedge timers pass at once: a turn each

    def arm() -> None:
        s.fault(s.a, *script_a)
        s.fault(s.b, *script_b)

    arm()
    whole = await answer_or_leave(s, route, stream, None)
    await assert_nothing_held(s)
    for after in range(whole + 1):
        arm()
        await answer_or_leave(s, route, stream, after)
        await assert_nothing_held(s)


async def test_cancel_sweep_over_a_half_open_probe(
    make_stack: Callable[..., Awaitable[Stack]],
) -> None:
    """The continuation (or the hedge) holds the half-open breaker's one probe when the
    client leaves: at no turn may the probe stay taken."""
    s = await make_stack(chunk_ms=0)
    s.clock.autoadvance = True
    registries = s.sidecar.app[REGISTRIES]
    body = {"model": "gpt-4o", "messages": MESSAGES}
    async with s.http.post(s.url(), json=body, headers={"x-case": "plain"}) as response:
        assert response.status == 200
    breaker = registries.breakers.find("a")
    assert breaker is not None

    def arm() -> None:
        breaker.force("open")
        s.clock.advance(OPEN_FOR)  # half-open: the continuation's attempt on a is the probe
        s.fault(s.b, CUTTING)

    arm()
    whole = await answer_or_leave(s, "prefill", True, None)
    for after in range(whole + 1):
        arm()
        await answer_or_leave(s, "prefill", True, after)
        await assert_nothing_held(s)


# With paced upstream chunks a request also waits between events (a continuation's
# splice lasts a while); the client then leaves every few milliseconds of the answer.
PACED_MS = 3


async def answer_or_leave_at(s: Stack, case: str, stream: bool, seconds: float | None) -> float:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": stream}

    async def client() -> None:
        async with s.http.post(s.url(), json=body, headers={"x-case": case}) as response:
            await response.read()

    started = asyncio.get_running_loop().time()
    task = asyncio.create_task(client())
    await asyncio.wait({task}, timeout=seconds)
    for handler in list(s.handlers):
        handler.cancel()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return asyncio.get_running_loop().time() - started


@pytest.mark.parametrize("case", ["prefill", "restart", "hedged-stream", "stream"])
async def test_cancel_sweep_over_a_paced_answer_leaks_nothing(
    make_stack: Callable[..., Awaitable[Stack]], case: str
) -> None:
    route, stream, script_a, script_b = SWEEP_CASES[case]
    s = await make_stack(chunk_ms=PACED_MS)
    s.clock.autoadvance = True
    registries = s.sidecar.app[REGISTRIES]
    async with s.http.post(s.url(), json={"model": "gpt-4o", "messages": MESSAGES}) as _:
        pass  # (no x-case: 404) the sidecar is warm
    probe = route in ("prefill", "restart")  # the continuation's target is half-open

    def arm() -> None:
        s.fault(s.a, *script_a)
        s.fault(s.b, *script_b)
        if probe:
            target = "a" if route == "prefill" else "b"
            registries.breakers.get(target, route_breaker(s, route)).force("open")
            s.clock.advance(OPEN_FOR)

    arm()
    whole = await answer_or_leave_at(s, route, stream, None)
    await assert_nothing_held(s)
    step = PACED_MS / 1000
    for k in range(int(whole / step) + 2):
        arm()
        await answer_or_leave_at(s, route, stream, k * step)
        await assert_nothing_held(s)


def route_breaker(s: Stack, name: str) -> Breaker:
    runtime = s.sidecar.app[HOLDER].current
    assert runtime is not None
    return next(route.breaker for route in runtime.policy.routes if route.name == name)
