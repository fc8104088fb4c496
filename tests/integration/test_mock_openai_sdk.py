"""The OpenAI flavour through the official openai SDK: answers, streams, usage, embeddings."""

from __future__ import annotations

import openai
import pytest

from mock_provider.content import DEFAULT_ANSWER, count_tokens, split_tokens

MODEL = "gpt-4o"
PROMPT = "What is a mock provider?"
MESSAGES = [{"role": "user", "content": PROMPT}]
TOKENS = split_tokens(DEFAULT_ANSWER)


async def test_completion(openai_client: openai.AsyncOpenAI) -> None:
    raw = await openai_client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES
    )
    assert raw.status_code == 200
    assert raw.headers["x-mock-name"] == "mock-test"
    completion = raw.parse()
    assert completion.model == MODEL
    assert completion.id.startswith("chatcmpl-")
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == DEFAULT_ANSWER
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(TOKENS) == count_tokens(DEFAULT_ANSWER)
    assert completion.usage.prompt_tokens == count_tokens(PROMPT)
    assert completion.usage.total_tokens == len(TOKENS) + count_tokens(PROMPT)


async def test_response_model_echoes_the_request(openai_client: openai.AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(
        model="some-model-the-mock-does-not-list", messages=MESSAGES
    )
    assert completion.model == "some-model-the-mock-does-not-list"


async def test_stream_with_usage(openai_client: openai.AsyncOpenAI) -> None:
    raw = await openai_client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-mock-name"] == "mock-test"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = []
    async with raw.parse() as stream:
        chunks = [chunk async for chunk in stream]
    assert {chunk.model for chunk in chunks} == {MODEL}
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(content) == DEFAULT_ANSWER
    assert tuple(content) == TOKENS
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == len(content)
    assert usage_chunk.usage.prompt_tokens == count_tokens(PROMPT)
    assert sum(1 for c in chunks if c.usage is not None) == 1


async def test_stream_without_usage(openai_client: openai.AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    async with stream:
        chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_ANSWER


async def test_stream_ends_with_done_on_the_wire(openai_client: openai.AsyncOpenAI) -> None:
    async with openai_client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        body = b"".join([piece async for piece in response.iter_bytes()])
    events = body.split(b"\n\n")
    assert events[-1] == b""
    assert events[-2] == b"data: [DONE]"
    assert b'"choices":[]' in events[-3]  # the usage chunk comes right before [DONE]
    assert body.count(b"[DONE]") == 1
    assert all(event.startswith(b"data: ") for event in events[:-1])


@pytest.mark.parametrize("parameter", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_truncates(openai_client: openai.AsyncOpenAI, parameter: str) -> None:
    completion = await openai_client.chat.completions.create(
        model=MODEL, messages=MESSAGES, **{parameter: 5}
    )
    assert completion.choices[0].message.content == "".join(TOKENS[:5])
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5


async def test_max_tokens_truncates_streams(openai_client: openai.AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_completion_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    async with stream:
        chunks = [chunk async for chunk in stream]
    content = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert tuple(content) == TOKENS[:3]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


async def test_max_tokens_beyond_the_answer_is_a_normal_stop(
    openai_client: openai.AsyncOpenAI,
) -> None:
    completion = await openai_client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=len(TOKENS)
    )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == DEFAULT_ANSWER


async def test_echo_mode(mock_server, openai_for) -> None:
    client = openai_for(await mock_server(echo=True))
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first turn"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "echo these exact words"}]},
    ]
    completion = await client.chat.completions.create(model=MODEL, messages=messages)
    assert completion.choices[0].message.content == "echo these exact words"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    assert completion.usage.prompt_tokens == 3 + 2 + 1 + 4
    stream = await client.chat.completions.create(model=MODEL, messages=messages, stream=True)
    async with stream:
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "echo these exact words"


async def test_custom_answer(mock_server, openai_for) -> None:
    client = openai_for(await mock_server(answer="Short and sweet."))
    completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == "Short and sweet."
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


async def test_models_list(openai_client: openai.AsyncOpenAI) -> None:
    page = await openai_client.models.list()
    assert [model.id for model in page.data] == [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4",
        "text-embedding-3-small",
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
    ]
    assert {model.object for model in page.data} == {"model"}
    assert {model.owned_by for model in page.data} == {"mock"}


async def test_models_list_follows_the_setting(mock_server, openai_for) -> None:
    client = openai_for(await mock_server(models=("only-one",)))
    assert [model.id for model in (await client.models.list()).data] == ["only-one"]


# ------------------------------------------------------------------------------ embeddings

EMBEDDING_MODEL = "text-embedding-3-small"


async def test_embeddings_default_path_is_base64(openai_client: openai.AsyncOpenAI) -> None:
    """The SDK asks for base64 when no encoding_format is given and decodes it itself."""
    raw = await openai_client.embeddings.with_raw_response.create(
        model=EMBEDDING_MODEL, input=["alpha", "beta"]
    )
    assert raw.headers["x-mock-name"] == "mock-test"
    assert raw.http_request.read().find(b'"encoding_format":"base64"') != -1
    encoded = raw.parse()
    as_floats = await openai_client.embeddings.create(
        model=EMBEDDING_MODEL, input=["alpha", "beta"], encoding_format="float"
    )
    assert encoded.model == as_floats.model == EMBEDDING_MODEL
    assert [item.index for item in encoded.data] == [0, 1]
    for packed, floats in zip(encoded.data, as_floats.data, strict=True):
        assert len(packed.embedding) == len(floats.embedding) == 16
        assert packed.embedding == pytest.approx(floats.embedding, rel=1e-6, abs=1e-7)
    assert encoded.usage.prompt_tokens == encoded.usage.total_tokens == 2


async def test_embeddings_are_deterministic(openai_client: openai.AsyncOpenAI) -> None:
    first = await openai_client.embeddings.create(
        model=EMBEDDING_MODEL, input="same text", encoding_format="float"
    )
    again = await openai_client.embeddings.create(
        model=EMBEDDING_MODEL, input=["other text", "same text"], encoding_format="float"
    )
    assert first.data[0].embedding == again.data[1].embedding
    assert first.data[0].embedding != again.data[0].embedding
    assert sum(x * x for x in first.data[0].embedding) == pytest.approx(1.0)


async def test_embeddings_dimensions(openai_client: openai.AsyncOpenAI) -> None:
    response = await openai_client.embeddings.create(
        model=EMBEDDING_MODEL, input="x", dimensions=64
    )
    assert len(response.data[0].embedding) == 64


async def test_embeddings_faults_and_errors(openai_client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        await openai_client.embeddings.create(
            model=EMBEDDING_MODEL, input="x", extra_query={"fail": "429", "retry_after": "3"}
        )
    assert info.value.response.headers["retry-after"] == "3"
    with pytest.raises(openai.BadRequestError, match="'dimensions' must be between"):
        await openai_client.embeddings.create(model=EMBEDDING_MODEL, input="x", dimensions=0)
