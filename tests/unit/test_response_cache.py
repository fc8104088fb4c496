"""The response cache's pure parts: keys, when a request is cacheable, the LRU with TTL
(fake clock), size refusal, the Redis path with local fallback, and stream <-> JSON."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest

from sidecar.cache.assemble import Assembler
from sidecar.cache.key import cache_key, cacheable
from sidecar.cache.render import render, replayable
from sidecar.cache.store import LRU, Caches, Entry, ResponseCache
from sidecar.policy.model import Cache
from sidecar.resilience.clock import FakeClock
from sidecar.shared.redis import SharedStore

BODY: dict[str, object] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0,
}


def key(body: dict[str, object], route: str = "chat", fmt: str = "openai") -> str:
    return cache_key(route, fmt, "POST", "/v1/chat/completions", body, {})


def test_key_ignores_key_order_stream_flag_and_user() -> None:
    reordered = {
        "temperature": 0,
        "messages": [{"content": "hi", "role": "user"}],
        "model": "gpt-4o",
    }
    variants = [
        reordered,
        {**BODY, "stream": True, "stream_options": {"include_usage": True}},
        {**BODY, "user": "alice", "metadata": {"user_id": "u1"}, "store": True},
    ]
    assert {key(v) for v in variants} == {key(BODY)}


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "hello"}]},
        {"model": "gpt-4o-mini"},
        {"temperature": 0.5},
        {"max_tokens": 10},
    ],
)
def test_key_changes_with_what_changes_the_answer(change: dict[str, object]) -> None:
    assert key({**BODY, **change}) != key(BODY)


def test_key_changes_with_route_format_path_and_anthropic_headers() -> None:
    base = key(BODY)
    assert key(BODY, route="other") != base
    assert key(BODY, fmt="anthropic") != base
    assert cache_key("chat", "openai", "POST", "/v1/other", BODY, {}) != base
    beta_header = {"anthropic-beta": "x"}
    beta = cache_key("chat", "openai", "POST", "/v1/chat/completions", BODY, beta_header)
    assert beta != base


@pytest.mark.parametrize(
    ("body", "deterministic"),
    [
        (BODY, True),
        ({**BODY, "temperature": 0.0}, True),
        ({**BODY, "n": 1}, True),
        ({**BODY, "n": None}, True),
        ({**BODY, "n": 2}, False),
        ({**BODY, "temperature": 0.7}, False),
        ({**BODY, "temperature": False}, False),
        ({"model": "gpt-4o", "messages": []}, False),  # absent: the provider's default is not 0
    ],
)
def test_deterministic_and_always(body: dict[str, object], deterministic: bool) -> None:
    assert cacheable("deterministic", body) is deterministic
    assert cacheable("always", body) is True
    assert cacheable("always", None) is False


def entry(body: bytes = b'{"a":1}') -> Entry:
    return Entry(body, "gpt")


def test_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    lru = LRU(clock, 10)
    lru.put("k", entry(), ttl=60)
    clock.advance(59.9)
    assert lru.get("k") == entry()
    clock.advance(0.1)
    assert lru.get("k") is None
    assert len(lru) == 0


def test_the_least_recently_used_entry_goes_first() -> None:
    lru = LRU(FakeClock(), 2)
    lru.put("a", entry(b"1"), 60)
    lru.put("b", entry(b"2"), 60)
    assert lru.get("a") is not None  # a is now the most recent
    lru.put("c", entry(b"3"), 60)
    assert lru.get("b") is None
    assert lru.get("a") is not None
    assert lru.get("c") is not None
    lru.resize(1)
    assert len(lru) == 1
    assert lru.get("c") is not None


async def test_an_entry_over_max_entry_size_is_refused() -> None:
    cache = ResponseCache("chat", Cache(enabled=True, max_entry_size=10), FakeClock())
    assert not await cache.put("k", entry(b"x" * 11), None)
    assert await cache.get("k", None) is None
    assert await cache.put("k", entry(b"x" * 10), None)
    assert await cache.get("k", None) == entry(b"x" * 10)


def test_a_reload_keeps_entries_and_resizes() -> None:
    caches = Caches(FakeClock())
    first = caches.for_route("chat", Cache(enabled=True, max_entries=5))
    first.remember("k", entry())
    again = caches.for_route("chat", Cache(enabled=True, max_entries=1))
    assert again is first
    assert again.local.max_entries == 1
    assert again.local.get("k") == entry()


def test_entries_survive_their_encoding() -> None:
    original = Entry(b'{"x":"a\\nb"}\n', "claude", replayable=False, lacks_usage=True)
    assert Entry.decode(original.encode()) == original
    assert Entry.decode(b"garbage") is None


class FakeShared:
    """SET/GET on a dict, or down (every call None, as SharedStore answers then)."""

    def __init__(self, up: bool = True) -> None:
        self.available = up
        self.data: dict[str, bytes] = {}
        self.commands: list[tuple[Any, ...]] = []

    def key(self, *parts: str) -> str:
        return ":".join(("p", *parts))

    async def command(self, op: str, *args: Any) -> Any:
        self.commands.append(args)
        if not self.available:
            return None
        if args[0] == "SET":
            self.data[args[1]] = args[2]
            return True
        return self.data.get(args[1])


async def test_redis_holds_the_entries_with_a_ttl() -> None:
    shared = FakeShared()
    cache = ResponseCache("chat", Cache(enabled=True, ttl=30), FakeClock())
    assert await cache.put("k", entry(), cast(SharedStore, shared))
    assert shared.commands[0][:2] == ("SET", "p:cache:chat:k")
    assert shared.commands[0][3:] == ("PX", 30000)
    assert len(cache.local) == 0
    assert await cache.get("k", cast(SharedStore, shared)) == entry()
    assert await cache.get("other", cast(SharedStore, shared)) is None


async def test_without_redis_the_local_cache_serves() -> None:
    shared = FakeShared(up=False)
    cache = ResponseCache("chat", Cache(enabled=True), FakeClock())
    assert await cache.put("k", entry(), cast(SharedStore, shared))
    assert await cache.get("k", cast(SharedStore, shared)) == entry()


OPENAI_ANSWER: dict[str, object] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}
OPENAI_TOOL: dict[str, object] = {
    **OPENAI_ANSWER,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":1}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
}
ANTHROPIC_ANSWER: dict[str, object] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 7},
}


@pytest.mark.parametrize(
    ("fmt", "answer"),
    [("openai", OPENAI_ANSWER), ("openai", OPENAI_TOOL), ("anthropic", ANTHROPIC_ANSWER)],
)
def test_a_rendered_stream_assembles_back_into_the_same_answer(
    fmt: Any, answer: dict[str, object]
) -> None:
    assert replayable(fmt, answer)
    stream = render(fmt, answer, include_usage=True)
    assembler = Assembler(fmt, 1 << 20)
    for start in range(0, len(stream), 7):  # in awkward pieces
        assembler.feed(stream[start : start + 7])
    assert assembler.result() == answer


def test_a_stream_without_its_terminator_or_over_the_limit_is_not_assembled() -> None:
    stream = render("openai", OPENAI_ANSWER, include_usage=True)
    cut = Assembler("openai", 1 << 20)
    cut.feed(stream[: stream.index(b"data: [DONE]")])
    assert cut.result() is None
    small = Assembler("openai", 5)
    small.feed(stream)
    assert small.result() is None


def test_an_error_event_spoils_the_stream() -> None:
    assembler = Assembler("anthropic", 1 << 20)
    assembler.feed(b'event: error\ndata: {"type":"error","error":{"type":"api_error"}}\n\n')
    assembler.feed(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert assembler.result() is None


def test_usage_only_when_asked_and_when_known() -> None:
    without = render("openai", OPENAI_ANSWER, include_usage=False)
    assert b'"usage"' not in without
    assert without.endswith(b"data: [DONE]\n\n")
    assembler = Assembler("openai", 1 << 20)
    assembler.feed(without)
    assert assembler.usage is None
    result = assembler.result()
    assert result is not None
    assert "usage" not in result


def test_shapes_that_cannot_be_replayed() -> None:
    choice = cast(list[dict[str, object]], OPENAI_ANSWER["choices"])[0]
    with_logprobs = {**OPENAI_ANSWER, "choices": [{**choice, "logprobs": {"content": []}}]}
    assert not replayable("openai", with_logprobs)
    assert not replayable("openai", {"object": "list", "data": []})  # embeddings
    thinking = {**ANTHROPIC_ANSWER, "content": [{"type": "thinking", "thinking": "..."}]}
    assert not replayable("anthropic", thinking)
    assembler = Assembler("openai", 1 << 20)
    chunk = {"choices": [{"index": 0, "delta": {"audio": {"id": "a"}}, "finish_reason": None}]}
    assembler.feed(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n")
    assert assembler.result() is None
