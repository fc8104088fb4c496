"""An incremental server-sent-events parser: ``feed(bytes) -> events``, no I/O; and
``encode``, the one writer of an event the sidecar makes itself.

Theory of operation: bytes are split into lines (CRLF, LF or CR); a blank line
ends an event. ``data:`` lines are joined with newlines, ``event:`` sets the
type, ``id:`` and ``retry:`` are kept, lines starting with ``:`` are comments.
Each event also carries the exact bytes it was made of (``raw``), so a relay
can forward upstream bytes untouched instead of re-serialising them. A line
longer than ``max_line``, or an event larger than ``max_event``, is an error:
garbage must not grow memory forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

MAX_LINE: Final = 1024 * 1024
MAX_EVENT: Final = 8 * 1024 * 1024


class SSEError(ValueError):
    """The byte stream is not valid SSE (e.g. an absurdly long line)."""


@dataclass(frozen=True, slots=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None
    raw: bytes = b""


class SSEParser:
    def __init__(self, max_line: int = MAX_LINE, max_event: int = MAX_EVENT) -> None:
        self._max_line = max_line
        self._max_event = max_event
        self._buffer = bytearray()
        self._raw = bytearray()
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._seen_field = False

    def feed(self, chunk: bytes) -> list[Event]:
        """Consume *chunk*; return the events it completed, in order."""
        self._buffer += chunk
        events: list[Event] = []
        start = 0
        buffer = self._buffer
        length = len(buffer)
        while start < length:
            newline = buffer.find(b"\n", start)
            carriage = buffer.find(b"\r", start, newline if newline != -1 else length)
            if carriage != -1:
                end = carriage
                if carriage + 1 < length:
                    after = carriage + 2 if buffer[carriage + 1] == 0x0A else carriage + 1
                elif newline == -1:
                    break  # a lone CR at the end: wait to see whether LF follows
                else:
                    after = carriage + 1
            elif newline != -1:
                end, after = newline, newline + 1
            else:
                break
            if end - start > self._max_line:
                raise SSEError(f"SSE line longer than {self._max_line} bytes")
            line = bytes(buffer[start:end])
            self._raw += buffer[start:after]
            if len(self._raw) > self._max_event:
                raise SSEError(f"SSE event larger than {self._max_event} bytes")
            start = after
            event = self._line(line)
            if event is not None:
                events.append(event)
        del buffer[:start]
        if len(buffer) > self._max_line:
            raise SSEError(f"SSE line longer than {self._max_line} bytes")
        return events

    def close(self) -> Event | None:
        """End of stream: a final event without its blank line is still returned."""
        if self._buffer:
            line = bytes(self._buffer).rstrip(b"\r")
            self._raw += self._buffer
            self._buffer.clear()
            event = self._line(line)
            if event is not None:
                return event  # the buffered line was the blank one (a trailing lone CR)
        if self._seen_field:
            return self._dispatch()
        return None

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished event are buffered."""
        return bool(self._buffer) or self._seen_field

    def _line(self, line: bytes) -> Event | None:
        if not line:
            if self._seen_field:
                return self._dispatch()
            self._raw.clear()  # a block of comments only: nothing to forward
            return None
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        text = value.decode("utf-8", errors="replace")
        match name:
            case b"data":
                self._data.append(text)
            case b"event":
                self._event = text
            case b"id":
                self._id = text
            case _:
                pass  # retry: and unknown fields are ignored, as the spec says
        self._seen_field = True
        return None

    def _dispatch(self) -> Event:
        event = Event("\n".join(self._data), self._event or "message", self._id, bytes(self._raw))
        self._raw.clear()
        self._data = []
        self._event = ""
        self._id = None
        self._seen_field = False
        return event


def encode(data: object, event: str | None = None) -> bytes:
    """One SSE event: ``data`` as JSON, after an ``event:`` line when *event* is given."""
    payload = b"data: " + orjson.dumps(data) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + payload if event else payload
