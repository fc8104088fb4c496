"""Relaying a committed stream to the client, event by event, with no buffering.

After the commit point nothing is retried. Upstream events are forwarded as
their original bytes. A malformed data event is never forwarded and never
skipped: it may have carried part of the answer, so it breaks the stream there
(the caller finishes the answer elsewhere, or the client gets the error event).
Only events that carry nothing (comments, keep-alives) are dropped, before the
relay sees them (``streaming/events.py`` reads and classifies). A stream ends
in exactly one of three ways:

* the upstream's terminator (``[DONE]`` / ``message_stop``) was relayed → success;
* the upstream ended (cleanly, by a cut, or by going silent) after a finish
  reason but without a terminator → the client gets the terminator at once
  (success: the answer itself is complete);
* anything else — connection cut, idle timeout, an error event, an end before
  any finish reason, a malformed event — → one final error event in the client's format and no
  terminator, so a truncated answer never looks complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from sidecar.providers.formats import stream_error
from sidecar.providers.streams import Passthrough, StreamTranslator
from sidecar.streaming.delivered import Delivered
from sidecar.streaming.events import ByteSource, EventReader, ReadFailed
from sidecar.streaming.sse import SSEParser
from sidecar.typedefs import WireFormat

log = logging.getLogger("sidecar.stream")
# What translating a parsed-but-absurd event can raise (a string where a count belongs,
# JSON nested deeper than orjson writes — JSONEncodeError is a TypeError, ...).
UNTRANSLATABLE = (ValueError, TypeError, KeyError, AttributeError)
RelayResult = Literal[
    "complete", "finalised", "cut", "stalled", "upstream_error", "truncated", "malformed"
]


class ByteSink(Protocol):
    async def write(self, data: bytes) -> None: ...


@dataclass(slots=True)
class RelayOutcome:
    result: RelayResult
    events: int = 0
    dropped: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result in ("complete", "finalised")


async def relay(
    source: ByteSource,
    sink: ByteSink,
    parser: SSEParser,
    fmt: WireFormat,
    idle: float,
    request_id: str,
    finished: bool = False,
    translator: StreamTranslator | None = None,
    client: WireFormat | None = None,
    delivered: Delivered | None = None,
    emit_errors: bool = True,
) -> RelayOutcome:
    """Forward events from *source* to *sink* until the stream ends one way or another.

    *fmt* is the upstream's format; *translator* turns its events into the *client*'s
    (by default both are the same and bytes pass untouched). *delivered* records what
    went out. With *emit_errors* off a failure writes nothing (not even the upstream's
    error event): the caller may still finish the answer elsewhere.
    """
    client = client or fmt
    translate = translator or Passthrough(fmt)
    outcome = RelayOutcome("complete")
    track = delivered if delivered is not None else Delivered()
    fail = _fail if emit_errors else _quiet
    reader = EventReader(source, parser, fmt, idle)
    while not reader.ended:
        try:
            batch = await reader.next_batch()
        except ReadFailed as failed:
            if finished and failed.kind != "invalid":  # only the terminator is missing
                return await _finalise(sink, translate, outcome)
            detail = str(failed)
            if failed.kind == "lost":
                detail = f"the upstream connection was lost ({failed.cause})"
            result: RelayResult = "stalled" if failed.kind == "stalled" else "cut"
            return await fail(sink, client, request_id, outcome, result, detail)
        out = bytearray()
        for event, seen in batch:
            if seen.malformed:
                outcome.dropped += 1
                log.warning(
                    {"request_id": request_id, "event": "malformed_event",
                     "bytes": len(event.raw)}
                )  # fmt: skip
                if out:
                    await sink.write(bytes(out))
                detail = "the upstream sent an event that is not valid JSON"
                return await fail(sink, client, request_id, outcome, "malformed", detail)
            if seen.error_status is not None:
                if emit_errors:
                    out += translate.event(event, seen)
                await sink.write(bytes(out))
                outcome.result = "upstream_error"
                outcome.detail = seen.error_message
                return outcome
            try:
                out += translate.event(event, seen)
            except UNTRANSLATABLE:  # valid JSON, but garbage where the translation looks
                if out:
                    await sink.write(bytes(out))
                detail = "the upstream sent an event that cannot be translated"
                return await fail(sink, client, request_id, outcome, "malformed", detail)
            outcome.events += 1
            track.add(seen)
            if seen.terminator:
                await sink.write(bytes(out))
                return outcome
            finished = finished or seen.finished
        if out:
            await sink.write(bytes(out))
    if finished:
        return await _finalise(sink, translate, outcome)
    return await fail(
        sink, client, request_id, outcome, "truncated",
        "the upstream stream ended before the answer was complete",
    )  # fmt: skip


async def _finalise(
    sink: ByteSink, translate: StreamTranslator, outcome: RelayOutcome
) -> RelayOutcome:
    """The upstream stopped after its finish reason: give the client its ending now."""
    await sink.write(translate.finalise())
    outcome.result = "finalised"
    return outcome


async def _quiet(
    sink: ByteSink,
    fmt: WireFormat,
    request_id: str,
    outcome: RelayOutcome,
    result: RelayResult,
    detail: str,
) -> RelayOutcome:
    """Record the failure and write nothing (the caller may still finish the answer)."""
    outcome.result = result
    outcome.detail = detail
    return outcome


async def _fail(
    sink: ByteSink,
    fmt: WireFormat,
    request_id: str,
    outcome: RelayOutcome,
    result: RelayResult,
    detail: str,
) -> RelayOutcome:
    """Record the failure and end the stream with one error event in the client's format."""
    message = f"the answer was interrupted after it started: {detail}"
    await sink.write(stream_error(fmt, message, request_id, f"stream_{result}"))
    return await _quiet(sink, fmt, request_id, outcome, result, detail)
