"""relay(): a committed stream ends complete, finalised, or with exactly one error event."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import pytest
from aiohttp import ClientConnectionError, ClientConnectionResetError, ClientPayloadError
from stream_support import HANG, Source

from sidecar.providers.formats import inspect, stream_error, terminator
from sidecar.streaming.relay import RelayOutcome, relay
from sidecar.streaming.sse import Event, SSEParser
from sidecar.typedefs import WireFormat


class Sink:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.writes.append(data)

    @property
    def body(self) -> bytes:
        return b"".join(self.writes)

    def events(self) -> list[Event]:
        parser = SSEParser()
        events = parser.feed(self.body)
        assert not parser.pending, "the output ends mid-event"
        return events


def oa_chunk(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": text} if text is not None else {}
    body = {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def an_event(kind: str, body: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **body})}\n\n".encode()


def an_text(text: str) -> bytes:
    return an_event(
        "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}}
    )


AN_STOP_REASON = an_event("message_delta", {"delta": {"stop_reason": "end_turn"}})
OA_FINISH = oa_chunk(finish="stop")

STREAMS: dict[str, dict[str, bytes]] = {
    "openai": {"text": oa_chunk("Hel") + oa_chunk("lo"), "finish": OA_FINISH},
    "anthropic": {
        "text": an_event("message_start", {"message": {"id": "m"}})
        + an_event("ping", {})
        + an_text("Hel")
        + an_text("lo"),
        "finish": AN_STOP_REASON,
    },
}
FORMATS = ("openai", "anthropic")


async def run(
    fmt: WireFormat, steps: Iterable[object], *, idle: float = 5.0, finished: bool = False
) -> tuple[RelayOutcome, Sink]:
    sink = Sink()
    outcome = await relay(Source(steps), sink, SSEParser(), fmt, idle, "req-9", finished)
    return outcome, sink


def error_events(fmt: WireFormat, sink: Sink) -> list[Event]:
    return [event for event in sink.events() if inspect(fmt, event).error_status is not None]


def assert_not_both(fmt: WireFormat, sink: Sink) -> None:
    """Never an error event and a terminator in the same output; nothing after either."""
    seen = [inspect(fmt, event) for event in sink.events()]
    errors = [index for index, event in enumerate(seen) if event.error_status is not None]
    ends = [index for index, event in enumerate(seen) if event.terminator]
    assert not (errors and ends)
    assert len(errors) + len(ends) <= 1
    if errors or ends:
        assert (errors + ends)[0] == len(seen) - 1


def sidecar_error(fmt: WireFormat, sink: Sink) -> dict[str, object]:
    (event,) = error_events(fmt, sink)
    body = json.loads(event.data)
    assert body["request_id"] == "req-9"
    assert isinstance(body["error"], dict)
    return body["error"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_complete(fmt: WireFormat) -> None:
    parts = STREAMS[fmt]
    upstream = parts["text"] + parts["finish"] + terminator(fmt)
    outcome, sink = await run(fmt, [upstream[:7], upstream[7:50], upstream[50:]])
    assert outcome.result == "complete"
    assert outcome.ok
    assert sink.body == upstream  # forwarded byte for byte
    assert outcome.events == len(sink.events())
    assert outcome.dropped == 0
    assert_not_both(fmt, sink)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_nothing_after_the_terminator_is_relayed(fmt: WireFormat) -> None:
    parts = STREAMS[fmt]
    upstream = parts["text"] + terminator(fmt)
    source = Source([upstream + parts["text"], b"more", b"and more"])
    sink = Sink()
    outcome = await relay(source, sink, SSEParser(), fmt, 5.0, "req-9")
    assert outcome.result == "complete"
    assert sink.body == upstream
    assert source.reads == 1


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_malformed_event_is_a_break_never_a_hole(
    fmt: WireFormat, caplog: pytest.LogCaptureFixture
) -> None:
    # It may have carried part of the answer: skipping it and relaying the rest with a
    # normal terminator would be a truncated answer that looks complete.
    parts = STREAMS[fmt]
    bad = b"data: {not json\n\n" + b"data: [1,2]\n\n"
    upstream = parts["text"] + bad + parts["finish"] + terminator(fmt)
    with caplog.at_level(logging.WARNING, logger="sidecar.stream"):
        outcome, sink = await run(fmt, [upstream])
    assert outcome.result == "malformed"
    assert not outcome.ok
    assert sink.body.startswith(parts["text"])
    assert len(error_events(fmt, sink)) == 1
    assert b"not valid JSON" in sink.body.strip().split(b"\n\n")[-1]
    assert terminator(fmt) not in sink.body
    assert len([r for r in caplog.records if "malformed_event" in r.getMessage()]) == 1


@pytest.mark.parametrize("fmt", FORMATS)
async def test_comments_and_keepalives_are_dropped(fmt: WireFormat) -> None:
    parts = STREAMS[fmt]
    nothing = b": keep-alive\n\n" + b"data:\n\n" + b"data: \n\n"
    upstream = parts["text"] + nothing + parts["finish"] + terminator(fmt)
    outcome, sink = await run(fmt, [upstream])
    assert outcome.result == "complete"
    assert sink.body == parts["text"] + parts["finish"] + terminator(fmt)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_clean_eof_after_finish_is_finalised(fmt: WireFormat) -> None:
    parts = STREAMS[fmt]
    outcome, sink = await run(fmt, [parts["text"], parts["finish"]])
    assert outcome.result == "finalised"
    assert outcome.ok
    assert sink.body == parts["text"] + parts["finish"] + terminator(fmt)
    assert error_events(fmt, sink) == []
    assert_not_both(fmt, sink)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_finish_seen_during_the_peek_counts(fmt: WireFormat) -> None:
    outcome, sink = await run(fmt, [], finished=True)
    assert outcome.result == "finalised"
    assert sink.body == terminator(fmt)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_unterminated_last_event_is_flushed_at_eof(fmt: WireFormat) -> None:
    parts = STREAMS[fmt]
    finish = parts["finish"].rstrip(b"\n")  # the final event lacks its blank line
    outcome, sink = await run(fmt, [parts["text"], finish])
    assert outcome.result == "finalised"
    assert sink.body == parts["text"] + finish + terminator(fmt)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_eof_before_finish_is_truncated(fmt: WireFormat) -> None:
    parts = STREAMS[fmt]
    outcome, sink = await run(fmt, [parts["text"]])
    assert outcome.result == "truncated"
    assert not outcome.ok
    assert sink.body.startswith(parts["text"])
    error = sidecar_error(fmt, sink)
    assert "ended before the answer was complete" in str(error["message"])
    if fmt == "openai":
        assert error["code"] == "stream_truncated"
    assert_not_both(fmt, sink)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "exc", [ClientPayloadError("cut"), ClientConnectionError("gone")], ids=["payload", "conn"]
)
async def test_connection_lost_is_cut(fmt: WireFormat, exc: Exception) -> None:
    parts = STREAMS[fmt]
    outcome, sink = await run(fmt, [parts["text"], exc])
    assert outcome.result == "cut"
    assert sink.body.startswith(parts["text"])
    assert sink.body.endswith(
        stream_error(
            fmt,
            "the answer was interrupted after it started: the upstream connection was lost "
            f"({type(exc).__name__})",
            "req-9",
            "stream_cut",
        )
    )
    assert_not_both(fmt, sink)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_cut_after_finish_is_finalised(fmt: WireFormat) -> None:
    """The finish reason arrived, so the answer is complete: only the terminator is owed."""
    parts = STREAMS[fmt]
    outcome, sink = await run(fmt, [parts["text"] + parts["finish"], ClientPayloadError("x")])
    assert outcome.result == "finalised"
    assert error_events(fmt, sink) == []
    assert_not_both(fmt, sink)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_silence_after_finish_is_finalised(fmt: WireFormat) -> None:
    parts = STREAMS[fmt]
    outcome, sink = await run(fmt, [parts["text"] + parts["finish"], HANG], idle=0.05)
    assert outcome.result == "finalised"
    assert error_events(fmt, sink) == []


@pytest.mark.parametrize("fmt", FORMATS)
async def test_idle_timeout_is_stalled(fmt: WireFormat) -> None:
    parts = STREAMS[fmt]
    outcome, sink = await run(fmt, [parts["text"], HANG], idle=0.05)
    assert outcome.result == "stalled"
    error = sidecar_error(fmt, sink)
    assert "no data for 0.05s" in str(error["message"])
    assert sink.body.startswith(parts["text"])
    assert_not_both(fmt, sink)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_absurd_line_is_cut(fmt: WireFormat) -> None:
    sink = Sink()
    parser = SSEParser(max_line=32)
    outcome = await relay(Source([b"data: " + b"x" * 64]), sink, parser, fmt, 5.0, "req-9")
    assert outcome.result == "cut"
    assert "longer than 32 bytes" in str(sidecar_error(fmt, sink)["message"])


async def test_openai_upstream_error_is_forwarded_and_ends_the_stream() -> None:
    upstream_error = b'data: {"error": {"type": "server_error", "message": "boom"}}\n\n'
    text = STREAMS["openai"]["text"]
    outcome, sink = await run(
        "openai", [text + upstream_error + oa_chunk("late") + terminator("openai")]
    )
    assert outcome.result == "upstream_error"
    assert not outcome.ok
    assert sink.body == text + upstream_error  # the upstream's own event, nothing after it
    assert_not_both("openai", sink)


async def test_anthropic_upstream_error_is_forwarded_and_ends_the_stream() -> None:
    upstream_error = an_event("error", {"error": {"type": "overloaded_error", "message": "busy"}})
    text = STREAMS["anthropic"]["text"]
    outcome, sink = await run("anthropic", [text, upstream_error, terminator("anthropic")])
    assert outcome.result == "upstream_error"
    assert sink.body == text + upstream_error
    assert_not_both("anthropic", sink)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_empty_chunks_mean_eof_immediately(fmt: WireFormat) -> None:
    outcome, sink = await run(fmt, [b""])
    assert outcome.result == "truncated"
    assert outcome.events == 0
    assert len(error_events(fmt, sink)) == 1


@pytest.mark.parametrize("fmt", FORMATS)
async def test_events_are_written_as_they_arrive(fmt: WireFormat) -> None:
    parts = STREAMS[fmt]
    steps = [parts["text"], b": keep-alive\n\n", parts["finish"], terminator(fmt)]
    outcome, sink = await run(fmt, steps)
    assert outcome.result == "complete"
    # One write per chunk that completed events; the comment-only chunk writes nothing.
    assert sink.writes == [parts["text"], parts["finish"], terminator(fmt)]


async def test_malformed_events_break_the_stream_when_the_caller_can_finish_it() -> None:
    parts = STREAMS["openai"]
    upstream = parts["text"] + b"data: {not json\n\n" + parts["finish"] + terminator("openai")
    sink = Sink()
    outcome = await relay(
        Source([upstream]), sink, SSEParser(), "openai", 5.0, "req-9", emit_errors=False
    )
    assert outcome.result == "malformed"
    assert not outcome.ok
    assert sink.body == parts["text"]  # what came before the break, and nothing after


async def test_an_event_that_cannot_be_translated_ends_the_stream_with_one_error_event() -> None:
    from sidecar.providers.streams import make_translator

    garbage = an_event("message_delta", {"delta": {}, "usage": {"output_tokens": "lots"}})
    sink = Sink()
    outcome = await relay(
        Source([STREAMS["anthropic"]["text"] + garbage]), sink, SSEParser(), "anthropic", 5.0,
        "req-9", translator=make_translator("anthropic", "openai", "req-9", False),
        client="openai",
    )  # fmt: skip
    assert outcome.result == "malformed"
    assert sidecar_error("openai", sink)["code"] == "stream_malformed"
    assert_not_both("openai", sink)


async def test_a_client_that_leaves_is_not_an_upstream_cut() -> None:
    # aiohttp's server-side write errors are ClientConnectionErrors too: they must reach
    # the respond stage (client_cancelled), not be read as the upstream breaking.
    class Gone(Sink):
        async def write(self, data: bytes) -> None:
            self.writes.append(data)
            raise ClientConnectionResetError("Cannot write to closing transport")

    parts = STREAMS["openai"]
    sink = Gone()
    with pytest.raises(ClientConnectionResetError):
        await relay(Source([parts["text"], parts["finish"]]), sink, SSEParser(), "openai", 5.0, "r")
    assert sink.writes == [parts["text"]]  # and no error event tried after it
