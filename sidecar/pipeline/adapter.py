"""Adapter stage (per target, outermost): the request as this target's wire format wants it.

Same format: the client's body, with the target's model rewrite. Other format:
the request translated (OpenAI ⇄ Anthropic) once per target, for every attempt
on it. A field the target's format cannot express is a 400 naming the field,
or — with ``translate.unsupported: skip`` — a reason to try the next target.
"""

from __future__ import annotations

import orjson

from sidecar.errors import InvalidRequest
from sidecar.pipeline.call import Answer, Call, Handler, Outgoing, Stage, TargetFailed
from sidecar.policy.model import Route, Target
from sidecar.providers.requests import (
    ANTHROPIC_VERSION,
    Untranslatable,
    anthropic_to_openai,
    openai_to_anthropic,
)
from sidecar.typedefs import WireFormat

PATHS: dict[WireFormat, str] = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


class UntranslatableRequest(InvalidRequest):
    code = "untranslatable_request"


def make_adapter(route: Route, target: Target) -> Stage:
    fmt = target.upstream.format

    async def adapter(call: Call, following: Handler) -> Answer:
        call.outgoing = outgoing(call, route, target, fmt)
        return await following(call)

    return adapter


def outgoing(call: Call, route: Route, target: Target, fmt: WireFormat) -> Outgoing:
    path = call.path_qs.split("?", 1)[0]
    if call.client_format == fmt or call.parsed is None or path != PATHS[call.client_format]:
        return Outgoing(call.path_qs, rewrite_model(call, target), translated=False)
    body = dict(call.parsed)
    wanted = target.model_for(call.model)
    if wanted is not None:
        body["model"] = wanted
    try:
        if fmt == "anthropic":
            translated = openai_to_anthropic(body, route.translate.max_tokens)
        else:
            translated = anthropic_to_openai(body)
    except Untranslatable as exc:
        if route.translate.unsupported == "skip":
            raise TargetFailed("unsupported") from None
        raise UntranslatableRequest(
            f"{exc} (target {target.upstream.name!r} speaks {fmt})", param=exc.field
        ) from None
    query = call.path_qs[len(path) :]
    extra: tuple[tuple[str, str], ...] = ()
    drop: tuple[str, ...] = ()
    if fmt == "anthropic":
        extra = (("anthropic-version", ANTHROPIC_VERSION),)
    else:
        drop = ("anthropic-version", "anthropic-beta")
    return Outgoing(PATHS[fmt] + query, encode(translated), True, extra, drop)


def rewrite_model(call: Call, target: Target) -> bytes:
    """The body with the target's model, re-encoded only when the model changes."""
    parsed = call.parsed
    if parsed is None or (target.model is None and not target.model_map):
        return call.body
    wanted = target.model_for(call.model)
    if wanted is None or wanted == call.model:
        return call.body
    return encode({**parsed, "model": wanted})


def encode(body: object) -> bytes:
    """A request body re-encoded; one nested too deeply to write back is the client's 400."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:  # orjson writes at most 255 levels (it reads 1024)
        raise InvalidRequest(
            "the request body nests JSON too deeply to be rewritten for this target"
        ) from None
