"""Stream translation, event by event (no buffering): upstream SSE in, client SSE out.

A translator turns each upstream event into the bytes the client should get
(possibly none), and ``finalise()`` gives the client's ending when the upstream
stopped after a finish reason but without its terminator. Same-format streams
use ``Passthrough``, which forwards the upstream's bytes untouched.
"""

from __future__ import annotations

import time
from typing import Protocol

import orjson

from sidecar.providers.formats import (
    FINISH_TO_STOP,
    KEEPALIVE,
    STOP_TO_FINISH,
    Seen,
    openai_deltas,
    stream_error,
    terminator,
)
from sidecar.streaming import sse
from sidecar.streaming.sse import Event
from sidecar.typedefs import JSON, WireFormat


class StreamTranslator(Protocol):
    def event(self, event: Event, seen: Seen) -> bytes:
        """Client bytes for one (well-formed) upstream event."""
        ...

    def finalise(self) -> bytes:
        """The client's ending, when the upstream ended after a finish but without one."""
        ...


class Passthrough:
    def __init__(self, fmt: WireFormat) -> None:
        self._fmt = fmt

    def event(self, event: Event, seen: Seen) -> bytes:
        return b"" if seen is KEEPALIVE else event.raw

    def finalise(self) -> bytes:
        return terminator(self._fmt)


def make_translator(
    upstream: WireFormat, client: WireFormat, request_id: str, include_usage: bool
) -> StreamTranslator:
    if upstream == client:
        return Passthrough(client)
    if upstream == "anthropic":
        return AnthropicToOpenAI(request_id, include_usage)
    return OpenAIToAnthropic(request_id)


def _usage_chunk(head: JSON, prompt: int, completion: int) -> bytes:
    """OpenAI's last chunk when usage was asked for: no choices, the token counts."""
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return sse.encode({**head, "choices": [], "usage": usage})


def _message_delta(stop: str, prompt: int, completion: int) -> bytes:
    """Anthropic's ``message_delta``: the stop reason and the token counts."""
    body = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }
    return sse.encode(body, "message_delta")


def _load(event: Event) -> JSON:
    parsed = orjson.loads(event.data)
    return parsed if isinstance(parsed, dict) else {}


class AnthropicToOpenAI:
    """Anthropic message events → OpenAI ``chat.completion.chunk`` deltas and ``[DONE]``."""

    def __init__(self, request_id: str, include_usage: bool) -> None:
        self._request_id = request_id
        self._include_usage = include_usage
        self._id = f"chatcmpl-{request_id}"
        self._model: object = None
        self._created = int(time.time())
        self._input = 0
        self._output = 0
        self._tools: dict[int, int] = {}  # content block index -> tool_calls index

    def event(self, event: Event, seen: Seen) -> bytes:
        if seen is KEEPALIVE:
            return b""
        if seen.error_status is not None:
            return stream_error("openai", seen.error_message, self._request_id, "upstream_error")
        if event.event == "ping":
            return b""
        data = _load(event)
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message")
            message = message if isinstance(message, dict) else {}
            self._id = f"chatcmpl-{message.get('id', self._request_id)}"
            self._model = message.get("model")
            usage = message.get("usage")
            if isinstance(usage, dict):
                self._input = int(usage.get("input_tokens") or 0)
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = data.get("content_block")
            block = block if isinstance(block, dict) else {}
            if block.get("type") == "tool_use":
                index = len(self._tools)
                self._tools[int(str(data.get("index", 0)))] = index
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return self._chunk({"tool_calls": [call]})
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return b""
        if kind == "content_block_delta":
            delta = data.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                index = self._tools.get(int(str(data.get("index", 0))), 0)
                piece = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return self._chunk({"tool_calls": [piece]})
            return b""
        if kind == "message_delta":
            delta = data.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            usage = data.get("usage")
            if isinstance(usage, dict):
                self._output = int(usage.get("output_tokens") or self._output)
                self._input = int(usage.get("input_tokens") or self._input)
            stop = str(delta.get("stop_reason") or "end_turn")
            return self._chunk({}, STOP_TO_FINISH.get(stop, "stop"))
        if kind == "message_stop":
            return self.finalise()
        return b""

    def finalise(self) -> bytes:
        out = _usage_chunk(self._base(), self._input, self._output) if self._include_usage else b""
        return out + terminator("openai")

    def _base(self) -> JSON:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }

    def _chunk(self, delta: JSON, finish: str | None = None) -> bytes:
        chunk = self._base()
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return sse.encode(chunk)


class OpenAIToAnthropic:
    """OpenAI ``chat.completion.chunk`` deltas → Anthropic message events."""

    def __init__(self, request_id: str) -> None:
        self._request_id = request_id
        self._started = False
        self._blocks = 0  # content blocks opened so far
        self._open: int | None = None  # index of the open content block
        self._open_is_text = False
        self._tools: dict[int, int] = {}  # tool_calls index -> content block index
        self._stop = "end_turn"
        self._input = 0
        self._output = 0
        self._ended = False

    def event(self, event: Event, seen: Seen) -> bytes:
        if seen is KEEPALIVE:
            return b""
        if seen.error_status is not None:
            return stream_error("anthropic", seen.error_message, self._request_id, "upstream")
        if seen.terminator:
            return self.finalise()
        data = _load(event)
        out = bytearray()
        if not self._started:
            out += self._message_start(data)
        usage = data.get("usage")
        if isinstance(usage, dict):
            self._input = int(usage.get("prompt_tokens") or self._input)
            self._output = int(usage.get("completion_tokens") or self._output)
        for choice, delta in openai_deltas(data):
            text = delta.get("content")
            if text:
                out += self._text(str(text))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    out += self._tool(call)
            finish = choice.get("finish_reason")
            if finish:
                self._stop = FINISH_TO_STOP.get(str(finish), "end_turn")
                out += self._close()
        return bytes(out)

    def finalise(self) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        out = bytearray()
        if not self._started:
            out += self._message_start({})
        out += self._close()
        out += _message_delta(self._stop, self._input, self._output)
        out += terminator("anthropic")
        return bytes(out)

    def _message_start(self, data: JSON) -> bytes:
        self._started = True
        message = {
            "id": f"msg_{data.get('id') or self._request_id}",
            "type": "message",
            "role": "assistant",
            "model": data.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse.encode({"type": "message_start", "message": message}, "message_start")

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open is None or not self._open_is_text:
            out += self._close()
            out += self._start({"type": "text", "text": ""}, text_block=True)
        delta = {"type": "text_delta", "text": text}
        body = {"type": "content_block_delta", "index": self._open, "delta": delta}
        return out + sse.encode(body, "content_block_delta")

    def _tool(self, call: JSON) -> bytes:
        out = b""
        position = int(str(call.get("index", 0)))
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        if position not in self._tools:
            out += self._close()
            block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                     "input": {}}  # fmt: skip
            out += self._start(block, text_block=False)
            self._tools[position] = self._blocks - 1
        arguments = function.get("arguments")
        if arguments:
            body = {
                "type": "content_block_delta",
                "index": self._tools[position],
                "delta": {"type": "input_json_delta", "partial_json": arguments},
            }
            out += sse.encode(body, "content_block_delta")
        return out

    def _start(self, block: JSON, text_block: bool) -> bytes:
        self._open = self._blocks
        self._open_is_text = text_block
        self._blocks += 1
        body = {"type": "content_block_start", "index": self._open, "content_block": block}
        return sse.encode(body, "content_block_start")

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        return sse.encode({"type": "content_block_stop", "index": index}, "content_block_stop")


Identity = tuple[str, int, object]  # an OpenAI chunk's id, created and model


def first_identity(first: list[bytes]) -> Identity | None:
    """The identity of an OpenAI stream's first chunk among *first* (client bytes)."""
    for raw in first:
        for line in raw.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                chunk = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict) and isinstance(chunk.get("id"), str):
                created = chunk.get("created")
                return chunk["id"], created if isinstance(created, int) else 0, chunk.get("model")
    return None


class ClientWriter:
    """Events the sidecar writes itself into a client's stream (continuation): text deltas
    and the ending (finish, usage, terminator), in the client's format."""

    def __init__(
        self,
        fmt: WireFormat,
        request_id: str,
        model: object,
        include_usage: bool,
        block: int,
        identity: Identity | None = None,
    ) -> None:
        """*identity*: the id, created and model of the answer's first chunk, which every
        chunk of one answer carries (an OpenAI client's stream; Anthropic's is in its
        message_start, already sent)."""
        self._fmt = fmt
        self._id, self._created, self._model = identity or (
            f"chatcmpl-{request_id}",
            int(time.time()),
            model,
        )
        self._include_usage = include_usage
        self._block = block

    def text(self, text: str) -> bytes:
        if not text:
            return b""
        if self._fmt == "openai":
            return sse.encode(self._chunk({"content": text}, None))
        delta = {"type": "text_delta", "text": text}
        body = {"type": "content_block_delta", "index": self._block, "delta": delta}
        return sse.encode(body, "content_block_delta")

    def ending(self, finish: str, prompt: int, completion: int) -> bytes:
        if self._fmt == "openai":
            out = sse.encode(self._chunk({}, finish))
            if self._include_usage:
                out += _usage_chunk(self._chunk({}, None), prompt, completion)
            return out + terminator("openai")
        stop = FINISH_TO_STOP.get(finish, "end_turn")
        return (
            sse.encode({"type": "content_block_stop", "index": self._block}, "content_block_stop")
            + _message_delta(stop, prompt, completion)
            + terminator("anthropic")
        )

    def _chunk(self, delta: JSON, finish: str | None) -> JSON:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
