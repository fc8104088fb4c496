"""Mid-stream continuation, without sockets: the splicer, the candidate targets, and
``continue_answer`` driven through stand-in target chains."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest
from aiohttp import ClientConnectionResetError
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.pipeline.call import (
    Answer,
    AttemptFailed,
    Call,
    Handler,
    TargetFailed,
    Upstreaming,
)
from sidecar.pipeline.continuation import (
    Diverged,
    _Broken,
    _candidates,
    _derive,
    _Splicer,
    continue_answer,
)
from sidecar.pipeline.retry import NotRetryable
from sidecar.policy.model import (
    Budget,
    Continuation,
    Match,
    Route,
    Target,
    Timeouts,
    Upstream,
)
from sidecar.providers.formats import Seen
from sidecar.providers.streams import ClientWriter, Passthrough
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.clock import FakeClock
from sidecar.resilience.deadline import Deadline
from sidecar.resilience.retry import Failure
from sidecar.streaming.delivered import Delivered
from sidecar.streaming.sse import Event, SSEParser
from sidecar.typedefs import WireFormat

PATH = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


class Sink:
    def __init__(self) -> None:
        self.body = b""

    async def write(self, data: bytes) -> None:
        self.body += data

    def events(self) -> list[Event]:
        parser = SSEParser()
        events = parser.feed(self.body)
        assert not parser.pending
        return events

    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(event.data) for event in self.events() if event.data != "[DONE]"]

    def text(self) -> str:
        return "".join(
            choice["delta"].get("content") or ""
            for chunk in self.chunks()
            for choice in chunk.get("choices", [])
        )


def writer() -> ClientWriter:
    return ClientWriter("openai", "rid", "m", False, 0)


def text(value: str) -> Seen:
    return Seen(content=True, text=value)


async def feed(splicer: _Splicer, *pieces: str | Seen) -> tuple[str, bool]:
    """Feed text pieces (or ready Seen); return the text written and whether it ended."""
    sink = Sink()
    ended = False
    for piece in pieces:
        ended = await splicer.take(text(piece) if isinstance(piece, str) else piece, sink)
    return sink.text(), ended


# -- _Splicer ----------------------------------------------------------------------------


async def test_a_prefix_delivered_across_several_events_is_swallowed() -> None:
    splicer = _Splicer("Hello world", True, writer())
    written, _ = await feed(splicer, "Hel", "lo ", "wor")
    assert written == ""
    assert not splicer.caught_up
    written, _ = await feed(splicer, "ld", "! And ", "more.")
    assert written == "! And more."
    assert splicer.caught_up
    assert splicer.events == 6


async def test_the_boundary_may_fall_inside_one_event() -> None:
    splicer = _Splicer("Hello", True, writer())
    written, _ = await feed(splicer, "Hel", "lo, world", "!")
    assert written == ", world!"
    assert splicer.caught_up


async def test_an_exact_repeat_writes_nothing_and_ends_on_the_terminator() -> None:
    splicer = _Splicer("Hello", True, writer())
    finish = Seen(finished=True, finish_reason="length", completion_tokens=9, prompt_tokens=3)
    written, ended = await feed(splicer, "Hello", finish)
    assert (written, ended) == ("", False)
    assert (splicer.finish, splicer.completion, splicer.prompt) == ("length", 9, 3)
    _, ended = await feed(splicer, Seen(terminator=True))
    assert ended
    assert splicer.caught_up


@pytest.mark.parametrize(
    "pieces", [("Help",), ("Hel", "p"), ("Hello", " there", "x")], ids=["first", "later", "late"]
)
async def test_divergence_raises_in_strict_mode(pieces: tuple[str, ...]) -> None:
    splicer = _Splicer("Hello there, friend", True, writer())
    with pytest.raises(Diverged):
        await feed(splicer, *pieces)


async def test_prefill_mode_swallows_the_stripped_whitespace_when_it_comes_back() -> None:
    splicer = _Splicer(" ", False, writer())
    written, _ = await feed(splicer, " world", "!")
    assert written == "world!"


async def test_prefill_mode_is_lenient_when_the_whitespace_does_not_come_back() -> None:
    splicer = _Splicer("\n\n", False, writer())
    written, _ = await feed(splicer, "\n", "Next", " line")
    assert written == "Next line"  # no Diverged: the model simply went on
    assert splicer.caught_up


async def test_prefill_mode_with_nothing_to_swallow_writes_everything() -> None:
    splicer = _Splicer("", False, writer())
    written, _ = await feed(splicer, "rest", " of it")
    assert written == "rest of it"


async def test_a_tool_call_in_the_continuation_breaks_it() -> None:
    splicer = _Splicer("", False, writer())
    with pytest.raises(_Broken, match="tool call"):
        await feed(splicer, Seen(content=True, tool=True))


async def test_events_without_text_are_not_counted() -> None:
    splicer = _Splicer("", False, writer())
    await feed(splicer, Seen(prompt_tokens=4), Seen(content=True, text=""), "a")
    assert splicer.events == 1
    assert splicer.prompt == 4


# -- stand-ins ---------------------------------------------------------------------------


def upstream(name: str, fmt: WireFormat = "openai", prefill: bool = False) -> Upstream:
    return Upstream(name=name, url=f"http://{name}.invalid", format=fmt, prefill=prefill)


def route(*targets: Target, mode: str = "next") -> Route:
    return Route(
        name="chat",
        match=Match(path=PATH),
        fallback=targets,
        timeouts=Timeouts(idle=1.0),
        continuation=Continuation(enabled=True, target=mode),  # type: ignore[arg-type]
    )


def make_call(the_route: Route, fmt: WireFormat = "openai", **extra: object) -> Call:
    parsed: dict[str, object] = {"model": "gpt-4o", "messages": MESSAGES, "stream": True, **extra}
    return Call(
        request_id="rid",
        method="POST",
        path_qs=PATH,
        headers=CIMultiDictProxy(CIMultiDict()),
        client_format=fmt,
        route=the_route,
        body=json.dumps(parsed).encode(),
        parsed=parsed,
        model="gpt-4o",
        stream=True,
        deadline=Deadline.start(FakeClock(), 30.0),
        attempts=2,
    )


async def unused(call: Call) -> Answer:  # pragma: no cover - must not be called
    raise AssertionError("this target must not be asked")


A, B, C = (Target(upstream(name)) for name in "abc")


# -- _candidates -------------------------------------------------------------------------


def names(found: Iterable[tuple[Target, Handler]]) -> list[str]:
    return [target.upstream.name for target, _ in found]


@pytest.mark.parametrize(
    ("mode", "failed", "expected"),
    [
        ("next", A, ["b", "c"]),
        ("next", B, ["c"]),
        ("next", C, []),
        ("same", A, ["a", "b", "c"]),
        ("same", B, ["b", "c"]),
        ("same", C, ["c"]),
        ("next", None, ["a", "b", "c"]),
        ("same", None, ["a", "b", "c"]),
    ],
)
def test_candidates(mode: str, failed: Target | None, expected: list[str]) -> None:
    targets = tuple((target, unused) for target in (A, B, C))
    assert names(_candidates(make_call(route(A, B, C, mode=mode)), targets, failed)) == expected


def test_candidates_match_the_failed_target_by_identity() -> None:
    twin = Target(upstream("a"))  # equal to A, but another target of the chain
    targets = ((A, unused), (twin, unused), (B, unused))
    assert names(_candidates(make_call(route(A, twin, B)), targets, twin)) == ["b"]


# -- _derive -----------------------------------------------------------------------------


def test_derive_prefill_appends_the_delivered_text_without_trailing_space() -> None:
    call = make_call(route(A), stream=False)
    derived = _derive(call, "Hello wor  ")
    assert derived.parsed is not None
    assert derived.parsed["stream"] is True
    assert derived.parsed["messages"] == [*MESSAGES, {"role": "assistant", "content": "Hello wor"}]
    assert json.loads(derived.body) == derived.parsed
    assert (derived.attempts, derived.outgoing) == (0, None)
    assert derived.deadline is call.deadline
    assert derived.scope is call.scope  # what the continuation takes is the request's
    assert call.parsed is not None
    assert call.parsed["messages"] == MESSAGES  # the client's request is untouched


def test_derive_restart_sends_the_request_again() -> None:
    derived = _derive(make_call(route(A)), None)
    assert derived.parsed is not None
    assert derived.parsed["messages"] == MESSAGES


# -- continue_answer through stand-in chains ----------------------------------------------


class Source:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    async def readany(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


def sse(body: object) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def oa_stream(*pieces: str, finish: str = "stop", completion: int | None = None) -> list[bytes]:
    def chunk(delta: dict[str, object], reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        return sse({"id": "c2", "model": "m2", "choices": [choice]})

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": piece}) for piece in pieces]
    out.append(chunk({}, finish))
    if completion is not None:
        usage = {"prompt_tokens": 6, "completion_tokens": completion}
        out.append(sse({"id": "c2", "choices": [], "usage": usage}))
    return [*out, b"data: [DONE]\n\n"]


Step = Callable[[Call, Target], Awaitable[Answer]]


def streaming(chunks: list[bytes]) -> Step:
    async def step(call: Call, target: Target) -> Answer:
        stream = Upstreaming(Source(chunks), SSEParser(), Passthrough("openai"), [])
        return Answer(200, CIMultiDict(), target.upstream, target=target, stream=stream)

    return step


def failing(status: int | None) -> Step:
    async def step(call: Call, target: Target) -> Answer:
        if status is None:
            raise TargetFailed("exhausted", Failure("reset"))
        answer = Answer(status, CIMultiDict(), target.upstream, body=b'{"error": {}}')
        raise NotRetryable(AttemptFailed(Failure("status", status), answer))

    return step


class Chain:
    """A target's chain: records the calls it got and plays one scripted step per call."""

    def __init__(self, target: Target, *steps: Step) -> None:
        self.target = target
        self.steps = list(steps)
        self.calls: list[Call] = []

    async def __call__(self, call: Call) -> Answer:
        self.calls.append(call)
        call.attempts += 1
        return await self.steps.pop(0)(call, self.target)

    def last_messages(self) -> list[dict[str, Any]]:
        parsed = self.calls[-1].parsed
        assert parsed is not None
        messages = parsed["messages"]
        assert isinstance(messages, list)
        return messages


def delivered(*pieces: str, prompt: int | None = None) -> Delivered:
    out = Delivered()
    for piece in pieces:
        out.add(Seen(content=True, text=piece))
    if prompt is not None:
        out.add(Seen(prompt_tokens=prompt))
    return out


def budget(available: bool = True) -> RetryBudget:
    policy = Budget() if available else Budget(ratio=0.0, min_per_second=0.0)
    return RetryBudget(policy, FakeClock())


async def run(
    *chains: Chain,
    failed: Target | None,
    sent: Delivered,
    mode: str = "next",
    available: bool = True,
) -> tuple[Any, Call, Sink]:
    targets = tuple(chain.target for chain in chains)
    call = make_call(route(*targets, mode=mode), stream_options={"include_usage": True})
    sink = Sink()
    pairs = tuple((chain.target, chain) for chain in chains)
    result = await continue_answer(call, pairs, failed, budget(available), sent, sink, True)
    return result, call, sink


def assert_incomplete(sink: Sink, detail: str) -> None:
    events = sink.events()
    assert all(event.data != "[DONE]" for event in events)
    error = json.loads(events[-1].data)["error"]
    assert error["code"] == "stream_incomplete"
    assert detail in error["message"]
    assert sum("error" in json.loads(e.data) for e in events) == 1


async def test_prefill_appends_the_rest_with_usage_for_the_whole_answer() -> None:
    primary = Chain(A)
    claude = Chain(
        Target(upstream("b", prefill=True)), streaming(oa_stream("ld", "!", completion=2))
    )
    result, call, sink = await run(primary, claude, failed=A, sent=delivered("Hel", "lo ", "wor"))
    assert (result.ok, result.target, result.mode) == (True, "b", "prefill")
    assert claude.last_messages()[-1] == {"role": "assistant", "content": "Hello wor"}
    assert sink.text() == "ld!"
    chunks = sink.chunks()
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11}
    assert sink.body.count(b"[DONE]") == 1
    assert call.attempts == 3  # two before the commit, one to continue


async def test_a_refused_prefill_restarts_and_swallows_the_delivered_prefix() -> None:
    target = Target(upstream("b", prefill=True))
    chain = Chain(target, failing(400), streaming(oa_stream("Hel", "lo wor", "ld!", completion=4)))
    result, call, sink = await run(
        Chain(A), chain, failed=A, sent=delivered("Hello ", "wo", prompt=8)
    )
    assert (result.ok, result.mode) == (True, "restart")
    first = chain.calls[0].parsed
    assert first is not None
    assert first["messages"] == [*MESSAGES, {"role": "assistant", "content": "Hello wo"}]
    assert chain.last_messages() == MESSAGES  # the restart carries no prefill
    assert sink.text() == "rld!"
    usage = sink.chunks()[-1]["usage"]
    assert usage == {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}
    assert call.attempts == 4


async def test_a_target_without_prefill_restarts_at_once() -> None:
    chain = Chain(B, streaming(oa_stream("Hello", " world")))
    result, _, sink = await run(Chain(A), chain, failed=A, sent=delivered("Hel"))
    assert (result.ok, result.mode) == (True, "restart")
    assert len(chain.calls) == 1
    assert sink.text() == "lo world"
    assert sink.chunks()[-1]["usage"]["completion_tokens"] == 2  # no usage sent: events counted


async def test_a_diverging_restart_ends_with_one_error_event() -> None:
    chain = Chain(B, streaming(oa_stream("A different", " answer")))
    result, _, sink = await run(Chain(A), chain, failed=A, sent=delivered("Hello"))
    assert not result.ok
    assert sink.text() == ""  # nothing of the other answer went out
    assert_incomplete(sink, "differs from what was already delivered")


async def test_a_shorter_restart_is_incomplete() -> None:
    chain = Chain(B, streaming(oa_stream("Hel")))
    result, _, sink = await run(Chain(A), chain, failed=A, sent=delivered("Hello"))
    assert not result.ok
    assert_incomplete(sink, "shorter than the delivered one")


async def test_a_continuation_that_breaks_too_is_incomplete() -> None:
    chain = Chain(B, streaming(oa_stream("Hello", " world")[:-2]))  # no finish, no [DONE]
    result, _, sink = await run(Chain(A), chain, failed=A, sent=delivered("Hel"))
    assert not result.ok
    assert sink.text() == "lo world"
    assert_incomplete(sink, "ended before the answer was complete")


async def test_a_failing_candidate_moves_on_to_the_next() -> None:
    second, third = Chain(B, failing(None)), Chain(C, failing(500))
    fourth = Chain(Target(upstream("d")), streaming(oa_stream("Hi", " there")))
    result, call, sink = await run(Chain(A), second, third, fourth, failed=A, sent=delivered("Hi"))
    assert (result.ok, result.target) == (True, "d")
    assert sink.text() == " there"
    assert call.attempts == 5


async def test_same_asks_the_broken_target_first() -> None:
    chain = Chain(A, streaming(oa_stream("Hi", " there")))
    result, _, _ = await run(chain, Chain(B), failed=A, sent=delivered("Hi"), mode="same")
    assert (result.ok, result.target) == (True, "a")


async def test_no_candidate_left_is_one_error_event() -> None:
    result, call, sink = await run(Chain(A), failed=A, sent=delivered("Hi"))
    assert not result.ok
    assert call.attempts == 2
    assert_incomplete(sink, "no target could continue it")


async def test_an_empty_retry_budget_stops_the_continuation() -> None:
    result, _, sink = await run(Chain(A), Chain(B), failed=A, sent=delivered("Hi"), available=False)
    assert not result.ok
    assert_incomplete(sink, "retry budget")


class GoneSink(Sink):
    """A client that went away: each write fails as aiohttp's does, and is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.tried: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.tried.append(data)
        raise ClientConnectionResetError("Cannot write to closing transport")


async def test_a_client_that_leaves_during_the_splice_is_not_an_upstream_cut() -> None:
    # aiohttp's server-side write errors are ClientConnectionErrors too: the splice must
    # not take the client's departure for the continuation's connection breaking.
    chain = Chain(B, streaming(oa_stream("Hello", " world")))
    call = make_call(route(A, B))
    sink = GoneSink()
    with pytest.raises(ClientConnectionResetError):
        await continue_answer(
            call, ((A, Chain(A)), (B, chain)), A, budget(), delivered("Hel"), sink, False
        )
    (written,) = sink.tried  # the text, and no error event about a lost upstream after it
    assert json.loads(written.removeprefix(b"data: "))["choices"][0]["delta"] == {"content": "lo"}
