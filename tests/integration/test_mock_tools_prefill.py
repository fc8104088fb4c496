"""Tool calls and assistant prefill, through the official openai and anthropic SDKs."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from mock_provider.content import DEFAULT_ANSWER, count_tokens, split_tokens
from mock_provider.turns import PREFILL_REJECTED

OPENAI_MODEL = "gpt-4o"
ANTHROPIC_MODEL = "claude-sonnet-4-6"
PROMPT = 'What is the weather in "Zürich" today?'
ARGUMENTS = {"input": PROMPT}
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]
OPENAI_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
ANTHROPIC_TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}},
    },
    {"name": "get_time", "input_schema": {"type": "object"}},
]
TOKENS = split_tokens(DEFAULT_ANSWER)
PREFIX = "This is the mock provider's fi"  # ends mid-word
REMAINDER = DEFAULT_ANSWER[len(PREFIX) :]
CUT_ERRORS = (openai.APIConnectionError, anthropic.APIConnectionError, httpx2.TransportError)


@pytest.fixture
async def server(mock_server):
    return await mock_server(name="tools")


@pytest.fixture
def oai(server, openai_for) -> openai.AsyncOpenAI:
    return openai_for(server)


@pytest.fixture
def claude(server, anthropic_for) -> anthropic.AsyncAnthropic:
    return anthropic_for(server)


async def openai_chunks(client: openai.AsyncOpenAI, **params: Any) -> list[Any]:
    stream = await client.chat.completions.create(model=OPENAI_MODEL, stream=True, **params)
    async with stream:
        return [chunk async for chunk in stream]


async def anthropic_events(client: anthropic.AsyncAnthropic, **params: Any) -> list[Any]:
    params.setdefault("max_tokens", 1024)
    stream = await client.messages.create(model=ANTHROPIC_MODEL, stream=True, **params)
    async with stream:
        return [event async for event in stream]


def argument_pieces(chunks: list[Any]) -> list[str]:
    return [
        call.function.arguments
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
        if call.function and call.function.arguments
    ]


async def drain(stream: Any, into: list[Any]) -> None:
    """Collect a stream's items into *into*, so that they survive the stream's error."""
    async with stream:
        async for item in stream:
            into.append(item)


async def drain_texts(manager: Any, into: list[str]) -> None:
    async with manager as helper:
        async for text in helper.text_stream:
            into.append(text)


def sse_data(body: bytes) -> list[Any]:
    """The JSON payloads of a raw SSE body (skipping [DONE] and unparsable ones)."""
    payloads = []
    for event in body.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                try:
                    payloads.append(json.loads(line.removeprefix(b"data: ")))
                except json.JSONDecodeError:
                    payloads.append(None)
    return payloads


def raw_argument_pieces(flavour: str, payloads: list[Any]) -> list[str]:
    if flavour == "anthropic":
        return [
            p["delta"]["partial_json"]
            for p in payloads
            if p and p.get("type") == "content_block_delta"
        ]
    return [
        call["function"]["arguments"]
        for p in payloads
        if p and p.get("choices")
        for call in p["choices"][0]["delta"].get("tool_calls", [])
        if call["function"]["arguments"]
    ]


def content_of(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


# ------------------------------------------------------------------ OpenAI tool calls


async def test_openai_tool_call(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=MESSAGES, tools=OPENAI_TOOLS
    )
    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_tools_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGUMENTS
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3
    assert completion.usage.prompt_tokens == count_tokens(PROMPT)


async def test_openai_tool_call_stream(oai: openai.AsyncOpenAI) -> None:
    plain = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=MESSAGES, tools=OPENAI_TOOLS
    )
    chunks = await openai_chunks(
        oai, messages=MESSAGES, tools=OPENAI_TOOLS, stream_options={"include_usage": True}
    )
    assert len({chunk.id for chunk in chunks}) == 1
    role, opening, *pieces, finish, usage = chunks
    assert role.choices[0].delta.role == "assistant"
    assert role.choices[0].delta.content is None
    (call,) = opening.choices[0].delta.tool_calls
    assert (call.index, call.type, call.function.name, call.function.arguments) == (
        0,
        "function",
        "get_weather",
        "",
    )
    assert call.id.startswith("call_tools_")
    assert call.id != plain.choices[0].message.tool_calls[0].id  # a fresh id per call
    assert len(pieces) == 3
    for chunk in pieces:
        (delta,) = chunk.choices[0].delta.tool_calls
        assert delta.index == 0
        assert delta.id is None
        assert delta.function.name is None
    arguments = "".join(argument_pieces(chunks))
    assert arguments == plain.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(arguments) == ARGUMENTS
    lengths = [len(piece) for piece in argument_pieces(chunks)]
    assert max(lengths) - min(lengths) <= 1
    assert finish.choices[0].finish_reason == "tool_calls"
    assert content_of(chunks) == []
    assert usage.choices == []
    assert usage.usage is not None
    assert plain.usage is not None
    assert usage.usage.completion_tokens == plain.usage.completion_tokens == 3
    assert usage.usage.prompt_tokens == plain.usage.prompt_tokens


async def test_openai_stream_helper_accumulates_the_call(oai: openai.AsyncOpenAI) -> None:
    async with oai.chat.completions.stream(
        model=OPENAI_MODEL, messages=MESSAGES, tools=OPENAI_TOOLS
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGUMENTS
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("tool_choice", "name"),
    [
        ("auto", "get_weather"),
        ("required", "get_weather"),
        ({"type": "function", "function": {"name": "get_time"}}, "get_time"),
        ("none", None),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_openai_tool_choice(
    oai: openai.AsyncOpenAI, tool_choice: Any, name: str | None, stream: bool
) -> None:
    params = {"messages": MESSAGES, "tools": OPENAI_TOOLS, "tool_choice": tool_choice}
    if stream:
        chunks = await openai_chunks(oai, **params)
        names = [
            call.function.name
            for chunk in chunks
            if chunk.choices
            for call in chunk.choices[0].delta.tool_calls or []
            if call.function and call.function.name
        ]
        assert names == ([name] if name else [])
        assert "".join(content_of(chunks)) == ("" if name else DEFAULT_ANSWER)
        return
    completion = await oai.chat.completions.create(model=OPENAI_MODEL, **params)
    message = completion.choices[0].message
    if name is None:
        assert message.tool_calls is None
        assert message.content == DEFAULT_ANSWER
        assert completion.choices[0].finish_reason == "stop"
    else:
        assert [call.function.name for call in message.tool_calls] == [name]
        assert json.loads(message.tool_calls[0].function.arguments) == ARGUMENTS


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_openai_tool_result_is_answered_with_text(
    oai: openai.AsyncOpenAI, stream: bool
) -> None:
    first = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=MESSAGES, tools=OPENAI_TOOLS
    )
    assistant = first.choices[0].message.model_dump(exclude_none=True)
    call_id = first.choices[0].message.tool_calls[0].id
    messages = [
        *MESSAGES,
        assistant,
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21 degrees"},
    ]
    if stream:
        chunks = await openai_chunks(oai, messages=messages, tools=OPENAI_TOOLS)
        assert "".join(content_of(chunks)) == DEFAULT_ANSWER
        assert argument_pieces(chunks) == []
        assert chunks[-1].choices[0].finish_reason == "stop"
        return
    second = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=messages, tools=OPENAI_TOOLS
    )
    assert second.choices[0].message.content == DEFAULT_ANSWER
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].finish_reason == "stop"


async def test_openai_bad_tools_are_a_400(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=r"tools\[0\]\.function\.name") as info:
        await oai.chat.completions.create(
            model=OPENAI_MODEL,
            messages=MESSAGES,
            tools=[{"type": "function", "function": {"description": "no name"}}],
        )
    assert info.value.body["param"] == "tools"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="not in 'tools'") as info:
        await oai.chat.completions.create(
            model=OPENAI_MODEL,
            messages=MESSAGES,
            tools=OPENAI_TOOLS,
            tool_choice={"type": "function", "function": {"name": "missing"}},
        )
    assert info.value.body["param"] == "tool_choice"  # type: ignore[index]


# --------------------------------------------------------------- Anthropic tool calls


async def test_anthropic_tool_use(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=1024, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    )
    (block,) = message.content
    assert block.type == "tool_use"
    assert block.id.startswith("toolu_tools_")
    assert block.name == "get_weather"
    assert block.input == ARGUMENTS
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens == 3
    assert message.usage.input_tokens == count_tokens(PROMPT)


async def test_anthropic_tool_use_stream(claude: anthropic.AsyncAnthropic) -> None:
    events = await anthropic_events(claude, messages=MESSAGES, tools=ANTHROPIC_TOOLS)
    assert [event.type for event in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    block = events[1].content_block
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {})
    assert block.id.startswith("toolu_tools_")
    deltas = [event.delta for event in events if event.type == "content_block_delta"]
    assert {delta.type for delta in deltas} == {"input_json_delta"}
    arguments = "".join(delta.partial_json for delta in deltas)
    assert json.loads(arguments) == ARGUMENTS
    assert arguments == json.dumps(ARGUMENTS, separators=(",", ":"), ensure_ascii=False)
    assert events[-2].delta.stop_reason == "tool_use"
    assert events[-2].usage.output_tokens == len(deltas) == 3


async def test_anthropic_stream_helper_accumulates_the_call(
    claude: anthropic.AsyncAnthropic,
) -> None:
    async with claude.messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=1024, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    ) as stream:
        partials = [event.partial_json async for event in stream if event.type == "input_json"]
        final = await stream.get_final_message()
    plain = await claude.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=1024, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    )
    assert len(partials) == 3
    (block,) = final.content
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", ARGUMENTS)
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == plain.usage.output_tokens == 3
    assert final.usage.input_tokens == plain.usage.input_tokens


@pytest.mark.parametrize(
    ("tool_choice", "name"),
    [
        ({"type": "auto"}, "get_weather"),
        ({"type": "any"}, "get_weather"),
        ({"type": "tool", "name": "get_time"}, "get_time"),
        ({"type": "none"}, None),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_anthropic_tool_choice(
    claude: anthropic.AsyncAnthropic, tool_choice: Any, name: str | None, stream: bool
) -> None:
    params = {"messages": MESSAGES, "tools": ANTHROPIC_TOOLS, "tool_choice": tool_choice}
    if stream:
        async with claude.messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=1024, **params
        ) as helper:
            message = await helper.get_final_message()
    else:
        message = await claude.messages.create(model=ANTHROPIC_MODEL, max_tokens=1024, **params)
    (block,) = message.content
    if name is None:
        assert block.type == "text"
        assert block.text == DEFAULT_ANSWER
        assert message.stop_reason == "end_turn"
    else:
        assert (block.type, block.name, block.input) == ("tool_use", name, ARGUMENTS)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_anthropic_tool_result_is_answered_with_text(
    claude: anthropic.AsyncAnthropic, stream: bool
) -> None:
    first = await claude.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=1024, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    )
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": first.content[0].id,
                    "content": "Sunny, 21 degrees",
                }
            ],
        },
    ]
    params = {"max_tokens": 1024, "messages": messages, "tools": ANTHROPIC_TOOLS}
    if stream:
        async with claude.messages.stream(model=ANTHROPIC_MODEL, **params) as helper:
            pieces = [text async for text in helper.text_stream]
            message = await helper.get_final_message()
        assert "".join(pieces) == DEFAULT_ANSWER
    else:
        message = await claude.messages.create(model=ANTHROPIC_MODEL, **params)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == DEFAULT_ANSWER
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(TOKENS)


async def test_anthropic_echo_answers_a_tool_result_with_the_question(
    mock_server, anthropic_for
) -> None:
    client = anthropic_for(await mock_server(echo=True))
    result = {"type": "tool_result", "tool_use_id": "toolu_x", "content": "Sunny"}
    messages = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {}}],
        },
        {"role": "user", "content": [result]},
    ]
    message = await client.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=1024, messages=messages, tools=ANTHROPIC_TOOLS
    )
    assert message.content[0].text == PROMPT


async def test_anthropic_bad_tools_are_a_400(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match=r"tools\[0\].input_schema"):
        await claude.messages.create(
            model=ANTHROPIC_MODEL,
            max_tokens=1024,
            messages=MESSAGES,
            tools=[{"name": "no_schema"}],  # type: ignore[typeddict-item]
        )
    with pytest.raises(anthropic.BadRequestError, match="'tool_choice' must be"):
        await claude.messages.create(
            model=ANTHROPIC_MODEL,
            max_tokens=1024,
            messages=MESSAGES,
            tools=ANTHROPIC_TOOLS,
            tool_choice={"type": "sometimes"},  # type: ignore[typeddict-item,misc]
        )


async def test_max_tokens_cuts_a_tool_call(
    oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    completion = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=MESSAGES, tools=OPENAI_TOOLS, max_completion_tokens=2
    )
    arguments = completion.choices[0].message.tool_calls[0].function.arguments
    assert completion.choices[0].finish_reason == "length"
    full = json.dumps(ARGUMENTS, separators=(",", ":"), ensure_ascii=False)
    assert full.startswith(arguments)
    assert len(arguments) < len(full)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2
    message = await claude.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=2, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    )
    assert message.stop_reason == "max_tokens"
    assert message.content[0].input == {}
    assert message.usage.output_tokens == 2


# --------------------------------------------------------- faults on tool-call streams


@pytest.mark.parametrize("n", [0, 2])
async def test_fail_chunk_cuts_an_openai_tool_call_stream(oai: openai.AsyncOpenAI, n: int) -> None:
    chunks: list[Any] = []
    stream = await oai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=MESSAGES,
        tools=OPENAI_TOOLS,
        stream=True,
        extra_query={"fail_chunk": str(n)},
    )
    with pytest.raises(CUT_ERRORS):
        await drain(stream, chunks)
    assert len(chunks) == 2 + n  # role, the call's opening, n argument pieces
    assert chunks[1].choices[0].delta.tool_calls[0].function.name == "get_weather"
    pieces = argument_pieces(chunks)
    assert len(pieces) == n
    full = json.dumps(ARGUMENTS, separators=(",", ":"), ensure_ascii=False)
    assert full.startswith("".join(pieces))
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks)


@pytest.mark.parametrize("n", [0, 2])
async def test_fail_chunk_cuts_an_anthropic_tool_use_stream(
    claude: anthropic.AsyncAnthropic, n: int
) -> None:
    events: list[Any] = []
    stream = await claude.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=1024,
        messages=MESSAGES,
        tools=ANTHROPIC_TOOLS,
        stream=True,
        extra_headers={"x-mock-fail-chunk": str(n)},
    )
    with pytest.raises(CUT_ERRORS):
        await drain(stream, events)
    kinds = [event.type for event in events]
    assert kinds == ["message_start", "content_block_start", *["content_block_delta"] * n]
    assert events[1].content_block.type == "tool_use"


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
async def test_other_stream_faults_count_argument_pieces(server, chat_for, flavour: str) -> None:
    chat = chat_for(server, flavour)
    tools = OPENAI_TOOLS if flavour == "openai" else ANTHROPIC_TOOLS
    full = json.dumps(ARGUMENTS, separators=(",", ":"), ensure_ascii=False)

    error = await chat(raw=True, messages=MESSAGES, tools=tools, extra_query={"error_chunk": 2})
    payloads = sse_data(error.raw)
    pieces = raw_argument_pieces(flavour, payloads)
    assert len(pieces) == 2
    assert full.startswith("".join(pieces))
    assert payloads[-1]["error"]["type"] in ("overloaded_error", "server_error")
    assert b"[DONE]" not in error.raw
    assert b"message_stop" not in error.raw

    malformed = await chat(
        raw=True, messages=MESSAGES, tools=tools, extra_query={"malformed_chunk": 2, "no_done": 1}
    )
    payloads = sse_data(malformed.raw)
    pieces = raw_argument_pieces(flavour, payloads)
    assert payloads.count(None) == 1  # piece 2 is garbage; pieces 1 and 3 are fine
    assert "".join(pieces) == full[: len(pieces[0])] + full[-len(pieces[1]) :]
    assert b"[DONE]" not in malformed.raw
    assert b"message_stop" not in malformed.raw
    finish = b'"tool_use"' if flavour == "anthropic" else b'"finish_reason":"tool_calls"'
    assert finish in malformed.raw


async def test_stats_count_tool_and_prefill_requests_as_ok(
    server, http_for, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, tools=OPENAI_TOOLS)
    await openai_chunks(oai, messages=MESSAGES, tools=OPENAI_TOOLS)
    await claude.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES, tools=ANTHROPIC_TOOLS
    )
    prefilled = [*MESSAGES, {"role": "assistant", "content": PREFIX}]
    await claude.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=prefilled)
    async with http_for(server).get("/stats") as response:
        stats = await response.json()
    assert stats["by_outcome"] == {"ok": 4}
    assert stats["by_model"] == {OPENAI_MODEL: 2, ANTHROPIC_MODEL: 2}


# --------------------------------------------------------------------------- prefill


async def openai_text(client: openai.AsyncOpenAI, stream: bool, **params: Any) -> tuple[str, int]:
    """(text, completion tokens), streamed or not."""
    if stream:
        chunks = await openai_chunks(client, stream_options={"include_usage": True}, **params)
        content = content_of(chunks)
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == len(content)
        return "".join(content), chunks[-1].usage.completion_tokens
    completion = await client.chat.completions.create(model=OPENAI_MODEL, **params)
    assert completion.usage is not None
    return completion.choices[0].message.content or "", completion.usage.completion_tokens


async def anthropic_text(
    client: anthropic.AsyncAnthropic, stream: bool, **params: Any
) -> tuple[str, int]:
    params.setdefault("max_tokens", 1024)
    if stream:
        async with client.messages.stream(model=ANTHROPIC_MODEL, **params) as helper:
            pieces = [text async for text in helper.text_stream]
            message = await helper.get_final_message()
        assert message.usage.output_tokens == len(pieces)
        assert "".join(pieces) == message.content[0].text
    else:
        message = await client.messages.create(model=ANTHROPIC_MODEL, **params)
    assert message.stop_reason == "end_turn"
    return message.content[0].text, message.usage.output_tokens


STREAMING = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
PREFILLED = [*MESSAGES, {"role": "assistant", "content": PREFIX}]


@STREAMING
async def test_anthropic_accepts_a_prefill_by_default(
    claude: anthropic.AsyncAnthropic, stream: bool
) -> None:
    text, tokens = await anthropic_text(claude, stream, messages=PREFILLED, tools=ANTHROPIC_TOOLS)
    assert text == REMAINDER
    assert PREFIX + text == DEFAULT_ANSWER
    assert text.startswith("xed answer.")  # mid-word: the rest of "fixed"
    assert tokens == len(split_tokens(REMAINDER)) < len(TOKENS)


@STREAMING
async def test_openai_ignores_a_prefill_by_default(oai: openai.AsyncOpenAI, stream: bool) -> None:
    text, tokens = await openai_text(oai, stream, messages=PREFILLED, tools=OPENAI_TOOLS)
    assert text == DEFAULT_ANSWER
    assert tokens == len(TOKENS)


@STREAMING
async def test_openai_accepts_a_prefill_when_told(mock_server, openai_for, stream: bool) -> None:
    client = openai_for(await mock_server(prefill="accept"))
    text, tokens = await openai_text(client, stream, messages=PREFILLED, tools=OPENAI_TOOLS)
    assert text == REMAINDER
    assert PREFIX + text == DEFAULT_ANSWER
    assert tokens == len(split_tokens(REMAINDER))


@STREAMING
async def test_anthropic_ignores_a_prefill_when_told(
    mock_server, anthropic_for, stream: bool
) -> None:
    client = anthropic_for(await mock_server(prefill="ignore"))
    text, tokens = await anthropic_text(client, stream, messages=PREFILLED)
    assert text == DEFAULT_ANSWER
    assert tokens == len(TOKENS)


@pytest.mark.parametrize(
    "prefix",
    ["This is", "This is ", "This is the mock provider's fixed answer. It is the same every"],
)
@STREAMING
async def test_prefill_remainder_joins_back_exactly(
    claude: anthropic.AsyncAnthropic, prefix: str, stream: bool
) -> None:
    content = [{"type": "text", "text": prefix}]
    messages = [*MESSAGES, {"role": "assistant", "content": content}]
    text, tokens = await anthropic_text(claude, stream, messages=messages)
    assert prefix + text == DEFAULT_ANSWER
    assert tokens == len(split_tokens(DEFAULT_ANSWER[len(prefix) :]))


@STREAMING
async def test_a_foreign_prefix_is_continued_with_the_whole_answer(
    mock_server, openai_for, anthropic_for, stream: bool
) -> None:
    server = await mock_server(prefill="accept")
    messages = [*MESSAGES, {"role": "assistant", "content": "Well, let me think"}]
    for text, tokens in [
        await openai_text(openai_for(server), stream, messages=messages),
        await anthropic_text(anthropic_for(server), stream, messages=messages),
    ]:
        assert text == DEFAULT_ANSWER
        assert tokens == len(TOKENS)


async def test_the_whole_answer_as_prefix_leaves_nothing_to_say(
    claude: anthropic.AsyncAnthropic,
) -> None:
    messages = [*MESSAGES, {"role": "assistant", "content": DEFAULT_ANSWER}]
    assert await anthropic_text(claude, False, messages=messages) == ("", 0)
    events = await anthropic_events(claude, messages=messages)
    assert "content_block_delta" not in [event.type for event in events]
    assert events[-2].usage.output_tokens == 0


async def test_prefill_continues_an_echo(mock_server, anthropic_for) -> None:
    client = anthropic_for(await mock_server(echo=True))
    messages = [
        {"role": "user", "content": "repeat after me please"},
        {"role": "assistant", "content": "repeat af"},
    ]
    assert await anthropic_text(client, True, messages=messages) == ("ter me please", 3)


@STREAMING
async def test_prefill_rejected(mock_server, openai_for, anthropic_for, stream: bool) -> None:
    server = await mock_server(prefill="reject")
    with pytest.raises(openai.BadRequestError, match=PREFILL_REJECTED) as openai_info:
        await openai_text(openai_for(server), stream, messages=PREFILLED, tools=OPENAI_TOOLS)
    assert openai_info.value.body == {
        "message": PREFILL_REJECTED,
        "type": "invalid_request_error",
        "code": "invalid_request",
        "param": "messages",
    }
    with pytest.raises(anthropic.BadRequestError, match=PREFILL_REJECTED) as anthropic_info:
        await anthropic_text(anthropic_for(server), stream, messages=PREFILLED)
    assert anthropic_info.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": PREFILL_REJECTED},
    }
    # A conversation that ends with a user turn is fine.
    text, _ = await openai_text(openai_for(server), stream, messages=MESSAGES)
    assert text == DEFAULT_ANSWER


async def test_a_rejected_prefill_consumes_no_script_entry(mock_server, http_for, openai_for):
    server = await mock_server(prefill="reject")
    http = http_for(server)
    async with http.post("/config/failures", json={"script": [{"fail": 500}]}) as response:
        assert response.status == 200
    with pytest.raises(openai.BadRequestError):
        await openai_for(server).chat.completions.create(model=OPENAI_MODEL, messages=PREFILLED)
    async with http.get("/config/failures") as response:
        assert (await response.json())["script_remaining"] == [{"fail": 500}]
    async with http.get("/stats") as response:
        stats = await response.json()
    assert stats["detail"] == [
        {
            "path": "/v1/chat/completions",
            "model": OPENAI_MODEL,
            "outcome": "bad_request",
            "count": 1,
        }
    ]


async def test_prefill_with_max_tokens(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(model=ANTHROPIC_MODEL, max_tokens=2, messages=PREFILLED)
    assert message.content[0].text == "".join(split_tokens(REMAINDER)[:2])
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


@pytest.mark.parametrize("n", [1, 3])
async def test_fail_chunk_on_a_prefill_stream(claude: anthropic.AsyncAnthropic, n: int) -> None:
    pieces: list[str] = []
    helper = claude.messages.stream(
        model=ANTHROPIC_MODEL,
        max_tokens=1024,
        messages=PREFILLED,
        extra_query={"fail_chunk": str(n)},
    )
    with pytest.raises(CUT_ERRORS):
        await drain_texts(helper, pieces)
    assert tuple(pieces) == split_tokens(REMAINDER)[:n]
