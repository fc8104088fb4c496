"""What flows through the pipeline: the Call (one client request) and the Answer (its reply).

Stage signature: ``async def stage(call, next) -> Answer``. Failures travel as
exceptions: ``AttemptFailed`` (one attempt), ``TargetFailed`` (a fallback target
gave up, with the reason), ``Rejected`` (a final answer the sidecar gives itself).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal, Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.pipeline.scope import Completion, Held, Scope
from sidecar.policy.model import Route, Target, Upstream
from sidecar.providers.formats import Seen
from sidecar.providers.streams import StreamTranslator
from sidecar.resilience.deadline import Deadline
from sidecar.resilience.retry import Failure, MoveOnReason
from sidecar.streaming.delivered import Delivered
from sidecar.streaming.sse import SSEParser
from sidecar.typedefs import WireFormat

if TYPE_CHECKING:
    from aiohttp import web

    from sidecar.lifecycle import Lifecycle
    from sidecar.streaming.relay import ByteSink

__all__ = ["Completion", "Held", "Scope"]
SkipReason = (
    MoveOnReason
    | Literal["breaker_open", "unsupported", "context_length", "rate_limited", "hedged"]
)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What one target is sent: path with query, body, headers to add or drop."""

    path_qs: str
    body: bytes
    translated: bool
    add_headers: tuple[tuple[str, str], ...] = ()
    drop_headers: tuple[str, ...] = ()


@dataclass(slots=True)
class Upstreaming:
    """A live upstream stream: the response kept open, its parser, and the events peeked."""

    content: object  # aiohttp StreamReader (typed loosely to keep aiohttp out of this module)
    parser: SSEParser
    translator: StreamTranslator  # upstream events -> the client's format
    first: list[bytes]  # client bytes of the events read before the commit point
    finished: bool = False  # a finish/stop reason was among the first events
    terminated: bool = False  # the terminator was among the first events
    errored: bool = False  # an error event (after the first token) was among them
    delivered: Delivered = field(default_factory=Delivered)  # what the first events carry
    seen: list[Seen] = field(default_factory=list)  # the peeked events, classified


@dataclass(slots=True)
class Answer:
    """An upstream reply ready for the client. Writing its headers is the commit point."""

    status: int
    headers: CIMultiDict[str]
    upstream: Upstream
    body: bytes = b""
    target: Target | None = None
    usage: tuple[int, int] | None = None  # (prompt, completion) of a non-streaming answer
    stream: Upstreaming | None = None
    # What this answer still holds (permits, slots, its upstream response), released
    # with the answer's result when it has been delivered; the request's Scope holds
    # them too, so an answer that is never delivered still lets go of them.
    held: list[Held] = field(default_factory=list)
    continuer: Continuer | None = None  # finishes a broken stream (the continuation stage)

    def done(self, completion: Completion) -> None:
        """The answer is over: release what it holds, innermost stage first."""
        for held in self.held:
            held.release(completion)
        self.held.clear()


@dataclass(slots=True)
class Call:
    """One client request on its way through one route's pipeline."""

    request_id: str
    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    client_format: WireFormat
    route: Route
    body: bytes
    parsed: dict[str, object] | None
    model: str | None
    stream: bool
    deadline: Deadline | None = None
    remote: str | None = None  # the client's address
    attempts: int = 0
    scope: Scope = field(default_factory=Scope)  # shared by derived calls (hedge, continuation)
    outgoing: Outgoing | None = None  # set per target by the adapter stage
    continued: str | None = None  # "target/mode/result" when a broken stream was continued
    upstream_seconds: float = 0.0  # time spent in upstream attempts (for the overhead metric)
    backoff_seconds: float = 0.0
    fallbacks: list[tuple[str, SkipReason]] = field(default_factory=list)
    prompt_estimate: int = 0  # prompt tokens, characters/4 (set by validation)
    cache: str | None = None  # "hit" or "miss" when the route's cache took part
    prefer: str | None = None  # the upstream the request asked to try first (prefer stage)
    request: web.Request | None = None  # the client's request (the respond stage writes to it)
    lifecycle: Lifecycle | None = None  # the server's (is a shutdown aborting requests?)
    started: float = 0.0  # time.monotonic() when the request arrived
    answer: Answer | None = None  # the answer being written (set by the respond stage)
    response: web.StreamResponse | None = None  # set by the respond stage
    outcome: str = "error"  # the request's outcome label, set by the respond stage
    committed: bool = False  # the answer's headers went out (the commit point)


Handler = Callable[[Call], Awaitable[Answer]]


class Continued(Protocol):
    ok: bool
    target: str | None
    mode: str | None


class Continuer(Protocol):
    """Finishes a committed stream that broke (*result*): writes the rest to *sink*."""

    def __call__(self, call: Call, answer: Answer, sink: ByteSink) -> Awaitable[Continued]: ...


class Stage(Protocol):
    """One pipeline stage: do something around the rest of the pipeline (*following*)."""

    def __call__(self, call: Call, following: Handler) -> Awaitable[Answer]: ...


class AttemptFailed(Exception):
    """One attempt failed; *answer* holds the upstream's error reply when there was one."""

    def __init__(self, failure: Failure, answer: Answer | None = None) -> None:
        super().__init__(failure.label)
        self.failure = failure
        self.answer = answer


class BreakerRejected(Exception):
    """The target's breaker is open: no upstream call was made."""

    def __init__(self, key: str, retry_in: float) -> None:
        super().__init__(key)
        self.key = key
        self.retry_in = retry_in


class TargetFailed(Exception):
    """A fallback target gave up; the chain moves to the next one."""

    def __init__(
        self,
        reason: SkipReason,
        failure: Failure | None = None,
        answer: Answer | None = None,
        retry_in: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure
        self.answer = answer
        self.retry_in = retry_in


def fold(stages: list[Stage], terminal: Handler) -> Handler:
    """Compose stages outermost first: ``fold([a, b], t)`` runs a(b(t)).

    Each stage is bound with ``functools.partial``, not a wrapper coroutine, so a
    request pays one coroutine per stage and no more.
    """
    handler = terminal
    for stage in reversed(stages):
        handler = partial(stage, following=handler)
    return handler
