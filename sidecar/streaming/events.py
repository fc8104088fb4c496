"""Reading an upstream event stream: one read at a time, its events parsed and classified.

Theory of operation. The peek before the commit point (``pipeline/attempt``),
the relay after it (``streaming/relay``) and a continuation's splice
(``pipeline/continuation``) all read the same way: ``readany`` → ``parser.feed``
(``parser.close`` at EOF) → ``inspect`` each event. ``EventReader.next_batch``
does that once per call and returns the ``(Event, Seen)`` pairs of that one
read, so the caller writes once per upstream read, not once per event.
Keep-alives (events with no data) are left out; comments never leave the
parser. After the read that hit EOF, ``ended`` is set.

A read that fails raises ``ReadFailed``, its ``kind`` saying how:

* ``lost`` — the connection broke (``ClientPayloadError``, ``ClientConnectionError``);
* ``invalid`` — the bytes are not SSE (``SSEError``: an absurd line or event);
* ``stalled`` — nothing came for ``idle`` seconds (only when an idle timeout is set;
  without one a ``TimeoutError`` — the caller's own timer — passes through as is).

Only the upstream read is inside that classification: the caller writes to its
client outside it, so a client that goes away (aiohttp's server-side write
errors are ``ClientConnectionError`` too) is never taken for an upstream cut.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

from aiohttp import ClientConnectionError, ClientPayloadError

from sidecar.providers.formats import KEEPALIVE, Seen, inspect
from sidecar.streaming.sse import Event, SSEError, SSEParser
from sidecar.typedefs import WireFormat

ReadFailure = Literal["lost", "invalid", "stalled"]


class ByteSource(Protocol):
    async def readany(self) -> bytes: ...


class ReadFailed(Exception):
    """The upstream stream could not be read on; *cause* names what was raised."""

    def __init__(self, kind: ReadFailure, cause: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.cause = cause


class EventReader:
    """An upstream SSE body, read by read: each read's events, classified."""

    __slots__ = ("_fmt", "_idle", "_parser", "_source", "ended")

    def __init__(
        self, source: ByteSource, parser: SSEParser, fmt: WireFormat, idle: float | None = None
    ) -> None:
        self._source = source
        self._parser = parser
        self._fmt = fmt
        self._idle = idle
        self.ended = False

    async def next_batch(self) -> list[tuple[Event, Seen]]:
        """The events of the next read (often none); raises ``ReadFailed``."""
        try:
            if self._idle is None:
                chunk = await self._source.readany()
            else:
                async with asyncio.timeout(self._idle):
                    chunk = await self._source.readany()
        except TimeoutError:
            if self._idle is None:
                raise  # the caller's timer, not ours
            raise ReadFailed("stalled", "TimeoutError", f"no data for {self._idle:g}s") from None
        except (ClientPayloadError, ClientConnectionError) as exc:
            raise ReadFailed("lost", type(exc).__name__, str(exc)) from None
        parser = self._parser
        try:
            if chunk:
                events = parser.feed(chunk)
            else:
                self.ended = True
                last = parser.close()
                events = [last] if last else []
        except SSEError as exc:
            raise ReadFailed("invalid", type(exc).__name__, str(exc)) from None
        fmt = self._fmt
        batch: list[tuple[Event, Seen]] = []
        for event in events:
            seen = inspect(fmt, event)
            if seen is not KEEPALIVE:
                batch.append((event, seen))
        return batch
