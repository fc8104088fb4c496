"""Respond stage (outermost): commit the answer to the client and relay it to its end.

Writing the answer's headers is the commit point: before it, the stages inside
may retry and fail over; after it, a failure becomes one final error event in
the stream (never a silent truncation). A stream is relayed event by event
(``streaming/relay.py``); when it breaks and the continuation stage gave the
answer a ``continuer``, the rest of the answer is asked elsewhere and spliced in.
When the answer is over, its held resources are released with its result
(``Answer.done``): success, failure, or cancelled when the client left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web

from sidecar.errors import relayed_error_body
from sidecar.observability.metrics import Metrics
from sidecar.pipeline.call import Answer, Call, Handler, Stage
from sidecar.providers.formats import stream_error
from sidecar.streaming.relay import relay

log = logging.getLogger("sidecar")


def make_respond(metrics: Metrics, policy_hash: str) -> Stage:
    async def respond(call: Call, following: Handler) -> Answer:
        try:
            answer = await following(call)
        finally:
            outside = time.monotonic() - call.started - call.upstream_seconds
            metrics.spent(call.route.name, max(0.0, outside - call.backoff_seconds))
        request = call.request
        assert request is not None
        call.answer = answer
        headers = answer.headers
        headers["x-request-id"] = call.request_id
        headers["x-sidecar-upstream"] = answer.upstream.name
        headers["x-sidecar-attempts"] = str(call.attempts)
        headers["x-sidecar-policy"] = policy_hash
        if answer.stream is None:
            body = answer.body
            if answer.status >= 400:  # the final one: the chain is spent, so the SDK must not
                headers["x-should-retry"] = "false"  # run it again
                body = relayed_error_body(body, call.request_id)
            response = web.Response(status=answer.status, body=body)
            response.headers.extend(headers)  # one copy, not two
            answer.done("success")
            call.response = response
            call.outcome = "success" if answer.status < 400 else "upstream_error"
            return answer
        streaming = web.StreamResponse(status=answer.status, headers=headers)
        call.committed = True
        call.response = streaming
        await streaming.prepare(request)  # the commit point
        call.outcome = await _deliver(request, call, answer, streaming, metrics)
        return answer

    return respond


async def _deliver(
    request: web.Request,
    call: Call,
    answer: Answer,
    streaming: web.StreamResponse,
    metrics: Metrics,
) -> str:
    """Relay the stream; the request's outcome label. The answer is done on every path."""
    try:
        ok, result = await _relay(call, answer, streaming, metrics)
    except asyncio.CancelledError:
        if call.lifecycle is None or not call.lifecycle.aborting:
            raise  # the client went away (the scope releases what the answer held)
        # The shutdown grace ended: say so in the stream, end it cleanly, count it.
        metrics.shutdown_aborted.inc()
        message = "the sidecar shut down before the answer was complete"
        await end_with_error(streaming, call, message, "shutdown")
        answer.done("cancelled")
        return "shutdown_aborted"
    except ConnectionError:  # the client went away mid-write (no cancellation came first)
        metrics.client_cancellations.labels(call.route.name).inc()
        answer.done("cancelled")
        return "client_cancelled"
    except Exception:
        # A bug after the commit point: the headers are out, so the one place that turns
        # errors into responses cannot answer. End the stream with an error event instead
        # of leaving a truncated stream the client could take for complete.
        log.exception("unexpected error relaying the stream of request %s", call.request_id)
        message = f"internal error in the sidecar (request id {call.request_id})"
        await end_with_error(streaming, call, message, "internal_error")
        answer.done("failure")
        return "stream_internal_error"
    answer.done("success" if ok else "failure")
    return "success" if ok and result != "continued" else f"stream_{result}"


async def _relay(
    call: Call, answer: Answer, streaming: web.StreamResponse, metrics: Metrics
) -> tuple[bool, str]:
    """Relay a committed stream, continuing it elsewhere if it breaks and the route says so."""
    stream = answer.stream
    assert stream is not None
    continuer = answer.continuer if not stream.delivered.tool else None
    first = stream.first[:-1] if stream.errored and continuer else stream.first
    await streaming.write(b"".join(first))
    if stream.terminated:
        ok, result = True, "complete"
    elif stream.errored and continuer is None:
        ok, result = False, "upstream_error"
    else:
        if stream.errored:
            ok, result = False, "upstream_error"
        else:
            outcome = await relay(
                stream.content,  # type: ignore[arg-type]
                streaming,
                stream.parser,
                answer.upstream.format,
                call.route.timeouts.idle,
                call.request_id,
                finished=stream.finished,
                translator=stream.translator,
                client=call.client_format,
                delivered=stream.delivered,
                emit_errors=continuer is None,
            )
            ok, result = outcome.ok, outcome.result
        if not ok and continuer is not None:
            if stream.delivered.tool:  # tool calls went out meanwhile: never spliced
                message = f"the answer was interrupted after it started: {result}"
                await streaming.write(
                    stream_error(call.client_format, message, call.request_id, "stream_cut")
                )
            else:
                answer.done("failure")  # the broken target's breaker counts it now
                continued = await continuer(call, answer, streaming)
                call.continued = f"{continued.target}/{continued.mode}/{result}"
                ok, result = (True, "continued") if continued.ok else (False, "incomplete")
    await streaming.write_eof()
    delivered = stream.delivered
    if delivered.prompt_tokens is not None or delivered.completion_tokens is not None:
        model = answer.target.model_for(call.model) if answer.target else call.model
        metrics.count_tokens(
            answer.upstream.name,
            model,
            delivered.prompt_tokens or 0,
            delivered.completion_tokens or 0,
        )
    return ok, result


async def end_with_error(
    streaming: web.StreamResponse, call: Call, message: str, code: str
) -> None:
    """A committed stream's last words: one error event in the client's format, then EOF."""
    with contextlib.suppress(Exception):
        await streaming.write(stream_error(call.client_format, message, call.request_id, code))
        await streaming.write_eof()
