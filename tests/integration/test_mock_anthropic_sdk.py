"""The Anthropic flavour through the official anthropic SDK: messages, streams, usage, models."""

from __future__ import annotations

import anthropic

from mock_provider.content import DEFAULT_ANSWER, count_tokens, split_tokens

MODEL = "claude-sonnet-4-6"
PROMPT = "What is a mock provider?"
MESSAGES = [{"role": "user", "content": PROMPT}]
TOKENS = split_tokens(DEFAULT_ANSWER)


async def test_message(anthropic_client: anthropic.AsyncAnthropic) -> None:
    raw = await anthropic_client.messages.with_raw_response.create(
        model=MODEL, max_tokens=1024, messages=MESSAGES
    )
    assert raw.status_code == 200
    assert raw.headers["x-mock-name"] == "mock-test"
    message = await raw.parse()
    assert message.model == MODEL
    assert message.id.startswith("msg_")
    assert message.role == "assistant"
    assert message.type == "message"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == DEFAULT_ANSWER
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(TOKENS)
    assert message.usage.input_tokens == count_tokens(PROMPT)


async def test_system_prompt_counts_as_input(anthropic_client: anthropic.AsyncAnthropic) -> None:
    message = await anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=1024,
        system=[{"type": "text", "text": "You are a very small mock."}],
        messages=MESSAGES,
    )
    assert message.model == "claude-haiku-4-5"
    assert message.usage.input_tokens == count_tokens(PROMPT) + 6


async def test_stream_events(anthropic_client: anthropic.AsyncAnthropic) -> None:
    raw = await anthropic_client.messages.with_raw_response.create(
        model=MODEL, max_tokens=1024, messages=MESSAGES, stream=True
    )
    assert raw.headers["x-mock-name"] == "mock-test"
    assert raw.headers["content-type"].startswith("text/event-stream")
    async with await raw.parse() as stream:
        events = [event async for event in stream]
    kinds = [event.type for event in events]
    deltas = [event.delta.text for event in events if event.type == "content_block_delta"]
    assert kinds == [
        "message_start",
        "content_block_start",  # then a ping, which the SDK swallows
        *["content_block_delta"] * len(TOKENS),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert tuple(deltas) == TOKENS
    start, delta = events[0], events[-2]
    assert start.message.model == MODEL
    assert start.message.usage.input_tokens == count_tokens(PROMPT)
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == len(deltas)


async def test_stream_helper_final_message(anthropic_client: anthropic.AsyncAnthropic) -> None:
    async with anthropic_client.messages.stream(
        model=MODEL, max_tokens=1024, messages=MESSAGES
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(pieces) == DEFAULT_ANSWER
    assert final.content[0].text == DEFAULT_ANSWER
    assert final.usage.output_tokens == len(pieces)
    assert final.stop_reason == "end_turn"


async def test_stream_ends_with_message_stop_on_the_wire(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    async with anthropic_client.messages.with_streaming_response.create(
        model=MODEL, max_tokens=1024, messages=MESSAGES, stream=True
    ) as response:
        body = b"".join([piece async for piece in response.iter_bytes()])
    events = body.split(b"\n\n")
    assert events[-1] == b""
    assert events[-2] == b'event: message_stop\ndata: {"type":"message_stop"}'
    assert body.count(b"message_stop") == 2  # the event line and its data
    assert events[2] == b'event: ping\ndata: {"type":"ping"}'
    assert all(event.startswith(b"event: ") for event in events[:-1])


async def test_max_tokens_truncates(anthropic_client: anthropic.AsyncAnthropic) -> None:
    message = await anthropic_client.messages.create(model=MODEL, max_tokens=4, messages=MESSAGES)
    assert message.content[0].text == "".join(TOKENS[:4])
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 4
    async with anthropic_client.messages.stream(
        model=MODEL, max_tokens=4, messages=MESSAGES
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert tuple(pieces) == TOKENS[:4]
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 4


async def test_echo_mode(mock_server, anthropic_for) -> None:
    client = anthropic_for(await mock_server(echo=True))
    messages = [
        {"role": "user", "content": "first turn"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "echo   me back"}]},
    ]
    message = await client.messages.create(model=MODEL, max_tokens=1024, messages=messages)
    assert message.content[0].text == "echo   me back"
    assert message.usage.output_tokens == 3
    async with client.messages.stream(model=MODEL, max_tokens=1024, messages=messages) as stream:
        assert "".join([text async for text in stream.text_stream]) == "echo   me back"


async def test_models_list(anthropic_client: anthropic.AsyncAnthropic) -> None:
    page = await anthropic_client.models.list()
    ids = [model.id for model in page.data]
    assert ids[-2:] == ["claude-sonnet-4-6", "claude-haiku-4-5"]
    assert len(ids) == 6
    assert {model.type for model in page.data} == {"model"}
    assert page.data[-1].display_name == "claude-haiku-4-5"
    assert page.first_id == ids[0]
    assert page.last_id == ids[-1]
    assert page.has_more is False


async def test_models_list_follows_the_setting(mock_server, anthropic_for) -> None:
    client = anthropic_for(await mock_server(models=("claude-haiku-4-5",)))
    page = await client.models.list()
    assert [model.id for model in page.data] == ["claude-haiku-4-5"]
