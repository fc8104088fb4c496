"""Errors as the official SDKs see them, at their default settings (``max_retries=2``).

An invalid request raises ``BadRequestError``, as the providers' own answer would; a
failing chain runs once, not three times (``x-should-retry: false`` on the final
error); a route's own rate limit is retried by the SDK (``x-should-retry: true``);
every error carries the request id in its body and in ``x-request-id``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest
from aiohttp.test_utils import TestServer

from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.resilience.clock import FakeClock

MESSAGES = [{"role": "user", "content": "hello"}]
ATTEMPTS = 2  # per target; two targets: one pass through a failing chain is four calls

POLICY = """\
version: 1
upstreams:
  oa: {{url: "{oa}", format: openai, auth: {{header: Authorization, value: "Bearer sk-oa"}}}}
  an: {{url: "{an}", format: anthropic, auth: {{header: x-api-key, value: sk-an}}}}
defaults:
  retry:
    attempts: {attempts}
    backoff: {{base: 10ms, max: 20ms}}
    budget: {{ratio: 100%, min_per_second: 100}}
  breaker: {{consecutive_failures: 100, open_for: 10s}}
routes:
  - name: limited
    match: {{prefix: /v1/, header: {{name: x-route, value: limited}}}}
    rate_limit: {{requests_per_minute: 60, burst: 0.01}}  # one at once, one more a second
    fallback: [{{upstream: oa}}]
  - name: chat
    match: {{path: /v1/chat/completions}}
    fallback: [{{upstream: oa}}, {{upstream: an, model: claude-sonnet-4-6}}]
  - name: messages
    match: {{path: /v1/messages}}
    fallback: [{{upstream: an}}, {{upstream: oa, model: gpt-4o}}]
"""


@dataclass
class Stack:
    sidecar: TestServer
    mocks: tuple[TestServer, ...]  # the chains' upstreams
    openai: openai.AsyncOpenAI
    anthropic: anthropic.AsyncAnthropic
    http: aiohttp.ClientSession

    async def fail_all(self, fault: str) -> None:
        for mock in self.mocks:
            async with self.http.post(
                mock.make_url("/config/failures"), json={fault: 1.0}
            ) as response:
                assert response.status == 200, await response.text()

    async def calls(self) -> int:
        total = 0
        for mock in self.mocks:
            async with self.http.get(mock.make_url("/stats")) as response:
                total += int((await response.json())["total"])
        return total


@pytest.fixture
async def stack(
    mock_server: Callable[..., Awaitable[TestServer]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    openai_for: Callable[..., openai.AsyncOpenAI],
    anthropic_for: Callable[..., anthropic.AsyncAnthropic],
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    oa = await mock_server(name="oa", api_key="sk-oa")
    an = await mock_server(name="an", api_key="sk-an")
    (tmp_path / "p.yaml").write_text(
        POLICY.format(
            oa=str(oa.make_url("")).rstrip("/"),
            an=str(an.make_url("")).rstrip("/"),
            attempts=ATTEMPTS,
        )
    )
    config = SidecarConfig(
        policies=tmp_path, environ={}, clock=FakeClock(), watch=False, poll_interval=3600
    )
    sidecar = await aiohttp_server(create_sidecar(config))
    # The SDKs' own default: the point is that apps need not change it.
    assert openai.DEFAULT_MAX_RETRIES == anthropic.DEFAULT_MAX_RETRIES == 2
    async with aiohttp.ClientSession() as http:
        yield Stack(
            sidecar,
            (oa, an),
            openai_for(sidecar, max_retries=openai.DEFAULT_MAX_RETRIES),
            anthropic_for(sidecar, max_retries=anthropic.DEFAULT_MAX_RETRIES),
            http,
        )


async def openai_chat(stack: Stack, **kwargs: Any) -> Any:
    return await stack.openai.chat.completions.create(model="gpt-4o", **kwargs)


async def anthropic_message(stack: Stack, **kwargs: Any) -> Any:
    return await stack.anthropic.messages.create(model="claude-sonnet-4-6", max_tokens=64, **kwargs)


# -- invalid requests: 400, BadRequestError --------------------------------------------


async def test_invalid_request_is_bad_request_for_the_openai_sdk(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_chat(stack, messages=[])
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_request_body"
    assert caught.value.param == "messages"
    assert caught.value.type == "invalid_request_error"
    assert await stack.calls() == 0


async def test_invalid_request_is_bad_request_for_the_anthropic_sdk(stack: Stack) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await anthropic_message(stack, messages=[])
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["request_id"] == caught.value.response.headers["x-request-id"]
    assert await stack.calls() == 0


# -- a failing chain: one pass, not three ----------------------------------------------


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("fault", "status"),
    [("server_error", 500), ("reset", 502)],  # an upstream's answer relayed; the sidecar's own
)
async def test_sdk_runs_a_failing_chain_once(
    stack: Stack, sdk: str, fault: str, status: int
) -> None:
    await stack.fail_all(fault)
    if sdk == "openai":
        with pytest.raises(openai.APIStatusError) as by_openai:
            await openai_chat(stack, messages=MESSAGES)
        error: openai.APIStatusError | anthropic.APIStatusError = by_openai.value
    else:
        with pytest.raises(anthropic.APIStatusError) as by_anthropic:
            await anthropic_message(stack, messages=MESSAGES)
        error = by_anthropic.value
    assert error.status_code == status
    assert error.response.headers["x-should-retry"] == "false"
    assert await stack.calls() == 2 * ATTEMPTS  # one pass: the SDK did not retry the chain


async def test_route_rate_limit_is_retried_by_both_sdks(
    stack: Stack,
    openai_for: Callable[..., openai.AsyncOpenAI],
    anthropic_for: Callable[..., anthropic.AsyncAnthropic],
) -> None:
    limited = {"x-route": "limited"}
    await openai_chat(stack, messages=MESSAGES, extra_headers=limited)  # the bucket's one
    seen: list[httpx2.Response] = []

    async def record(response: httpx2.Response) -> None:
        seen.append(response)

    hooks = {"response": [record]}
    oa = openai_for(
        stack.sidecar,
        max_retries=openai.DEFAULT_MAX_RETRIES,
        http_client=openai.DefaultAsyncHttpxClient(event_hooks=hooks),
    )
    an = anthropic_for(
        stack.sidecar,
        max_retries=anthropic.DEFAULT_MAX_RETRIES,
        http_client=anthropic.DefaultAsyncHttpxClient(event_hooks=hooks),
    )
    # The sidecar runs on a FakeClock: the bucket stays empty, so every retry is a 429 too.
    results = await asyncio.gather(
        oa.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=limited),
        an.messages.create(model="gpt-4o", max_tokens=64, messages=MESSAGES, extra_headers=limited),
        return_exceptions=True,
    )
    assert isinstance(results[0], openai.RateLimitError)
    assert isinstance(results[1], anthropic.RateLimitError)
    assert [response.status_code for response in seen] == [429] * 6  # 1 + 2 retries, each
    for response in seen:
        assert response.headers["x-should-retry"] == "true"
        assert response.headers["retry-after"] == "1"
    assert await stack.calls() == 1


# -- the request id on every error ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": MESSAGES}),
        ("/v1/messages", {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": MESSAGES}),
    ],
)
async def test_relayed_upstream_error_carries_the_request_id(
    stack: Stack, path: str, body: dict[str, object]
) -> None:
    await stack.fail_all("server_error")
    async with stack.http.post(
        stack.sidecar.make_url(path), json=body, headers={"x-request-id": "trace-15"}
    ) as response:
        answer = await response.json()
    assert response.status == 500
    assert response.headers["x-request-id"] == "trace-15"
    assert answer["request_id"] == "trace-15"
    assert response.headers["x-should-retry"] == "false"
    assert "error" in answer  # the upstream's error, in the client's format
