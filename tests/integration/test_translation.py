"""OpenAI ⇄ Anthropic translation through the sidecar, seen by the official SDKs.

The openai SDK is answered by an Anthropic-format mock and the anthropic SDK by
an OpenAI-format mock; the clients must get valid objects of their own format.
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

POLICY = """\
version: 1
upstreams:
  oa: {{url: "{oa}", format: openai, auth: {{header: Authorization, value: "Bearer sk-oa"}}}}
  an: {{url: "{an}", format: anthropic, auth: {{header: x-api-key, value: sk-an}}}}
defaults:
  retry: {{attempts: 1}}
routes:
  - name: openai-to-anthropic
    match: {{path: /v1/chat/completions, header: {{name: x-to, value: anthropic}}}}
    fallback: [{{upstream: an, model_map: {{"*": claude-sonnet-4-6}}}}]
  - name: openai-skip
    match: {{path: /v1/chat/completions, header: {{name: x-to, value: skip}}}}
    translate: {{unsupported: skip}}
    fallback: [{{upstream: an}}, {{upstream: oa}}]
  - name: chat
    match: {{path: /v1/chat/completions}}
    fallback: [{{upstream: oa}}, {{upstream: an, model_map: {{"*": claude-sonnet-4-6}}}}]
  - name: anthropic-to-openai
    match: {{path: /v1/messages, header: {{name: x-to, value: openai}}}}
    fallback: [{{upstream: oa, model: gpt-4o}}]
"""


@dataclass
class Stack:
    sidecar: TestServer
    oa: TestServer
    an: TestServer
    openai: openai.AsyncOpenAI
    anthropic: anthropic.AsyncAnthropic
    http: aiohttp.ClientSession

    async def script(self, mock: TestServer, body: dict[str, object]) -> None:
        async with self.http.post(mock.make_url("/config/failures"), json=body) as response:
            assert response.status == 200, await response.text()

    async def calls(self, mock: TestServer) -> int:
        async with self.http.get(mock.make_url("/stats")) as response:
            return int((await response.json())["total"])


@pytest.fixture
async def stack(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Stack]:
    oa = await aiohttp_server(create_mock(MockSettings(name="oa", api_key="sk-oa")))
    an = await aiohttp_server(create_mock(MockSettings(name="an", api_key="sk-an")))
    (tmp_path / "p.yaml").write_text(
        POLICY.format(oa=str(oa.make_url("")).rstrip("/"), an=str(an.make_url("")).rstrip("/"))
    )
    config = SidecarConfig(
        policies=tmp_path, environ={}, clock=FakeClock(), watch=False, poll_interval=3600
    )
    sidecar = await aiohttp_server(create_sidecar(config))
    built = Stack(
        sidecar,
        oa,
        an,
        openai.AsyncOpenAI(base_url=str(sidecar.make_url("/v1")), api_key="client", max_retries=0),
        anthropic.AsyncAnthropic(
            base_url=str(sidecar.make_url("")), api_key="client", max_retries=0
        ),
        aiohttp.ClientSession(),
    )
    yield built
    await built.openai.close()
    await built.anthropic.close()
    await built.http.close()


TO_ANTHROPIC = {"x-to": "anthropic"}
TO_OPENAI = {"x-to": "openai"}


# -- the openai SDK answered by an Anthropic model -------------------------------------


async def test_openai_client_anthropic_upstream(stack: Stack) -> None:
    raw = await stack.openai.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "be brief"}, *MESSAGES],
        max_tokens=100,
        extra_headers=TO_ANTHROPIC,
    )
    completion = raw.parse()
    assert raw.headers["x-sidecar-upstream"] == "an"
    assert completion.object == "chat.completion"
    assert completion.model == "claude-sonnet-4-6"  # the model that answered
    assert completion.choices[0].message.content == DEFAULT_ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(TOKENS)
    assert completion.usage.prompt_tokens == 4  # "be brief" + "hello there"
    assert completion.usage.total_tokens == len(TOKENS) + 4


async def test_openai_client_anthropic_upstream_length_limit(stack: Stack) -> None:
    completion = await stack.openai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=5, extra_headers=TO_ANTHROPIC
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "".join(TOKENS[:5])


async def test_openai_client_anthropic_upstream_streaming(stack: Stack) -> None:
    stream = await stack.openai.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=TO_ANTHROPIC,
    )
    parts, finish, usage, models = [], None, None, set()
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        models.add(chunk.model)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(parts) == DEFAULT_ANSWER
    assert finish == "stop"
    assert models == {"claude-sonnet-4-6"}
    assert usage is not None
    assert usage.completion_tokens == len(TOKENS)
    assert usage.prompt_tokens == 2


async def test_openai_stream_from_anthropic_ends_with_done(stack: Stack) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    async with stack.http.post(
        stack.sidecar.make_url("/v1/chat/completions"), json=body, headers=TO_ANTHROPIC
    ) as response:
        raw = await response.read()
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b"event:" not in raw  # nothing of Anthropic's framing leaks through
    assert b'"usage"' not in raw  # the client did not ask for usage


async def test_anthropic_overload_becomes_openai_503(stack: Stack) -> None:
    await stack.script(stack.an, {"script": [{"fail": 529}]})
    with pytest.raises(openai.InternalServerError) as caught:
        await stack.openai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers=TO_ANTHROPIC
        )
    assert caught.value.status_code == 503
    assert "Overloaded" in str(caught.value)


async def test_anthropic_invalid_request_keeps_its_message(stack: Stack) -> None:
    await stack.script(stack.an, {"script": [{"fail": "context_length"}]})
    with pytest.raises(openai.BadRequestError) as caught:
        await stack.openai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers=TO_ANTHROPIC
        )
    assert caught.value.code == "context_length_exceeded"
    assert "prompt is too long" in str(caught.value)


async def test_untranslatable_field_is_a_400_naming_it(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await stack.openai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, n=2, extra_headers=TO_ANTHROPIC
        )
    assert caught.value.param == "n"
    assert await stack.calls(stack.an) == 0


async def test_untranslatable_field_can_skip_to_a_target_that_supports_it(stack: Stack) -> None:
    raw = await stack.openai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, logprobs=True, extra_headers={"x-to": "skip"}
    )
    assert raw.headers["x-sidecar-upstream"] == "oa"
    assert await stack.calls(stack.an) == 0


# -- the seed scenario: 429 on OpenAI, Anthropic answers --------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_rate_limited_openai_fails_over_to_anthropic(stack: Stack, stream: bool) -> None:
    await stack.script(stack.oa, {"script": [{"fail": 429, "retry_after": 30}]})
    raw = await stack.openai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=stream
    )
    assert raw.headers["x-sidecar-upstream"] == "an"
    assert raw.headers["x-sidecar-attempts"] == "2"
    if stream:
        chunks = [chunk async for chunk in raw.parse()]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert {c.model for c in chunks} == {"claude-sonnet-4-6"}
    else:
        completion = raw.parse()
        text = completion.choices[0].message.content or ""
        assert completion.model == "claude-sonnet-4-6"
    assert text == DEFAULT_ANSWER
    assert await stack.calls(stack.oa) == 1


# -- the anthropic SDK answered by an OpenAI model -------------------------------------


async def test_anthropic_client_openai_upstream(stack: Stack) -> None:
    message = await stack.anthropic.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=100,
        system="be brief",
        messages=MESSAGES,
        extra_headers=TO_OPENAI,
    )
    assert message.type == "message"
    assert message.model == "gpt-4o"
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_ANSWER
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(TOKENS)
    assert message.usage.input_tokens == 4


async def test_anthropic_client_openai_upstream_streaming(stack: Stack) -> None:
    async with stack.anthropic.messages.stream(
        model="claude-sonnet-4-6", max_tokens=7, messages=MESSAGES, extra_headers=TO_OPENAI
    ) as stream:
        text = await stream.get_final_text()
        final = await stream.get_final_message()
    assert text == "".join(TOKENS[:7])
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 7
    assert final.usage.input_tokens == 2
    assert final.model == "gpt-4o"


async def test_anthropic_stream_from_openai_ends_with_message_stop(stack: Stack) -> None:
    body = {"model": "claude-sonnet-4-6", "max_tokens": 50, "messages": MESSAGES, "stream": True}
    async with stack.http.post(
        stack.sidecar.make_url("/v1/messages"), json=body, headers=TO_OPENAI
    ) as response:
        raw = await response.read()
    events = [block.split(b"\n", 1)[0] for block in raw.strip().split(b"\n\n")]
    assert events[0] == b"event: message_start"
    assert events[1] == b"event: content_block_start"
    assert events[-3:] == [
        b"event: content_block_stop",
        b"event: message_delta",
        b"event: message_stop",
    ]
    assert b"[DONE]" not in raw


async def test_openai_rate_limit_becomes_anthropic_429(stack: Stack) -> None:
    await stack.script(stack.oa, {"script": [{"fail": 429}]})
    with pytest.raises(anthropic.RateLimitError) as caught:
        await stack.anthropic.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES, extra_headers=TO_OPENAI
        )
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_openai_503_becomes_anthropic_overloaded(stack: Stack) -> None:
    await stack.script(stack.oa, {"script": [{"fail": 503}]})
    with pytest.raises(anthropic.APIStatusError) as caught:
        await stack.anthropic.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES, extra_headers=TO_OPENAI
        )
    assert caught.value.status_code == 529


# -- tool calls, both directions ---------------------------------------------------------

OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}},
        },
    }
]
ANTHROPIC_TOOLS = [
    {
        "name": "lookup",
        "description": "Look something up",
        "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}},
    }
]


async def test_openai_tool_call_answered_by_anthropic(stack: Stack) -> None:
    completion = await stack.openai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=OPENAI_TOOLS, extra_headers=TO_ANTHROPIC
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"input": "hello there"}


async def test_openai_tool_call_stream_answered_by_anthropic(stack: Stack) -> None:
    stream = await stack.openai.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        tools=OPENAI_TOOLS,
        tool_choice="required",
        stream=True,
        extra_headers=TO_ANTHROPIC,
    )
    name, arguments, finish = None, "", None
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                assert call.index == 0
                name = call.function.name or name if call.function else name
                arguments += (call.function.arguments or "") if call.function else ""
    assert name == "lookup"
    assert json.loads(arguments) == {"input": "hello there"}
    assert finish == "tool_calls"


async def test_openai_tool_result_round_trip_through_anthropic(stack: Stack) -> None:
    messages = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"input": "hello there"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    completion = await stack.openai.chat.completions.create(
        model="gpt-4o", messages=messages, tools=OPENAI_TOOLS, extra_headers=TO_ANTHROPIC
    )
    assert completion.choices[0].message.content == DEFAULT_ANSWER
    assert completion.choices[0].finish_reason == "stop"


async def test_anthropic_tool_use_answered_by_openai(stack: Stack) -> None:
    message = await stack.anthropic.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=100,
        messages=MESSAGES,
        tools=ANTHROPIC_TOOLS,
        extra_headers=TO_OPENAI,
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.name == "lookup"
    assert block.input == {"input": "hello there"}


async def test_anthropic_tool_use_stream_answered_by_openai(stack: Stack) -> None:
    async with stack.anthropic.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=100,
        messages=MESSAGES,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "any"},
        extra_headers=TO_OPENAI,
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use"
    assert block.input == {"input": "hello there"}
    assert final.usage.output_tokens == 3


async def test_anthropic_tool_result_round_trip_through_openai(stack: Stack) -> None:
    message = await stack.anthropic.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=100,
        tools=ANTHROPIC_TOOLS,
        messages=[
            *MESSAGES,
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"input": "x"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}],
            },
        ],
        extra_headers=TO_OPENAI,
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_ANSWER
