"""The three model calls: a title, a streamed outline, metadata.

Each call is made once. There is no retry loop, no timeout, no try/except
around a call and no second provider here: the sidecar behind ``base_url``
retries, fails over (even to another provider's wire format, translated back)
and finishes broken streams. The headers it adds (``x-sidecar-upstream``,
``x-sidecar-attempts``) are read only to show who answered.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

DEFAULT_BASE_URL = "http://localhost:8080/v1"
# The sidecar holds the real provider keys (its policy sets them upstream), so
# the app needs none; the SDK insists on some value.
PLACEHOLDER_KEY = "sk-placeholder-the-sidecar-holds-the-keys"

SYSTEM = "You write clear, lively material for short explainer videos."


def make_client(environ: Mapping[str, str] = os.environ) -> AsyncOpenAI:
    """An OpenAI client pointed at the sidecar; configuration only, no resilience."""
    return AsyncOpenAI(
        base_url=environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
        api_key=environ.get("OPENAI_API_KEY") or PLACEHOLDER_KEY,
        max_retries=0,  # the sidecar retries; an SDK retry on top would multiply them
    )


@dataclass(frozen=True)
class Models:
    main: str = "gpt-4o"  # the outline
    small: str = "gpt-4o-mini"  # the title and the metadata

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Models:
        return cls(
            main=environ.get("APP_MODEL") or cls.main,
            small=environ.get("APP_SMALL_MODEL") or cls.small,
        )


@dataclass
class Call:
    """Who answered one call, as the sidecar reports it."""

    step: str
    model: str  # the model that answered (after a fallback, the fallback's)
    upstream: str | None  # x-sidecar-upstream
    attempts: int | None  # x-sidecar-attempts
    stream: bool = False


@dataclass
class Result:
    topic: str
    title: str
    outline: list[str]
    metadata: dict[str, Any]
    calls: list[Call] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _call(step: str, model: str, headers: Mapping[str, str], stream: bool = False) -> Call:
    attempts = headers.get("x-sidecar-attempts")
    return Call(
        step=step,
        model=model,
        upstream=headers.get("x-sidecar-upstream"),
        attempts=int(attempts) if attempts and attempts.isdigit() else None,
        stream=stream,
    )


class Generator:
    """Title → outline → metadata for one topic, each step one SDK call."""

    def __init__(self, client: AsyncOpenAI, models: Models | None = None) -> None:
        self.client = client
        self.models = models or Models.from_env()

    async def generate(
        self,
        topic: str,
        on_title: Callable[[str], None] | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> Result:
        """*on_title* gets the title when it is known, *on_delta* the outline's text as
        it streams (the CLI prints them as they come)."""
        calls: list[Call] = []
        title = await self._complete(
            "title",
            self.models.small,
            f"Write one title, at most ten words, for a three-minute video about: {topic}\n"
            "Answer with the title only, without quotes.",
            calls,
            max_tokens=30,
            temperature=0.9,
        )
        title = title.strip().strip('"').strip()
        if on_title is not None:
            on_title(title)
        outline = await self._stream(
            "outline",
            self.models.main,
            f'Write the script outline for a three-minute video titled "{title}" about '
            f"{topic}: five to seven beats, one per line, each starting with '- '.",
            calls,
            on_delta,
            max_tokens=400,
            temperature=0.7,
        )
        beats = parse_outline(outline)
        metadata = await self._complete(
            "metadata",
            self.models.small,
            f'For the video "{title}" about {topic}, with this outline:\n{outline}\n\n'
            'Answer with JSON only: {"description": one sentence, "tags": three to six '
            'lowercase tags, "audience": who it is for}.',
            calls,
            max_tokens=200,
            temperature=0.2,
        )
        return Result(topic, title, beats, parse_metadata(metadata), calls)

    def _messages(self, prompt: str) -> list[ChatCompletionMessageParam]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]

    async def _complete(
        self,
        step: str,
        model: str,
        prompt: str,
        calls: list[Call],
        *,
        max_tokens: int,
        temperature: float,
    ) -> str:
        raw = await self.client.chat.completions.with_raw_response.create(
            model=model,
            messages=self._messages(prompt),
            max_tokens=max_tokens,
            temperature=temperature,
        )
        completion = raw.parse()
        calls.append(_call(step, completion.model, raw.headers))
        return completion.choices[0].message.content or ""

    async def _stream(
        self,
        step: str,
        model: str,
        prompt: str,
        calls: list[Call],
        on_delta: Callable[[str], None] | None,
        *,
        max_tokens: int,
        temperature: float,
    ) -> str:
        raw = await self.client.chat.completions.with_raw_response.create(
            model=model,
            messages=self._messages(prompt),
            stream=True,
            max_tokens=max_tokens,
            temperature=temperature,
        )
        answered_by = model
        parts: list[str] = []
        async with raw.parse() as stream:
            async for chunk in stream:
                answered_by = chunk.model or answered_by
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
                    if on_delta is not None:
                        on_delta(chunk.choices[0].delta.content)
        calls.append(_call(step, answered_by, raw.headers, stream=True))
        return "".join(parts)


_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def parse_outline(text: str) -> list[str]:
    """One beat per non-empty line, list markers removed."""
    beats = [_BULLET.sub("", line).strip() for line in text.splitlines()]
    return [beat for beat in beats if beat]


def parse_metadata(text: str) -> dict[str, Any]:
    """The JSON object in *text*; a model that ignored the format gives its text as the
    description (a model's answer is data, not a contract)."""
    found = re.search(r"\{.*\}", text, re.DOTALL)
    data: object = None
    if found:
        try:
            data = json.loads(found.group(0))
        except ValueError:
            data = None
    if not isinstance(data, dict):
        return {"description": text.strip(), "tags": [], "audience": ""}
    tags = data.get("tags")
    return {
        "description": str(data.get("description", "")).strip(),
        "tags": [str(tag) for tag in tags] if isinstance(tags, list) else [],
        "audience": str(data.get("audience", "")).strip(),
    }
