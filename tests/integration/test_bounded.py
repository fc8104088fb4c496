"""Bounded by construction (DESIGN rule 13): client-chosen model names cannot grow the
sidecar's state, its admin output or its metrics without bound.

The sidecar (a per-model breaker, ``breaker.key: upstream_model``) and the mock provider
run in this process on loopback; 10,000 requests each name a different model. What the
sidecar keeps — breakers, ``/metrics``, ``/admin/breakers``, RSS — must stay under
fixed bounds, and an absurd model name is refused at intake with no upstream call.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from mock_provider.app import create_app as create_mock
from mock_provider.state import MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.pipeline.validate import MAX_MODEL_LENGTH
from sidecar.resilience.breaker import MAX_BREAKERS
from sidecar.state import ADMIN_APP

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES = [{"role": "user", "content": "hi"}]

POLICY = """\
version: 1
upstreams:
  mock: {{url: "{url}", format: openai}}
routes:
  - name: chat
    match: {{path: /v1/chat/completions}}
    retry: {{attempts: 1}}
    breaker: {{key: upstream_model, consecutive_failures: 5, open_for: 10s}}
    fallback: [{{upstream: mock}}]
"""


@dataclass
class Stack:
    sidecar: TestServer
    admin: TestServer
    mock: TestServer
    http: aiohttp.ClientSession

    async def chat(self, model: str, headers: dict[str, str] | None = None) -> int:
        body = {"model": model, "messages": MESSAGES}
        url = self.sidecar.make_url("/v1/chat/completions")
        async with self.http.post(url, json=body, headers=headers) as response:
            await response.read()
            return response.status

    async def text(self, server: TestServer, path: str) -> bytes:
        async with self.http.get(server.make_url(path)) as response:
            assert response.status == 200
            return await response.read()

    async def mock_calls(self) -> int:
        async with self.http.get(self.mock.make_url("/stats")) as response:
            return int((await response.json())["total"])

    async def breaker_keys(self) -> list[str]:
        async with self.http.get(self.admin.make_url("/admin/breakers")) as response:
            return [breaker["key"] for breaker in (await response.json())["breakers"]]


@pytest.fixture
async def stack(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Stack]:
    mock = await aiohttp_server(create_mock(MockSettings(name="mock")))
    (tmp_path / "p.yaml").write_text(POLICY.format(url=str(mock.make_url("")).rstrip("/")))
    app = create_sidecar(SidecarConfig(policies=tmp_path, watch=False, poll_interval=3600))
    sidecar = await aiohttp_server(app)
    admin = await aiohttp_server(app[ADMIN_APP])
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(connector=connector) as http:
        yield Stack(sidecar, admin, mock, http)


def rss_bytes() -> int:
    """This process's resident set (sidecar, mock and client all run in it)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def send(stack: Stack, models: list[str], concurrency: int = 50) -> None:
    """Every model once, *concurrency* requests at a time; every answer must be a 200."""
    queue = iter(models)
    statuses: list[int] = []

    async def worker() -> None:
        for model in queue:
            statuses.append(await stack.chat(model))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    assert statuses == [200] * len(models)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_ten_thousand_model_names_leave_bounded_state(stack: Stack) -> None:
    def models(start: int, count: int) -> list[str]:
        return [f"client-model-{n:06d}-" + "x" * 140 for n in range(start, start + count)]

    await send(stack, models(0, 1_000))  # warm-up: pools, caches, first label children
    rss_before = rss_bytes()
    await send(stack, models(1_000, 9_000))
    grown = rss_bytes() - rss_before

    keys = await stack.breaker_keys()
    breakers = await stack.text(stack.admin, "/admin/breakers")
    metrics = await stack.text(stack.sidecar, "/metrics")
    assert len(keys) <= MAX_BREAKERS
    assert len(breakers) < 600 * 1024
    assert len(metrics) < 160 * 1024
    assert metrics.count(b"sidecar_breaker_state{") <= 257  # labelled breakers + one _other
    # Unbounded, the 9,000 new breakers alone took 16 MiB here; bounded, about 5 MiB
    # remain: the mock's own per-model statistics (same process) and allocator noise.
    assert grown < 10 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB"
    assert await stack.mock_calls() == 10_000


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
async def test_an_absurd_model_name_is_refused_before_any_state(stack: Stack, flavour: str) -> None:
    headers = {"anthropic-version": "2023-06-01"} if flavour == "anthropic" else {}
    url = stack.sidecar.make_url("/v1/chat/completions")
    for model in ("m" * 50_000, "m" * (MAX_MODEL_LENGTH + 1), "gpt\n4o", "gpt-4o\x00"):
        body = {"model": model, "messages": MESSAGES}
        async with stack.http.post(url, json=body, headers=headers) as response:
            assert response.status == 400
            error = await response.json()
        if flavour == "openai":
            assert error["error"]["type"] == "invalid_request_error"
            assert error["error"]["param"] == "model"
            assert len(error["error"]["message"]) < 300  # the name is not echoed back
        else:
            assert error["type"] == "error"
            assert error["error"]["type"] == "invalid_request_error"
    assert await stack.mock_calls() == 0
    assert await stack.breaker_keys() == []
    assert await stack.chat("m" * MAX_MODEL_LENGTH) == 200  # the limit itself is allowed
    assert await stack.mock_calls() == 1


async def test_an_overlong_request_id_is_replaced(stack: Stack) -> None:
    given = "r" * 200
    url = stack.sidecar.make_url("/v1/chat/completions")
    body = {"model": "gpt-4o", "messages": MESSAGES}
    async with stack.http.post(url, json=body, headers={"x-request-id": given}) as response:
        assert response.status == 200
        chosen = response.headers["x-request-id"]
    assert chosen != given
    assert 0 < len(chosen) <= 128
