"""Tiers and hedging end to end: two mock "openai" deployments, the sidecar, the openai SDK.

The sidecar runs on the real clock here: the hedge timer is the thing under test.
Retries back off for a millisecond or two, so the tests stay quick.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mock_provider.app import create_app as create_mock
from mock_provider.state import MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.resilience.clock import SystemClock

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES = [{"role": "user", "content": "hello"}]

POLICY = """\
version: 1
upstreams:
  east: {{url: {east}, format: openai, auth: {{header: Authorization, value: "Bearer sk-east"}}}}
  west: {{url: {west}, format: openai, auth: {{header: Authorization, value: "Bearer sk-west"}}}}
  backup: {{url: {backup}, format: openai, auth: {{header: Authorization, value: "Bearer sk-b"}}}}
routes:
  - name: chat
    match: {{path: /v1/chat/completions, methods: [POST]}}
    deadline: 20s
    timeouts: {{first_byte: 10s}}
    retry:
      attempts: 2
      backoff: {{base: 1ms, max: 2ms}}
      budget: {{ratio: 100%, min_per_second: 100}}
{hedge}
    fallback:
      - tier:
          strategy: round_robin
          targets: [{{upstream: east}}, {{upstream: west}}]
      - upstream: backup
"""


@dataclass
class Stack:
    mocks: dict[str, TestServer]
    cancelled: dict[str, asyncio.Event]
    client: openai.AsyncOpenAI
    http: aiohttp.ClientSession
    sidecar: TestServer

    async def metrics(self) -> str:
        async with self.http.get(self.sidecar.make_url("/metrics")) as response:
            return await response.text()

    async def script(self, name: str, body: dict[str, object]) -> None:
        url = self.mocks[name].make_url("/config/failures")
        async with self.http.post(url, json=body) as response:
            assert response.status == 200, await response.text()

    async def calls(self, name: str) -> int:
        async with self.http.get(self.mocks[name].make_url("/stats")) as response:
            return int((await response.json())["total"])

    async def in_flight(self, name: str) -> int:
        async with self.http.get(self.mocks[name].make_url("/stats")) as response:
            return int((await response.json())["in_flight"])


def watch_cancellations(app: web.Application) -> asyncio.Event:
    """An event set when a request handler of *app* is cancelled (its client went away)."""
    cancelled = asyncio.Event()

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return response

    app.middlewares.append(middleware)
    return cancelled


@pytest.fixture
async def stack(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Stack] = []

    async def start(hedge: str = "") -> Stack:
        mocks: dict[str, TestServer] = {}
        cancelled: dict[str, asyncio.Event] = {}
        for name, key in (("east", "sk-east"), ("west", "sk-west"), ("backup", "sk-b")):
            app = create_mock(MockSettings(name=name, api_key=key))
            cancelled[name] = watch_cancellations(app)
            mocks[name] = await aiohttp_server(app)
        urls = {name: str(server.make_url("")).rstrip("/") for name, server in mocks.items()}
        (tmp_path / "policy.yaml").write_text(POLICY.format(hedge=hedge, **urls))
        config = SidecarConfig(
            policies=tmp_path, environ={}, clock=SystemClock(), seed=3, watch=False,
            poll_interval=3600,
        )  # fmt: skip
        sidecar = await aiohttp_server(create_sidecar(config))
        client = openai.AsyncOpenAI(
            base_url=str(sidecar.make_url("/v1")), api_key="client-key", max_retries=0
        )
        built = Stack(mocks, cancelled, client, aiohttp.ClientSession(), sidecar)
        made.append(built)
        return built

    yield start
    for built in made:
        await built.client.close()
        await built.http.close()


async def chat(s: Stack, stream: bool = False) -> tuple[str, dict[str, str]]:
    if not stream:
        raw = await s.client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
        return raw.parse().choices[0].message.content or "", dict(raw.headers)
    raw = await s.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    text = ""
    async for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    return text, dict(raw.headers)


async def test_round_robin_alternates_between_the_deployments(stack: Any) -> None:
    s = await stack()
    upstreams = [(await chat(s))[1]["x-sidecar-upstream"] for _ in range(4)]
    assert upstreams == ["east", "west", "east", "west"]
    assert await s.calls("east") == 2
    assert await s.calls("west") == 2
    assert await s.calls("backup") == 0


async def test_a_failing_deployment_fails_over_inside_the_tier_first(stack: Any) -> None:
    s = await stack()
    await s.script("east", {"script": [{"fail": 500}, {"fail": 500}]})
    content, headers = await chat(s)  # round robin starts with east
    assert content
    assert headers["x-sidecar-upstream"] == "west"
    assert headers["x-sidecar-attempts"] == "3"  # east twice (its retries), then west
    assert await s.calls("east") == 2
    assert await s.calls("west") == 1
    assert await s.calls("backup") == 0


async def test_a_failing_tier_goes_to_the_next_step(stack: Any) -> None:
    s = await stack()
    await s.script("east", {"script": [{"fail": 503}] * 2})
    await s.script("west", {"script": [{"fail": 503}] * 2})
    _, headers = await chat(s)
    assert headers["x-sidecar-upstream"] == "backup"
    assert headers["x-sidecar-attempts"] == "5"


async def test_a_slow_first_token_is_hedged_to_the_other_deployment(stack: Any) -> None:
    s = await stack(hedge="    hedge: {after: 200ms}")
    await s.script("east", {"script": [{"ttft_ms": 5000}]})
    started = asyncio.get_running_loop().time()
    text, headers = await chat(s, stream=True)
    elapsed = asyncio.get_running_loop().time() - started
    assert text
    assert headers["x-sidecar-upstream"] == "west"
    assert headers["x-sidecar-attempts"] == "2"
    assert elapsed < 3.0  # not the 5 s east would have taken
    await asyncio.wait_for(s.cancelled["east"].wait(), 2.0)  # its connection was closed
    assert await s.in_flight("east") == 0
    assert await s.calls("backup") == 0
    won = 'from_upstream="east",result="won",route="chat",to_upstream="west"'
    assert f"sidecar_hedges_total{{{won}}} 1.0" in await s.metrics()


async def test_a_quick_deployment_is_not_hedged(stack: Any) -> None:
    s = await stack(hedge="    hedge: {after: 2s}")
    _, headers = await chat(s, stream=True)
    assert headers["x-sidecar-upstream"] == "east"
    assert headers["x-sidecar-attempts"] == "1"
    assert await s.calls("west") == 0
