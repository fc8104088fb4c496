"""Request bodies: read within the body timeout, undo the Content-Encoding, cap the size.

aiohttp's own request decompression is off (``app.server_options``), so the bytes read
here are the bytes on the wire and the sidecar decides what they mean:

- no coding, or ``identity``: the body as sent;
- ``gzip`` (``x-gzip``) or ``deflate`` (zlib-wrapped, as RFC 9110 says, or raw, as
  some clients send it): decoded incrementally, concatenated members one after the
  other (as gzip(1) does). The upstream gets identity bytes; the Content-Encoding
  header is never forwarded (``headers.py``);
- anything else (``br`` and ``zstd``: no decoder installed; ``compress``; unknown
  tokens) and stacked codings (``gzip, gzip``): 415, no upstream call.

The limit (the largest route's ``max_body``) caps both the bytes on the wire and the
decoded bytes. ``Decoder`` never inflates more than *limit* + 1 bytes, in steps of at
most ``STEP`` bytes with a yield to the event loop between steps, so a zip bomb costs
*limit* bytes of memory and is cut off by its size, or by the body timeout.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from typing import Final

from aiohttp import StreamReader, web
from multidict import CIMultiDictProxy

from sidecar.errors import (
    BodyTimeout,
    BodyTooLarge,
    InvalidRequest,
    SidecarError,
    UnsupportedEncoding,
)
from sidecar.policy.model import PolicySet
from sidecar.state import BODY_TIMEOUT, REGISTRIES

HARD_BODY_LIMIT: Final = 64 * 1024 * 1024
STEP: Final = 64 * 1024  # most decoded bytes one decompress call makes
ACCEPTED: Final = "gzip, deflate, identity"  # sent as Accept-Encoding with a 415
_CODINGS: Final = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
# Codings named in the metric as themselves; any other token is counted as "other".
_KNOWN: Final = frozenset({"identity", "gzip", "deflate", "br", "zstd", "compress"})
_MAX_TOKEN: Final = 32  # of a coding quoted back in a 415


class Decoder:
    """Undoes one content coding, incrementally, never producing more than *limit* bytes.

    ``feed(data)`` yields decoded pieces of at most ``STEP`` bytes (the caller may yield
    to the event loop between them); ``finish()`` checks the data ended where a member
    ends. Past *limit* decoded bytes: ``BodyTooLarge``; corrupt data: ``InvalidRequest``.
    """

    __slots__ = ("_coding", "_held", "_limit", "_zlib", "size")

    def __init__(self, coding: str, limit: int) -> None:
        if coding not in ("gzip", "deflate"):
            raise ValueError(f"no decoder for {coding!r}")
        self._coding = coding
        self._limit = limit
        self._zlib: zlib._Decompress | None = None  # None between members
        self._held = b""  # deflate: a lone first byte, until the wrapper can be told
        self.size = 0  # decoded bytes so far

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._held:
            data, self._held = self._held + data, b""
        while data or self._zlib is not None:
            if self._zlib is None:
                if self._coding == "deflate" and len(data) < 2:
                    self._held = data
                    return
                self._zlib = zlib.decompressobj(self._wbits(data))
            step = min(STEP, self._limit - self.size + 1)
            try:
                out = self._zlib.decompress(data, step)
            except zlib.error:
                raise InvalidRequest(f"the request body is not valid {self._coding} data") from None
            self.size += len(out)
            if self.size > self._limit:
                raise BodyTooLarge(
                    f"the request body decodes to more than the limit of {self._limit} bytes"
                )
            if out:
                yield out
            if self._zlib.eof:  # a member ended: what follows is the next one
                data, self._zlib = self._zlib.unused_data, None
                continue
            data = self._zlib.unconsumed_tail
            if not data and len(out) < step:
                return  # all input taken and nothing pending (a full step may leave some)

    def finish(self) -> None:
        """The body ended: it must not end inside a member."""
        if self._zlib is not None or self._held:
            raise InvalidRequest(f"the request body ends inside its {self._coding} data")

    def _wbits(self, data: bytes) -> int:
        if self._coding == "gzip":
            return 16 + zlib.MAX_WBITS
        # A zlib header: compression method 8, a window of at most 32 KiB, a checksum.
        wrapped = data[0] & 0x0F == 8 and data[0] >> 4 <= 7 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS


def codings(headers: CIMultiDictProxy[str]) -> tuple[str, ...]:
    """The Content-Encoding tokens, lower case, in order; ``identity`` left out."""
    values = headers.getall("content-encoding", ())
    tokens = (token.strip().lower() for value in values for token in value.split(","))
    return tuple(token for token in tokens if token and token != "identity")


def decoder_for(tokens: tuple[str, ...], limit: int) -> Decoder | None:
    """A decoder for the body's coding, None for identity; 415 for what cannot be decoded."""
    if not tokens:
        return None
    if len(tokens) > 1:
        raise UnsupportedEncoding(
            f"stacked content codings ({_quoted(', '.join(tokens))}) are not supported; "
            f"send one content coding of: {ACCEPTED}",
            ACCEPTED,
        )
    coding = _CODINGS.get(tokens[0])
    if coding is None:
        raise UnsupportedEncoding(
            f"content encoding {_quoted(tokens[0])} is not supported; use one of: {ACCEPTED}",
            ACCEPTED,
        )
    return Decoder(coding, limit)


def encoding_label(tokens: tuple[str, ...]) -> str:
    """The bounded metric label for a body's codings."""
    if not tokens:
        return "identity"
    if len(tokens) > 1:
        return "stacked"
    token = "gzip" if tokens[0] == "x-gzip" else tokens[0]
    return token if token in _KNOWN else "other"


def _quoted(text: str) -> str:
    """A client's token as it may appear in an error message: short and printable."""
    short = text[:_MAX_TOKEN] + ("…" if len(text) > _MAX_TOKEN else "")
    return repr(short) if short.isprintable() else "(unprintable)"


async def read_body(request: web.Request, policy: PolicySet) -> bytes:
    """The request body, decoded, at most the largest route's ``max_body``.

    413 past it (on the wire or decoded), 415 for a coding that cannot be decoded, 400
    for corrupt or short data, 408 when it does not arrive within the body timeout.
    """
    if not request.body_exists:
        return b""
    limit = max((route.validate.max_body for route in policy.routes), default=HARD_BODY_LIMIT)
    if "content-encoding" not in request.headers:
        return await _read(request, limit, None)
    tokens = codings(request.headers)
    result = "client_cancelled"
    try:
        body = await _read(request, limit, decoder_for(tokens, limit))
        result = "decoded" if tokens else "identity"
        return body
    except SidecarError as error:
        result = error.code
        raise
    finally:
        request.app[REGISTRIES].metrics.request_encodings.labels(
            encoding_label(tokens), result
        ).inc()


async def _read(request: web.Request, limit: int, decoder: Decoder | None) -> bytes:
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    if declared == 0:
        return b""
    content = request.content
    if decoder is None and declared is not None and content.is_eof():
        body = content.read_nowait()  # arrived with the head: no timer needed
        if len(body) != declared:
            raise InvalidRequest("the request body is shorter than its Content-Length")
        return body
    timeout = request.app[BODY_TIMEOUT]
    try:
        async with asyncio.timeout(timeout):
            if decoder is None and declared is not None:
                return await _read_exactly(content, declared)
            return await _read_stream(content, declared, limit, decoder)
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive within {timeout:g}s of the request head"
        ) from None


async def _read_exactly(content: StreamReader, declared: int) -> bytes:
    try:
        return await content.readexactly(declared)
    except asyncio.IncompleteReadError:
        raise InvalidRequest("the request body is shorter than its Content-Length") from None


async def _read_stream(
    content: StreamReader, declared: int | None, limit: int, decoder: Decoder | None
) -> bytes:
    """The body as it arrives (chunked, or to decode): 413 past *limit* bytes on the wire."""
    pieces: list[bytes] = []
    received = 0
    async for chunk in content.iter_any():
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
        if decoder is None:
            pieces.append(chunk)
            continue
        for piece in decoder.feed(chunk):
            pieces.append(piece)
            await asyncio.sleep(0)  # one step of decoding at a time: the loop keeps serving
    if declared is not None and received < declared:
        raise InvalidRequest("the request body is shorter than its Content-Length")
    if decoder is not None:
        decoder.finish()
    return b"".join(pieces)
