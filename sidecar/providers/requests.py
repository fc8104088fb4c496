"""Request translation: an OpenAI chat request as an Anthropic messages request, and back.

Pure functions on parsed JSON. What cannot be expressed in the other format
raises ``Untranslatable`` naming the field (the caller answers 400, or skips
the target when the route says so). Mapping table: docs/translation.md.
"""

from __future__ import annotations

from typing import Final

import orjson

from sidecar.typedefs import JSON

ANTHROPIC_VERSION: Final = "2023-06-01"
# OpenAI fields that change the answer and have no Anthropic equivalent.
_OPENAI_ONLY: Final = (
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "audio",
    "modalities",
    "prediction",
)
_ANTHROPIC_ONLY: Final = ("top_k", "thinking", "container", "mcp_servers")


class Untranslatable(ValueError):
    """A request field the other wire format cannot express."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# -- OpenAI -> Anthropic ----------------------------------------------------------------


def openai_to_anthropic(body: JSON, default_max_tokens: int) -> JSON:
    """An OpenAI chat-completions body as an Anthropic messages body."""
    n = body.get("n")
    if n not in (None, 1):
        raise Untranslatable("n", "'n' > 1 (several choices) cannot be sent to an Anthropic model")
    for name in _OPENAI_ONLY:
        value = body.get(name)
        if value not in (None, False, 0, 0.0, {}):
            raise Untranslatable(name, f"'{name}' has no equivalent for an Anthropic model")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise Untranslatable(
            "response_format", "'response_format' has no equivalent for an Anthropic model"
        )
    system: list[str] = []
    messages: list[JSON] = []
    for index, message in enumerate(_list(body.get("messages"))):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_plain_text(message.get("content"), f"messages[{index}].content"))
        elif role == "user":
            _append(messages, "user", _user_blocks(message.get("content"), index))
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(message, index))
        elif role == "tool":
            result: JSON = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id", "")),
                "content": _plain_text(message.get("content"), f"messages[{index}].content"),
            }
            _append(messages, "user", [result])
        else:
            raise Untranslatable(f"messages[{index}].role", f"role {role!r} cannot be translated")
    out: JSON = {"model": body.get("model"), "messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = max_tokens if isinstance(max_tokens, int) else default_max_tokens
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = min(float(temperature), 1.0)  # Anthropic's range is 0..1
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    if body.get("stream") is True:
        out["stream"] = True
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        out["tools"] = [_anthropic_tool(tool, i) for i, tool in enumerate(tools)]
        choice = _anthropic_tool_choice(body.get("tool_choice"))
        none = choice is not None and choice.get("type") == "none"  # takes no other field
        if body.get("parallel_tool_calls") is False and not none:
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice is not None:
            out["tool_choice"] = choice
    user = body.get("user")
    if isinstance(user, str):
        out["metadata"] = {"user_id": user}
    return out


def _user_blocks(content: object, index: int) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[JSON] = []
    for part in _list(content):
        if isinstance(part, dict) and part.get("type") == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise Untranslatable(
                f"messages[{index}].content", f"content part {kind!r} cannot be translated"
            )
    return blocks


def _assistant_blocks(message: JSON, index: int) -> list[JSON]:
    blocks: list[JSON] = []
    content = message.get("content")
    if content:
        text = _plain_text(content, f"messages[{index}].content")
        if text:
            blocks.append({"type": "text", "text": text})
    for call in _list(message.get("tool_calls")):
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise Untranslatable(
                f"messages[{index}].tool_calls", "tool call arguments are not valid JSON"
            ) from None
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id", "")),
                "name": str(function.get("name", "")),
                "input": parsed if isinstance(parsed, dict) else {},
            }
        )
    return blocks


def _anthropic_tool(tool: object, index: int) -> JSON:
    function = tool.get("function") if isinstance(tool, dict) else None
    if (
        not isinstance(tool, dict)
        or tool.get("type") != "function"
        or not isinstance(function, dict)
    ):
        raise Untranslatable(f"tools[{index}]", "only function tools can be translated")
    out: JSON = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _anthropic_tool_choice(choice: object) -> JSON | None:
    if choice is None or choice == "auto":
        return None
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and function.get("name"):
            return {"type": "tool", "name": function["name"]}
    raise Untranslatable("tool_choice", f"tool_choice {choice!r} cannot be translated")


# -- Anthropic -> OpenAI ----------------------------------------------------------------


def anthropic_to_openai(body: JSON) -> JSON:
    """An Anthropic messages body as an OpenAI chat-completions body."""
    for name in _ANTHROPIC_ONLY:
        if body.get(name) not in (None, {}, []):
            raise Untranslatable(name, f"'{name}' has no equivalent for an OpenAI model")
    messages: list[JSON] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _plain_text(system, "system")})
    for index, message in enumerate(_list(body.get("messages"))):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        content = message.get("content")
        if role == "user":
            messages.extend(_openai_user(content, index))
        elif role == "assistant":
            messages.append(_openai_assistant(content, index))
        else:
            raise Untranslatable(f"messages[{index}].role", f"role {role!r} cannot be translated")
    out: JSON = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and stops:
        out["stop"] = stops
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # Anthropic clients always get usage
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        out["tools"] = [_openai_tool(tool, i) for i, tool in enumerate(tools)]
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            out.update(_openai_tool_choice(choice))
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out


def _openai_user(content: object, index: int) -> list[JSON]:
    """One Anthropic user turn: tool results become "tool" messages, text a user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[JSON] = []
    texts: list[str] = []
    for block in _list(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if isinstance(block, dict) and kind == "text":
            texts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and kind == "tool_result":
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": str(block.get("tool_use_id", "")),
                    "content": _plain_text(block.get("content", ""), f"messages[{index}]"),
                }
            )
        else:
            raise Untranslatable(
                f"messages[{index}].content", f"content block {kind!r} cannot be translated"
            )
    if texts:
        out.append({"role": "user", "content": "\n".join(texts)})
    return out


def _openai_assistant(content: object, index: int) -> JSON:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[JSON] = []
    for block in _list(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if isinstance(block, dict) and kind == "text":
            texts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        else:
            raise Untranslatable(
                f"messages[{index}].content", f"content block {kind!r} cannot be translated"
            )
    message: JSON = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _openai_tool(tool: object, index: int) -> JSON:
    # A server or client tool (web_search_…, bash_…) has a name and a type, but no schema.
    custom = isinstance(tool, dict) and tool.get("type") in (None, "custom")
    if not isinstance(tool, dict) or not tool.get("name") or not custom:
        raise Untranslatable(f"tools[{index}]", "only custom tools with a name can be translated")
    function: JSON = {
        "name": tool["name"],
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _openai_tool_choice(choice: JSON) -> JSON:
    out: JSON = {}
    kind = choice.get("type")
    if kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind != "auto":
        raise Untranslatable("tool_choice", f"tool_choice type {kind!r} cannot be translated")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


# -- shared ----------------------------------------------------------------------------


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _plain_text(content: object, field: str) -> str:
    """Text of a string or a list of text parts/blocks; anything else is untranslatable."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in _list(content):
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        else:
            raise Untranslatable(field, "only text content can be translated here")
    return "\n".join(parts) if parts else ""


def _append(messages: list[JSON], role: str, blocks: list[JSON]) -> None:
    """Append a turn; consecutive turns of one role merge (Anthropic wants alternation)."""
    if messages and messages[-1]["role"] == role:
        previous = messages[-1]["content"]
        assert isinstance(previous, list)
        previous.extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})
