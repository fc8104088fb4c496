"""One upstream attempt, the transport: send, read up to the first token, then hand over.

Timeouts: ``connect`` for the TCP/TLS connect; ``first_byte`` from sending the
request to the response headers and, for streams, the first token (opening
events such as the role chunk or ``message_start`` are held back until the
first content event); ``idle`` between body chunks. Each is clamped to what is
left of the route's deadline, and all run on one timer per attempt (rescheduled
per body chunk): no other timer or task. What is read is judged in ``reply``
(error bodies, JSON answers, the peek before the commit point: a 200 stream
whose first event is an error is a failure like any other); a failure to read
or to connect becomes an ``AttemptFailed`` here. Failed attempts close their
upstream response at once; a streaming one is held in the request's scope and
by the answer, and closed (or, read to its end, released to the pool) when the
answer is over, whichever way it ends.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Final

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
from sidecar.pipeline.reply import (
    Peek,
    ScrubbedErrors,
    check_json,
    check_status,
    include_usage,
    is_chat,
    is_stream,
    refusal,
)
from sidecar.policy.model import Route, Target
from sidecar.policy.redaction import Scrubber
from sidecar.providers.streams import StreamTranslator, make_translator
from sidecar.resilience.retry import Failure
from sidecar.streaming.events import EventReader, ReadFailed
from sidecar.streaming.sse import SSEParser
from sidecar.typedefs import WireFormat

MAX_ERROR_BODY: Final = 64 * 1024
MAX_BODY: Final = 64 * 1024 * 1024


class DeadlineExceeded(SidecarError):
    status, type, code = 504, "timeout_error", "deadline_exceeded"


@dataclass(frozen=True, slots=True)
class AttemptDeps:
    session: ClientSession
    scrubber: Scrubber  # the policy's secrets, redacted from what an upstream echoes


def make_attempt(route: Route, target: Target, deps: AttemptDeps) -> Handler:
    upstream = target.upstream
    fmt: WireFormat = upstream.format
    connect = route.timeouts.connect or upstream.connect_timeout
    client_timeout = ClientTimeout(sock_connect=connect)
    first_byte = route.timeouts.first_byte
    idle = route.timeouts.idle
    base_url = upstream.url
    sidecar_keys = bool(route.access.keys)  # the client's credential is the sidecar's key
    scrubber = deps.scrubber

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
        if scrubber:  # error events only: the answer's own events are never scanned
            translator = ScrubbedErrors(translator, scrubber)
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
                    answer = upstream_answer(response, target, scrubber)
                    check_status(answer)
                    if answer.status >= 400:
                        answer.body = await response.content.read(MAX_ERROR_BODY)
                        raise refusal(call, answer, response.headers, scrubber)
                    if is_stream(call, response.headers.get("content-type", "")):
                        await _peek(response, answer, fmt, translator)
                        timer.reschedule(None)
                    else:
                        reading_body = True
                        answer.body = await _read_body(response, timer, deadline.clamp(idle))
                        client = call.client_format if sending.translated else None
                        check_json(answer, fmt, client, chat=is_chat(call))
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
        except (ClientPayloadError, ClientConnectionError) as exc:
            _discard(response)
            raise AttemptFailed(Failure("reset", detail=type(exc).__name__)) from None
        except ReadFailed as failed:  # the stream's connection broke, or it is not SSE
            _discard(response)
            raise AttemptFailed(Failure("reset", detail=failed.cause)) from None
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


def upstream_answer(response: ClientResponse, target: Target, scrubber: Scrubber) -> Answer:
    headers = client_headers(response.headers, target.upstream, scrubber)
    return Answer(response.status, headers, target.upstream, target=target)


async def _peek(
    response: ClientResponse, answer: Answer, fmt: WireFormat, translator: StreamTranslator
) -> None:
    """Read a stream up to its first token (on the attempt's timer); the events are held."""
    parser = SSEParser()
    stream = Upstreaming(response.content, parser, translator, [])
    answer.stream = stream
    reader = EventReader(response.content, parser, fmt)
    peek = Peek(stream)
    while not reader.ended:
        for event, seen in await reader.next_batch():
            if peek.take(event, seen):
                return
        if peek.begun:
            return
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
