"""Every fault, through every channel, in both flavours, streaming and not, seen by the SDKs.

Channels: ``query`` (SDK ``extra_query``), ``header`` (SDK ``extra_headers``, ``x-mock-*``)
and ``script`` (one control-API script entry). The random-probability channel has its own
tests below. Timing assertions use strict lower bounds (the server cannot answer sooner)
and generous upper bounds (``SLACK``) so that a loaded machine does not make them flaky.
"""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx2
import openai
import pytest

from mock_provider.content import split_tokens
from mock_provider.state import STATE

ANSWER = "one two three four five six"
TOKENS = split_tokens(ANSWER)
FLAVOURS = ("openai", "anthropic")
CHANNELS = ("query", "header", "script")
STREAMING = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
SLACK = 1.0  # seconds of upper-bound tolerance for anything timed
EPS = 0.05  # seconds: receive-time jitter allowed on a gap between two chunks


@pytest.fixture
async def server(mock_server):
    return await mock_server(name="faulty", answer=ANSWER)


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=CHANNELS)
def channel(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def chat(server, chat_for, flavour):
    return chat_for(server, flavour)


@pytest.fixture
async def control(server, http_for):
    return http_for(server)


@pytest.fixture
def drivers(server, chat_for):
    return {flavour: chat_for(server, flavour) for flavour in FLAVOURS}


def request(chat, channel: str, fault: dict[str, object], **kwargs):
    """The SDK call carrying *fault* by query or header (script: no fault of its own)."""
    if channel == "query":
        return chat(extra_query=fault, **kwargs)
    if channel == "header":
        headers = {f"x-mock-{name.replace('_', '-')}": str(value) for name, value in fault.items()}
        return chat(extra_headers=headers, **kwargs)
    return chat(**kwargs)


async def script(control, *entries: dict[str, object]) -> None:
    async with control.post("/config/failures", json={"script": list(entries)}) as response:
        assert response.status == 200, await response.text()


async def assert_script_consumed(control) -> None:
    async with control.get("/config/failures") as response:
        assert (await response.json())["script_remaining"] == []


async def send(chat, control, channel: str, fault: dict[str, object], **kwargs):
    """One SDK request carrying *fault* through *channel*."""
    if channel == "script":
        await script(control, fault)
    outcome = await request(chat, channel, fault, **kwargs)
    if channel == "script":
        await assert_script_consumed(control)
    return outcome


async def send_everywhere(drivers, control, fault: dict[str, object], streams=(False, True)):
    """The same fault for every flavour x channel x stream mode, all at once, so timed
    faults overlap their waits. Returns (label, flavour, stream, outcome) tuples.

    Query and header requests name their fault themselves and consume no script entry,
    so the script holds exactly one entry per script-channel request.
    """
    combos = [(f, c, s) for f in FLAVOURS for c in CHANNELS for s in streams]
    await script(control, *[fault for _, channel, _ in combos if channel == "script"])
    outcomes = await asyncio.gather(
        *(request(drivers[f], channel, fault, stream=s) for f, channel, s in combos)
    )
    await assert_script_consumed(control)
    return [
        (f"{f}-{channel}-{'stream' if s else 'plain'}", f, s, outcome)
        for (f, channel, s), outcome in zip(combos, outcomes, strict=True)
    ]


def assert_error_body(flavour: str, body: dict[str, object], kind: str) -> str:
    """The flavour's error format; returns the message."""
    if flavour == "openai":
        assert list(body) == ["error"]
        error = body["error"]
        assert isinstance(error, dict)
        assert set(error) == {"message", "type", "code", "param"}
    else:
        assert body["type"] == "error"
        error = body["error"]
        assert isinstance(error, dict)
        assert set(error) == {"type", "message"}
    assert error["type"] == kind
    assert isinstance(error["message"], str)
    assert error["message"]
    return error["message"]


# ------------------------------------------------------------------------- status faults

# case -> (fault, status, (openai class, anthropic class), (openai type, anthropic type))
STATUS_FAULTS = {
    "429": (
        {"fail": 429, "retry_after": 2},
        429,
        (openai.RateLimitError, anthropic.RateLimitError),
        ("rate_limit_error", "rate_limit_error"),
    ),
    "500": (
        {"fail": 500},
        500,
        (openai.InternalServerError, anthropic.InternalServerError),
        ("server_error", "api_error"),
    ),
    "503": (
        {"fail": 503},
        503,
        (openai.InternalServerError, anthropic.ServiceUnavailableError),
        ("server_error", "api_error"),
    ),
    "529": (
        {"fail": 529, "retry_after": 0.5},
        529,
        (openai.InternalServerError, anthropic.OverloadedError),
        ("server_error", "overloaded_error"),
    ),
    "timeout": (
        {"fail": "timeout", "timeout_ms": 50},
        504,
        (openai.InternalServerError, anthropic.GatewayTimeoutError),
        ("timeout_error", "timeout_error"),
    ),
}


@STREAMING
@pytest.mark.parametrize("case", sorted(STATUS_FAULTS))
async def test_status_faults(chat, control, flavour, channel, case, stream) -> None:
    fault, status, classes, kinds = STATUS_FAULTS[case]
    index = FLAVOURS.index(flavour)
    outcome = await send(chat, control, channel, fault, stream=stream)
    assert outcome.status == status
    assert type(outcome.error) is classes[index]
    response = outcome.error.response
    assert response.headers["x-mock-name"] == "faulty"
    assert response.headers["content-type"] == "application/json"
    assert_error_body(flavour, response.json(), kinds[index])
    if "retry_after" in fault:
        seconds = fault["retry_after"]
        assert response.headers["retry-after"] == str(seconds)
        assert response.headers["retry-after-ms"] == str(int(float(seconds) * 1000))
    else:
        assert "retry-after" not in response.headers
    if fault["fail"] == "timeout":
        assert 0.05 <= outcome.elapsed < 0.05 + SLACK


@STREAMING
async def test_reset(chat, control, flavour, channel, stream) -> None:
    outcome = await send(chat, control, channel, {"fail": "reset"}, stream=stream)
    assert outcome.status is None
    assert isinstance(outcome.error, openai.APIConnectionError | anthropic.APIConnectionError)


async def test_delay(drivers, control) -> None:
    for label, _, _, outcome in await send_everywhere(drivers, control, {"delay": 200}):
        assert outcome.error is None, label
        assert outcome.text == ANSWER, label
        assert outcome.headers["x-mock-name"] == "faulty", label
        assert 0.2 <= outcome.elapsed < 0.2 + SLACK, label


async def test_delay_before_a_failure(drivers, control) -> None:
    fault = {"delay": 100, "fail": 500}
    for label, _, _, outcome in await send_everywhere(drivers, control, fault):
        assert outcome.status == 500, label
        assert 0.1 <= outcome.elapsed < 0.1 + SLACK, label


async def test_ttft(drivers, control) -> None:
    for label, _, stream, outcome in await send_everywhere(drivers, control, {"ttft_ms": 150}):
        assert outcome.error is None, label
        assert outcome.text == ANSWER, label
        first = outcome.chunk_times[0] if stream else outcome.finished
        assert 0.15 <= first - outcome.started < 0.15 + SLACK, label


async def test_headers_take_underscores_and_the_query_wins(chat) -> None:
    outcome = await chat(extra_headers={"x-mock-fail": "429", "X-Mock-Retry_After": "3"})
    assert outcome.status == 429
    assert outcome.error.response.headers["retry-after"] == "3"
    outcome = await chat(extra_query={"fail": "500"}, extra_headers={"x-mock-fail": "429"})
    assert outcome.status == 500


# ------------------------------------------------------------------------- stream faults

CUT_ERRORS = (openai.APIConnectionError, anthropic.APIConnectionError, httpx2.TransportError)


@pytest.mark.parametrize("n", [2, 0])
async def test_fail_chunk(chat, control, channel, n) -> None:
    outcome = await send(chat, control, channel, {"fail_chunk": n}, stream=True)
    assert isinstance(outcome.error, CUT_ERRORS)
    assert outcome.chunks == n
    assert outcome.text == "".join(TOKENS[:n])


async def test_fail_chunk_beyond_the_answer_still_cuts(chat, control, channel) -> None:
    outcome = await send(chat, control, channel, {"fail_chunk": 99}, stream=True)
    assert isinstance(outcome.error, CUT_ERRORS)
    assert outcome.text == ANSWER
    assert "message_stop" not in outcome.events


async def test_malformed_chunk(chat, control, channel) -> None:
    outcome = await send(chat, control, channel, {"malformed_chunk": 3}, stream=True)
    assert isinstance(outcome.error, json.JSONDecodeError)
    assert outcome.chunks == 2
    assert outcome.text == "".join(TOKENS[:2])


@pytest.mark.parametrize("n", [0, 2])
async def test_error_chunk(chat, control, flavour, channel, n) -> None:
    """A 200 stream that carries the provider's overloaded error event, then ends."""
    outcome = await send(chat, control, channel, {"error_chunk": n}, stream=True)
    expected = (openai.APIError,) if flavour == "openai" else (anthropic.APIStatusError,)
    assert isinstance(outcome.error, expected)
    assert "overloaded" in str(outcome.error).lower()
    assert outcome.text == "".join(TOKENS[:n])


async def test_error_chunk_on_the_wire(chat, control, flavour, channel) -> None:
    outcome = await send(chat, control, channel, {"error_chunk": 0}, stream=True, raw=True)
    events = outcome.raw.split(b"\n\n")
    assert events[-1] == b""
    assert len(events) == 2  # the error event is the first and only one
    if flavour == "openai":
        assert events[0].startswith(b'data: {"error":')
    else:
        assert events[0].startswith(b"event: error\ndata: ")
        assert b"overloaded_error" in events[0]


async def test_context_length(chat, control, flavour, channel) -> None:
    outcome = await send(chat, control, channel, {"fail": "context_length"})
    expected = openai.BadRequestError if flavour == "openai" else anthropic.BadRequestError
    assert isinstance(outcome.error, expected)
    assert outcome.error.status_code == 400
    assert "prompt is too long" in str(outcome.error)
    if flavour == "openai":
        assert outcome.error.code == "context_length_exceeded"


async def test_stall_chunk(drivers, control) -> None:
    fault = {"stall_chunk": 2, "stall_ms": 200}
    for label, _, _, outcome in await send_everywhere(drivers, control, fault, streams=[True]):
        assert outcome.error is None, label
        assert outcome.text == ANSWER, label
        times = outcome.chunk_times
        assert 0.2 - EPS <= times[2] - times[1] < 0.2 + SLACK, label
        assert times[2] - outcome.started >= 0.2, label


async def test_chunk_ms(drivers, control) -> None:
    pauses = len(TOKENS) - 1
    fault = {"chunk_ms": 40}
    for label, _, _, outcome in await send_everywhere(drivers, control, fault, streams=[True]):
        assert outcome.error is None, label
        assert outcome.text == ANSWER, label
        assert outcome.chunk_times[-1] - outcome.started >= pauses * 0.04, label
        span = outcome.chunk_times[-1] - outcome.chunk_times[0]
        assert pauses * 0.04 - EPS <= span < pauses * 0.04 + SLACK, label


async def test_no_done(chat, control, flavour, channel) -> None:
    outcome = await send(chat, control, channel, {"no_done": 1}, stream=True, raw=True)
    assert outcome.error is None
    body = outcome.raw
    events = body.split(b"\n\n")
    assert events[-1] == b""
    if flavour == "openai":
        assert b"[DONE]" not in body
        assert b'"finish_reason":"stop"' in events[-2]  # the finish chunk is still sent
    else:
        assert b"message_stop" not in body
        assert events[-2].startswith(b"event: message_delta\n")
    assert body.count(b"data: ") == len(events) - 1


async def test_no_done_through_the_sdk(chat, control, flavour, channel) -> None:
    """The SDKs end such a stream quietly: only the missing marker tells."""
    outcome = await send(chat, control, channel, {"no_done": "true"}, stream=True)
    assert outcome.error is None
    assert outcome.text == ANSWER
    if flavour == "anthropic":
        assert outcome.events[-1] == "message_delta"


async def test_stream_faults_leave_plain_requests_alone(chat, control, channel) -> None:
    fault = {"fail_chunk": 1, "malformed_chunk": 1, "stall_chunk": 1, "stall_ms": 5000}
    outcome = await send(chat, control, channel, {**fault, "no_done": 1, "chunk_ms": 5000})
    assert outcome.error is None
    assert outcome.text == ANSWER


async def test_combined_stream_faults(drivers, control) -> None:
    fault = {"ttft_ms": 100, "chunk_ms": 20, "stall_chunk": 1, "stall_ms": 100, "fail_chunk": 4}
    for label, _, _, outcome in await send_everywhere(drivers, control, fault, streams=[True]):
        assert isinstance(outcome.error, CUT_ERRORS), label
        assert outcome.text == "".join(TOKENS[:4]), label
        assert outcome.chunk_times[0] - outcome.started >= 0.1, label
        assert outcome.chunk_times[1] - outcome.chunk_times[0] >= 0.1 + 0.02 - EPS, label


# ----------------------------------------------------------------------------------- hang


@pytest.fixture
async def watched(watched_server):
    """A server whose arrivals can be awaited: (server, arrived event)."""
    return await watched_server(name="watched", answer=ANSWER)


async def _configure(http, body: dict[str, object], arrived: asyncio.Event) -> None:
    async with http.post("/config/failures", json=body) as response:
        assert response.status == 200
    arrived.clear()


@STREAMING
@pytest.mark.parametrize("route", [*CHANNELS, "probability"])
async def test_hang_until_the_client_goes(watched, chat_for, http_for, flavour, route, stream):
    server, arrived = watched
    chat = chat_for(server, flavour)
    state = server.app[STATE]
    if route == "query":
        request = chat(stream=stream, extra_query={"fail": "hang"})
    elif route == "header":
        request = chat(stream=stream, extra_headers={"X-Mock-Fail": "hang"})
    else:
        body = {"script": [{"fail": "hang"}]} if route == "script" else {"hang": 1.0}
        await _configure(http_for(server), body, arrived)
        request = chat(stream=stream)
    task = asyncio.create_task(request)
    await asyncio.wait_for(arrived.wait(), timeout=5)
    assert state.stats.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # not an answer: it was still hanging
        await task
    await asyncio.wait_for(state.stats.wait_idle(), timeout=5)
    snapshot = state.stats.snapshot()
    assert snapshot["in_flight"] == 0
    assert snapshot["by_outcome"] == {"hang": 1}


async def test_hang_ends_when_the_client_is_closed(watched, chat_for, flavour) -> None:
    server, arrived = watched
    chat = chat_for(server, flavour)
    task = asyncio.create_task(chat(extra_query={"fail": "hang"}))
    await asyncio.wait_for(arrived.wait(), timeout=5)
    await chat.client.close()
    outcome = await asyncio.wait_for(task, timeout=5)
    assert isinstance(outcome.error, openai.APIConnectionError | anthropic.APIConnectionError)
    await asyncio.wait_for(server.app[STATE].stats.wait_idle(), timeout=5)
    assert server.app[STATE].stats.snapshot()["by_outcome"] == {"hang": 1}


async def test_hang_ends_at_the_sdk_timeout(watched, chat_for) -> None:
    server, _ = watched
    outcomes = await asyncio.gather(
        *(chat_for(server, f, timeout=0.2)(extra_headers={"x-mock-fail": "hang"}) for f in FLAVOURS)
    )
    for outcome in outcomes:
        assert isinstance(outcome.error, openai.APITimeoutError | anthropic.APITimeoutError)
        assert 0.2 <= outcome.elapsed < 0.2 + SLACK
    await asyncio.wait_for(server.app[STATE].stats.wait_idle(), timeout=5)
    assert server.app[STATE].stats.snapshot()["by_outcome"] == {"hang": 2}


WAITING = {
    "delay": ({"delay": 60_000}, False),
    "timeout": ({"fail": "timeout", "timeout_ms": 60_000}, False),
    "ttft": ({"ttft_ms": 60_000}, False),
    "stream_ttft": ({"ttft_ms": 60_000}, True),
    "stall": ({"stall_chunk": 1, "stall_ms": 60_000}, True),
    "chunk_ms": ({"chunk_ms": 60_000}, True),
}


@pytest.mark.parametrize("case", sorted(WAITING))
async def test_waiting_faults_stop_when_the_client_goes(
    watched, openai_for, anthropic_for, flavour, case
):
    """No fault keeps a handler running after its client has gone away."""
    server, arrived = watched
    fault, stream = WAITING[case]
    query = {name: str(value) for name, value in fault.items()}
    params: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}]}
    if flavour == "openai":
        create = openai_for(server).chat.completions.create
        params["model"] = "gpt-4o"
    else:
        create = anthropic_for(server).messages.create
        params |= {"model": "claude-haiku-4-5", "max_tokens": 64}
    if stream:
        # The opening events arrive at once; then the server waits. Hang up right there.
        events = await create(stream=True, extra_query=query, **params)
        await asyncio.wait_for(anext(aiter(events)), timeout=5)
        await events.close()
    else:
        task = asyncio.create_task(create(extra_query=query, **params))
        await asyncio.wait_for(arrived.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.wait_for(server.app[STATE].stats.wait_idle(), timeout=5)
    assert server.app[STATE].stats.snapshot()["total"] == 1


# ------------------------------------------------------------------ probabilities channel

KNOBS = {"retry_after": 1, "chunk": 2, "stall_ms": 150, "ttft_ms": 100, "timeout_ms": 50}


async def _with_probability(control, name: str) -> None:
    async with control.post("/config/failures", json={name: 1.0, **KNOBS}) as response:
        assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    ("name", "status", "kinds"),
    [
        ("timeout", 504, ("timeout_error", "timeout_error")),
        ("rate_limit", 429, ("rate_limit_error", "rate_limit_error")),
        ("server_error", 500, ("server_error", "api_error")),
        ("overloaded", None, ("server_error", "overloaded_error")),
    ],
)
@STREAMING
async def test_probability_status_faults(chat, control, flavour, name, status, kinds, stream):
    await _with_probability(control, name)
    status = status or (503 if flavour == "openai" else 529)
    outcome = await chat(stream=stream)
    assert outcome.status == status
    response = outcome.error.response
    assert_error_body(flavour, response.json(), kinds[FLAVOURS.index(flavour)])
    if name in ("rate_limit", "overloaded"):
        assert response.headers["retry-after"] == "1"
    if name == "timeout":
        assert outcome.elapsed >= 0.05


@STREAMING
async def test_probability_reset(chat, control, stream) -> None:
    await _with_probability(control, "reset")
    outcome = await chat(stream=stream)
    assert isinstance(outcome.error, openai.APIConnectionError | anthropic.APIConnectionError)


async def test_probability_stream_cut(chat, control) -> None:
    await _with_probability(control, "stream_cut")
    outcome = await chat(stream=True)
    assert isinstance(outcome.error, CUT_ERRORS)
    assert outcome.chunks == 2
    assert (await chat()).text == ANSWER  # streams only


async def test_probability_malformed_chunk(chat, control) -> None:
    await _with_probability(control, "malformed_chunk")
    outcome = await chat(stream=True)
    assert isinstance(outcome.error, json.JSONDecodeError)
    assert outcome.chunks == 1
    assert (await chat()).text == ANSWER


async def test_probability_stream_stall(drivers, control) -> None:
    await _with_probability(control, "stream_stall")
    outcomes = await asyncio.gather(*(drivers[f](stream=True) for f in FLAVOURS))
    for outcome in outcomes:
        assert outcome.error is None
        assert outcome.text == ANSWER
        assert outcome.chunk_times[2] - outcome.chunk_times[1] >= 0.15 - EPS
    for flavour in FLAVOURS:
        assert (await drivers[flavour]()).text == ANSWER  # streams only


async def test_probability_slow_first_token(drivers, control) -> None:
    await _with_probability(control, "slow_first_token")
    combos = [(f, stream) for f in FLAVOURS for stream in (False, True)]
    outcomes = await asyncio.gather(*(drivers[f](stream=stream) for f, stream in combos))
    for (_, stream), outcome in zip(combos, outcomes, strict=True):
        assert outcome.error is None
        assert outcome.text == ANSWER
        first = outcome.chunk_times[0] if stream else outcome.finished
        assert 0.1 <= first - outcome.started < 0.1 + SLACK


# ------------------------------------------------------------------ SDK retries honour it


async def test_sdk_honours_retry_after(mock_server, chat_for, http_for) -> None:
    """The SDKs' own backoff is at most 0.5 s here; waiting 0.6 s proves they read the header.

    Both flavours run at once, each against its own server (each has its own script).
    """

    async def attempt(flavour: str, status: int):
        server = await mock_server(name=flavour, answer=ANSWER)
        control = http_for(server)
        await script(control, {"fail": status, "retry_after": 0.6}, {})
        outcome = await chat_for(server, flavour, max_retries=1)()
        async with control.get("/stats") as response:
            return outcome, (await response.json())["by_outcome"]

    results = await asyncio.gather(attempt("openai", 429), attempt("anthropic", 529))
    for (outcome, by_outcome), status in zip(results, (429, 529), strict=True):
        assert outcome.error is None
        assert outcome.text == ANSWER
        assert 0.6 <= outcome.elapsed < 0.6 + SLACK
        assert by_outcome == {str(status): 1, "ok": 1}
