"""Mid-stream continuation: a stream that breaks after its first token is finished elsewhere.

The primary mock cuts, stalls or errors its stream after a few chunks; the
continuation target either takes a prefill (the answer is appended), rejects
it (restart with the delivered prefix swallowed), cannot prefill (restart), or
answers differently (a clean error event). The client must see the canonical
answer exactly once, one terminator, and never a terminator after an
incomplete answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer

from mock_provider.app import create_app as create_mock
from mock_provider.content import DEFAULT_ANSWER, split_tokens
from mock_provider.state import MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.resilience.clock import FakeClock

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES = [{"role": "user", "content": "hello there"}]
TOKENS = split_tokens(DEFAULT_ANSWER)
CUT = 5  # chunks the primary delivers before it breaks

POLICY = """\
version: 1
upstreams:
  primary: {{url: "{primary}", format: openai}}
  claude: {{url: "{claude}", format: anthropic, capabilities: {{prefill: true}}}}
  rejecting: {{url: "{rejecting}", format: openai, capabilities: {{prefill: true}}}}
  plain: {{url: "{plain}", format: openai}}
  other: {{url: "{other}", format: openai}}
  claude_primary: {{url: "{claude_primary}", format: anthropic}}
defaults:
  retry: {{attempts: 1}}
  timeouts: {{idle: 300ms}}
  continuation: {{enabled: true}}
routes:
  - name: prefill
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: prefill}}}}
    fallback: [{{upstream: primary}}, {{upstream: claude, model: claude-sonnet-4-6}}]
  - name: rejected
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: rejected}}}}
    fallback: [{{upstream: primary}}, {{upstream: rejecting}}]
  - name: restart
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: restart}}}}
    fallback: [{{upstream: primary}}, {{upstream: plain}}]
  - name: diverge
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: diverge}}}}
    fallback: [{{upstream: primary}}, {{upstream: other}}]
  - name: same
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: same}}}}
    continuation: {{target: same}}
    fallback: [{{upstream: primary}}]
  - name: "off"
    match: {{path: /v1/chat/completions, header: {{name: x-case, value: "off"}}}}
    continuation: {{enabled: false}}
    fallback: [{{upstream: primary}}, {{upstream: plain}}]
  - name: messages
    match: {{path: /v1/messages}}
    fallback: [{{upstream: claude_primary}}, {{upstream: claude}}]
"""


@dataclass
class Stack:
    sidecar: TestServer
    mocks: dict[str, TestServer]
    openai: openai.AsyncOpenAI
    anthropic: anthropic.AsyncAnthropic
    http: aiohttp.ClientSession

    async def script(self, name: str, *entries: dict[str, object]) -> None:
        url = self.mocks[name].make_url("/config/failures")
        async with self.http.post(url, json={"script": list(entries)}) as response:
            assert response.status == 200, await response.text()

    async def calls(self, name: str) -> int:
        async with self.http.get(self.mocks[name].make_url("/stats")) as response:
            return int((await response.json())["total"])

    async def raw(self, case: str) -> bytes:
        body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
        async with self.http.post(
            self.sidecar.make_url("/v1/chat/completions"), json=body, headers={"x-case": case}
        ) as response:
            assert response.status == 200
            return await response.read()


@pytest.fixture
async def stack(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Stack]:
    settings = {
        "primary": MockSettings(name="primary"),
        "claude": MockSettings(name="claude"),
        "rejecting": MockSettings(name="rejecting", prefill="reject"),
        "plain": MockSettings(name="plain"),
        "other": MockSettings(name="other", answer="A different answer altogether."),
        "claude_primary": MockSettings(name="claude_primary"),
    }
    mocks = {name: await aiohttp_server(create_mock(s)) for name, s in settings.items()}
    urls = {name: str(server.make_url("")).rstrip("/") for name, server in mocks.items()}
    (tmp_path / "p.yaml").write_text(POLICY.format(**urls))
    config = SidecarConfig(
        policies=tmp_path, environ={}, clock=FakeClock(), watch=False, poll_interval=3600
    )
    sidecar = await aiohttp_server(create_sidecar(config))
    built = Stack(
        sidecar,
        mocks,
        openai.AsyncOpenAI(base_url=str(sidecar.make_url("/v1")), api_key="k", max_retries=0),
        anthropic.AsyncAnthropic(base_url=str(sidecar.make_url("")), api_key="k", max_retries=0),
        aiohttp.ClientSession(),
    )
    yield built
    await built.openai.close()
    await built.anthropic.close()
    await built.http.close()


async def sdk_text(stack: Stack, case: str) -> tuple[str, int | None]:
    stream = await stack.openai.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-case": case},
    )
    parts, usage = [], None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
    return "".join(parts), usage


def assert_one_clean_ending(raw: bytes) -> None:
    assert raw.count(b"data: [DONE]") == 1
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b'"error"' not in raw


@pytest.mark.parametrize(
    "fault",
    [
        {"fail_chunk": CUT},
        {"stall_chunk": CUT, "stall_ms": 3000},
        {"error_chunk": CUT},
    ],
    ids=["cut", "stall", "error-event"],
)
async def test_prefill_capable_fallback_appends_the_rest(stack: Stack, fault: dict) -> None:
    await stack.script("primary", fault)
    text, usage = await sdk_text(stack, "prefill")
    assert text == DEFAULT_ANSWER  # exactly once: nothing repeated, nothing lost
    assert usage == len(TOKENS)  # usage for the whole answer
    assert await stack.calls("claude") == 1


async def test_prefill_continuation_on_the_wire(stack: Stack) -> None:
    await stack.script("primary", {"fail_chunk": CUT})
    raw = await stack.raw("prefill")
    assert_one_clean_ending(raw)
    assert raw.count(b'"role":"assistant"') == 1  # the continuation's opening is dropped


async def test_prefill_rejected_restarts_and_swallows_the_delivered_prefix(stack: Stack) -> None:
    await stack.script("primary", {"fail_chunk": CUT})
    text, usage = await sdk_text(stack, "rejected")
    assert text == DEFAULT_ANSWER
    assert usage == len(TOKENS)
    assert await stack.calls("rejecting") == 2  # the refused prefill, then the restart


async def test_target_without_prefill_restarts(stack: Stack) -> None:
    await stack.script("primary", {"fail_chunk": CUT})
    raw = await stack.raw("restart")
    assert_one_clean_ending(raw)
    await stack.script("primary", {"fail_chunk": CUT})
    text, _ = await sdk_text(stack, "restart")
    assert text == DEFAULT_ANSWER


async def test_diverging_restart_ends_with_a_clean_error_event(stack: Stack) -> None:
    await stack.script("primary", {"fail_chunk": CUT})
    raw = await stack.raw("diverge")
    assert b"[DONE]" not in raw  # no terminator after an incomplete answer
    last = raw.strip().split(b"\n\n")[-1]
    assert last.startswith(b'data: {"error"')
    assert b"could not be completed" in last
    assert b"stream_incomplete" in last
    await stack.script("primary", {"fail_chunk": CUT})
    received: list[str] = []
    with pytest.raises(openai.APIError, match="could not be completed"):
        await collect(stack, "diverge", received)
    assert "".join(received) == "".join(TOKENS[:CUT])  # never a spliced, mixed answer


async def collect(stack: Stack, case: str, into: list[str]) -> None:
    stream = await stack.openai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers={"x-case": case}
    )
    async for chunk in stream:
        for choice in chunk.choices:
            into.append(choice.delta.content or "")


async def test_the_same_target_can_continue(stack: Stack) -> None:
    await stack.script("primary", {"fail_chunk": CUT})
    text, _ = await sdk_text(stack, "same")
    assert text == DEFAULT_ANSWER
    assert await stack.calls("primary") == 2


async def test_without_continuation_the_stream_ends_with_an_error(stack: Stack) -> None:
    await stack.script("primary", {"fail_chunk": CUT})
    raw = await stack.raw("off")
    assert b"[DONE]" not in raw
    assert b"stream_cut" in raw.strip().split(b"\n\n")[-1]
    assert await stack.calls("plain") == 0


async def test_anthropic_client_continuation_with_prefill(stack: Stack) -> None:
    await stack.script("claude_primary", {"fail_chunk": CUT})
    async with stack.anthropic.messages.stream(
        model="claude-sonnet-4-6", max_tokens=200, messages=MESSAGES
    ) as stream:
        text = await stream.get_final_text()
        final = await stream.get_final_message()
    assert text == DEFAULT_ANSWER
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(TOKENS)
    assert await stack.calls("claude") == 1


@pytest.mark.parametrize("case", ["prefill", "restart"])
async def test_a_malformed_event_is_a_break_the_answer_is_finished_without_a_gap(
    stack: Stack, case: str
) -> None:
    # The malformed event replaced a token: skipping it would deliver a "complete"
    # answer with a word missing. With continuation on it is a break instead.
    await stack.script("primary", {"malformed_chunk": CUT})
    text, _ = await sdk_text(stack, case)
    assert text == DEFAULT_ANSWER
    assert await stack.calls("claude" if case == "prefill" else "plain") == 1


async def test_a_malformed_event_before_the_first_token_is_retried_elsewhere(
    stack: Stack,
) -> None:
    await stack.script("primary", {"malformed_chunk": 1})
    raw = await stack.raw("restart")
    assert_one_clean_ending(raw)
    assert await stack.calls("plain") == 1


async def test_without_continuation_a_malformed_event_ends_the_stream_with_an_error(
    stack: Stack,
) -> None:
    # Skipping it would deliver a "complete" answer with a word missing and a normal
    # [DONE]: a truncated success. It is a break: one error event, no terminator.
    # (Paced, so the event comes after the commit point; before it, it is failed over.)
    paced = {"malformed_chunk": CUT, "chunk_ms": 20}
    await stack.script("primary", paced, paced)
    raw = await stack.raw("off")
    assert b"[DONE]" not in raw
    assert b"stream_malformed" in raw.strip().split(b"\n\n")[-1]
    assert await stack.calls("plain") == 0
    with pytest.raises(openai.APIError, match="not valid JSON"):
        await sdk_text(stack, "off")  # the SDK raises rather than return a partial answer


@pytest.mark.parametrize("case", ["prefill", "restart"])
async def test_a_continued_stream_keeps_the_identity_of_its_first_chunk(
    stack: Stack, case: str
) -> None:
    # Continued on claude (prefill) or on another OpenAI upstream (restart): the client
    # sees one answer, so every chunk keeps the first chunk's id, created and model.
    await stack.script("primary", {"fail_chunk": CUT})
    raw = await stack.raw(case)
    chunks = [
        json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")
    ]
    assert len(chunks) > CUT
    identities = {(c["id"], c["created"], c["model"]) for c in chunks}
    assert identities == {(chunks[0]["id"], chunks[0]["created"], chunks[0]["model"])}
    assert await stack.calls("claude" if case == "prefill" else "plain") == 1
