"""A cached answer (the final JSON, in the client's format) rendered as a stream: pure.

``render`` gives an OpenAI stream (role chunk, the content in one chunk, each
tool call in one chunk, the finish chunk, the usage chunk when asked, ``data:
[DONE]``) or an Anthropic one (``message_start``, per content block
start/delta/stop, ``message_delta``, ``message_stop``). Only what renders
faithfully is ``replayable``: text and tool calls. Logprobs, audio, annotations,
citations, thinking blocks and other shapes are not (such an entry still
serves non-streaming requests).
"""

from __future__ import annotations

import orjson

from sidecar.providers.formats import terminator
from sidecar.streaming import sse
from sidecar.typedefs import JSON, WireFormat

_MESSAGE_KEYS = frozenset({"role", "content", "refusal", "tool_calls", "annotations"})


def as_dict(value: object) -> JSON:
    return value if isinstance(value, dict) else {}


def as_dicts(value: object) -> list[JSON]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


# --- what can be replayed -------------------------------------------------------------


def replayable(fmt: WireFormat, answer: JSON) -> bool:
    """Whether ``render`` reproduces *answer* faithfully as a stream."""
    return _openai_replayable(answer) if fmt == "openai" else _anthropic_replayable(answer)


def _openai_replayable(answer: JSON) -> bool:
    choices = answer.get("choices")
    if answer.get("object") != "chat.completion" or not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("logprobs") is not None:
            return False
        message = choice.get("message")
        if not isinstance(message, dict):
            return False
        if any(v is not None for k, v in message.items() if k not in _MESSAGE_KEYS):
            return False  # audio, function_call, ...
        if message.get("annotations") or not isinstance(choice.get("index", 0), int):
            return False
        if not all(isinstance(message.get(k), str | None) for k in ("content", "refusal")):
            return False
        calls = message.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list) and all(_function_call(call) for call in calls)
        ):
            return False
    return True


def _function_call(call: object) -> bool:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        return False
    function = call.get("function")
    return (
        isinstance(call.get("id"), str)
        and isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and isinstance(function.get("arguments"), str)
    )


def _anthropic_replayable(answer: JSON) -> bool:
    content = answer.get("content")
    if answer.get("type") != "message" or not isinstance(content, list):
        return False
    for block in content:
        if not isinstance(block, dict):
            return False
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str) or block.get("citations"):
                return False
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("input"), dict):
                return False
        else:
            return False
    return True


# --- JSON -> stream -------------------------------------------------------------------


def render(fmt: WireFormat, answer: JSON, include_usage: bool) -> bytes:
    """The whole stream for a replayable *answer*, in the client's format *fmt*."""
    return _render_openai(answer, include_usage) if fmt == "openai" else _render_anthropic(answer)


def _render_openai(answer: JSON, include_usage: bool) -> bytes:
    base: JSON = {
        "id": answer.get("id"),
        "object": "chat.completion.chunk",
        "created": answer.get("created"),
        "model": answer.get("model"),
    }
    if "system_fingerprint" in answer:
        base["system_fingerprint"] = answer["system_fingerprint"]
    out = bytearray()

    def chunk(index: object, delta: JSON, finish: object = None) -> None:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        out.extend(sse.encode({**base, "choices": [choice]}))

    for choice in as_dicts(answer.get("choices")):
        index = choice.get("index", 0)
        message = as_dict(choice.get("message"))
        content = message.get("content")
        chunk(index, {"role": "assistant", "content": "" if isinstance(content, str) else None})
        if content:
            chunk(index, {"content": content})
        if message.get("refusal"):
            chunk(index, {"refusal": message["refusal"]})
        for position, call in enumerate(as_dicts(message.get("tool_calls"))):
            function = as_dict(call.get("function"))
            piece = {
                "index": position,
                "id": call.get("id"),
                "type": "function",
                "function": {"name": function.get("name"), "arguments": function.get("arguments")},
            }
            chunk(index, {"tool_calls": [piece]})
        chunk(index, {}, choice.get("finish_reason") or "stop")
    usage = answer.get("usage")
    if include_usage and isinstance(usage, dict):
        out += sse.encode({**base, "choices": [], "usage": usage})
    return bytes(out + terminator("openai"))


def _render_anthropic(answer: JSON) -> bytes:
    usage = as_dict(answer.get("usage"))
    start = {
        "id": answer.get("id"),
        "type": "message",
        "role": answer.get("role", "assistant"),
        "model": answer.get("model"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0},
    }
    out = bytearray(sse.encode({"type": "message_start", "message": start}, "message_start"))
    for index, block in enumerate(as_dicts(answer.get("content"))):
        if block.get("type") == "text":
            opening: JSON = {"type": "text", "text": ""}
            delta: JSON = {"type": "text_delta", "text": block.get("text", "")}
        else:
            opening = {"type": "tool_use", "id": block.get("id"), "name": block.get("name")}
            opening["input"] = {}
            arguments = orjson.dumps(block.get("input", {})).decode()
            delta = {"type": "input_json_delta", "partial_json": arguments}
        out += sse.encode(
            {"type": "content_block_start", "index": index, "content_block": opening},
            "content_block_start",
        )
        body = {"type": "content_block_delta", "index": index, "delta": delta}
        out += sse.encode(body, "content_block_delta")
        out += sse.encode({"type": "content_block_stop", "index": index}, "content_block_stop")
    ending = {
        "stop_reason": answer.get("stop_reason"),
        "stop_sequence": answer.get("stop_sequence"),
    }
    counts = {k: usage[k] for k in ("input_tokens", "output_tokens") if k in usage}
    out += sse.encode({"type": "message_delta", "delta": ending, "usage": counts}, "message_delta")
    return bytes(out + terminator("anthropic"))
