"""Fuzz fixtures: a bounded hypothesis profile and a sidecar in front of a real mock.

Hypothesis runs derandomized with a modest example count, so the fuzz suite is
fast and gives the same examples on every run (CI included). Set
``HYPOTHESIS_PROFILE=deep`` for a longer, randomized local hunt.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, settings

from mock_provider.app import create_app as create_mock
from mock_provider.state import MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar

_SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile(
    "fuzz",
    derandomize=True,
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=_SUPPRESSED,
)
settings.register_profile(
    "deep", max_examples=2000, deadline=None, database=None, suppress_health_check=_SUPPRESSED
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fuzz"))

ServerFactory = Callable[..., Awaitable[TestServer]]

# One mock serves both wire formats; routes send each client format to both, so the
# translation code (OpenAI <-> Anthropic) sees the fuzzed bodies too.
BODY_POLICY = """\
version: 1
upstreams:
  oa: {{url: {mock}, format: openai}}
  an: {{url: {mock}, format: anthropic}}
defaults:
  validate: {{max_body: 256KiB, max_prompt_tokens: 20000}}
  deadline: 5s
  timeouts: {{first_byte: 2s, idle: 2s}}
  retry: {{attempts: 1}}
  breaker: {{enabled: false}}
routes:
  - name: chat-to-anthropic
    match: {{path: /v1/chat/completions, methods: [POST], model: "claude*"}}
    fallback: [{{upstream: an}}]
  - name: chat
    match: {{path: /v1/chat/completions, methods: [POST]}}
    fallback: [{{upstream: oa}}]
  - name: messages-to-openai
    match: {{path: /v1/messages, methods: [POST], model: "gpt*"}}
    fallback: [{{upstream: oa}}]
  - name: messages
    match: {{path: /v1/messages, methods: [POST]}}
    fallback: [{{upstream: an}}]
"""


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@dataclass
class Stack:
    """The sidecar, the mock behind it, and a client session for both."""

    sidecar: TestServer
    mock: TestServer
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return str(self.sidecar.make_url(path))

    async def upstream_calls(self) -> int:
        async with self.http.get(self.mock.make_url("/stats")) as response:
            stats: dict[str, Any] = await response.json()
            return int(stats["total"])


SidecarFactory = Callable[[str], Awaitable[TestServer]]


@pytest.fixture
def sidecar_for(aiohttp_server: ServerFactory, tmp_path: Path) -> SidecarFactory:
    """Factory: ``await sidecar_for(policy_yaml)`` starts the real sidecar app on loopback."""

    async def start(policy: str) -> TestServer:
        (tmp_path / "policy.yaml").write_text(policy)
        config = SidecarConfig(policies=tmp_path, environ={}, watch=False, poll_interval=3600)
        server: TestServer = await aiohttp_server(create_sidecar(config))
        return server

    return start


@pytest.fixture
async def body_stack(
    aiohttp_server: ServerFactory, sidecar_for: SidecarFactory
) -> AsyncIterator[Stack]:
    mock = await aiohttp_server(create_mock(MockSettings(name="fuzz-mock")))
    sidecar = await sidecar_for(BODY_POLICY.format(mock=url_of(mock)))
    async with aiohttp.ClientSession() as http:
        yield Stack(sidecar, mock, http)


def check_answer(status: int, body: bytes, fmt: str) -> None:
    """A precise 4xx in the client's wire format, or a 2xx; never a 5xx or a traceback."""
    assert status < 500, (status, body[:500])
    assert b"Traceback" not in body, body[:500]
    if status < 400:
        return
    parsed = orjson.loads(body)
    assert isinstance(parsed, dict), body[:500]
    if fmt == "anthropic":
        assert parsed.get("type") == "error", body[:500]
        error = parsed["error"]
        assert isinstance(error["type"], str)
        assert isinstance(error["message"], str)
    else:
        error = parsed["error"]
        assert isinstance(error, dict), body[:500]
        assert isinstance(error["message"], str)
        assert isinstance(error["type"], str)
        assert "code" in error


@pytest.fixture
def answer_check() -> Callable[[int, bytes, str], None]:
    return check_answer
