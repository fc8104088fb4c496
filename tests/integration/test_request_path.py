"""The request path end to end: real mock providers, the sidecar, the official openai SDK.

The sidecar runs on a FakeClock (seeded jitter), so backoff sleeps are instant
and their exact lengths can be asserted; attempt timeouts (first byte, idle)
are real and kept short. Faults are scripted per mock through its control API,
so each provider fails exactly as the test says.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from mock_provider.app import create_app as create_mock
from mock_provider.content import DEFAULT_ANSWER, split_tokens
from mock_provider.state import STATE, MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.policy.model import Backoff
from sidecar.resilience.backoff import BackoffStrategy
from sidecar.resilience.clock import FakeClock, SystemClock
from sidecar.state import ADMIN_APP

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES = [{"role": "user", "content": "hello"}]
BODY = {"model": "gpt-4o", "messages": MESSAGES}
SEED = 7

POLICY = """\
version: 1
upstreams:
  primary:
    url: {primary}
    format: openai
    auth: {{header: Authorization, value: "Bearer sk-primary"}}
  secondary:
    url: {secondary}
    format: openai
    auth: {{header: Authorization, value: "Bearer sk-secondary"}}
routes:
  - name: chat
    match: {{path: /v1/chat/completions, methods: [POST]}}
    validate: {{max_body: 64KiB, max_prompt_tokens: 1000}}
    deadline: {deadline}
    timeouts: {{first_byte: {first_byte}, idle: {idle}}}
    retry:
      attempts: {attempts}
      backoff: {{base: 100ms, max: 1s, jitter: full}}
      retry_after: {{honor: true, max_wait: {max_wait}}}
      budget: {{ratio: 100%, min_per_second: 100}}
    breaker: {{consecutive_failures: 5, open_for: 10s}}
    fallback:
      - upstream: primary
      - upstream: secondary
      - {{upstream: secondary, model: gpt-4o-long, when: context_length_exceeded}}
"""


@dataclass
class Stack:
    sidecar: TestServer
    admin: TestServer
    primary: TestServer
    secondary: TestServer
    clock: FakeClock
    client: openai.AsyncOpenAI
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return str(self.sidecar.make_url(path))

    async def script(self, mock: TestServer, body: dict[str, object]) -> None:
        async with self.http.post(mock.make_url("/config/failures"), json=body) as response:
            assert response.status == 200, await response.text()

    async def calls(self, mock: TestServer) -> int:
        async with self.http.get(mock.make_url("/stats")) as response:
            stats = await response.json()
            return int(stats["total"])

    async def breakers(self) -> dict[str, dict[str, object]]:
        async with self.http.get(self.admin.make_url("/admin/breakers")) as response:
            body = await response.json()
            return {b["key"]: b for b in body["breakers"]}


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[StackFactory]:
    made: list[Stack] = []

    async def start(
        attempts: int = 3,
        deadline: str = "20s",
        first_byte: str = "5s",
        idle: str = "5s",
        chunk_ms: int = 0,
        max_wait: str = "2s",
        real_clock: bool = False,
    ) -> Stack:
        primary = await aiohttp_server(
            create_mock(MockSettings(name="primary", api_key="sk-primary", chunk_ms=chunk_ms))
        )
        secondary = await aiohttp_server(
            create_mock(MockSettings(name="secondary", api_key="sk-secondary"))
        )
        (tmp_path / "policy.yaml").write_text(
            POLICY.format(
                primary=str(primary.make_url("")).rstrip("/"),
                secondary=str(secondary.make_url("")).rstrip("/"),
                attempts=attempts,
                deadline=deadline,
                first_byte=first_byte,
                idle=idle,
                max_wait=max_wait,
            )
        )
        clock = FakeClock()
        config = SidecarConfig(
            policies=tmp_path,
            environ={},
            clock=SystemClock() if real_clock else clock,
            seed=SEED,
            watch=False,
            poll_interval=3600,
        )
        app = create_sidecar(config)
        sidecar = await aiohttp_server(app)
        admin = await aiohttp_server(app[ADMIN_APP])
        client = openai.AsyncOpenAI(
            base_url=str(sidecar.make_url("/v1")), api_key="client-key", max_retries=0
        )
        built = Stack(sidecar, admin, primary, secondary, clock, client, aiohttp.ClientSession())
        made.append(built)
        return built

    yield start
    for built in made:
        await built.client.close()
        await built.http.close()


def expected_backoff(count: int) -> list[float]:
    """The delays the sidecar's seeded jitter produces for retries 1..count."""
    rng = random.Random(SEED)
    strategy = BackoffStrategy(Backoff(base=0.1, max=1.0, multiplier=2.0, jitter="full"))
    return [strategy.delay(retry, rng) for retry in range(1, count + 1)]


async def chat(stack: Stack, **extra: object) -> tuple[str, dict[str, str]]:
    raw = await stack.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, **extra
    )
    completion = raw.parse()
    return completion.choices[0].message.content or "", dict(raw.headers)


# -- the seed's five scenarios ----------------------------------------------------------


async def test_happy_path(stack: StackFactory) -> None:
    s = await stack()
    content, headers = await chat(s)
    assert content == DEFAULT_ANSWER
    assert headers["x-sidecar-upstream"] == "primary"
    assert headers["x-sidecar-attempts"] == "1"
    assert len(headers["x-request-id"]) >= 16
    assert s.clock.slept == []


async def test_timeout_then_retry_with_backoff_then_success(stack: StackFactory) -> None:
    s = await stack()
    await s.script(s.primary, {"script": [{"fail": "timeout", "timeout_ms": 20}, {"fail": 503}]})
    content, headers = await chat(s)
    assert content == DEFAULT_ANSWER
    assert headers["x-sidecar-upstream"] == "primary"
    assert headers["x-sidecar-attempts"] == "3"
    assert s.clock.slept == pytest.approx(expected_backoff(2))
    assert await s.calls(s.primary) == 3
    assert await s.calls(s.secondary) == 0


async def test_rate_limit_fails_over_instantly(stack: StackFactory) -> None:
    s = await stack()
    await s.script(s.primary, {"script": [{"fail": 429, "retry_after": 30}]})
    content, headers = await chat(s)
    assert content == DEFAULT_ANSWER
    assert headers["x-sidecar-upstream"] == "secondary"
    assert headers["x-sidecar-attempts"] == "2"
    assert s.clock.slept == []  # Retry-After beyond max_wait: fail over now, no waiting
    assert await s.calls(s.primary) == 1


async def test_short_retry_after_is_honoured_exactly(stack: StackFactory) -> None:
    s = await stack()
    await s.script(s.primary, {"script": [{"fail": 429, "retry_after": 1.5}]})
    _, headers = await chat(s)
    assert headers["x-sidecar-upstream"] == "primary"
    assert s.clock.slept == [1.5]


async def test_breaker_opens_skips_the_provider_and_recovers(stack: StackFactory) -> None:
    s = await stack(attempts=1)
    await s.script(s.primary, {"server_error": 1.0})
    for _ in range(5):
        _, headers = await chat(s)
        assert headers["x-sidecar-upstream"] == "secondary"
    breakers = await s.breakers()
    assert breakers["primary"]["state"] == "open"
    async with s.http.post(s.primary.make_url("/stats/reset")):
        pass
    for _ in range(3):
        _, headers = await chat(s)
        assert headers["x-sidecar-upstream"] == "secondary"
    assert await s.calls(s.primary) == 0  # open: no call reached the provider

    await s.script(s.primary, {})  # the provider recovers
    s.clock.advance(10.0)  # open_for elapses
    _, headers = await chat(s)
    assert headers["x-sidecar-upstream"] == "primary"  # the half-open probe succeeded
    assert (await s.breakers())["primary"]["state"] == "closed"


async def test_invalid_request_fails_fast_without_upstream_calls(stack: StackFactory) -> None:
    s = await stack()
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        async with s.http.post(
            s.url("/v1/chat/completions"), json={"model": "gpt-4o", "messages": []}
        ) as response:
            body = await response.json()
        timings.append(time.perf_counter() - started)
        assert response.status == 400
        assert body["error"]["code"] == "invalid_request_body"
        assert body["error"]["param"] == "messages"
        assert body["request_id"] == response.headers["x-request-id"]
    assert min(timings) < 0.010
    with pytest.raises(openai.BadRequestError) as caught:
        await s.client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x" * 5000}]
        )
    assert caught.value.code == "context_length_exceeded"
    assert await s.calls(s.primary) == 0
    assert await s.calls(s.secondary) == 0


# -- rules -------------------------------------------------------------------------------


async def test_client_errors_are_returned_at_once_never_retried_or_failed_over(
    stack: StackFactory,
) -> None:
    s = await stack()
    await s.script(s.primary, {"script": [{"fail": 400}]})
    with pytest.raises(openai.BadRequestError):
        await chat(s)
    assert await s.calls(s.primary) == 1
    assert await s.calls(s.secondary) == 0


async def test_context_length_goes_to_the_larger_context_target(stack: StackFactory) -> None:
    s = await stack()
    await s.script(s.primary, {"script": [{"fail": "context_length"}]})
    raw = await s.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert raw.headers["x-sidecar-upstream"] == "secondary"
    assert raw.parse().model == "gpt-4o-long"
    assert await s.calls(s.primary) == 1


async def test_context_length_without_a_larger_target_is_returned_as_is(
    stack: StackFactory,
) -> None:
    s = await stack()
    await s.script(s.primary, {"script": [{"fail": "context_length"}]})
    await s.script(s.secondary, {"script": [{"fail": "context_length"}]})
    with pytest.raises(openai.BadRequestError) as caught:
        await chat(s)
    assert caught.value.code == "context_length_exceeded"
    assert await s.calls(s.secondary) == 1  # the larger target was tried once


async def test_upstream_auth_replaces_the_clients_key(stack: StackFactory) -> None:
    s = await stack()
    # Each mock demands its own key; the client's "client-key" must reach neither.
    await s.script(s.primary, {"script": [{"fail": 503}] * 3})
    _, headers = await chat(s)
    assert headers["x-sidecar-upstream"] == "secondary"


async def test_deadline_bounds_the_whole_chain(stack: StackFactory) -> None:
    s = await stack(deadline="300ms", first_byte="300ms", max_wait="100ms", real_clock=True)
    await s.script(s.primary, {"script": [{"fail": "hang"}]})
    await s.script(s.secondary, {"script": [{"fail": "hang"}]})
    started = time.monotonic()
    async with s.http.post(s.url("/v1/chat/completions"), json=BODY) as response:
        body = await response.json()
    assert response.status == 504
    assert body["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 2.0


async def test_all_breakers_open_is_503_with_retry_after(stack: StackFactory) -> None:
    s = await stack(attempts=1)
    await s.script(s.primary, {"server_error": 1.0})
    await s.script(s.secondary, {"server_error": 1.0})
    for _ in range(5):
        with pytest.raises(openai.InternalServerError):
            await chat(s)
    async with s.http.post(s.url("/v1/chat/completions"), json=BODY) as response:
        body = await response.json()
        assert response.status == 503
        assert response.headers["Retry-After"] == "10"
        assert body["error"]["code"] == "all_targets_unavailable"


# -- streams -----------------------------------------------------------------------------


async def stream_text(stack: Stack) -> tuple[str, dict[str, str]]:
    raw = await stack.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    parts = []
    async for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts), dict(raw.headers)


async def collect(stack: Stack, into: list[str]) -> None:
    """Read an SDK stream into *into* until it ends or raises."""
    async for chunk in await stack.client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            into.append(chunk.choices[0].delta.content)


async def raw_stream(stack: Stack) -> bytes:
    async with stack.http.post(
        stack.url("/v1/chat/completions"), json={**BODY, "stream": True}
    ) as response:
        assert response.status == 200
        return await response.read()


async def test_stream_failure_before_first_byte_fails_over(stack: StackFactory) -> None:
    s = await stack(attempts=1)
    await s.script(s.primary, {"script": [{"fail": 500}]})
    text, headers = await stream_text(s)
    assert text == DEFAULT_ANSWER
    assert headers["x-sidecar-upstream"] == "secondary"


async def test_stream_cut_before_the_first_token_fails_over(stack: StackFactory) -> None:
    s = await stack(attempts=1)
    # The role chunk arrives, then garbage, then the connection drops: nothing was committed.
    await s.script(s.primary, {"script": [{"malformed_chunk": 1, "fail_chunk": 1}]})
    text, headers = await stream_text(s)
    assert text == DEFAULT_ANSWER
    assert headers["x-sidecar-upstream"] == "secondary"


async def test_stream_whose_first_event_is_an_error_fails_over(stack: StackFactory) -> None:
    s = await stack(attempts=1)
    await s.script(s.primary, {"script": [{"error_chunk": 0}]})  # 200, then an error event
    text, headers = await stream_text(s)
    assert text == DEFAULT_ANSWER
    assert headers["x-sidecar-upstream"] == "secondary"


async def test_error_event_after_the_commit_point_ends_the_stream(stack: StackFactory) -> None:
    s = await stack()
    await s.script(s.primary, {"script": [{"error_chunk": 2}]})
    raw = await raw_stream(s)
    assert b"[DONE]" not in raw
    assert raw.strip().split(b"\n\n")[-1].startswith(b'data: {"error"')
    assert await s.calls(s.secondary) == 0  # committed: never retried from scratch


async def test_slow_first_token_fails_over_after_first_byte(stack: StackFactory) -> None:
    s = await stack(first_byte="300ms")
    await s.script(s.primary, {"script": [{"ttft_ms": 3000}]})
    started = time.monotonic()
    text, headers = await stream_text(s)
    elapsed = time.monotonic() - started
    assert text == DEFAULT_ANSWER
    assert headers["x-sidecar-upstream"] == "secondary"
    assert 0.3 <= elapsed < 2.5


async def test_cut_mid_stream_ends_with_an_error_event_and_no_terminator(
    stack: StackFactory,
) -> None:
    s = await stack()
    await s.script(s.primary, {"script": [{"fail_chunk": 3}]})
    raw = await raw_stream(s)
    assert b"[DONE]" not in raw
    last = raw.strip().split(b"\n\n")[-1]
    assert last.startswith(b'data: {"error"')
    assert b"stream_cut" in last

    await s.script(s.primary, {"script": [{"fail_chunk": 3}]})
    received: list[str] = []
    with pytest.raises(openai.APIError):
        await collect(s, received)
    assert "".join(received) == "".join(split_tokens(DEFAULT_ANSWER)[:3])


async def test_stalled_stream_hits_the_idle_timeout(stack: StackFactory) -> None:
    s = await stack(idle="300ms")
    await s.script(s.primary, {"script": [{"stall_chunk": 2, "stall_ms": 3000}]})
    started = time.monotonic()
    raw = await raw_stream(s)
    assert time.monotonic() - started < 2.5
    assert b"[DONE]" not in raw
    assert b"stream_stalled" in raw.strip().split(b"\n\n")[-1]


async def test_a_malformed_chunk_is_never_skipped(stack: StackFactory) -> None:
    # Skipping it would deliver the answer with a word missing, as if complete.
    s = await stack()
    # Before the commit point (it came in the same read as the first token): retried.
    await s.script(s.primary, {"script": [{"malformed_chunk": 2}]})
    text, _ = await stream_text(s)
    assert text == DEFAULT_ANSWER
    # After it (paced chunks): one error event, no terminator.
    await s.script(s.primary, {"script": [{"malformed_chunk": 3, "chunk_ms": 20}]})
    raw = await raw_stream(s)
    assert b"[DONE]" not in raw
    assert b"stream_malformed" in raw.strip().split(b"\n\n")[-1]


async def test_missing_done_is_finalised_at_once(stack: StackFactory) -> None:
    s = await stack()
    await s.script(s.primary, {"script": [{"no_done": 1}]})
    raw = await raw_stream(s)
    assert raw.endswith(b"data: [DONE]\n\n")
    await s.script(s.primary, {"script": [{"no_done": 1}]})
    text, _ = await stream_text(s)
    assert text == DEFAULT_ANSWER


async def test_client_disconnect_closes_the_upstream_stream(stack: StackFactory) -> None:
    s = await stack(chunk_ms=50)
    mock_stats = s.primary.app[STATE].stats
    async with s.http.post(
        s.url("/v1/chat/completions"), json={**BODY, "stream": True}
    ) as response:
        await response.content.readline()
        assert mock_stats.in_flight == 1
        response.close()  # the client goes away mid-stream
    await asyncio.wait_for(mock_stats.wait_idle(), 2.0)  # the mock saw the cancel
    assert (await s.breakers())["primary"]["failures"] == 0
