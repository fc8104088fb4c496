"""The response cache end to end: real mocks, the sidecar on loopback, the official SDKs.

Every hit is checked for making no upstream call (the mock's /stats), for its
``x-sidecar-cache`` header and for giving the same content as the miss. The
sidecar runs on a FakeClock, so entries expire exactly when a test advances
time. The Redis test shares one Redis between two sidecar apps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer
from redis_support import REDIS_URL

from mock_provider.app import create_app as create_mock
from mock_provider.state import MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.resilience.clock import FakeClock

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES = [{"role": "user", "content": "hello"}]
# The anthropic SDK installed here has no temperature argument: send it in the body.
ZERO: dict[str, Any] = {"extra_body": {"temperature": 0}}

POLICY = """\
version: 1
{state}
upstreams:
  gpt:
    url: {gpt}
    format: openai
    auth: {{header: Authorization, value: "Bearer sk-gpt"}}
  claude:
    url: {claude}
    format: anthropic
    auth: {{header: x-api-key, value: sk-claude}}
defaults:
  retry: {{attempts: 1}}
  cache: {cache}
routes:
  - name: chat
    match: {{path: /v1/chat/completions, methods: [POST]}}
    fallback:
      - upstream: gpt
  - name: messages
    match: {{path: /v1/messages, methods: [POST]}}
    fallback:
      - upstream: claude
"""


@dataclass
class Stack:
    sidecar: TestServer
    gpt: TestServer
    claude: TestServer
    clock: FakeClock
    http: aiohttp.ClientSession

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=str(self.sidecar.make_url("/v1")), api_key="client-key", max_retries=0
        )

    def anthropic(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            base_url=str(self.sidecar.make_url("")).rstrip("/"), api_key="k", max_retries=0
        )

    async def calls(self, mock: TestServer) -> int:
        async with self.http.get(mock.make_url("/stats")) as response:
            return int((await response.json())["total"])

    async def metric(self, name: str, **labels: str) -> float:
        async with self.http.get(self.sidecar.make_url("/metrics")) as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def stack(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[StackFactory]:
    sessions: list[aiohttp.ClientSession] = []
    mocks: dict[str, TestServer] = {}

    async def start(cache: str = "{enabled: true}", state: str = "") -> Stack:
        if not mocks:  # one pair of mocks per test, shared by every sidecar it starts
            for name, key in (("gpt", "sk-gpt"), ("claude", "sk-claude")):
                mocks[name] = await aiohttp_server(
                    create_mock(MockSettings(name=name, api_key=key))
                )
        gpt, claude = mocks["gpt"], mocks["claude"]
        directory = tmp_path / f"policies-{len(sessions)}"
        directory.mkdir()
        (directory / "policy.yaml").write_text(
            POLICY.format(
                gpt=str(gpt.make_url("")).rstrip("/"),
                claude=str(claude.make_url("")).rstrip("/"),
                cache=cache,
                state=state,
            )
        )
        clock = FakeClock()
        config = SidecarConfig(
            policies=directory, environ={}, clock=clock, watch=False, poll_interval=3600
        )
        sidecar = await aiohttp_server(create_sidecar(config))
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Stack(sidecar, gpt, claude, clock, http)

    yield start
    for session in sessions:
        await session.close()


async def test_a_repeated_request_is_answered_from_the_cache(stack: StackFactory) -> None:
    s = await stack()
    client = s.openai()
    create = client.chat.completions.with_raw_response.create
    first = await create(model="gpt-4o", messages=MESSAGES, temperature=0)
    second = await create(model="gpt-4o", messages=MESSAGES, temperature=0, user="someone")
    assert first.headers["x-sidecar-cache"] == "miss"
    assert second.headers["x-sidecar-cache"] == "hit"
    assert second.headers["x-sidecar-attempts"] == "0"
    assert second.headers["x-sidecar-upstream"] == "gpt"
    assert second.parse().model_dump() == first.parse().model_dump()
    assert await s.calls(s.gpt) == 1
    assert await s.metric("sidecar_cache_requests_total", route="chat", result="miss") == 1
    assert await s.metric("sidecar_cache_requests_total", route="chat", result="hit") == 1
    await client.close()


async def test_anthropic_clients_hit_too(stack: StackFactory) -> None:
    s = await stack()
    client = s.anthropic()
    create = client.messages.with_raw_response.create
    first = await create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES, **ZERO)
    second = await create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES, **ZERO)
    assert (first.headers["x-sidecar-cache"], second.headers["x-sidecar-cache"]) == ("miss", "hit")
    assert (await second.parse()).model_dump() == (await first.parse()).model_dump()
    assert await s.calls(s.claude) == 1
    await client.close()


async def test_a_stream_is_cached_and_replayed_as_a_stream_or_as_json(stack: StackFactory) -> None:
    s = await stack()
    client = s.openai()
    options = {"include_usage": True}

    async def streamed() -> tuple[str, str, object]:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, temperature=0, stream=True, stream_options=options
        )
        chunks = [chunk async for chunk in raw.parse()]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return raw.headers["x-sidecar-cache"], text, chunks[-1].usage

    cache, text, usage = await streamed()
    assert cache == "miss"
    again, replayed, replayed_usage = await streamed()
    assert (again, replayed, replayed_usage) == ("hit", text, usage)
    as_json = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, temperature=0
    )
    assert as_json.headers["x-sidecar-cache"] == "hit"
    completion = as_json.parse()
    assert completion.choices[0].message.content == text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage == usage
    assert await s.calls(s.gpt) == 1
    await client.close()


async def test_a_json_answer_is_replayed_to_a_streaming_anthropic_client(
    stack: StackFactory,
) -> None:
    s = await stack()
    client = s.anthropic()
    first = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES, **ZERO
    )
    async with client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES, **ZERO
    ) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == first.content[0].text  # type: ignore[union-attr]
    assert final.model_dump() == first.model_dump()
    assert await s.calls(s.claude) == 1
    await client.close()


async def test_an_anthropic_stream_is_cached(stack: StackFactory) -> None:
    s = await stack()
    client = s.anthropic()
    finals = []
    for _ in range(2):
        async with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES, **ZERO
        ) as stream:
            finals.append(await stream.get_final_message())
    assert finals[0].model_dump() == finals[1].model_dump()
    assert finals[0].usage.output_tokens > 0
    again = await client.messages.create(
        model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES, **ZERO
    )
    assert again.content[0].text == finals[0].content[0].text  # type: ignore[union-attr]
    assert again.stop_reason == "end_turn"
    assert await s.calls(s.claude) == 1
    await client.close()


async def test_a_stream_without_usage_does_not_answer_a_request_that_wants_usage(
    stack: StackFactory,
) -> None:
    s = await stack()
    client = s.openai()
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, temperature=0, stream=True
    )
    _ = [chunk async for chunk in stream]
    json_answer = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, temperature=0
    )
    assert json_answer.headers["x-sidecar-cache"] == "miss"  # it needs usage: asked again
    assert json_answer.parse().usage is not None
    again = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, temperature=0
    )
    assert again.headers["x-sidecar-cache"] == "hit"
    assert await s.calls(s.gpt) == 2
    await client.close()


async def test_tool_calls_are_replayed_faithfully(stack: StackFactory) -> None:
    s = await stack()
    client = s.openai()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]

    async def tool_call() -> tuple[str, str]:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            tools=tools,
        )
        calls: dict[int, list[str]] = {}
        name = ""
        async for chunk in stream:
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                if call.function and call.function.name:
                    name = call.function.name
                if call.function and call.function.arguments:
                    calls.setdefault(call.index, []).append(call.function.arguments)
        return name, "".join(calls[0])

    assert await tool_call() == await tool_call() == ("lookup", '{"input":"hello"}')
    completion = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, temperature=0, tools=tools
    )
    message = completion.choices[0].message
    assert message.tool_calls is not None
    assert message.tool_calls[0].function.arguments == '{"input":"hello"}'
    assert completion.choices[0].finish_reason == "tool_calls"
    assert await s.calls(s.gpt) == 1
    await client.close()


async def test_deterministic_caches_only_temperature_zero(stack: StackFactory) -> None:
    s = await stack()
    client = s.openai()
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, temperature=0.7
        )
        assert "x-sidecar-cache" not in raw.headers
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
        assert "x-sidecar-cache" not in raw.headers  # no temperature: the default is not 0
    assert await s.calls(s.gpt) == 4
    await client.close()


async def test_always_caches_any_temperature(stack: StackFactory) -> None:
    s = await stack(cache="{when: always}")
    client = s.openai()
    create = client.chat.completions.with_raw_response.create
    first = await create(model="gpt-4o", messages=MESSAGES, temperature=0.7)
    second = await create(model="gpt-4o", messages=MESSAGES, temperature=0.7)
    other = await create(model="gpt-4o", messages=MESSAGES, temperature=0.8)
    assert [r.headers["x-sidecar-cache"] for r in (first, second, other)] == ["miss", "hit", "miss"]
    assert await s.calls(s.gpt) == 2
    await client.close()


async def test_errors_are_not_cached(stack: StackFactory) -> None:
    s = await stack()
    client = s.openai()
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, temperature=0, extra_headers={"x-mock-fail": "500"}
        )
    assert caught.value.response.headers["x-sidecar-cache"] == "miss"
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, temperature=0
    )
    assert raw.headers["x-sidecar-cache"] == "miss"
    assert await s.calls(s.gpt) == 2
    await client.close()


async def test_a_broken_stream_is_not_cached(stack: StackFactory) -> None:
    s = await stack()
    client = s.openai()
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        temperature=0,
        stream=True,
        extra_headers={"x-mock-fail-chunk": "2"},
    )
    with pytest.raises(openai.APIError):
        _ = [chunk async for chunk in stream]
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, temperature=0, stream=True
    )
    assert raw.headers["x-sidecar-cache"] == "miss"
    _ = [chunk async for chunk in raw.parse()]
    assert await s.calls(s.gpt) == 2
    await client.close()


async def test_entries_expire_after_the_ttl(stack: StackFactory) -> None:
    s = await stack(cache="{ttl: 60s}")
    client = s.openai()
    create = client.chat.completions.with_raw_response.create

    async def result() -> str:
        raw = await create(model="gpt-4o", messages=MESSAGES, temperature=0)
        return raw.headers["x-sidecar-cache"]

    assert await result() == "miss"
    s.clock.advance(59)
    assert await result() == "hit"
    s.clock.advance(1)
    assert await result() == "miss"
    assert await s.calls(s.gpt) == 2
    await client.close()


async def test_replicas_share_the_cache_through_redis(
    stack: StackFactory, redis_prefix: str
) -> None:
    state = f"state: {{backend: redis, url: '{REDIS_URL}', prefix: {redis_prefix}, timeout: 1s}}"
    a, b = await stack(state=state), await stack(state=state)
    assert a.sidecar.port != b.sidecar.port
    on_a, on_b = a.openai(), b.openai()
    first = await on_a.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, temperature=0
    )
    second = await on_b.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, temperature=0
    )
    assert (first.headers["x-sidecar-cache"], second.headers["x-sidecar-cache"]) == ("miss", "hit")
    assert second.parse().model_dump() == first.parse().model_dump()
    assert await a.calls(a.gpt) == 1
    await on_a.close()
    await on_b.close()
