"""Turning a Fault into behaviour on the wire: errors, resets, hangs, and SSE streams."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from typing import Final, NoReturn

import orjson
from aiohttp import web

from mock_provider.faults import Fault
from mock_provider.wire import JSON, Flavour, Reply

_MESSAGES: Final = {
    429: "Rate limit exceeded (simulated by the mock provider)",
    500: "Internal server error (simulated by the mock provider)",
    503: "The server is overloaded (simulated by the mock provider)",
    529: "Overloaded (simulated by the mock provider)",
}


def json_response(body: JSON, name: str, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"x-mock-name": name},
    )


def error_response(
    flavour: Flavour, name: str, status: int, message: str, param: str | None = None
) -> web.Response:
    return json_response(flavour.error(status, message, param), name, status)


async def pause(ms: int) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


async def failure(request: web.Request, flavour: Flavour, name: str, fault: Fault) -> web.Response:
    """Answer as *fault.fail* says: an error status, a timeout, a reset or a hang."""
    match fault.fail:
        case "reset":
            reset_connection(request)
        case "hang":
            await asyncio.get_running_loop().create_future()  # until the client goes
            raise AssertionError("unreachable")  # pragma: no cover
        case "timeout":
            await pause(fault.timeout_ms)
            return error_response(flavour, name, 504, "Timed out (simulated by the mock provider)")
        case "context_length":
            message = (
                "prompt is too long: 210000 tokens > 200000 maximum (simulated); "
                "This model's maximum context length is 200000 tokens"
            )
            body = flavour.error(400, message, "messages", "context_length_exceeded")
            return json_response(body, name, 400)
        case int(status):
            message = _MESSAGES.get(status, f"Simulated {status} error from the mock provider")
            response = error_response(flavour, name, status, message)
            if fault.retry_after is not None:
                response.headers["Retry-After"] = _seconds_text(fault.retry_after)
                response.headers["retry-after-ms"] = str(int(fault.retry_after * 1000))
            return response
    raise AssertionError(f"not a failure: {fault.fail!r}")  # pragma: no cover


def reset_connection(request: web.Request) -> NoReturn:
    """Close the TCP connection with an RST before any response byte."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp treats a cancelled handler as a client that went away: no response, no log noise.
    raise asyncio.CancelledError


async def stream(
    request: web.Request,
    flavour: Flavour,
    name: str,
    reply: Reply,
    fault: Fault,
    include_usage: bool,
    chunk_ms: int,
) -> web.StreamResponse:
    """Send *reply* as SSE, one token per chunk, with the fault's cuts, stalls and garbage."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "x-mock-name": name,
        }
    )
    await response.prepare(request)
    if fault.error_chunk == 0:  # a 200 whose very first event is an error
        return await _error_event(response, flavour)
    await response.write(b"".join(flavour.stream_head(reply)))
    await pause(fault.ttft_ms)
    if await _strike(request, fault, 0):
        return response
    for sent, text in enumerate(reply.tokens, start=1):
        if sent > 1:
            await pause(chunk_ms)
        if sent == fault.malformed_chunk:
            await response.write(flavour.stream_malformed(reply))
        else:
            await response.write(flavour.stream_chunk(reply, text))
        if sent == fault.error_chunk:
            return await _error_event(response, flavour)
        if await _strike(request, fault, sent):
            return response
    if fault.fail_chunk is not None:  # asked to cut after more chunks than there are
        _cut(request)
        return response
    tail = flavour.stream_tail(reply, include_usage)
    if not fault.no_done:
        tail.append(flavour.stream_done())
    await response.write(b"".join(tail))
    await response.write_eof()
    return response


async def _error_event(response: web.StreamResponse, flavour: Flavour) -> web.StreamResponse:
    """End the stream with the provider's "overloaded" error event, as real providers do."""
    status = flavour.overloaded_status
    await response.write(flavour.stream_error(status, _MESSAGES[status]))
    await response.write_eof()
    return response


async def _strike(request: web.Request, fault: Fault, sent: int) -> bool:
    """Apply the faults due after *sent* chunks; True when the stream was cut."""
    if fault.fail_chunk == sent:
        _cut(request)
        return True
    if fault.stall_chunk == sent:
        await pause(fault.stall_ms)
    return False


def _cut(request: web.Request) -> None:
    """Close the connection after what was written: no terminating chunk, no end event."""
    if request.transport is not None:
        request.transport.close()


def _seconds_text(seconds: float) -> str:
    return str(int(seconds)) if seconds == math.floor(seconds) else f"{seconds:g}"
