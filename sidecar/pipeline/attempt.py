"""One upstream attempt: connect, first byte (for streams: first token), then hand over.

Timeouts: ``connect`` for the TCP/TLS connect; ``first_byte`` from sending the
request to the response headers and, for streams, the first token (opening
events such as the role chunk or ``message_start`` are held back until the
first content event); ``idle`` between body chunks. Each is clamped to what is
left of the route's deadline. A 200 stream whose first event is an error is a
failure like any other (peek before commit). Failed attempts close their
upstream response at once; a streaming one is held in the request's scope and
by the answer, and closed (or, read to its end, released to the pool) when the
answer is over, whichever way it ends.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Final

import orjson
from aiohttp import (
    ClientConnectionError,
    ClientConnectorError,
    ClientPayloadError,
    ClientResponse,
    ClientResponseError,
    ClientSession,
    ClientTimeout,
    ConnectionTimeoutError,
)

from sidecar.errors import SidecarError
from sidecar.headers import client_headers, upstream_headers
from sidecar.pipeline.call import Answer, AttemptFailed, Call, Completion, Handler, Upstreaming
from sidecar.policy.model import Route, Target
from sidecar.providers.formats import inspect
from sidecar.providers.responses import (
    anthropic_message_to_openai,
    error_status,
    openai_completion_to_anthropic,
    translate_error,
)
from sidecar.providers.streams import StreamTranslator, make_translator
from sidecar.resilience.retry import Failure, parse_retry_after
from sidecar.streaming.relay import UNTRANSLATABLE
from sidecar.streaming.sse import SSEError, SSEParser
from sidecar.typedefs import WireFormat

CHAT_PATHS: Final = frozenset({"/v1/chat/completions", "/v1/messages"})
MAX_ERROR_BODY: Final = 64 * 1024
MAX_BODY: Final = 64 * 1024 * 1024


class DeadlineExceeded(SidecarError):
    status, type, code = 504, "timeout_error", "deadline_exceeded"


@dataclass(frozen=True, slots=True)
class AttemptDeps:
    session: ClientSession


def make_attempt(route: Route, target: Target, deps: AttemptDeps) -> Handler:
    upstream = target.upstream
    fmt: WireFormat = upstream.format
    connect = route.timeouts.connect or upstream.connect_timeout
    client_timeout = ClientTimeout(sock_connect=connect)
    first_byte = route.timeouts.first_byte
    idle = route.timeouts.idle
    base_url = upstream.url
    sidecar_keys = bool(route.access.keys)  # the client's credential is the sidecar's key

    async def attempt(call: Call) -> Answer:
        deadline = call.deadline
        assert deadline is not None
        budget = deadline.clamp(first_byte)
        if budget <= 0:
            raise DeadlineExceeded(f"the route's deadline ({route.deadline:g}s) ran out")
        call.attempts += 1
        sending = call.outgoing
        assert sending is not None  # the adapter stage sets it
        headers = upstream_headers(
            call.headers, upstream, call.request_id, call.client_format, sidecar_keys
        )
        for name in sending.drop_headers:
            headers.popall(name, None)
        headers.extend(sending.add_headers)
        translator = make_translator(fmt, call.client_format, call.request_id, include_usage(call))
        response: ClientResponse | None = None
        reading_body = False
        try:
            try:
                # One timer for the attempt: first byte, then rescheduled per body chunk.
                async with asyncio.timeout(budget) as timer:
                    response = await deps.session.request(
                        call.method,
                        base_url + sending.path_qs,
                        data=sending.body or None,
                        headers=headers,
                        timeout=client_timeout,
                        allow_redirects=False,
                    )
                    answer = await _first_part(
                        response, upstream_answer(response, target), call, translator
                    )
                    if answer.stream is None and answer.status < 400:
                        reading_body = True
                        answer.body = await _read_body(response, timer, deadline.clamp(idle))
                        _check_json(
                            answer,
                            fmt,
                            call.client_format if sending.translated else None,
                            chat=_chat(call),
                        )
                    else:
                        timer.reschedule(None)
            except ConnectionTimeoutError:
                raise  # a connect timeout (also a TimeoutError): handled below
            except TimeoutError:
                if reading_body:
                    raise  # idle while reading the body: handled below
                if budget < first_byte and deadline.expired:
                    raise DeadlineExceeded(
                        f"the route's deadline ({route.deadline:g}s) ran out"
                    ) from None
                raise AttemptFailed(Failure("first_byte_timeout")) from None
        except (ConnectionTimeoutError, ClientConnectorError) as exc:
            _discard(response)
            raise AttemptFailed(Failure("connect_error", detail=type(exc).__name__)) from None
        except (ClientPayloadError, ClientConnectionError, SSEError) as exc:
            _discard(response)
            raise AttemptFailed(Failure("reset", detail=type(exc).__name__)) from None
        except ClientResponseError:  # not HTTP: a bad status line, header or chunk size
            _discard(response)
            raise AttemptFailed(Failure("status", 502, detail="invalid HTTP")) from None
        except TimeoutError:
            _discard(response)
            raise AttemptFailed(Failure("timeout", detail="idle")) from None
        except BaseException:
            _discard(response)
            raise
        if answer.stream is None:
            response.release()  # the body is read: the connection goes back to the pool
        else:
            answer.held.append(call.scope.hold(partial(_finish, response)))
        return answer

    return attempt


def _discard(response: ClientResponse | None) -> None:
    """A failed attempt's response: close it (and its connection) at once."""
    if response is not None:
        response.close()


def _finish(response: ClientResponse, _: Completion) -> None:
    """After the relay: a fully read stream frees its connection for reuse, else it closes."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()


def upstream_answer(response: ClientResponse, target: Target) -> Answer:
    headers = client_headers(response.headers, target.upstream)
    return Answer(response.status, headers, target.upstream, target=target)


def _chat(call: Call) -> bool:
    """Whether the request went to a chat endpoint (whose answers the sidecar can check)."""
    sending = call.outgoing
    return sending is not None and sending.path_qs.split("?", 1)[0] in CHAT_PATHS


def include_usage(call: Call) -> bool:
    """Whether the client wants usage at the end of a stream (Anthropic clients always get it)."""
    if call.client_format == "anthropic":
        return True
    options = call.parsed.get("stream_options") if call.parsed else None
    return isinstance(options, dict) and options.get("include_usage") is True


async def _first_part(
    response: ClientResponse, answer: Answer, call: Call, translator: StreamTranslator
) -> Answer:
    """Error bodies are read whole; streams are read up to their first token."""
    fmt = answer.upstream.format
    if not 100 <= answer.status <= 599:
        raise AttemptFailed(Failure("status", 502, detail=f"invalid status {answer.status}"))
    if answer.status >= 400:
        answer.body = await response.content.read(MAX_ERROR_BODY)
        failure = Failure(
            "status",
            answer.status,
            parse_retry_after(
                response.headers.get("retry-after-ms"), response.headers.get("retry-after")
            ),
        )
        if call.outgoing is not None and call.outgoing.translated:
            client = call.client_format
            answer.body = translate_error(fmt, client, answer.status, answer.body)
            answer.status = error_status(fmt, client, answer.status)
            answer.headers["content-type"] = "application/json"
        raise AttemptFailed(failure, answer)
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        if call.stream and _chat(call):  # a streaming client cannot read a JSON answer
            raise AttemptFailed(Failure("status", 502, detail="no event stream from upstream"))
        return answer
    if not call.stream and _chat(call):  # nor a JSON client an event stream
        raise AttemptFailed(Failure("status", 502, detail="an event stream for a JSON request"))
    parser = SSEParser()
    stream = Upstreaming(response.content, parser, translator, [])
    answer.stream = stream
    begun = False  # opening events (role chunk, message_start, ping) are held until content
    while True:
        chunk = await response.content.readany()
        events = parser.feed(chunk) if chunk else []
        if not chunk:
            last = parser.close()
            events = [last] if last else []
        for event in events:
            seen = inspect(fmt, event)
            if seen.error_status is not None and not begun:
                raise AttemptFailed(Failure("status", seen.error_status, detail=seen.error_message))
            if seen.malformed:  # it may have carried text: never skipped, tried again
                raise AttemptFailed(Failure("status", 502, detail="malformed event"))
            try:
                stream.first.append(translator.event(event, seen))
            except UNTRANSLATABLE:  # valid JSON, but garbage where the translation looks
                detail = "an event that cannot be translated"
                raise AttemptFailed(Failure("status", 502, detail=detail)) from None
            stream.seen.append(seen)
            stream.delivered.add(seen)
            stream.finished = stream.finished or seen.finished
            if seen.terminator or seen.error_status is not None:
                # The stream ended in this same read: after the commit point, as it is.
                stream.terminated = seen.terminator
                stream.errored = seen.error_status is not None
                return answer
            begun = begun or seen.substantive
        if begun:
            return answer
        if not chunk:
            raise AttemptFailed(Failure("status", 502, detail="stream ended before any content"))


async def _read_body(response: ClientResponse, timer: asyncio.Timeout, idle: float) -> bytes:
    """The whole body; at most *idle* seconds of silence between chunks (on *timer*)."""
    content = response.content
    if content.is_eof():  # a small answer usually arrives with its headers: take it as is
        body = content.read_nowait()
        if len(body) > MAX_BODY:
            raise AttemptFailed(Failure("status", 502, detail="upstream body too large"))
        return body
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    idle = idle or 0.001  # the deadline has run out: give up at the first silence
    timer.reschedule(loop.time() + idle)
    while True:
        chunk = await response.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY:
            raise AttemptFailed(Failure("status", 502, detail="upstream body too large"))
        chunks.append(chunk)
        timer.reschedule(loop.time() + idle)


def _check_json(
    answer: Answer, upstream: WireFormat, client: WireFormat | None, *, chat: bool
) -> None:
    """A 2xx JSON answer must parse (else it is an upstream failure); translate it if asked.

    A chat answer must be a JSON object whatever its content type: an HTML login
    page or a bare string in a 200 is a failure to fail over from, not an answer.
    """
    if not chat and "json" not in answer.headers.get("content-type", "json"):
        return
    try:
        parsed = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        raise AttemptFailed(Failure("status", 502, detail="invalid JSON from upstream")) from None
    if not isinstance(parsed, dict):
        if chat:
            raise AttemptFailed(Failure("status", 502, detail="chat answer is not a JSON object"))
        return
    if chat:
        answer.headers["content-type"] = "application/json"
    answer.usage = _usage(parsed)
    if client is None or client == upstream:
        return
    try:
        if upstream == "anthropic":
            answer.body = orjson.dumps(anthropic_message_to_openai(parsed))
        else:
            answer.body = orjson.dumps(openai_completion_to_anthropic(parsed))
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (255 levels)
        raise AttemptFailed(Failure("status", 502, detail="upstream JSON too deep")) from None


def _usage(body: dict[str, object]) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an OpenAI or Anthropic answer, when it says."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None
