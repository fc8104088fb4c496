"""Rate limits end to end (memory backend): real mocks, the sidecar, the official SDKs.

The sidecar runs on a FakeClock, so bucket refills happen exactly when a test
advances time. Every refused request is checked for its status, Retry-After,
wire format and for making no upstream call (the mocks' /stats).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer

from mock_provider.app import create_app as create_mock
from mock_provider.state import MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.resilience.clock import FakeClock

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES = [{"role": "user", "content": "hello"}]

POLICY = """\
version: 1
upstreams:
  gpt:
    url: {gpt}
    format: openai
    auth: {{header: Authorization, value: "Bearer sk-gpt"}}
    {gpt_limit}
  claude:
    url: {claude}
    format: anthropic
    auth: {{header: x-api-key, value: sk-claude}}
    {claude_limit}
routes:
  - name: chat
    match: {{path: /v1/chat/completions, methods: [POST]}}
    {route_limit}
    fallback:
      - upstream: gpt
      - {{upstream: claude, model: claude-sonnet-4-6}}
  - name: messages
    match: {{path: /v1/messages, methods: [POST]}}
    {route_limit}
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

    def openai(self, key: str = "client-key") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=str(self.sidecar.make_url("/v1")), api_key=key, max_retries=0
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

    async def start(route_limit: str = "", gpt_limit: str = "", claude_limit: str = "") -> Stack:
        gpt = await aiohttp_server(create_mock(MockSettings(name="gpt", api_key="sk-gpt")))
        claude = await aiohttp_server(create_mock(MockSettings(name="claude", api_key="sk-claude")))
        (tmp_path / "policy.yaml").write_text(
            POLICY.format(
                gpt=str(gpt.make_url("")).rstrip("/"),
                claude=str(claude.make_url("")).rstrip("/"),
                route_limit=f"rate_limit: {route_limit}" if route_limit else "",
                gpt_limit=f"rate_limit: {gpt_limit}" if gpt_limit else "",
                claude_limit=f"rate_limit: {claude_limit}" if claude_limit else "",
            )
        )
        clock = FakeClock()
        config = SidecarConfig(
            policies=tmp_path, environ={}, clock=clock, watch=False, poll_interval=3600
        )
        sidecar = await aiohttp_server(create_sidecar(config))
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Stack(sidecar, gpt, claude, clock, http)

    yield start
    for session in sessions:
        await session.close()


async def test_route_limit_answers_429_with_an_accurate_retry_after_and_no_upstream_call(
    stack: StackFactory,
) -> None:
    s = await stack(route_limit="{requests_per_minute: 2}")
    client = s.openai()
    for _ in range(2):
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "30"  # 2/minute: one more in 30 s
    assert isinstance(error.body, dict)
    assert error.body["code"] == "rate_limit_exceeded"
    assert "rate limit of route 'chat'" in error.body["message"]
    assert await s.calls(s.gpt) == 2
    assert await s.calls(s.claude) == 0
    assert await s.metric("sidecar_rate_limited_total", route="chat", scope="route") == 1
    s.clock.advance(29)
    with pytest.raises(openai.RateLimitError) as again:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert again.value.response.headers["retry-after"] == "1"
    s.clock.advance(1)
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert await s.calls(s.gpt) == 3
    await client.close()


async def test_anthropic_clients_get_the_429_in_their_own_format(
    stack: StackFactory, anthropic_for: Callable[..., anthropic.AsyncAnthropic]
) -> None:
    s = await stack(route_limit="{requests_per_minute: 1}")
    client = anthropic_for(s.sidecar)
    await client.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=MESSAGES)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "60"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert await s.calls(s.claude) == 1


async def test_client_key_limits_each_client_on_its_own(stack: StackFactory) -> None:
    s = await stack(route_limit="{requests_per_minute: 1, key: client_key}")
    alice, bob = s.openai("key-alice"), s.openai("key-bob")
    await alice.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    await bob.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # a bucket of its own
    with pytest.raises(openai.RateLimitError):
        await alice.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert await s.calls(s.gpt) == 2
    await alice.close()
    await bob.close()


async def test_header_key_limits_per_header_value(stack: StackFactory) -> None:
    s = await stack(route_limit="{requests_per_minute: 1, key: 'header:X-Tenant'}")
    client = s.openai()

    async def ask(tenant: str) -> None:
        await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-tenant": tenant}
        )

    await ask("a")
    await ask("b")
    with pytest.raises(openai.RateLimitError):
        await ask("a")
    await client.close()


@pytest.mark.parametrize("missing", ["shared", "reject", "unlimited"])
async def test_a_header_keyed_limit_says_what_happens_without_the_header(
    stack: StackFactory, missing: str
) -> None:
    s = await stack(
        route_limit=f"{{requests_per_minute: 1, key: 'header:X-Tenant', missing: {missing}}}"
    )
    client = s.openai()

    async def ask() -> None:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    if missing == "reject":
        with pytest.raises(openai.BadRequestError, match="x-tenant"):
            await ask()
        assert await s.calls(s.gpt) == 0
    elif missing == "shared":  # every request without the header: one bucket
        await ask()
        with pytest.raises(openai.RateLimitError):
            await ask()
    else:  # unlimited
        for _ in range(3):
            await ask()
    await client.close()


async def test_an_upstream_at_its_limit_is_skipped_to_the_next_target(
    stack: StackFactory,
) -> None:
    s = await stack(gpt_limit="{requests_per_minute: 1}", claude_limit="{requests_per_minute: 1}")
    client = s.openai()
    first = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    second = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert first.headers["x-sidecar-upstream"] == "gpt"
    assert second.headers["x-sidecar-upstream"] == "claude"  # gpt was not hammered
    assert second.parse().choices[0].message.content
    with pytest.raises(openai.RateLimitError) as caught:  # every target at its limit
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "60"
    assert "every upstream for route 'chat' is at its rate limit" in str(caught.value)
    assert await s.calls(s.gpt) == 1
    assert await s.calls(s.claude) == 1
    assert await s.metric("sidecar_rate_limited_total", scope="upstream:gpt") == 2
    await client.close()


async def test_tokens_are_corrected_from_the_answers_usage(stack: StackFactory) -> None:
    # "hello" is estimated at 2 tokens; the mock's answer reports more than 20 in all.
    s = await stack(route_limit="{tokens_per_minute: 20}")
    client = s.openai()
    completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.usage is not None
    assert completion.usage.total_tokens > 20
    with pytest.raises(openai.RateLimitError):  # without the correction 18 tokens were left
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert await s.calls(s.gpt) == 1
    await client.close()


async def test_stream_usage_is_charged_when_the_stream_ends(stack: StackFactory) -> None:
    s = await stack(route_limit="{tokens_per_minute: 20}")
    client = s.openai()
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 20
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    await client.close()
