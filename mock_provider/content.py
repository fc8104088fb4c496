"""Deterministic answers and the token counts that go with them.

A "token" here is a word with its leading whitespace: the answer streams one
token per chunk, and usage counts the same tokens, so the numbers always agree
with the content (a truncated answer shows as fewer tokens than usage promised).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

DEFAULT_ANSWER: Final = (
    "This is the mock provider's fixed answer. It is the same every time, word for word, "
    "so a client can compare what it received with what was sent and notice at once when "
    "a stream was cut short."
)
_TOKEN: Final = re.compile(r"\s*\S+")
_WORD: Final = re.compile(r"\S+")


def split_tokens(text: str) -> tuple[str, ...]:
    """The stream chunks of *text*; joined together they give back *text* (sans trailing space)."""
    return tuple(_TOKEN.findall(text))


def count_tokens(text: str) -> int:
    return len(_WORD.findall(text))


def text_of(content: object) -> str:
    """Plain text of an OpenAI/Anthropic message content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(parts)
    return ""


def prompt_tokens(messages: list[object], system: object = None) -> int:
    """Tokens in every message's text plus an optional (Anthropic) system prompt."""
    total = count_tokens(text_of(system))
    for message in messages:
        if isinstance(message, dict):
            total += count_tokens(text_of(message.get("content")))
    return total


@dataclass(frozen=True, slots=True)
class Answerer:
    """Chooses the answer text: a canned sentence, or an echo of the last user turn."""

    answer: str = DEFAULT_ANSWER
    echo: bool = False

    def __post_init__(self) -> None:
        if not self.echo and not self.answer.strip():
            raise ValueError("the canned answer must not be empty")

    def reply(self, messages: list[object]) -> str:
        if self.echo:
            for message in reversed(messages):
                if isinstance(message, dict) and message.get("role") == "user":
                    text = text_of(message.get("content")).strip()
                    if text:
                        return text
        return self.answer
