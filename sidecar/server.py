"""The main port's server: requests aiohttp refuses before any handler exists get JSON.

A request whose head cannot be parsed (a bad header, a head over the limits, a
bad request line) never reaches the proxy: aiohttp answers it itself, in plain
text that repeats part of what it could not parse — an ``Authorization`` header
included. ``JsonErrorRunner`` serves the application with a request handler whose
error answers are the sidecar's: an OpenAI-shaped JSON error (the format cannot
be known from a head that did not parse), a fixed message per status, and none
of the client's bytes. aiohttp still logs the refusal (``observability/logs.py``
keeps that line short and free of the request's bytes) and closes the connection.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

_CODES: Final = {
    400: ("invalid_request_error", "malformed_request"),
    413: ("invalid_request_error", "request_head_too_large"),
    431: ("invalid_request_error", "request_head_too_large"),
    500: ("server_error", "internal_error"),
    504: ("timeout_error", "gateway_timeout"),
}


def error_body(status: int) -> bytes:
    """The sidecar's own answer to a request refused before it had a handler."""
    kind, code = _CODES.get(status, ("invalid_request_error", "malformed_request"))
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    message = (
        f"{phrase}: the request could not be read as HTTP (its request line or headers "
        "are malformed or too large)"
        if status < 500
        else f"{phrase}: the sidecar could not answer this request"
    )
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}})


class _Handler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs, and raises if sent already
        response = web.Response(
            status=status, body=error_body(status), content_type="application/json"
        )
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparsable requests with ``error_body``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the same server; only its connection handler class differs
        return server
