"""The stream a client was sent, assembled into the cached form (the final JSON answer): pure.

``Assembler`` is fed the client's stream bytes (its own wire format) event by
event and builds what a non-streaming request would have got: an OpenAI
``chat.completion`` from ``chat.completion.chunk`` deltas, or an Anthropic
``message`` from its events. It gives up (``result()`` None) on a stream that
did not end with its terminator or a finish reason, carried an error event, a
shape ``render`` could not replay, or more than *limit* characters of content.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from sidecar.cache.render import as_dict
from sidecar.streaming.sse import Event, SSEError, SSEParser
from sidecar.typedefs import JSON, WireFormat


class Unassemblable(Exception):
    """The stream holds something the cached form cannot express (or an error)."""


@dataclass(slots=True)
class _Choice:
    text: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: dict[int, JSON] = field(default_factory=dict)  # index -> id, name, parts
    finish: object = None


@dataclass(slots=True)
class _Block:
    kind: str
    head: JSON
    parts: list[str] = field(default_factory=list)


class Assembler:
    """Feed it the client's stream bytes; ``result()`` is the JSON answer, or None.

    None when the stream did not end with its terminator, carried an error, a
    shape the cache cannot replay, or more than *limit* characters of content.
    """

    def __init__(self, fmt: WireFormat, limit: int) -> None:
        self._fmt = fmt
        self._limit = limit
        self._parser = SSEParser()
        self._size = 0
        self.failed = False
        self.done = False
        self.usage: JSON | None = None
        self._head: JSON = {}  # OpenAI: id, created, model; Anthropic: the message_start message
        self._choices: dict[int, _Choice] = {}
        self._blocks: dict[int, _Block] = {}

    def feed(self, data: bytes) -> None:
        if self.failed or self.done or not data:
            return
        try:
            for event in self._parser.feed(data):
                if self._fmt == "openai":
                    self._openai(event)
                else:
                    self._anthropic(event)
        except (Unassemblable, SSEError, orjson.JSONDecodeError, ValueError, TypeError):
            self.failed = True

    def _grow(self, text: object) -> str:
        piece = text if isinstance(text, str) else ""
        self._size += len(piece)
        if self._size > self._limit:
            raise Unassemblable("too large")
        return piece

    def _openai(self, event: Event) -> None:
        if event.data == "[DONE]":
            self.done = True
            return
        data = orjson.loads(event.data)
        if not isinstance(data, dict) or "error" in data:
            raise Unassemblable("error event")
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in data and key not in self._head:
                self._head[key] = data[key]
        if isinstance(data.get("usage"), dict):
            self.usage = data["usage"]
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("logprobs") is not None:
                raise Unassemblable("logprobs")
            state = self._choices.setdefault(int(choice.get("index", 0)), _Choice())
            for key, value in as_dict(choice.get("delta")).items():
                if value is None or key == "role" or (key == "annotations" and not value):
                    continue
                if key == "content":
                    state.text.append(self._grow(value))
                elif key == "refusal":
                    state.refusal.append(self._grow(value))
                elif key == "tool_calls" and isinstance(value, list):
                    for piece in value:
                        self._tool_piece(state, as_dict(piece))
                else:
                    raise Unassemblable(key)
            if choice.get("finish_reason"):
                state.finish = choice["finish_reason"]

    def _tool_piece(self, state: _Choice, piece: JSON) -> None:
        call = state.calls.setdefault(int(str(piece.get("index", 0))), {"parts": []})
        function = as_dict(piece.get("function"))
        for key, value in (("id", piece.get("id")), ("name", function.get("name"))):
            if value is not None:
                call[key] = value
        call["parts"].append(self._grow(function.get("arguments")))  # type: ignore[attr-defined]

    def _anthropic(self, event: Event) -> None:
        if event.event == "ping":
            return
        data = orjson.loads(event.data)
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "message_start":
            self._head = dict(as_dict(data.get("message")))
            self.usage = dict(as_dict(self._head.get("usage"))) or None
        elif kind == "content_block_start":
            block = dict(as_dict(data.get("content_block")))
            if block.get("type") not in ("text", "tool_use") or block.get("citations"):
                raise Unassemblable(str(block.get("type")))
            opened = _Block(str(block["type"]), block)
            if block["type"] == "text":
                opened.parts.append(self._grow(block.get("text")))
            self._blocks[int(data.get("index", 0))] = opened
        elif kind == "content_block_delta":
            delta = as_dict(data.get("delta"))
            target = self._blocks[int(data.get("index", 0))]
            if delta.get("type") == "text_delta" and target.kind == "text":
                target.parts.append(self._grow(delta.get("text")))
            elif delta.get("type") == "input_json_delta" and target.kind == "tool_use":
                target.parts.append(self._grow(delta.get("partial_json")))
            else:
                raise Unassemblable(str(delta.get("type")))
        elif kind == "message_delta":
            delta = as_dict(data.get("delta"))
            self._head["stop_reason"] = delta.get("stop_reason")
            self._head["stop_sequence"] = delta.get("stop_sequence")
            usage = {k: v for k, v in as_dict(data.get("usage")).items() if v is not None}
            if usage:
                self.usage = {**(self.usage or {}), **usage}
        elif kind == "message_stop":
            self.done = True
        elif kind != "content_block_stop":
            raise Unassemblable(str(kind))  # an error event, or one not known

    def result(self) -> JSON | None:
        if self.failed or not self.done:
            return None
        try:
            return self._openai_result() if self._fmt == "openai" else self._anthropic_result()
        except (Unassemblable, orjson.JSONDecodeError):
            return None

    def _openai_result(self) -> JSON | None:
        if not self._choices or any(c.finish is None for c in self._choices.values()):
            return None
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: JSON = {
                "role": "assistant",
                "content": "".join(state.text) if state.text or not state.calls else None,
                "refusal": "".join(state.refusal) or None,
            }
            if state.calls:
                message["tool_calls"] = [
                    {
                        "id": call.get("id"),
                        "type": "function",
                        "function": {
                            "name": call.get("name"),
                            "arguments": "".join(call["parts"]),  # type: ignore[arg-type]
                        },
                    }
                    for _, call in sorted(state.calls.items())
                ]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": state.finish,
                }
            )
        answer: JSON = {
            "id": self._head.get("id"),
            "object": "chat.completion",
            "created": self._head.get("created"),
            "model": self._head.get("model"),
            "choices": choices,
        }
        if "system_fingerprint" in self._head:
            answer["system_fingerprint"] = self._head["system_fingerprint"]
        if self.usage is not None:
            answer["usage"] = self.usage
        return answer

    def _anthropic_result(self) -> JSON | None:
        if not self._head or self._head.get("stop_reason") is None:
            return None
        content: list[JSON] = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            joined = "".join(block.parts)
            if block.kind == "text":
                content.append({"type": "text", "text": joined})
            else:
                given = orjson.loads(joined) if joined else block.head.get("input", {})
                if not isinstance(given, dict):
                    raise Unassemblable("tool input")
                head = block.head
                use = {"type": "tool_use", "id": head.get("id"), "name": head.get("name")}
                content.append({**use, "input": given})
        message = {**self._head, "content": content}
        if self.usage is not None:
            message["usage"] = self.usage
        return message
