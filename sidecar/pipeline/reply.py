"""An upstream reply, judged and put in the client's words (the adapter's other half).

No I/O: the attempt stage reads, these functions judge what it read. An error
status is a failure carrying its body in the client's format, the policy's
secrets redacted from it (and a 401/403 to the sidecar's own credentials a 502
``upstream_auth_failed``); a 200 of the
wrong kind (JSON to a streaming client, a stream to a JSON one, an HTML page
where a chat answer belongs) is a failure to fail over from; a stream's events
are held (``Peek``) until the first token, and an error or a malformed event
among them is a failure too (peek before commit); a JSON answer must parse and
is translated when the request was.
"""

from __future__ import annotations

import logging

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.errors import UpstreamAuthFailed, error_body, error_headers
from sidecar.headers import passes_client_auth
from sidecar.pipeline.call import Answer, AttemptFailed, Call, Upstreaming
from sidecar.pipeline.validate import CHAT_PATHS
from sidecar.policy.redaction import Scrubber
from sidecar.providers.formats import Seen
from sidecar.providers.responses import (
    anthropic_message_to_openai,
    error_status,
    openai_completion_to_anthropic,
    translate_error,
)
from sidecar.providers.streams import StreamTranslator
from sidecar.resilience.retry import Failure, parse_retry_after
from sidecar.streaming.relay import UNTRANSLATABLE
from sidecar.streaming.sse import Event
from sidecar.typedefs import WireFormat

log = logging.getLogger("sidecar")


def include_usage(call: Call) -> bool:
    """Whether the client wants usage at the end of a stream (Anthropic clients always get it)."""
    if call.client_format == "anthropic":
        return True
    options = call.parsed.get("stream_options") if call.parsed else None
    return isinstance(options, dict) and options.get("include_usage") is True


def is_chat(call: Call) -> bool:
    """Whether the request went to a chat endpoint (whose answers the sidecar can check)."""
    sending = call.outgoing
    return sending is not None and sending.path_qs.split("?", 1)[0] in CHAT_PATHS


def check_status(answer: Answer) -> None:
    """A status outside 100..599 is not HTTP the sidecar can pass on."""
    if not 100 <= answer.status <= 599:
        raise AttemptFailed(Failure("status", 502, detail=f"invalid status {answer.status}"))


def refusal(
    call: Call, answer: Answer, headers: CIMultiDictProxy[str], scrubber: Scrubber | None = None
) -> AttemptFailed:
    """An error reply (its body read): the failure, with status and body in the client's format.

    The policy's secrets are redacted from the body (an upstream may echo the key it
    was sent). A 401/403 to the sidecar's credentials becomes ``credential_refused``;
    the failure keeps the upstream's status, so it is still never retried (DESIGN rule 5).
    """
    failure = Failure(
        "status",
        answer.status,
        parse_retry_after(headers.get("retry-after-ms"), headers.get("retry-after")),
    )
    if scrubber:
        answer.body = scrubber.bytes(answer.body)
    sidecar_keys = bool(call.route.access.keys)
    if answer.status in (401, 403) and not passes_client_auth(
        answer.upstream, call.client_format, sidecar_keys
    ):
        credential_refused(call, answer)
    elif call.outgoing is not None and call.outgoing.translated:
        upstream, client = answer.upstream.format, call.client_format
        answer.body = translate_error(upstream, client, answer.status, answer.body)
        answer.status = error_status(upstream, client, answer.status)
        answer.headers["content-type"] = "application/json"
    return AttemptFailed(failure, answer)


def credential_refused(call: Call, answer: Answer) -> None:
    """The upstream refused the policy's credentials (the client's were not sent to it):
    a 502 ``upstream_auth_failed`` in the client's format naming the upstream, and a
    warning — never a 401 that would tell the app its own key is wrong."""
    name = answer.upstream.name
    log.warning(
        {
            "request_id": call.request_id,
            "route": call.route.name,
            "upstream": name,
            "status": answer.status,
            "event": "upstream_auth_failed",
        }
    )
    error = UpstreamAuthFailed(
        f"upstream {name!r} refused the sidecar's credentials ({answer.status}); "
        "the sidecar's policy must be fixed, the request's own key was not sent to it"
    )
    answer.body = error_body(error, call.client_format, call.request_id)
    answer.status = error.status
    answer.headers = CIMultiDict([("content-type", "application/json"), *error_headers(error)])


class ScrubbedErrors:
    """A stream translator whose error events go out with the policy's secrets redacted.

    Only error events are scanned: a 2xx stream's content is the model's output,
    not an echo, and the hot path does not pay for a scan."""

    __slots__ = ("_inner", "_scrubber")

    def __init__(self, inner: StreamTranslator, scrubber: Scrubber) -> None:
        self._inner = inner
        self._scrubber = scrubber

    def event(self, event: Event, seen: Seen) -> bytes:
        out = self._inner.event(event, seen)
        return out if seen.error_status is None else self._scrubber.bytes(out)

    def finalise(self) -> bytes:
        return self._inner.finalise()


def is_stream(call: Call, content_type: str) -> bool:
    """Whether a 2xx reply is an event stream; one the client cannot read is a failure."""
    if not content_type.startswith("text/event-stream"):
        if call.stream and is_chat(call):  # a streaming client cannot read a JSON answer
            raise AttemptFailed(Failure("status", 502, detail="no event stream from upstream"))
        return False
    if not call.stream and is_chat(call):  # nor a JSON client an event stream
        raise AttemptFailed(Failure("status", 502, detail="an event stream for a JSON request"))
    return True


class Peek:
    """A stream's first events, held until its first token (role chunk, ``message_start``,
    ``ping`` wait with it); ``take`` says when the peek is over."""

    __slots__ = ("_stream", "begun")

    def __init__(self, stream: Upstreaming) -> None:
        self._stream = stream
        self.begun = False

    def take(self, event: Event, seen: Seen) -> bool:
        """Hold *event*; True when the stream ended with it (after the commit point, as is)."""
        stream = self._stream
        if seen.error_status is not None and not self.begun:
            raise AttemptFailed(Failure("status", seen.error_status, detail=seen.error_message))
        if seen.malformed:  # it may have carried text: never skipped, tried again
            raise AttemptFailed(Failure("status", 502, detail="malformed event"))
        try:
            stream.first.append(stream.translator.event(event, seen))
        except UNTRANSLATABLE:  # valid JSON, but garbage where the translation looks
            detail = "an event that cannot be translated"
            raise AttemptFailed(Failure("status", 502, detail=detail)) from None
        stream.seen.append(seen)
        stream.delivered.add(seen)
        stream.finished = stream.finished or seen.finished
        if seen.terminator or seen.error_status is not None:
            stream.terminated = seen.terminator
            stream.errored = seen.error_status is not None
            return True
        self.begun = self.begun or seen.substantive
        return False


def check_json(
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
    answer.usage = usage(parsed)
    if client is None or client == upstream:
        return
    try:
        if upstream == "anthropic":
            answer.body = orjson.dumps(anthropic_message_to_openai(parsed))
        else:
            answer.body = orjson.dumps(openai_completion_to_anthropic(parsed))
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (255 levels)
        raise AttemptFailed(Failure("status", 502, detail="upstream JSON too deep")) from None


def usage(body: dict[str, object]) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an OpenAI or Anthropic answer, when it says."""
    found = body.get("usage")
    if not isinstance(found, dict):
        return None
    prompt = found.get("prompt_tokens", found.get("input_tokens"))
    completion = found.get("completion_tokens", found.get("output_tokens"))
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None
