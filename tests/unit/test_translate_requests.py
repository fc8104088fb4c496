"""Request translation, OpenAI ⇄ Anthropic: every mapped field, every refusal, round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.providers.requests import Untranslatable, anthropic_to_openai, openai_to_anthropic

USER = {"role": "user", "content": "hi"}
FUNCTION = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}
CUSTOM = {
    "name": "lookup",
    "description": "Look something up",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
}


def to_anthropic(default_max_tokens: int = 4096, **body: Any) -> dict[str, Any]:
    body.setdefault("model", "claude-sonnet-4-6")
    body.setdefault("messages", [USER])
    return openai_to_anthropic(body, default_max_tokens)


def to_openai(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "gpt-4o")
    body.setdefault("messages", [USER])
    body.setdefault("max_tokens", 100)
    return anthropic_to_openai(body)


def refused(function: Any, **body: Any) -> str:
    with pytest.raises(Untranslatable) as caught:
        function(**body)
    return caught.value.field


# -- OpenAI -> Anthropic: messages ------------------------------------------------------


def test_minimal_request() -> None:
    assert to_anthropic() == {
        "model": "claude-sonnet-4-6",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 4096,
    }


def test_system_and_developer_messages_become_one_system_prompt() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    out = to_anthropic(
        messages=[
            {"role": "system", "content": "be brief"},
            USER,
            {"role": "developer", "content": parts},
        ]
    )
    assert out["system"] == "be brief\n\na\nb"
    assert [m["role"] for m in out["messages"]] == ["user"]


def test_user_text_parts_become_text_blocks() -> None:
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    out = to_anthropic(messages=[{"role": "user", "content": parts}])
    assert out["messages"] == [{"role": "user", "content": parts}]


def test_assistant_text_and_tool_calls_become_text_and_tool_use_blocks() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
    }
    assistant = {"role": "assistant", "content": "let me look", "tool_calls": [call]}
    out = to_anthropic(messages=[USER, assistant])
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "let me look"},
            {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "x"}},
        ],
    }


def test_tool_call_with_empty_arguments_has_an_empty_input() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "now", "arguments": ""}}
    out = to_anthropic(
        messages=[USER, {"role": "assistant", "content": None, "tool_calls": [call]}]
    )
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c", "name": "now", "input": {}}
    ]


def test_tool_messages_become_tool_results_in_one_user_turn() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}}
    call2 = {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}}
    out = to_anthropic(
        messages=[
            USER,
            {"role": "assistant", "content": None, "tool_calls": [call, call2]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "7"}]},
            {"role": "user", "content": "and so?"},
        ]
    )
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "42"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "7"},
        {"type": "text", "text": "and so?"},
    ]


def test_consecutive_turns_of_one_role_are_merged() -> None:
    out = to_anthropic(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "system", "content": "s"},  # hoisted: does not break the run
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": "d"},
        ]
    )
    assert out["system"] == "s"
    a, b, c, d = ({"type": "text", "text": letter} for letter in "abcd")
    assert out["messages"] == [
        {"role": "user", "content": [a, b]},
        {"role": "assistant", "content": [c, d]},
    ]


# -- OpenAI -> Anthropic: parameters ----------------------------------------------------


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ({}, 333),
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 60}, 60),
        ({"max_completion_tokens": 60, "max_tokens": 50}, 60),
        ({"max_tokens": None}, 333),
    ],
)
def test_max_tokens(given: dict[str, Any], sent: int) -> None:
    assert to_anthropic(333, **given)["max_tokens"] == sent


@pytest.mark.parametrize(("given", "sent"), [(0.2, 0.2), (1, 1.0), (1.7, 1.0), (2, 1.0)])
def test_temperature_is_clamped_to_anthropics_range(given: float, sent: float) -> None:
    assert to_anthropic(temperature=given)["temperature"] == sent


def test_top_p_is_copied() -> None:
    assert to_anthropic(top_p=0.9)["top_p"] == 0.9


@pytest.mark.parametrize(
    ("stop", "sequences"), [("END", ["END"]), (["a", "b"], ["a", "b"]), ([], None), (None, None)]
)
def test_stop_becomes_stop_sequences(stop: object, sequences: list[str] | None) -> None:
    assert to_anthropic(stop=stop).get("stop_sequences") == sequences


def test_stream_is_kept_and_stream_options_dropped() -> None:
    out = to_anthropic(stream=True, stream_options={"include_usage": True})
    assert out["stream"] is True
    assert "stream_options" not in out  # Anthropic streams always carry usage
    assert "stream" not in to_anthropic(stream=False)


def test_user_becomes_metadata_user_id() -> None:
    assert to_anthropic(user="u-42")["metadata"] == {"user_id": "u-42"}


def test_fields_without_effect_on_the_answer_are_dropped() -> None:
    out = to_anthropic(
        seed=7,
        store=True,
        service_tier="auto",
        metadata={"k": "v"},
        stream_options={"include_usage": True},
        n=1,
        logprobs=False,
        presence_penalty=0,
        frequency_penalty=0.0,
        logit_bias={},
        response_format={"type": "text"},
        tool_choice="required",  # no tools: nothing to choose from
    )
    assert set(out) == {"model", "messages", "max_tokens"}


# -- OpenAI -> Anthropic: tools ---------------------------------------------------------


def test_function_tools_become_custom_tools() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    out = to_anthropic(tools=[FUNCTION, bare])
    assert out["tools"] == [
        CUSTOM,
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out  # auto is Anthropic's default


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", None),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "lookup"}}, {"type": "tool", "name": "lookup"}),
    ],
)
def test_tool_choice(choice: object, sent: object) -> None:
    assert to_anthropic(tools=[FUNCTION], tool_choice=choice).get("tool_choice") == sent


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (None, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", {"type": "any", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "lookup"}},
            {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
        ),
        ("none", {"type": "none"}),  # Anthropic's "none" takes no other field
    ],
)
def test_parallel_tool_calls_false_disables_parallel_tool_use(choice: object, sent: object) -> None:
    body: dict[str, Any] = {"tools": [FUNCTION], "parallel_tool_calls": False}
    if choice is not None:
        body["tool_choice"] = choice
    assert to_anthropic(**body)["tool_choice"] == sent


def test_parallel_tool_calls_true_changes_nothing() -> None:
    assert "tool_choice" not in to_anthropic(tools=[FUNCTION], parallel_tool_calls=True)


# -- OpenAI -> Anthropic: refusals ------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.5),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
    ],
)
def test_openai_only_fields_are_refused_by_name(field: str, value: object) -> None:
    assert refused(to_anthropic, **{field: value}) == field


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content",
        ),
        (
            [USER, {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            "messages[1].content",
        ),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content",
        ),
        ([USER, {"role": "function", "name": "f", "content": "x"}], "messages[1].role"),
        (
            [
                USER,
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}],
                },
            ],
            "messages[1].tool_calls",
        ),
        (
            [USER, {"role": "tool", "tool_call_id": "c", "content": [{"type": "image_url"}]}],
            "messages[1].content",
        ),
    ],
    ids=["image", "audio", "system-image", "function-role", "bad-arguments", "tool-image"],
)
def test_untranslatable_messages_are_refused_by_position(
    messages: list[dict[str, Any]], field: str
) -> None:
    assert refused(to_anthropic, messages=messages) == field


def test_non_function_tools_are_refused() -> None:
    tools = [FUNCTION, {"type": "custom", "custom": {"name": "grammar"}}]
    assert refused(to_anthropic, tools=tools) == "tools[1]"


@pytest.mark.parametrize("choice", ["sometimes", {"type": "allowed_tools", "allowed_tools": {}}])
def test_unknown_tool_choice_is_refused(choice: object) -> None:
    assert refused(to_anthropic, tools=[FUNCTION], tool_choice=choice) == "tool_choice"


def test_the_refusal_names_the_field_in_its_message() -> None:
    with pytest.raises(Untranslatable, match="'n' > 1"):
        to_anthropic(n=3)


# -- Anthropic -> OpenAI: messages ------------------------------------------------------


def test_minimal_anthropic_request() -> None:
    assert to_openai() == {"model": "gpt-4o", "messages": [USER], "max_tokens": 100}


@pytest.mark.parametrize(
    ("system", "content"),
    [
        ("be brief", "be brief"),
        ([{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
          {"type": "text", "text": "b"}], "a\nb"),
    ],
)  # fmt: skip
def test_system_becomes_the_first_message(system: object, content: str) -> None:
    out = to_openai(system=system)
    assert out["messages"][0] == {"role": "system", "content": content}
    assert out["messages"][1] == USER


def test_user_text_blocks_are_joined() -> None:
    blocks = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    out = to_openai(messages=[{"role": "user", "content": blocks}])
    assert out["messages"] == [{"role": "user", "content": "one\ntwo"}]


def test_assistant_text_and_tool_use_become_content_and_tool_calls() -> None:
    blocks = [
        {"type": "text", "text": "let me "},
        {"type": "text", "text": "look"},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
    ]
    out = to_openai(messages=[USER, {"role": "assistant", "content": blocks}])
    message = out["messages"][1]
    assert message["role"] == "assistant"
    assert message["content"] == "let me look"
    [call] = message["tool_calls"]
    assert call["id"] == "toolu_1"
    assert call["type"] == "function"
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"q": "x"}


def test_assistant_string_and_tool_use_only() -> None:
    use = {"type": "tool_use", "id": "t", "name": "now", "input": {}}
    out = to_openai(
        messages=[
            USER,
            {"role": "assistant", "content": "sure"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": [use]},
        ]
    )
    assert out["messages"][1] == {"role": "assistant", "content": "sure"}
    assert out["messages"][3]["content"] is None
    assert out["messages"][3]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_tool_results_become_tool_messages_before_the_user_text() -> None:
    content = [
        {"type": "text", "text": "here you go"},
        {"type": "tool_result", "tool_use_id": "t1", "content": "42"},
        {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "7"}]},
    ]
    out = to_openai(messages=[USER, {"role": "user", "content": content}])
    assert out["messages"][1:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "42"},
        {"role": "tool", "tool_call_id": "t2", "content": "7"},
        {"role": "user", "content": "here you go"},
    ]


# -- Anthropic -> OpenAI: parameters ----------------------------------------------------


def test_sampling_parameters_are_copied() -> None:
    out = to_openai(max_tokens=77, temperature=0.5, top_p=0.8, stop_sequences=["END", "STOP"])
    assert out["max_tokens"] == 77
    assert out["temperature"] == 0.5
    assert out["top_p"] == 0.8
    assert out["stop"] == ["END", "STOP"]
    assert "stop" not in to_openai(stop_sequences=[])


def test_a_stream_always_asks_for_usage() -> None:
    out = to_openai(stream=True)
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert "stream_options" not in to_openai(stream=False)


def test_metadata_user_id_becomes_user() -> None:
    assert to_openai(metadata={"user_id": "u-42"})["user"] == "u-42"
    assert "user" not in to_openai(metadata={})


def test_anthropic_fields_without_effect_on_the_answer_are_dropped() -> None:
    out = to_openai(service_tier="auto", metadata={"other": 1}, tool_choice={"type": "auto"})
    assert set(out) == {"model", "messages", "max_tokens"}


def test_custom_tools_become_function_tools() -> None:
    bare = {"name": "now", "type": "custom"}
    out = to_openai(tools=[CUSTOM, bare])
    empty = {"type": "object", "properties": {}}
    assert out["tools"] == [
        FUNCTION,
        {"type": "function", "function": {"name": "now", "parameters": empty}},
    ]
    assert "tool_choice" not in out


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ({"type": "auto"}, {}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "lookup"},
            {"tool_choice": {"type": "function", "function": {"name": "lookup"}}},
        ),
        ({"type": "auto", "disable_parallel_tool_use": True}, {"parallel_tool_calls": False}),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
    ],
)
def test_anthropic_tool_choice(choice: dict[str, Any], sent: dict[str, Any]) -> None:
    out = to_openai(tools=[CUSTOM], tool_choice=choice)
    assert {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out} == sent


# -- Anthropic -> OpenAI: refusals ------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_k", 5),
        ("thinking", {"type": "enabled", "budget_tokens": 1024}),
        ("container", "container_1"),
        ("mcp_servers", [{"type": "url", "url": "https://x", "name": "x"}]),
    ],
)
def test_anthropic_only_fields_are_refused_by_name(field: str, value: object) -> None:
    assert refused(to_openai, **{field: value}) == field


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"role": "user", "content": [{"type": "image", "source": {}}]}, "messages[1].content"),
        ({"role": "user", "content": [{"type": "document", "source": {}}]}, "messages[1].content"),
        (
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}]},
            "messages[1].content",
        ),
        ({"role": "system", "content": "x"}, "messages[1].role"),
        (
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image"}]}]},
            "messages[1]",
        ),
    ],
    ids=["image", "document", "thinking", "system-role", "tool-result-image"],
)  # fmt: skip
def test_untranslatable_blocks_are_refused_by_position(message: dict[str, Any], field: str) -> None:
    assert refused(to_openai, messages=[USER, message]) == field


def test_system_with_an_image_is_refused() -> None:
    assert refused(to_openai, system=[{"type": "image", "source": {}}]) == "system"


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "web_search_20250305", "name": "web_search"},
        {"type": "bash_20250124", "name": "bash"},
        {"description": "no name", "input_schema": {}},
    ],
    ids=["server-tool", "client-tool", "nameless"],
)
def test_tools_that_are_not_custom_are_refused(tool: dict[str, Any]) -> None:
    assert refused(to_openai, tools=[CUSTOM, tool]) == "tools[1]"


def test_unknown_anthropic_tool_choice_is_refused() -> None:
    assert refused(to_openai, tools=[CUSTOM], tool_choice={"type": "some"}) == "tool_choice"


# -- round trips -------------------------------------------------------------------------


def test_an_openai_tool_conversation_survives_a_round_trip() -> None:
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}},
        {"id": "c2", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 2}'}},
    ]
    messages = [
        {"role": "system", "content": "be brief"},
        USER,
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "assistant", "content": "done"},
    ]
    there = to_anthropic(messages=messages, tools=[FUNCTION], tool_choice="required", stop="X")
    back = anthropic_to_openai(there)
    assert back["tools"] == [FUNCTION]
    assert back["tool_choice"] == "required"
    assert back["stop"] == ["X"]
    got = back["messages"]
    assert [m["role"] for m in got] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert got[0]["content"] == "be brief"
    assert [c["id"] for c in got[2]["tool_calls"]] == ["c1", "c2"]
    assert [json.loads(c["function"]["arguments"]) for c in got[2]["tool_calls"]] == [
        {"q": 1},
        {"q": 2},
    ]
    assert got[3:5] == messages[3:5]
    assert got[5] == {"role": "assistant", "content": "done"}


def test_an_anthropic_tool_conversation_survives_a_round_trip() -> None:
    messages = [
        USER,
        {"role": "assistant", "content": [
            {"type": "text", "text": "checking"},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}]},
    ]  # fmt: skip
    there = to_openai(
        system="be brief",
        messages=messages,
        tools=[CUSTOM],
        tool_choice={"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
        stop_sequences=["X"],
        temperature=0.5,
    )
    back = openai_to_anthropic(there, 4096)
    assert back["system"] == "be brief"
    assert back["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        messages[1],
        messages[2],
    ]
    assert back["tools"] == [CUSTOM]
    assert back["tool_choice"] == {
        "type": "tool",
        "name": "lookup",
        "disable_parallel_tool_use": True,
    }
    assert back["stop_sequences"] == ["X"]
    assert back["temperature"] == 0.5
    assert back["max_tokens"] == 100
