"""Cache stage: answer a repeated request from the route's cache, with no upstream call.

Placed after validation and the route's rate limit, before the deadline: a hit
costs no upstream attempt. Only requests ``cache.when`` accepts take part
(their answers carry ``x-sidecar-cache: hit|miss``; others none).

Hit: the stored JSON answer, or, for a streaming request, a well-formed stream
in the client's format rendered from it (``cache/render.py``), handed to the
proxy as a stream that already holds its terminator. An entry that cannot
serve the request (a stream wanted but the answer is not replayable; usage
wanted but the entry came from a stream without usage) counts as a miss, and
the fresh answer replaces it.

Miss: a 2xx JSON answer is stored at once (if it fits ``max_entry_size``). A
stream is assembled from the client-format events as they are relayed and
stored when it has ended complete; a broken, errored or continued stream is
never stored, nor is any answer with status >= 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import orjson
from multidict import CIMultiDict

from sidecar.cache.assemble import Assembler
from sidecar.cache.key import cache_key, cacheable
from sidecar.cache.render import render, replayable
from sidecar.cache.store import Entry, ResponseCache
from sidecar.observability.metrics import Metrics
from sidecar.pipeline.call import Answer, Call, Completion, Handler, Stage, Upstreaming
from sidecar.pipeline.reply import include_usage
from sidecar.policy.model import Route, Upstream
from sidecar.providers.formats import Seen
from sidecar.providers.streams import Passthrough, StreamTranslator
from sidecar.shared.redis import SharedStore
from sidecar.streaming.sse import Event, SSEParser

HEADER = "x-sidecar-cache"
_pending: set[asyncio.Task[None]] = set()  # stream entries being written to Redis


def make_cache(
    route: Route, cache: ResponseCache, shared: SharedStore | None, metrics: Metrics
) -> Stage:
    when = route.cache.when
    upstreams = {target.upstream.name: target.upstream for target in route.fallback}
    default = route.fallback[0].upstream
    hits = metrics.cache_requests.labels(route.name, "hit")
    misses = metrics.cache_requests.labels(route.name, "miss")

    async def response_cache(call: Call, following: Handler) -> Answer:
        if call.method != "POST" or not cacheable(when, call.parsed):
            return await following(call)
        assert call.parsed is not None
        key = cache_key(
            route.name, call.client_format, call.method, call.path_qs, call.parsed, call.headers
        )
        entry = await cache.get(key, shared)
        if entry is not None and _serves(entry, call):
            hits.inc()
            call.cache = "hit"
            return _replay(entry, call, upstreams.get(entry.upstream, default))
        misses.inc()
        call.cache = "miss"
        answer = await following(call)
        answer.headers[HEADER] = "miss"
        if 200 <= answer.status < 300:
            if answer.stream is not None:
                _record(answer.stream, answer, call, cache, key, shared)
            else:
                await _keep(answer, call, cache, key, shared)
        return answer

    return response_cache


def _serves(entry: Entry, call: Call) -> bool:
    if call.stream:
        return entry.replayable and not (entry.lacks_usage and include_usage(call))
    return not entry.lacks_usage


def _replay(entry: Entry, call: Call, upstream: Upstream) -> Answer:
    headers: CIMultiDict[str] = CIMultiDict()
    headers[HEADER] = "hit"
    if not call.stream:
        headers["content-type"] = "application/json"
        return Answer(200, headers, upstream, body=entry.body)
    headers["content-type"] = "text/event-stream; charset=utf-8"
    headers["cache-control"] = "no-cache"
    fmt = call.client_format
    stream = render(fmt, orjson.loads(entry.body), include_usage(call))
    replayed = Upstreaming(
        _Drained(), SSEParser(), Passthrough(fmt), [stream], finished=True, terminated=True
    )
    return Answer(200, headers, upstream, stream=replayed)


async def _keep(
    answer: Answer, call: Call, cache: ResponseCache, key: str, shared: SharedStore | None
) -> None:
    """Store a JSON answer (in the client's format already) when it fits."""
    if "json" not in answer.headers.get("content-type", "") or not cache.fits(len(answer.body)):
        return
    try:
        parsed = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return
    if isinstance(parsed, dict):
        fitting = replayable(call.client_format, parsed)
        await cache.put(key, Entry(answer.body, answer.upstream.name, fitting), shared)


def _record(
    stream: Upstreaming,
    answer: Answer,
    call: Call,
    cache: ResponseCache,
    key: str,
    shared: SharedStore | None,
) -> None:
    """Assemble the stream as it goes out; store it if it ends complete and not continued."""
    assembler = Assembler(call.client_format, cache.config.max_entry_size)
    assembler.feed(b"".join(stream.first))
    stream.translator = _Recording(stream.translator, assembler)

    def at_end(completion: Completion) -> None:
        if completion != "success" or call.continued is not None:
            return
        assembled = assembler.result()
        if assembled is None:
            return
        body = orjson.dumps(assembled)
        entry = Entry(body, answer.upstream.name, True, assembler.usage is None)
        if shared is None:
            cache.remember(key, entry)
        elif cache.fits(len(body)):
            _schedule(cache.put(key, entry, shared))

    answer.held.append(call.scope.hold(at_end))


class _Recording:
    """A translator that also feeds what it gives the client to an Assembler."""

    def __init__(self, inner: StreamTranslator, assembler: Assembler) -> None:
        self._inner = inner
        self._assembler = assembler

    def event(self, event: Event, seen: Seen) -> bytes:
        out = self._inner.event(event, seen)
        self._assembler.feed(out)
        return out

    def finalise(self) -> bytes:
        out = self._inner.finalise()
        self._assembler.feed(out)
        return out


class _Drained:
    """The byte source of a replayed stream: everything is in ``first`` already."""

    async def readany(self) -> bytes:
        return b""

    def at_eof(self) -> bool:
        return True


def _schedule(storing: Coroutine[Any, Any, bool]) -> None:
    async def run() -> None:
        await storing

    task = asyncio.get_running_loop().create_task(run())
    _pending.add(task)
    task.add_done_callback(_pending.discard)
