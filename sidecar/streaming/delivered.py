"""What a committed stream has delivered to the client so far (for continuation)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.providers.formats import Seen


@dataclass(slots=True)
class Delivered:
    texts: list[str] = field(default_factory=list)
    events: int = 0  # events that carried answer text
    tool: bool = False  # tool-call content went out: such a stream is never spliced
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    block: int = 0  # the Anthropic content block the text went into

    def add(self, seen: Seen) -> None:
        if seen.text:
            self.texts.append(seen.text)
            self.events += 1
            if seen.block_index is not None:
                self.block = seen.block_index
        if seen.tool:
            self.tool = True
        if seen.prompt_tokens is not None:
            self.prompt_tokens = seen.prompt_tokens
        if seen.completion_tokens is not None:
            self.completion_tokens = seen.completion_tokens

    @property
    def text(self) -> str:
        return "".join(self.texts)
