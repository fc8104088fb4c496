"""EventReader: one upstream read → its events, classified; a failed read says how it failed."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientConnectionError, ClientPayloadError
from stream_support import HANG, Source

from sidecar.providers.formats import KEEPALIVE, inspect
from sidecar.streaming.events import EventReader, ReadFailed
from sidecar.streaming.sse import Event, SSEParser
from sidecar.typedefs import WireFormat

TEXT = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
DONE = b"data: [DONE]\n\n"


def reader(*steps: object, fmt: WireFormat = "openai", idle: float | None = None) -> EventReader:
    return EventReader(Source(steps), SSEParser(), fmt, idle)


async def test_one_read_gives_its_events_in_one_batch_classified() -> None:
    events = reader(TEXT + DONE)
    batch = await events.next_batch()
    assert [event.raw for event, _ in batch] == [TEXT, DONE]
    assert [seen for _, seen in batch] == [inspect("openai", event) for event, _ in batch]
    assert batch[0][1].text == "Hi"
    assert batch[1][1].terminator
    assert not events.ended


async def test_keepalives_and_comments_are_left_out() -> None:
    events = reader(b": ping\n\n" + b"data:\n\n" + TEXT + b"data: \n\nid: 7\n\n" + DONE)
    batch = await events.next_batch()
    assert [event.raw for event, _ in batch] == [TEXT, DONE]
    assert all(seen is not KEEPALIVE for _, seen in batch)


async def test_a_read_that_completes_no_event_gives_an_empty_batch() -> None:
    events = reader(TEXT[:10], TEXT[10:])
    assert await events.next_batch() == []
    (event, seen), *rest = await events.next_batch()
    assert (event.raw, seen.text, rest) == (TEXT, "Hi", [])


async def test_eof_ends_it_and_flushes_an_unterminated_last_event() -> None:
    events = reader(TEXT, b"data: [DONE]")
    await events.next_batch()
    assert await events.next_batch() == []  # the last line lacks its blank line: held
    assert not events.ended
    ((event, seen),) = await events.next_batch()  # EOF
    assert events.ended
    assert (event, seen.terminator) == (Event("[DONE]", raw=b"data: [DONE]"), True)


async def test_eof_with_nothing_pending_is_an_empty_last_batch() -> None:
    events = reader(b"")
    assert await events.next_batch() == []
    assert events.ended


async def test_malformed_and_error_events_are_given_not_judged() -> None:
    error = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error"}}\n\n'
    events = reader(b"data: {not json\n\n" + error, fmt="anthropic")
    (_, bad), (_, failed) = await events.next_batch()
    assert bad.malformed
    assert failed.error_status == 529


@pytest.mark.parametrize(
    "exc", [ClientPayloadError("cut"), ClientConnectionError("gone")], ids=["payload", "conn"]
)
async def test_a_lost_connection_is_lost(exc: Exception) -> None:
    events = reader(TEXT, exc)
    await events.next_batch()
    with pytest.raises(ReadFailed) as failed:
        await events.next_batch()
    assert (failed.value.kind, failed.value.cause) == ("lost", type(exc).__name__)


async def test_bytes_that_are_not_sse_are_invalid() -> None:
    events = EventReader(Source([b"data: " + b"x" * 64]), SSEParser(max_line=32), "openai")
    with pytest.raises(ReadFailed, match="longer than 32 bytes") as failed:
        await events.next_batch()
    assert (failed.value.kind, failed.value.cause) == ("invalid", "SSEError")


async def test_silence_beyond_idle_is_stalled() -> None:
    events = reader(TEXT, HANG, idle=0.01)
    await events.next_batch()
    with pytest.raises(ReadFailed, match=r"no data for 0\.01s") as failed:
        await events.next_batch()
    assert failed.value.kind == "stalled"


async def test_without_idle_the_callers_own_timer_is_not_taken_for_a_stall() -> None:
    events = reader(HANG)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):  # the attempt's first-byte timer
            await events.next_batch()


async def test_without_idle_a_timeout_from_the_source_passes_through() -> None:
    events = reader(TimeoutError())
    with pytest.raises(TimeoutError):
        await events.next_batch()
