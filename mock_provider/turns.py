"""What a conversation is answered with: text, the rest of a prefill, or one tool call.

The rules, in order, looking at the last message:

* An assistant turn is a *prefill*. ``accept``: continue it (the part of the answer
  after the prefill when the answer starts with it, else the whole answer);
  ``reject``: a 400; ``ignore``: answer as if it were not there. Never a tool call.
* A user turn that is not a tool result, in a request with tools that ``tool_choice``
  does not forbid: one call to the chosen tool, arguments ``{"input": <its text>}``,
  sent as ``TOOL_CALL_PIECES`` pieces of that JSON (the pieces are its "tokens").
* Anything else (a tool result above all): the usual text answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, get_args

import orjson

from mock_provider.content import Answerer, split_tokens, text_of
from mock_provider.wire import BadRequest, ChatRequest, PrefillMode

PREFILL_MODES: Final[tuple[PrefillMode, ...]] = get_args(PrefillMode)
PREFILL_REJECTED: Final = "assistant prefill is not supported by this model"
TOOL_CALL_PIECES: Final = 3


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer's pieces: text tokens, or (with *tool*) pieces of the arguments JSON."""

    tokens: tuple[str, ...]
    tool: str | None = None


def answer_for(chat: ChatRequest, answerer: Answerer, prefill: PrefillMode) -> Answer:
    """Apply the rules above; raise BadRequest when a prefill is rejected."""
    messages = chat.messages
    last = messages[-1]
    assert isinstance(last, dict)  # require_messages checked every message
    if last.get("role") == "assistant":
        if prefill == "reject":
            raise BadRequest(PREFILL_REJECTED, "messages")
        if prefill == "ignore":
            return Answer(split_tokens(answerer.reply(messages[:-1])))
        prefix = prefill_text(last.get("content"))
        return Answer(split_tokens(continuation(answerer.reply(messages), prefix)))
    if chat.tool is not None and is_user_turn(last):
        arguments = tool_arguments(text_of(last.get("content")))
        return Answer(split_pieces(arguments, TOOL_CALL_PIECES), chat.tool)
    return Answer(split_tokens(answerer.reply(messages)))


def prefill_text(content: object) -> str:
    """The text of an assistant turn: a string, or its text parts/blocks joined as they are."""
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return content if isinstance(content, str) else ""


def continuation(answer: str, prefix: str) -> str:
    """What follows *prefix* in *answer*; the whole *answer* when it does not start so."""
    return answer[len(prefix) :] if answer.startswith(prefix) else answer


def is_user_turn(message: dict[str, object]) -> bool:
    """A user message that is not a tool result (OpenAI's are role "tool" anyway)."""
    if message.get("role") != "user":
        return False
    content = message.get("content")
    return not (
        isinstance(content, list)
        and any(isinstance(part, dict) and part.get("type") == "tool_result" for part in content)
    )


def tool_arguments(text: str) -> str:
    """The mock's tool arguments, as JSON text: ``{"input": text}``."""
    return orjson.dumps({"input": text}).decode()


def split_pieces(text: str, count: int) -> tuple[str, ...]:
    """*text* in *count* consecutive pieces of near-equal length (longer ones first);
    fewer when *text* is shorter than *count*, never an empty piece."""
    size, extra = divmod(len(text), count)
    pieces = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        if end > start:
            pieces.append(text[start:end])
        start = end
    return tuple(pieces)
