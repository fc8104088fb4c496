"""Deterministic answers, tokens and settings validation."""

from __future__ import annotations

import pytest

from mock_provider.content import (
    DEFAULT_ANSWER,
    Answerer,
    count_tokens,
    prompt_tokens,
    split_tokens,
    text_of,
)
from mock_provider.state import DEFAULT_MODELS, MockSettings

TEXTS = [
    DEFAULT_ANSWER,
    "one",
    "two words",
    "  leading spaces and   runs of   spaces",
    "tabs\tand\nnew lines\r\nand unicode: héllo wörld — ✓ 日本語",
    "trailing space ",
    "punctuation, stays; with. its! word?",
]


@pytest.mark.parametrize("text", TEXTS)
def test_split_tokens_joins_back_to_the_text(text: str) -> None:
    tokens = split_tokens(text)
    assert "".join(tokens) == text.rstrip()
    assert len(tokens) == count_tokens(text)
    assert all(token.strip() for token in tokens)  # every chunk carries a word


def test_default_answer_tokens() -> None:
    tokens = split_tokens(DEFAULT_ANSWER)
    assert len(tokens) == count_tokens(DEFAULT_ANSWER) == 38
    assert tokens[:3] == ("This", " is", " the")
    assert tokens[-1] == " short."


@pytest.mark.parametrize(
    ("text", "count"),
    [("", 0), ("   ", 0), ("one", 1), (" a  b\tc\nd ", 4), ("don't split-me", 2)],
)
def test_count_tokens(text: str, count: int) -> None:
    assert count_tokens(text) == count
    assert len(split_tokens(text)) == count


def test_text_of_strings_part_lists_and_others() -> None:
    assert text_of("plain") == "plain"
    parts = [
        {"type": "text", "text": "first"},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "second"},
        "not a part",
    ]
    assert text_of(parts) == "first second"
    assert text_of(None) == ""
    assert text_of(42) == ""


def test_prompt_tokens_counts_messages_and_system() -> None:
    messages: list[object] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two three"}]},
        {"role": "assistant", "content": None},
        "junk",
    ]
    assert prompt_tokens(messages) == 5
    assert prompt_tokens(messages, system="you are a mock") == 9
    assert prompt_tokens(messages, system=[{"type": "text", "text": "sys tem"}]) == 7


def test_canned_answer_ignores_the_messages() -> None:
    answerer = Answerer("fixed reply")
    assert answerer.reply([{"role": "user", "content": "hello"}]) == "fixed reply"
    assert Answerer().reply([]) == DEFAULT_ANSWER


def test_echo_answers_with_the_last_user_message() -> None:
    answerer = Answerer(echo=True)
    messages: list[object] = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "  second"}, {"text": "question "}]},
        {"role": "assistant", "content": "prefill"},
    ]
    assert answerer.reply(messages) == "second question"


def test_echo_falls_back_to_the_canned_answer() -> None:
    answerer = Answerer("fallback", echo=True)
    assert answerer.reply([]) == "fallback"
    assert answerer.reply([{"role": "user", "content": "   "}]) == "fallback"
    assert answerer.reply([{"role": "assistant", "content": "not me"}]) == "fallback"
    assert answerer.reply([{"role": "user", "content": "me"}, {"role": "user", "content": ""}]) == (
        "me"
    )


def test_empty_canned_answer_is_rejected_unless_echoing() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        Answerer("  ")
    assert Answerer("", echo=True).reply([{"role": "user", "content": "hi"}]) == "hi"


def test_settings_defaults() -> None:
    settings = MockSettings()
    assert settings.name == "mock"
    assert settings.answer == DEFAULT_ANSWER
    assert settings.models == DEFAULT_MODELS
    assert settings.api_key is None
    assert settings.max_body == 4 * 1024 * 1024


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name must not be empty"),
        ({"chunk_ms": -1}, "chunk_ms must be >= 0"),
        ({"max_body": 0}, "max_body must be positive"),
        ({"answer": ""}, "canned answer must not be empty"),
    ],
)
def test_settings_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MockSettings(**kwargs)  # type: ignore[arg-type]
