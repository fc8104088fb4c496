"""Mid-stream continuation: finishing an answer whose stream broke after the commit point.

Theory of operation. The relay records the text it has delivered. When the
stream then breaks (cut, stall, upstream error event, end without a finish)
and the route enables continuation, the answer is asked of another target
(or the same one), through that target's own chain, so retries, breakers,
translation and timeouts apply as to any attempt, within the same deadline
and retry budget:

* prefill — the target declares ``prefill``: the delivered text goes as a
  trailing assistant turn and the new output is appended as it comes;
* restart — the target cannot prefill, or answered the prefill with a 400:
  the original request is sent again, the regenerated text is swallowed while
  it matches what was delivered, and the rest is streamed. If it diverges,
  the client gets one error event saying the answer could not be completed.

The client sees one stream in its own format: the continuation's opening
events are dropped, its text is written by the sidecar (``ClientWriter``),
and the ending (finish reason, usage for the whole answer, terminator) is
written once, at the end. A stream that carried tool calls is never spliced.

The continuation stage (outside the rest of the route's pipeline, inside the
respond stage) gives each streamed answer a ``continuer``; the respond stage
calls it when the relay breaks. The continuation's answer is held in the
request's scope like any other, so a client that leaves mid-splice releases it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import orjson

from sidecar.errors import SidecarError
from sidecar.observability.metrics import Metrics
from sidecar.pipeline.call import Answer, AttemptFailed, Call, Handler, Stage, TargetFailed
from sidecar.pipeline.reply import include_usage
from sidecar.pipeline.retry import NotRetryable
from sidecar.policy.model import Route, Target
from sidecar.policy.redaction import Scrubber
from sidecar.providers.formats import Seen, stream_error
from sidecar.providers.streams import ClientWriter, Identity, first_identity
from sidecar.resilience.budget import RetryBudget
from sidecar.streaming.delivered import Delivered
from sidecar.streaming.events import EventReader, ReadFailed
from sidecar.streaming.relay import ByteSink
from sidecar.streaming.sse import Event


def make_continuation(
    route: Route,
    targets: tuple[tuple[Target, Handler], ...],
    budget: RetryBudget,
    metrics: Metrics,
    scrubber: Scrubber | None = None,
) -> Stage:
    """Give each streamed answer of the route a ``continuer`` for when it breaks;
    *scrubber*: the policy's secrets, redacted from an upstream error quoted to the client."""

    async def finish(call: Call, answer: Answer, sink: ByteSink) -> Continued:
        stream = answer.stream
        assert stream is not None
        continued = await continue_answer(
            call,
            targets,
            answer.target,
            budget,
            stream.delivered,
            sink,
            include_usage(call),
            scrubber=scrubber,
            identity=first_identity(stream.first) if call.client_format == "openai" else None,
        )
        metrics.continuations.labels(
            route.name,
            continued.target or "none",
            continued.mode or "none",
            "ok" if continued.ok else "failed",
        ).inc()
        return continued

    async def continuation(call: Call, following: Handler) -> Answer:
        answer = await following(call)
        if answer.stream is not None:
            answer.continuer = finish
        return answer

    return continuation


class Diverged(Exception):
    """The regenerated answer does not match what the client already has."""


@dataclass(slots=True)
class Continued:
    ok: bool
    target: str | None = None
    mode: str | None = None
    detail: str = ""


async def continue_answer(
    call: Call,
    targets: tuple[tuple[Target, Handler], ...],
    failed: Target | None,
    budget: RetryBudget,
    delivered: Delivered,
    sink: ByteSink,
    include_usage: bool,
    *,
    scrubber: Scrubber | None = None,
    identity: Identity | None = None,
) -> Continued:
    """Finish the answer on the policy's targets, or write one final error event.

    *identity*: the first chunk's id, created and model, which the continued chunks keep."""
    text = delivered.text
    for target, chain in _candidates(call, targets, failed):
        assert call.deadline is not None
        if call.deadline.expired or not budget.try_withdraw():
            break
        modes = ("prefill", "restart") if target.upstream.prefill else ("restart",)
        for mode in modes:
            try:
                derived = _derive(call, text if mode == "prefill" else None)
            except orjson.JSONEncodeError:  # nested deeper than orjson writes (255 levels)
                detail = "the request nests JSON too deeply to be sent again"
                await sink.write(_incomplete(call, detail))
                return Continued(False, detail=detail)
            try:
                answer = await chain(derived)
            except NotRetryable as final:
                call.attempts += derived.attempts
                rejected = final.failed.answer
                if mode == "prefill" and rejected is not None and rejected.status == 400:
                    continue  # the prefill was refused: restart without it
                break
            except (TargetFailed, AttemptFailed, SidecarError):
                call.attempts += derived.attempts
                break
            call.attempts += derived.attempts
            if answer.stream is None:
                answer.done("failure")
                break
            model = target.model_for(call.model) or call.model
            writer = ClientWriter(
                call.client_format, call.request_id, model, include_usage, delivered.block, identity
            )
            try:
                result = await _splice(call, answer, mode, text, delivered, writer, sink, scrubber)
            except BaseException:  # the client left during the splice
                answer.done("cancelled")
                raise
            answer.done("success" if result.ok else "failure")
            result.target, result.mode = target.upstream.name, mode
            return result
    detail = "no target could continue it within the deadline and retry budget"
    await sink.write(_incomplete(call, detail))
    return Continued(False, detail=detail)


def _candidates(
    call: Call, targets: tuple[tuple[Target, Handler], ...], failed: Target | None
) -> list[tuple[Target, Handler]]:
    position = next((i for i, (t, _) in enumerate(targets) if t is failed), -1)
    after = list(targets[position + 1 :]) if position >= 0 else list(targets)
    if call.route.continuation.target == "same" and position >= 0:
        return [targets[position], *after]
    return after


def _derive(call: Call, prefill: str | None) -> Call:
    """The request again, as a stream, with the delivered text as a trailing assistant turn."""
    parsed = dict(call.parsed or {})
    parsed["stream"] = True
    if prefill is not None:
        messages = list(parsed.get("messages") or [])  # type: ignore[call-overload]
        messages.append({"role": "assistant", "content": prefill.rstrip()})
        parsed["messages"] = messages
    body = orjson.dumps(parsed)
    return replace(
        call, body=body, parsed=parsed, stream=True, attempts=0, fallbacks=[], outgoing=None
    )


async def _splice(
    call: Call,
    answer: Answer,
    mode: str,
    text: str,
    delivered: Delivered,
    writer: ClientWriter,
    sink: ByteSink,
    scrubber: Scrubber | None,
) -> Continued:
    stream = answer.stream
    assert stream is not None
    # prefill: only whitespace stripped from the prefill may come back (and is swallowed);
    # restart: the whole delivered text must come back first.
    expected = text[len(text.rstrip()) :] if mode == "prefill" else text
    strict = mode == "restart"
    splice = _Splicer(expected, strict, writer)
    idle = call.route.timeouts.idle
    source = stream.content
    reader = EventReader(source, stream.parser, answer.upstream.format, idle)  # type: ignore[arg-type]
    try:
        for seen in stream.seen:  # the peek's events (an error among them too)
            if await splice.take(_checked(seen, scrubber), sink):
                return await _end(call, splice, delivered, mode, writer, sink)
        while not reader.ended:
            for _, seen in await _next(reader):
                if await splice.take(_checked(seen, scrubber), sink):
                    return await _end(call, splice, delivered, mode, writer, sink)
        if splice.finish is not None:
            return await _end(call, splice, delivered, mode, writer, sink)
        raise _Broken("the continuation ended before the answer was complete")
    except Diverged:
        detail = "the retried answer differs from what was already delivered"
    except _Broken as broken:
        detail = str(broken)
    await sink.write(_incomplete(call, detail))
    return Continued(False, detail=detail)


def _checked(seen: Seen, scrubber: Scrubber | None) -> Seen:
    """*seen*, unless it breaks the continuation: an error event (quoted to the client,
    the policy's secrets redacted) or a malformed one (it may have carried text)."""
    if seen.error_status is not None:
        message = seen.error_message or "an upstream error event"
        raise _Broken(scrubber.text(message) if scrubber else message)
    if seen.malformed:
        raise _Broken("the continuation sent an event that is not valid JSON")
    return seen


async def _next(reader: EventReader) -> list[tuple[Event, Seen]]:
    """The continuation's next read; a failed read breaks it (a client write never does)."""
    try:
        return await reader.next_batch()
    except ReadFailed as failed:
        if failed.kind == "stalled":
            raise _Broken(f"the continuation stalled ({failed})") from None
        raise _Broken(f"the continuation's connection was lost ({failed.cause})") from None


class _Broken(Exception):
    pass


class _Splicer:
    """Applies one continuation event: swallow what the client has, write the rest."""

    def __init__(self, expected: str, strict: bool, writer: ClientWriter) -> None:
        self._expected = expected
        self.strict = strict
        self._writer = writer
        self._matched = 0
        self.finish: str | None = None
        self.prompt: int | None = None
        self.completion: int | None = None
        self.events = 0

    async def take(self, seen: Seen, sink: ByteSink) -> bool:
        """Handle *seen*; True when the continuation is complete."""
        if seen.tool:
            raise _Broken("the continuation turned into a tool call")
        if seen.prompt_tokens is not None:
            self.prompt = seen.prompt_tokens
        if seen.completion_tokens is not None:
            self.completion = seen.completion_tokens
        if seen.text:
            self.events += 1
            rest = self._swallow(seen.text)
            if rest:
                await sink.write(self._writer.text(rest))
        if seen.finish_reason is not None:
            self.finish = seen.finish_reason
        return seen.terminator

    def _swallow(self, text: str) -> str:
        remaining = self._expected[self._matched :]
        if not remaining:
            return text
        if text.startswith(remaining):
            self._matched = len(self._expected)
            return text[len(remaining) :]
        if remaining.startswith(text):
            self._matched += len(text)
            return ""
        if self.strict:
            raise Diverged
        self._matched = len(self._expected)  # prefill: the model did not repeat the space
        return text

    @property
    def caught_up(self) -> bool:
        return self._matched >= len(self._expected)


async def _end(
    call: Call,
    splice: _Splicer,
    delivered: Delivered,
    mode: str,
    writer: ClientWriter,
    sink: ByteSink,
) -> Continued:
    if splice.strict and not splice.caught_up:
        await sink.write(_incomplete(call, "the retried answer is shorter than the delivered one"))
        return Continued(False, detail="restart shorter than the delivered text")
    completion = splice.completion if splice.completion is not None else splice.events
    if mode == "prefill":
        completion += delivered.events  # the whole answer: what went out before, and after
    prompt = delivered.prompt_tokens if delivered.prompt_tokens is not None else splice.prompt
    await sink.write(writer.ending(splice.finish or "stop", prompt or 0, completion))
    return Continued(True)


def _incomplete(call: Call, detail: str) -> bytes:
    message = f"the answer could not be completed: {detail}"
    return stream_error(call.client_format, message, call.request_id, "stream_incomplete")
