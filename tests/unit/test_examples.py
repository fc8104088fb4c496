"""Every example policy under examples/policies/ loads and compiles.

Each top-level ``*.yaml`` / ``*.yml`` file is a policy on its own; each
subdirectory is a policy directory. Each is copied into a temporary directory
and loaded with an environment that sets every ``${VAR}`` the files need
(variables with a ``:-default`` keep their default).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from sidecar.policy.loader import load_policy
from sidecar.policy.model import PolicySet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
_REQUIRED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # no default
_POLICY_SUFFIXES = (".yaml", ".yml")


def _examples() -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    return sorted(
        entry
        for entry in EXAMPLES.iterdir()
        if not entry.name.startswith(".") and (entry.is_dir() or entry.suffix in _POLICY_SUFFIXES)
    )


def _files(example: Path) -> list[Path]:
    if example.is_file():
        return [example]
    return sorted(p for p in example.iterdir() if p.suffix in _POLICY_SUFFIXES)


def _environ(files: list[Path]) -> dict[str, str]:
    """A value for every variable referenced without a default: a URL for *_URL names."""
    environ: dict[str, str] = {}
    for file in files:
        for name in _REQUIRED.findall(file.read_text()):
            environ[name] = "http://127.0.0.1:9" if name.endswith("_URL") else f"test-{name}"
    return environ


def _load(example: Path, tmp_path: Path) -> PolicySet:
    files = _files(example)
    for file in files:
        shutil.copy(file, tmp_path / file.name)
    return load_policy(tmp_path, _environ(files))


def test_there_are_examples() -> None:
    assert EXAMPLES / "ollama.yaml" in _examples()


@pytest.mark.parametrize("example", _examples(), ids=lambda path: path.name)
def test_example_compiles(example: Path, tmp_path: Path) -> None:
    policy = _load(example, tmp_path)
    assert policy.routes
    assert len(policy.files) == len(_files(example))


def test_ollama_is_the_last_fallback(tmp_path: Path) -> None:
    policy = _load(EXAMPLES / "ollama.yaml", tmp_path)
    chat = policy.route_for("POST", "/v1/chat/completions", "gpt-4o", {})
    assert chat is not None
    assert [target.upstream.name for target in chat.fallback] == ["openai", "anthropic", "ollama"]
    last = chat.fallback[-1]
    assert last.upstream.format == "openai"
    assert last.upstream.url == "http://127.0.0.1:11434"  # the default when OLLAMA_URL is unset
    assert last.upstream.auth is None
    assert last.model_for("gpt-4o") == "llama3.1"
    assert chat.fallback[1].model_for("gpt-4o-mini") == "claude-haiku-4-5"
    assert chat.fallback[1].upstream.prefill
    assert chat.continuation.enabled
    messages = policy.route_for("POST", "/v1/messages", "claude-sonnet-4-6", {})
    assert messages is not None
    assert messages.fallback[-1].upstream.name == "ollama"


def test_ollama_url_can_be_overridden(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "ollama.yaml", tmp_path / "ollama.yaml")
    environ = {
        "OPENAI_API_KEY": "k",
        "ANTHROPIC_API_KEY": "k",
        "OLLAMA_URL": "http://ollama:11434",
    }
    policy = load_policy(tmp_path, environ)
    assert policy.upstreams["ollama"].url == "http://ollama:11434"
