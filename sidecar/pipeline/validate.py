"""Validation: fail fast, before any upstream call, in the client's wire format.

JSON must parse (400). On chat endpoints: ``model`` a non-empty string,
``messages`` a non-empty list of objects with a string ``role`` and a content
(a string, a list of part objects, or null), ``tools`` a list of objects,
``temperature`` within 0..2, ``max_tokens`` a positive integer (required on
``/v1/messages``, as Anthropic requires it) — violations are 400
``invalid_request_body`` naming the field (``param``), as the providers answer
them (their SDKs raise ``BadRequestError``). The prompt is
estimated at one token per four characters of message text; over the route's
``max_prompt_tokens`` it is a 400 ``context_length_exceeded``.

``check_model`` runs earlier, at intake (the proxy calls it right after parsing,
before routing): a model name longer than ``MAX_MODEL_LENGTH`` or with
non-printable characters is a 400 before it can become a breaker key, a metric
label or a log field (DESIGN rule 13).
"""

from __future__ import annotations

from typing import Final

from sidecar.errors import InvalidRequest, SidecarError
from sidecar.pipeline.call import Answer, Call, Handler, Stage
from sidecar.policy.model import Route

CHARS_PER_TOKEN: Final = 4
CHAT_PATHS: Final = frozenset({"/v1/chat/completions", "/v1/messages"})
MAX_MODEL_LENGTH: Final = 256  # characters; real names (ARNs, fine-tune ids) are far shorter


class SchemaViolation(SidecarError):
    status, type, code = 400, "invalid_request_error", "invalid_request_body"


class PromptTooLong(SidecarError):
    status, type, code = 400, "invalid_request_error", "context_length_exceeded"


class ModelTooLong(SidecarError):
    status, type, code = 400, "invalid_request_error", "string_above_max_length"


class ModelUnprintable(SidecarError):
    status, type, code = 400, "invalid_request_error", "invalid_value"


def check_model(model: str) -> None:
    """Raise a 400 (``param: model``) for a name too long or not printable; never echo it."""
    if len(model) > MAX_MODEL_LENGTH:
        raise ModelTooLong(
            f"Invalid 'model': string too long. Expected at most {MAX_MODEL_LENGTH} "
            f"characters, got {len(model)}.",
            param="model",
        )
    if not model.isprintable():
        raise ModelUnprintable(
            "Invalid 'model': it must not contain control or other non-printable characters.",
            param="model",
        )


def make_validate(route: Route) -> Stage:
    max_prompt = route.validate.max_prompt_tokens

    async def validate(call: Call, following: Handler) -> Answer:
        path = call.path_qs.split("?", 1)[0]
        if path in CHAT_PATHS and call.method == "POST":
            call.prompt_estimate = check_chat(call, max_prompt)
        return await following(call)

    return validate


def check_chat(call: Call, max_prompt: int | None) -> int:
    """Raise on an invalid chat request; the prompt's estimated tokens (characters/4)."""
    body = call.parsed
    if body is None:
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise SchemaViolation("'model' is required and must be a non-empty string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SchemaViolation("'messages' must be a non-empty list", param="messages")
    characters = _text_length(body.get("system"))
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise SchemaViolation(
                f"messages[{index}] must be an object with a string 'role'", param="messages"
            )
        if "content" not in message and "tool_calls" not in message:
            raise SchemaViolation(f"messages[{index}] has no 'content'", param="messages")
        content = message.get("content")
        if not (content is None or isinstance(content, str) or _objects(content)):
            raise SchemaViolation(
                f"messages[{index}].content must be a string or a list of objects",
                param="messages",
            )
        characters += _text_length(message.get("content"))
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise SchemaViolation("'temperature' must be a number from 0 to 2", param="temperature")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise SchemaViolation(f"'{key}' must be a positive integer", param=key)
    if call.client_format == "anthropic" and body.get("max_tokens") is None:
        raise SchemaViolation("'max_tokens' is required", param="max_tokens")
    tools = body.get("tools")
    if tools is not None and not _objects(tools):
        raise SchemaViolation("'tools' must be a list of objects", param="tools")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise SchemaViolation("'stream' must be a boolean", param="stream")
    estimate = -(-characters // CHARS_PER_TOKEN)
    if max_prompt is not None and estimate > max_prompt:
        raise PromptTooLong(
            f"the prompt is about {estimate} tokens (characters/4); this route allows {max_prompt}",
            param="messages",
        )
    return estimate


def _objects(value: object) -> bool:
    """Whether *value* is a list of JSON objects."""
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _text_length(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    total += len(text)
        return total
    return 0
