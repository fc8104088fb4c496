"""What both wire formats share: the parsed request, the flavour protocol, SSE framing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import orjson

JSON = dict[str, object]
PrefillMode = Literal["accept", "reject", "ignore"]


class BadRequest(ValueError):
    """The client's request is invalid; the message names the problem."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[object]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    system: object = None
    tool: str | None = None  # the tool a user turn is answered with; None: no tools, or "none"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The one tool call of a reply; its arguments are the reply's tokens, joined."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer being produced: ids, text pieces and usage."""

    id: str
    created: int
    model: str
    tokens: tuple[str, ...]
    prompt_tokens: int
    truncated: bool  # cut by max_tokens
    tool_call: ToolCall | None = None  # set: *tokens* are pieces of the arguments JSON

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)

    @property
    def text(self) -> str:
        """The answer text, or the tool call's arguments JSON (cut short when truncated)."""
        return "".join(self.tokens)


class Flavour(Protocol):
    """One wire format's view of chat requests, answers, streams and errors."""

    name: str
    overloaded_status: int
    default_prefill: PrefillMode  # what the real provider does with a trailing assistant turn

    def parse_chat(self, body: object) -> ChatRequest:
        """Validate a chat request body; raise BadRequest naming the problem."""
        ...

    def completion(self, reply: Reply) -> JSON:
        """The non-streaming response body."""
        ...

    def stream_head(self, reply: Reply) -> list[bytes]:
        """SSE events before the first content chunk."""
        ...

    def stream_chunk(self, reply: Reply, text: str) -> bytes:
        """One content chunk."""
        ...

    def stream_malformed(self, reply: Reply) -> bytes:
        """A chunk whose data is not valid JSON."""
        ...

    def stream_tail(self, reply: Reply, include_usage: bool) -> list[bytes]:
        """SSE events after the content: finish reason and usage."""
        ...

    def stream_done(self) -> bytes:
        """The terminating marker: ``[DONE]`` or ``message_stop``."""
        ...

    def error(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> JSON:
        """An error body in this format (*code* overrides OpenAI's default code)."""
        ...

    def stream_error(self, status: int, message: str) -> bytes:
        """An error event inside a 200 stream, as the provider sends one."""
        ...


def sse(data: object, event: str | None = None) -> bytes:
    """Frame one server-sent event."""
    payload = b"data: " + orjson.dumps(data) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + payload if event else payload


def require_messages(body: JSON) -> list[object]:
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("'messages' is required", "messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(
                f"messages[{index}] must be an object with a string 'role'", "messages"
            )
    return messages


def require_model(body: JSON) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", "model")
    return model


def optional_positive_int(body: JSON, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"'{key}' must be a positive integer", key)
    return value


def optional_bool(body: JSON, key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be a boolean", key)
    return value


def optional_tools(body: JSON) -> list[JSON]:
    """The ``tools`` list (empty when absent); each entry must be an object."""
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be a list of tool objects", "tools")
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{index}] must be an object", "tools")
    return tools


def require_tool_name(value: object, where: str, param: str = "tools") -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{where} must be a non-empty string", param)
    return value


def optional_field(tool: JSON, key: str, kind: type, where: str) -> None:
    """Check an optional field's JSON type (``dict`` for objects, ``str``, ``bool``)."""
    value = tool.get(key)
    if value is not None and not isinstance(value, kind):
        names = {dict: "an object", str: "a string", bool: "a boolean"}
        raise BadRequest(f"{where}.{key} must be {names.get(kind, kind.__name__)}", "tools")


def named_tool(names: list[str], name: str) -> str:
    """*name*, which a tool_choice names, if the request declares it; else a 400."""
    if name not in names:
        declared = ", ".join(names) or "none"
        raise BadRequest(
            f"'tool_choice' names the tool {name!r}, not in 'tools' (declared: {declared})",
            "tool_choice",
        )
    return name
