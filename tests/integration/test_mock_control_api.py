"""The control API (/config/failures), /stats and /health, driven over HTTP, checked via SDKs."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest

from mock_provider.content import DEFAULT_ANSWER
from mock_provider.control import KNOBS
from mock_provider.faults import VOCABULARY
from mock_provider.state import STATE

OPENAI_MODEL = "gpt-4o"
ANTHROPIC_MODEL = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "hello"}]


async def configure(http, body: object) -> dict[str, object]:
    async with http.post("/config/failures", json=body) as response:
        assert response.status == 200, await response.text()
        assert response.headers["x-mock-name"] == "mock-test"
        return await response.json()


async def get_json(http, path: str) -> dict[str, object]:
    async with http.get(path) as response:
        assert response.status == 200
        assert response.headers["x-mock-name"] == "mock-test"
        return await response.json()


async def openai_outcome(client: openai.AsyncOpenAI, model: str = OPENAI_MODEL) -> str:
    """'200', the error status, or 'reset' for one non-streaming request."""
    try:
        await client.chat.completions.create(model=model, messages=MESSAGES)
    except openai.APIStatusError as exc:
        return str(exc.status_code)
    except openai.APIConnectionError:
        return "reset"
    return "200"


async def anthropic_outcome(client: anthropic.AsyncAnthropic, model: str = ANTHROPIC_MODEL) -> str:
    try:
        await client.messages.create(model=model, max_tokens=64, messages=MESSAGES)
    except anthropic.APIStatusError as exc:
        return str(exc.status_code)
    except anthropic.APIConnectionError:
        return "reset"
    return "200"


async def test_health(http) -> None:
    assert await get_json(http, "/health") == {"status": "healthy", "name": "mock-test"}


async def test_unconfigured_state(http) -> None:
    config = await get_json(http, "/config/failures")
    assert config["probabilities"] == {}
    assert config["seed"] is None
    assert config["script"] == config["script_remaining"] == []
    assert {knob: config[knob] for knob in KNOBS} == KNOBS
    assert set(config["vocabulary"]) == set(VOCABULARY)


async def test_scripted_sequence_in_order(http, openai_client) -> None:
    await configure(http, {"script": [{"fail": 429, "retry_after": 1}, {"fail": 500}, {}]})
    with pytest.raises(openai.RateLimitError) as info:
        await openai_client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "1"
    config = await get_json(http, "/config/failures")
    assert config["script_remaining"] == [{"fail": 500}, {}]
    assert len(config["script"]) == 3  # the configuration itself is unchanged
    with pytest.raises(openai.InternalServerError) as error:
        await openai_client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert error.value.status_code == 500
    for _ in range(2):  # the "{}" entry, then the script is used up
        completion = await openai_client.chat.completions.create(
            model=OPENAI_MODEL, messages=MESSAGES
        )
        assert completion.choices[0].message.content == DEFAULT_ANSWER
    assert (await get_json(http, "/config/failures"))["script_remaining"] == []


async def test_scripted_sequence_anthropic(http, anthropic_client) -> None:
    await configure(
        http, {"script": [{"fail": 529, "retry_after": 2}, {"fail": "timeout", "timeout_ms": 1}]}
    )
    with pytest.raises(anthropic.OverloadedError) as info:
        await anthropic_client.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES
        )
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.type == "overloaded_error"
    with pytest.raises(anthropic.GatewayTimeoutError):
        await anthropic_client.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES
        )
    assert await anthropic_outcome(anthropic_client) == "200"


async def test_script_is_shared_by_both_flavours_and_embeddings(
    http, openai_client, anthropic_client
) -> None:
    await configure(http, {"script": [{"fail": 500}, {"fail": 503}, {"fail": 429}]})
    assert await anthropic_outcome(anthropic_client) == "500"
    with pytest.raises(openai.InternalServerError) as info:
        await openai_client.embeddings.create(model="text-embedding-3-small", input="x")
    assert info.value.status_code == 503
    assert await openai_outcome(openai_client) == "429"
    assert await openai_outcome(openai_client) == "200"


async def test_model_scoped_script_entries(http, openai_client, anthropic_client) -> None:
    await configure(
        http,
        {
            "script": [
                {"model": ANTHROPIC_MODEL, "fail": 529},
                {"model": "gpt-4o-mini", "fail": 503},
                {"fail": 500},
                {"model": ANTHROPIC_MODEL, "fail": "reset"},
            ]
        },
    )
    assert await openai_outcome(openai_client) == "500"  # skips both scoped entries
    assert await openai_outcome(openai_client) == "200"
    assert await anthropic_outcome(anthropic_client, "claude-sonnet-4-6") == "200"
    assert await openai_outcome(openai_client, "gpt-4o-mini") == "503"
    assert await openai_outcome(openai_client, "gpt-4o-mini") == "200"
    remaining = (await get_json(http, "/config/failures"))["script_remaining"]
    assert remaining == [
        {"model": ANTHROPIC_MODEL, "fail": 529},
        {"model": ANTHROPIC_MODEL, "fail": "reset"},
    ]
    assert await anthropic_outcome(anthropic_client) == "529"
    assert await anthropic_outcome(anthropic_client) == "reset"
    assert await anthropic_outcome(anthropic_client) == "200"


async def test_explicit_faults_do_not_consume_the_script(http, openai_client) -> None:
    await configure(http, {"script": [{"fail": 500}], "rate_limit": 1.0})
    completion = await openai_client.chat.completions.create(
        model=OPENAI_MODEL, messages=MESSAGES, extra_query={"delay": "0"}
    )
    assert completion.choices[0].message.content == DEFAULT_ANSWER
    with pytest.raises(openai.APIStatusError) as info:
        await openai_client.chat.completions.create(
            model=OPENAI_MODEL, messages=MESSAGES, extra_headers={"x-mock-fail": "418"}
        )
    assert info.value.status_code == 418
    assert (await get_json(http, "/config/failures"))["script_remaining"] == [{"fail": 500}]
    assert await openai_outcome(openai_client) == "500"
    assert await openai_outcome(openai_client) == "429"  # then the dice: rate_limit=1


SEEDED = {
    "seed": 2024,
    "rate_limit_probability": 0.25,
    "server_error": 0.15,
    "overloaded": 0.1,
    "reset": 0.1,
    "stream_cut": 0.2,  # streams only: these draws answer plain requests normally
    "retry_after": 1,
}
DRAWS = 40


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
async def test_seeded_probabilities_repeat(http, openai_client, anthropic_client, flavour) -> None:
    async def run() -> list[str]:
        shown = await configure(http, SEEDED)
        assert shown["seed"] == 2024
        if flavour == "openai":
            return [await openai_outcome(openai_client) for _ in range(DRAWS)]
        return [await anthropic_outcome(anthropic_client) for _ in range(DRAWS)]

    first = await run()
    second = await run()
    assert first == second
    overloaded = "503" if flavour == "openai" else "529"
    assert {"200", "429", "500", overloaded, "reset"} == set(first)
    stats = await get_json(http, "/stats")
    by_outcome = stats["by_outcome"]
    assert by_outcome["429"] == 2 * first.count("429")
    assert by_outcome["reset"] == 2 * first.count("reset")
    assert stats["total"] == 2 * DRAWS


async def test_a_different_seed_gives_a_different_sequence(http, openai_client) -> None:
    await configure(http, SEEDED)
    first = [await openai_outcome(openai_client) for _ in range(DRAWS)]
    await configure(http, {**SEEDED, "seed": 2025})
    assert [await openai_outcome(openai_client) for _ in range(DRAWS)] != first


async def test_get_shows_the_config_and_delete_resets(http, openai_client) -> None:
    body = {
        "timeout_probability": 0.1,
        "hang": 0.05,
        "stall_ms": 10,
        "chunk": 1,
        "seed": 5,
        "script": [{"model": "gpt-4o-mini", "fail": 502}, {"fail": 429, "retry_after": 1.5}],
    }
    posted = await configure(http, body)
    shown = await get_json(http, "/config/failures")
    assert shown == posted
    assert shown["probabilities"] == {"timeout": 0.1, "hang": 0.05}
    assert shown["stall_ms"] == 10
    assert shown["chunk"] == 1
    assert shown["seed"] == 5
    assert shown["script"] == shown["script_remaining"] == body["script"]

    async with http.delete("/config/failures") as response:
        assert response.status == 200
        reset = await response.json()
    assert reset == await get_json(http, "/config/failures")
    assert reset["probabilities"] == {}
    assert reset["seed"] is None
    assert reset["script"] == reset["script_remaining"] == []
    assert reset["stall_ms"] == KNOBS["stall_ms"]
    assert [await openai_outcome(openai_client) for _ in range(5)] == ["200"] * 5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rate_limit": 0.5, "bogus": 1}, "unknown key 'bogus'; valid: timeout, rate_limit"),
        ({"rate_limit": 0.7, "server_error": 0.6}, "probabilities add up to 1.3"),
        ({"reset": 2}, "reset must be a probability between 0 and 1"),
        ({"seed": "abc"}, "seed must be an integer"),
        ({"script": [{}, {"fail": "sometimes"}]}, "script[1]: unknown fail value 'sometimes'"),
        ({"script": [{"fail": "\u00b2"}]}, "script[0]: unknown fail value"),
        ({"script": [{}, {}, 7]}, "script[2] must be an object"),
        ([1, 2], "body must be a JSON object"),
    ],
)
async def test_bad_config_is_a_400_naming_the_problem(http, body: object, message: str) -> None:
    before = await configure(http, {"script": [{"fail": 500}]})
    async with http.post("/config/failures", json=body) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"
    assert await get_json(http, "/config/failures") == before  # the old config stays


@pytest.mark.parametrize(
    ("data", "message"), [(b"", "body is empty"), (b"{not json", "not valid JSON")]
)
async def test_config_body_must_be_json(http, data: bytes, message: str) -> None:
    async with http.post(
        "/config/failures", data=data, headers={"content-type": "application/json"}
    ) as response:
        assert response.status == 400
        assert message in (await response.json())["error"]["message"]


# ----------------------------------------------------------------------------------- stats


async def test_stats_count_by_path_model_and_outcome(
    http, mock, openai_client, anthropic_client
) -> None:
    await openai_client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    stream = await openai_client.chat.completions.create(
        model=OPENAI_MODEL, messages=MESSAGES, stream=True
    )
    async with stream:
        async for _ in stream:
            pass
    assert await openai_outcome(openai_client, "gpt-4o-mini") == "200"
    await configure(http, {"script": [{"fail": 429}]})
    assert await openai_outcome(openai_client) == "429"
    await anthropic_client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES)
    with pytest.raises(anthropic.APIConnectionError):
        await anthropic_client.messages.create(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=MESSAGES, extra_query={"fail": "reset"}
        )
    await openai_client.embeddings.create(model="text-embedding-3-small", input="x")
    async with http.post("/v1/chat/completions", json={"model": OPENAI_MODEL}) as response:
        assert response.status == 400
    # Not counted: models, health, config and stats themselves.
    await openai_client.models.list()
    await anthropic_client.models.list()
    await get_json(http, "/health")
    await asyncio.wait_for(mock.app[STATE].stats.wait_idle(), timeout=5)

    stats = await get_json(http, "/stats")
    assert stats["total"] == 8
    assert stats["in_flight"] == 0
    assert stats["by_path"] == {
        "/v1/chat/completions": 5,
        "/v1/messages": 2,
        "/v1/embeddings": 1,
    }
    assert stats["by_model"] == {
        OPENAI_MODEL: 3,
        "gpt-4o-mini": 1,
        ANTHROPIC_MODEL: 2,
        "text-embedding-3-small": 1,
        "-": 1,
    }
    assert stats["by_outcome"] == {"ok": 5, "429": 1, "reset": 1, "bad_request": 1}
    assert {"path": "/v1/messages", "model": ANTHROPIC_MODEL, "outcome": "reset", "count": 1} in (
        stats["detail"]
    )

    async with http.post("/stats/reset") as response:
        assert response.status == 200
        cleared = await response.json()
    assert cleared["total"] == 0
    assert cleared["by_path"] == cleared["by_model"] == cleared["by_outcome"] == {}
    assert cleared["detail"] == []
    assert await get_json(http, "/stats") == cleared
    await openai_client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert (await get_json(http, "/stats"))["by_outcome"] == {"ok": 1}


async def test_stats_show_requests_in_flight(watched_server, http_for, openai_for) -> None:
    server, arrived = await watched_server(name="mock-test")
    http = http_for(server)
    client = openai_for(server)
    task = asyncio.create_task(
        client.chat.completions.create(
            model=OPENAI_MODEL, messages=MESSAGES, extra_query={"fail": "hang"}
        )
    )
    await asyncio.wait_for(arrived.wait(), timeout=5)
    stats = await get_json(http, "/stats")
    assert stats["in_flight"] == 1
    assert stats["total"] == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.app[STATE].stats.wait_idle(), timeout=5)
    stats = await get_json(http, "/stats")
    assert stats["in_flight"] == 0
    assert stats["by_outcome"] == {"hang": 1}
