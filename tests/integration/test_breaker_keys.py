"""Breakers belong to an upstream (and the model actually sent to it), not to a route.

One function names a breaker (``pipeline.breaker.breaker_key``): ``<upstream>``, or
``<upstream>:<model sent>`` with ``breaker.key: upstream_model`` — the model after the
target's ``model`` / ``model_map``, not the one the client asked for. So every route
learns at once that an upstream is down, and a mapped model's breaker is the model
the upstream actually failed on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from mock_provider.app import create_app as create_mock
from mock_provider.control import FailureConfig
from mock_provider.state import STATE, MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.resilience.clock import FakeClock
from sidecar.state import REGISTRIES

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES = [{"role": "user", "content": "hi"}]

POLICY = """\
version: 1
upstreams:
  flaky: {{url: "{flaky}", format: openai}}
  backup: {{url: "{backup}", format: openai}}
defaults:
  retry: {{attempts: 1}}
  breaker: {{consecutive_failures: 2, open_for: 30s{per_model}}}
routes:
  - name: first
    match: {{path: /v1/chat/completions, header: {{name: x-route, value: first}}}}
    fallback:
      - {{upstream: flaky, model_map: {{"gpt-4o*": big-model}}}}
      - {{upstream: backup}}
  - name: second
    match: {{path: /v1/chat/completions, header: {{name: x-route, value: second}}}}
    fallback:
      - {{upstream: flaky, model_map: {{"gpt-4o*": big-model}}}}
      - {{upstream: backup}}
"""


@dataclass
class Stack:
    sidecar: TestServer
    flaky: TestServer
    http: aiohttp.ClientSession

    async def chat(self, route: str, model: str = "gpt-4o") -> str:
        body = {"model": model, "messages": MESSAGES}
        headers = {"x-route": route}
        url = self.sidecar.make_url("/v1/chat/completions")
        async with self.http.post(url, json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            return response.headers["x-sidecar-upstream"]

    def flaky_calls(self) -> int:
        return int(self.flaky.app[STATE].stats.snapshot()["total"])  # type: ignore[call-overload]

    def breakers(self) -> dict[str, str]:
        return {b.key: b.state for b in self.sidecar.app[REGISTRIES].breakers.all()}


@pytest.fixture
async def make_stack(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[Callable[[bool], Awaitable[Stack]]]:
    sessions: list[aiohttp.ClientSession] = []

    async def start(per_model: bool) -> Stack:
        flaky = await aiohttp_server(create_mock(MockSettings(name="flaky")))
        backup = await aiohttp_server(create_mock(MockSettings(name="backup")))
        flaky.app[STATE].controller.configure(FailureConfig.parse({"server_error": 1.0}))
        (tmp_path / "p.yaml").write_text(
            POLICY.format(
                flaky=str(flaky.make_url("")).rstrip("/"),
                backup=str(backup.make_url("")).rstrip("/"),
                per_model=", key: upstream_model" if per_model else "",
            )
        )
        config = SidecarConfig(
            policies=tmp_path, environ={}, clock=FakeClock(), watch=False, poll_interval=3600
        )
        sidecar = await aiohttp_server(create_sidecar(config))
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Stack(sidecar, flaky, http)

    yield start
    for http in sessions:
        await http.close()


async def test_every_route_learns_at_once_that_an_upstream_is_down(make_stack) -> None:
    s = await make_stack(False)
    for _ in range(2):  # two failures through the first route open the breaker ...
        assert await s.chat("first") == "backup"
    assert s.breakers() == {"flaky": "open", "backup": "closed"}
    calls = s.flaky_calls()
    assert await s.chat("second") == "backup"  # ... and the second route skips flaky too
    assert s.flaky_calls() == calls  # no call: the open breaker is the upstream's


async def test_a_per_model_breaker_is_keyed_by_the_model_sent(make_stack) -> None:
    s = await make_stack(True)
    # Two client models that map to one upstream model fail it together.
    assert await s.chat("first", "gpt-4o") == "backup"
    assert await s.chat("second", "gpt-4o-mini") == "backup"
    assert s.breakers()["flaky:big-model"] == "open"
    assert not any(key.startswith("flaky:gpt-4o") for key in s.breakers())
    calls = s.flaky_calls()
    assert await s.chat("first", "gpt-4o-2024-08-06") == "backup"
    assert s.flaky_calls() == calls


async def test_attempt_lines_show_the_model_sent_beside_the_model_asked_for(
    make_stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    s = await make_stack(True)
    assert await s.chat("first", "gpt-4o-mini") == "backup"
    attempts = [
        record.msg
        for record in caplog.records
        if record.name == "sidecar.attempt" and isinstance(record.msg, dict)
    ]
    flaky = [fields for fields in attempts if fields.get("upstream") == "flaky"]
    assert flaky, attempts
    assert flaky[0]["model"] == "gpt-4o-mini"
    assert flaky[0]["model_sent"] == "big-model"


# -- a preferred provider ---------------------------------------------------------------

PREFER_POLICY = """\
version: 1
upstreams:
  flaky: {{url: "{flaky}", format: openai}}
  backup: {{url: "{backup}", format: openai}}
defaults:
  retry: {{attempts: 1}}
routes:
  - name: first
    match: {{path: /v1/chat/completions, header: {{name: x-route, value: first}}}}
    fallback: [{{upstream: flaky}}, {{upstream: backup}}]
  - name: second
    match: {{path: /v1/chat/completions, header: {{name: x-route, value: second}}}}
    prefer: false
    fallback: [{{upstream: flaky}}, {{upstream: backup}}]
"""


@pytest.fixture
async def prefer_stack(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Stack]:
    flaky = await aiohttp_server(create_mock(MockSettings(name="flaky", echo=True)))
    backup = await aiohttp_server(create_mock(MockSettings(name="backup", echo=True)))
    urls = {n: str(m.make_url("")).rstrip("/") for n, m in (("flaky", flaky), ("backup", backup))}
    (tmp_path / "p.yaml").write_text(PREFER_POLICY.format(**urls))
    config = SidecarConfig(
        policies=tmp_path, environ={}, clock=FakeClock(), watch=False, poll_interval=3600
    )
    sidecar = await aiohttp_server(create_sidecar(config))
    async with aiohttp.ClientSession() as http:
        yield Stack(sidecar, flaky, http)


async def ask(
    s: Stack, route: str, headers: dict[str, str], **body: object
) -> aiohttp.ClientResponse:
    payload = {"model": "gpt-4o", "messages": MESSAGES, **body}
    url = s.sidecar.make_url("/v1/chat/completions")
    response = await s.http.post(url, json=payload, headers={"x-route": route, **headers})
    await response.read()
    return response


async def test_a_request_may_prefer_an_upstream_of_the_chain(prefer_stack: Stack) -> None:
    s = prefer_stack
    by_header = await ask(s, "first", {"x-sidecar-prefer": "backup"})
    assert by_header.headers["x-sidecar-upstream"] == "backup"
    by_body = await ask(s, "first", {}, preferred_provider="backup")
    assert by_body.headers["x-sidecar-upstream"] == "backup"
    plain = await ask(s, "first", {})
    assert plain.headers["x-sidecar-upstream"] == "flaky"  # policy order otherwise


async def test_a_failing_preferred_upstream_falls_back_to_the_chain(prefer_stack: Stack) -> None:
    s = prefer_stack
    s.flaky.app[STATE].controller.configure(FailureConfig.parse({"server_error": 1.0}))
    answer = await ask(s, "first", {"x-sidecar-prefer": "flaky"})
    assert answer.status == 200
    assert answer.headers["x-sidecar-upstream"] == "backup"


async def test_an_unknown_or_refused_preference_is_a_400(prefer_stack: Stack) -> None:
    s = prefer_stack
    unknown = await ask(s, "first", {"x-sidecar-prefer": "elsewhere"})
    assert unknown.status == 400
    message = (await unknown.json())["error"]["message"]
    assert "flaky, backup" in message
    off = await ask(s, "second", {}, preferred_provider="backup")
    assert off.status == 400
    assert "does not take a preferred provider" in (await off.json())["error"]["message"]
