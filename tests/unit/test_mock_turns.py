"""Tool calls and prefill in the mock provider, without a server: turns, wire bodies, tools."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mock_provider.anthropic_wire import AnthropicFlavour
from mock_provider.cli import parse_args
from mock_provider.content import DEFAULT_ANSWER, Answerer, split_tokens
from mock_provider.openai_wire import OpenAIFlavour
from mock_provider.state import MockSettings
from mock_provider.turns import (
    PREFILL_MODES,
    PREFILL_REJECTED,
    Answer,
    answer_for,
    continuation,
    is_user_turn,
    prefill_text,
    split_pieces,
    tool_arguments,
)
from mock_provider.wire import BadRequest, ChatRequest, PrefillMode, Reply, ToolCall

OPENAI = OpenAIFlavour()
ANTHROPIC = AnthropicFlavour()
USER = {"role": "user", "content": "What is the weather?"}
OPENAI_TOOL = {
    "type": "function",
    "function": {"name": "lookup", "description": "d", "parameters": {"type": "object"}},
}
ANTHROPIC_TOOL = {"name": "lookup", "description": "d", "input_schema": {"type": "object"}}
CANNED = Answerer()


def chat(*messages: dict[str, Any], tool: str | None = None) -> ChatRequest:
    return ChatRequest("m", list(messages), False, False, None, tool=tool)


# ---------------------------------------------------------------------------- helpers


def test_prefill_modes() -> None:
    assert PREFILL_MODES == ("accept", "reject", "ignore")


@pytest.mark.parametrize(
    ("text", "count", "pieces"),
    [
        ("abcdefghi", 3, ("abc", "def", "ghi")),
        ("abcdefghij", 3, ("abcd", "efg", "hij")),
        ("abcdefghijk", 3, ("abcd", "efgh", "ijk")),
        ("ab", 3, ("a", "b")),
        ("", 3, ()),
    ],
)
def test_split_pieces(text: str, count: int, pieces: tuple[str, ...]) -> None:
    assert split_pieces(text, count) == pieces
    assert "".join(pieces) == text


def test_tool_arguments_are_json_with_the_input() -> None:
    for text in ["hello", "", 'quote " and \\ and ünïcode\nline']:
        assert json.loads(tool_arguments(text)) == {"input": text}


def test_continuation() -> None:
    assert continuation("Hello there world", "Hello th") == "ere world"
    assert continuation("Hello there world", "Hello ") == "there world"
    assert continuation("Hello there world", "Hello") == " there world"
    assert continuation("Hello there world", "") == "Hello there world"
    assert continuation("Hello there world", "Hello there world") == ""
    assert continuation("Hello there world", "Goodbye") == "Hello there world"
    assert continuation("Hi", "Hi and more") == "Hi"


def test_prefill_text_joins_parts_as_they_are() -> None:
    assert prefill_text("The answer") == "The answer"
    parts = [
        {"type": "text", "text": "The "},
        {"type": "image", "source": {}},
        {"type": "text", "text": "answer"},
    ]
    assert prefill_text(parts) == "The answer"
    assert prefill_text(None) == ""


def test_is_user_turn() -> None:
    assert is_user_turn(USER)
    assert is_user_turn({"role": "user", "content": [{"type": "text", "text": "x"}]})
    assert not is_user_turn({"role": "tool", "tool_call_id": "c", "content": "sunny"})
    assert not is_user_turn({"role": "assistant", "content": "x"})
    assert not is_user_turn(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]}
    )


# ------------------------------------------------------------------------------ turns


def test_a_user_turn_with_a_tool_is_a_tool_call() -> None:
    answer = answer_for(chat(USER, tool="lookup"), CANNED, "accept")
    assert answer.tool == "lookup"
    assert len(answer.tokens) == 3
    assert json.loads("".join(answer.tokens)) == {"input": "What is the weather?"}


def test_tool_input_is_the_text_of_the_last_user_message() -> None:
    parts = {
        "role": "user",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    answer = answer_for(
        chat(USER, {"role": "assistant", "content": "ok"}, parts, tool="t"), CANNED, "accept"
    )
    assert json.loads("".join(answer.tokens)) == {"input": "a b"}


def test_without_a_tool_the_answer_is_text() -> None:
    assert answer_for(chat(USER), CANNED, "accept") == Answer(split_tokens(DEFAULT_ANSWER))


@pytest.mark.parametrize(
    "last",
    [
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]},
        {"role": "system", "content": "late system message"},
    ],
)
def test_a_tool_result_is_answered_with_text(last: dict[str, Any]) -> None:
    answer = answer_for(chat(USER, last, tool="lookup"), CANNED, "accept")
    assert answer == Answer(split_tokens(DEFAULT_ANSWER))
    echoed = answer_for(chat(USER, last, tool="lookup"), Answerer(echo=True), "accept")
    assert "".join(echoed.tokens) == "What is the weather?"


@pytest.mark.parametrize("mode", PREFILL_MODES)
def test_a_trailing_assistant_turn_is_never_a_tool_call(mode: PrefillMode) -> None:
    request = chat(USER, {"role": "assistant", "content": "This is"}, tool="lookup")
    if mode == "reject":
        with pytest.raises(BadRequest, match=PREFILL_REJECTED) as info:
            answer_for(request, CANNED, mode)
        assert info.value.param == "messages"
        return
    assert answer_for(request, CANNED, mode).tool is None


def test_accept_continues_a_matching_prefix() -> None:
    prefix = "This is the mo"
    answer = answer_for(chat(USER, {"role": "assistant", "content": prefix}), CANNED, "accept")
    assert answer.tokens == split_tokens(DEFAULT_ANSWER[len(prefix) :])
    assert answer.tokens[0] == "ck"
    assert prefix + "".join(answer.tokens) == DEFAULT_ANSWER


def test_accept_keeps_the_leading_space_of_the_remainder() -> None:
    prefix = [{"type": "text", "text": "This "}, {"type": "text", "text": "is"}]
    answer = answer_for(chat(USER, {"role": "assistant", "content": prefix}), CANNED, "accept")
    assert answer.tokens[0] == " the"
    assert "This is" + "".join(answer.tokens) == DEFAULT_ANSWER


def test_accept_with_a_foreign_prefix_gives_the_whole_answer() -> None:
    request = chat(USER, {"role": "assistant", "content": "Something else"})
    assert answer_for(request, CANNED, "accept") == Answer(split_tokens(DEFAULT_ANSWER))


def test_accept_with_echo_continues_the_echo() -> None:
    request = chat(
        {"role": "user", "content": "repeat after me"}, {"role": "assistant", "content": "repeat "}
    )
    assert answer_for(request, Answerer(echo=True), "accept").tokens == ("after", " me")


def test_ignore_answers_afresh() -> None:
    request = chat(USER, {"role": "assistant", "content": "This is the mo"})
    assert answer_for(request, CANNED, "ignore") == Answer(split_tokens(DEFAULT_ANSWER))


# ------------------------------------------------------------------------ wire bodies

CALL_REPLY = Reply(
    id="x-1",
    created=1,
    model="m",
    tokens=('{"input"', ':"hi"', "}"),
    prompt_tokens=1,
    truncated=False,
    tool_call=ToolCall("call_mock_0", "lookup"),
)


def test_openai_tool_call_completion() -> None:
    (choice,) = OPENAI.completion(CALL_REPLY)["choices"]  # type: ignore[misc]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_mock_0",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"input":"hi"}'},
            }
        ],
    }
    assert OPENAI.completion(CALL_REPLY)["usage"]["completion_tokens"] == 3  # type: ignore[index]


def test_openai_tool_call_stream_events() -> None:
    head = [json.loads(event.removeprefix(b"data: ")) for event in OPENAI.stream_head(CALL_REPLY)]
    assert [event["choices"][0]["delta"] for event in head] == [
        {"role": "assistant", "content": None},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_mock_0",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": ""},
                }
            ]
        },
    ]
    piece = json.loads(OPENAI.stream_chunk(CALL_REPLY, ':"hi"').removeprefix(b"data: "))
    assert piece["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, "function": {"arguments": ':"hi"'}}]
    }
    (finish,) = OPENAI.stream_tail(CALL_REPLY, include_usage=False)
    assert json.loads(finish.removeprefix(b"data: "))["choices"][0]["finish_reason"] == "tool_calls"


def test_anthropic_tool_use_message() -> None:
    body = ANTHROPIC.completion(CALL_REPLY)
    assert body["content"] == [
        {"type": "tool_use", "id": "call_mock_0", "name": "lookup", "input": {"input": "hi"}}
    ]
    assert body["stop_reason"] == "tool_use"
    assert body["usage"] == {"input_tokens": 1, "output_tokens": 3}


def test_anthropic_tool_use_stream_events() -> None:
    events = [event.split(b"\ndata: ") for event in ANTHROPIC.stream_head(CALL_REPLY)]
    start = json.loads(events[1][1])
    assert start["content_block"] == {
        "type": "tool_use",
        "id": "call_mock_0",
        "name": "lookup",
        "input": {},
    }
    delta = json.loads(ANTHROPIC.stream_chunk(CALL_REPLY, "}").split(b"\ndata: ")[1])
    assert delta["delta"] == {"type": "input_json_delta", "partial_json": "}"}
    message_delta = json.loads(ANTHROPIC.stream_tail(CALL_REPLY, True)[1].split(b"\ndata: ")[1])
    assert message_delta["delta"]["stop_reason"] == "tool_use"
    assert message_delta["usage"] == {"output_tokens": 3}


def test_truncated_tool_calls() -> None:
    cut = Reply(
        id="x",
        created=1,
        model="m",
        tokens=CALL_REPLY.tokens[:2],
        prompt_tokens=1,
        truncated=True,
        tool_call=CALL_REPLY.tool_call,
    )
    choice = OPENAI.completion(cut)["choices"][0]  # type: ignore[index]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"input":"hi"'
    body = ANTHROPIC.completion(cut)
    assert body["stop_reason"] == "max_tokens"
    assert body["content"][0]["input"] == {}  # type: ignore[index]


# ---------------------------------------------------------------------- tool parsing


def test_openai_tool_choice_variants() -> None:
    second = {"type": "function", "function": {"name": "second"}}
    base = {"model": "m", "messages": [USER], "tools": [OPENAI_TOOL, second]}
    assert OPENAI.parse_chat(base).tool == "lookup"
    assert OPENAI.parse_chat({**base, "tool_choice": "auto"}).tool == "lookup"
    assert OPENAI.parse_chat({**base, "tool_choice": "required"}).tool == "lookup"
    assert OPENAI.parse_chat({**base, "tool_choice": "none"}).tool is None
    named = {"type": "function", "function": {"name": "second"}}
    assert OPENAI.parse_chat({**base, "tool_choice": named}).tool == "second"
    assert OPENAI.parse_chat({"model": "m", "messages": [USER]}).tool is None
    assert OPENAI.parse_chat({"model": "m", "messages": [USER], "tools": None}).tool is None
    assert OPENAI.parse_chat({"model": "m", "messages": [USER], "tools": []}).tool is None


def test_anthropic_tool_choice_variants() -> None:
    second = {"name": "second", "input_schema": {}, "type": "custom"}
    base = {"model": "m", "max_tokens": 5, "messages": [USER], "tools": [ANTHROPIC_TOOL, second]}
    assert ANTHROPIC.parse_chat(base).tool == "lookup"
    for kind in ("auto", "any"):
        assert ANTHROPIC.parse_chat({**base, "tool_choice": {"type": kind}}).tool == "lookup"
    assert ANTHROPIC.parse_chat({**base, "tool_choice": {"type": "none"}}).tool is None
    named = {"type": "tool", "name": "second", "disable_parallel_tool_use": True}
    assert ANTHROPIC.parse_chat({**base, "tool_choice": named}).tool == "second"


@pytest.mark.parametrize(
    ("extra", "message", "param"),
    [
        ({"tools": {"a": 1}}, "'tools' must be a list", "tools"),
        ({"tools": ["lookup"]}, r"tools\[0\] must be an object", "tools"),
        ({"tools": [{"function": {"name": "x"}}]}, r"tools\[0\].type must be 'function'", "tools"),
        ({"tools": [{"type": "function"}]}, r"tools\[0\].function must be an object", "tools"),
        (
            {"tools": [OPENAI_TOOL, {"type": "function", "function": {"name": ""}}]},
            r"tools\[1\].function.name must be a non-empty string",
            "tools",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "x", "parameters": []}}]},
            r"tools\[0\].function.parameters must be an object",
            "tools",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "x", "description": 1}}]},
            r"tools\[0\].function.description must be a string",
            "tools",
        ),
        ({"tools": [OPENAI_TOOL], "tool_choice": "always"}, "'tool_choice' must be", "tool_choice"),
        (
            {"tools": [OPENAI_TOOL], "tool_choice": {"type": "function", "function": {}}},
            "tool_choice.function.name must be",
            "tool_choice",
        ),
        (
            {
                "tools": [OPENAI_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "other"}},
            },
            "names the tool 'other', not in 'tools'",
            "tool_choice",
        ),
    ],
)
def test_openai_bad_tools(extra: dict[str, object], message: str, param: str) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        OPENAI.parse_chat({"model": "m", "messages": [USER], **extra})
    assert info.value.param == param


@pytest.mark.parametrize(
    ("extra", "message", "param"),
    [
        ({"tools": "lookup"}, "'tools' must be a list", "tools"),
        ({"tools": [{"input_schema": {}}]}, r"tools\[0\].name must be a non-empty string", "tools"),
        ({"tools": [{"name": "x"}]}, r"tools\[0\].input_schema must be an object", "tools"),
        (
            {"tools": [{"name": "x", "input_schema": {}, "description": ["d"]}]},
            r"tools\[0\].description must be a string",
            "tools",
        ),
        (
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            r"tools\[0\].type must be 'custom' or absent",
            "tools",
        ),
        (
            {"tools": [ANTHROPIC_TOOL], "tool_choice": "auto"},
            "'tool_choice' must be",
            "tool_choice",
        ),
        (
            {"tools": [ANTHROPIC_TOOL], "tool_choice": {"type": "sometimes"}},
            "'tool_choice' must be",
            "tool_choice",
        ),
        (
            {"tools": [ANTHROPIC_TOOL], "tool_choice": {"type": "tool"}},
            "tool_choice.name must be",
            "tool_choice",
        ),
        (
            {"tool_choice": {"type": "tool", "name": "lookup"}},
            r"names the tool 'lookup', not in 'tools' \(declared: none\)",
            "tool_choice",
        ),
    ],
)
def test_anthropic_bad_tools(extra: dict[str, object], message: str, param: str) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        ANTHROPIC.parse_chat({"model": "m", "max_tokens": 5, "messages": [USER], **extra})
    assert info.value.param == param


# ------------------------------------------------------------------- settings and CLI


def test_prefill_setting() -> None:
    assert MockSettings().prefill is None
    assert MockSettings(prefill="reject").prefill == "reject"
    with pytest.raises(ValueError, match="prefill must be one of accept, reject, ignore"):
        MockSettings(prefill="sometimes")  # type: ignore[arg-type]


def test_prefill_flavour_defaults() -> None:
    assert OPENAI.default_prefill == "ignore"
    assert ANTHROPIC.default_prefill == "accept"


def test_prefill_cli_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args([]).prefill is None
    assert parse_args(["--prefill", "reject"]).prefill == "reject"
    with pytest.raises(SystemExit):
        parse_args(["--prefill", "maybe"])
    assert "invalid choice" in capsys.readouterr().err
