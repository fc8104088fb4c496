"""The mock provider's aiohttp application: both wire formats plus control and stats."""

from __future__ import annotations

import hmac
from typing import Final

import orjson
from aiohttp import web

from mock_provider.anthropic_wire import AnthropicFlavour
from mock_provider.content import Answerer, prompt_tokens
from mock_provider.control import FailureConfig
from mock_provider.embeddings import embeddings_body
from mock_provider.faults import Fault, FaultError, fault_from_request
from mock_provider.openai_wire import OpenAIFlavour
from mock_provider.responses import error_response, failure, json_response, pause, stream
from mock_provider.state import STATE, MockSettings, MockState
from mock_provider.turns import answer_for
from mock_provider.wire import BadRequest, Flavour, Reply, ToolCall

OPENAI: Final = OpenAIFlavour()
ANTHROPIC: Final = AnthropicFlavour()
_STREAM_TRUE: Final = frozenset({"1", "true", "yes", "on"})


def create_app(settings: MockSettings | None = None) -> web.Application:
    """Build one mock provider; *settings* default to the canned answer and no faults."""
    settings = settings or MockSettings()
    app = web.Application(client_max_size=settings.max_body)
    app[STATE] = MockState(settings, Answerer(settings.answer, settings.echo))
    app.router.add_post("/v1/chat/completions", _chat_openai)
    app.router.add_post("/v1/messages", _chat_anthropic)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/config/failures", _config_get)
    app.router.add_post("/config/failures", _config_post)
    app.router.add_delete("/config/failures", _config_delete)
    app.router.add_get("/stats", _stats_get)
    app.router.add_post("/stats/reset", _stats_reset)
    return app


async def _chat_openai(request: web.Request) -> web.StreamResponse:
    return await _chat(request, OPENAI)


async def _chat_anthropic(request: web.Request) -> web.StreamResponse:
    return await _chat(request, ANTHROPIC)


async def _chat(request: web.Request, flavour: Flavour) -> web.StreamResponse:
    state = request.app[STATE]
    name = state.settings.name
    with state.stats.visit(request.path) as visit:
        try:
            explicit, body = await _intake(request, flavour)
            chat = flavour.parse_chat(body)
            visit.model = chat.model
            answer = answer_for(
                chat, state.answerer, state.settings.prefill or flavour.default_prefill
            )
        except BadRequest as exc:
            return error_response(flavour, name, 400, str(exc), exc.param)
        except _Rejected as exc:
            visit.outcome = str(exc.response.status)
            return exc.response
        streaming = chat.stream or _stream_requested(request)
        fault = explicit or state.controller.next_fault(
            chat.model, streaming, flavour.overloaded_status
        )
        visit.outcome = fault.outcome
        await pause(fault.delay)
        if fault.fail is not None:
            return await failure(request, flavour, name, fault)
        tokens = answer.tokens
        limit = chat.max_tokens
        tool_call = None
        if answer.tool is not None:
            call_id = state.next_tool_call_id("call_" if flavour is OPENAI else "toolu_")
            tool_call = ToolCall(call_id, answer.tool)
        reply = Reply(
            id=state.next_id("chatcmpl-" if flavour is OPENAI else "msg_"),
            created=state.now(),
            model=chat.model,
            tokens=tokens[:limit] if limit else tokens,
            prompt_tokens=prompt_tokens(chat.messages, chat.system),
            truncated=limit is not None and limit < len(tokens),
            tool_call=tool_call,
        )
        if not streaming:
            await pause(fault.ttft_ms)
            return json_response(flavour.completion(reply), name)
        chunk_ms = fault.chunk_ms or state.settings.chunk_ms
        return await stream(request, flavour, name, reply, fault, chat.include_usage, chunk_ms)


async def _embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = state.settings.name
    with state.stats.visit(request.path) as visit:
        try:
            explicit, body = await _intake(request, OPENAI)
            model, payload = embeddings_body(body)
        except BadRequest as exc:
            return error_response(OPENAI, name, 400, str(exc), exc.param)
        except _Rejected as exc:
            visit.outcome = str(exc.response.status)
            return exc.response
        visit.model = model
        fault = explicit or state.controller.next_fault(model, False, OPENAI.overloaded_status)
        visit.outcome = fault.outcome
        await pause(fault.delay)
        if fault.fail is not None:
            return await failure(request, OPENAI, name, fault)
        await pause(fault.ttft_ms)
        return json_response(payload, name)


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    models = state.settings.models
    if "anthropic-version" in request.headers:
        data: list[object] = [
            {
                "type": "model",
                "id": model,
                "display_name": model,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for model in models
        ]
        body = {
            "data": data,
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        }
    else:
        data = [
            {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "mock"}
            for model in models
        ]
        body = {"object": "list", "data": data}
    return json_response(body, state.settings.name)


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response({"status": "healthy", "name": state.settings.name}, state.settings.name)


async def _config_get(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(state.controller.snapshot(), state.settings.name)


async def _config_post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        config = FailureConfig.parse(await _read_json(request, OPENAI))
    except _Rejected as exc:
        return exc.response
    except (FaultError, BadRequest) as exc:
        return error_response(OPENAI, state.settings.name, 400, str(exc))
    state.controller.configure(config)
    return json_response(state.controller.snapshot(), state.settings.name)


async def _config_delete(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.controller.reset()
    return json_response(state.controller.snapshot(), state.settings.name)


async def _stats_get(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(state.stats.snapshot(), state.settings.name)


async def _stats_reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.stats.reset()
    return json_response(state.stats.snapshot(), state.settings.name)


class _Rejected(Exception):
    """Carries a ready error response (401, 413) out of request parsing."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def _intake(request: web.Request, flavour: Flavour) -> tuple[Fault | None, object]:
    """Check the key, read the fault parameters and the JSON body, or reject the request."""
    _check_key(request, flavour, request.app[STATE].settings.api_key)
    try:
        explicit = fault_from_request(request.query, request.headers)
    except FaultError as exc:
        raise BadRequest(str(exc)) from None
    return explicit, await _read_json(request, flavour)


async def _read_json(request: web.Request, flavour: Flavour) -> object:
    settings = request.app[STATE].settings
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        message = f"the request body exceeds the mock's limit of {settings.max_body} bytes"
        raise _Rejected(error_response(flavour, settings.name, 413, message)) from None
    if not raw:
        raise BadRequest("the request body is empty; a JSON object is required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def _check_key(request: web.Request, flavour: Flavour, api_key: str | None) -> None:
    if api_key is None:
        return
    if flavour is ANTHROPIC:
        # x-api-key, or a Bearer token: the anthropic SDK 2.x sends its api_key that way.
        presented = request.headers.get("x-api-key") or request.headers.get(
            "Authorization", ""
        ).removeprefix("Bearer ")
    else:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not hmac.compare_digest(presented.encode(), api_key.encode()):
        response = error_response(
            flavour, request.app[STATE].settings.name, 401, "invalid or missing API key"
        )
        raise _Rejected(response)


def _stream_requested(request: web.Request) -> bool:
    value = request.query.get("stream") or request.headers.get("x-mock-stream") or ""
    return value.lower() in _STREAM_TRUE
