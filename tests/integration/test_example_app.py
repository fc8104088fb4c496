"""The example app (examples/app/) through the sidecar, as `make run` wires them.

Two mock providers ("openai", "anthropic") and the sidecar with the shipped
policies/default.yaml run in-process; the app is pointed at the sidecar by the
same environment variables a user would set. The app has no retry or fallback
code, so every failure the providers are scripted to have must be absorbed by
the sidecar, and the app must still answer.
"""

from __future__ import annotations

import ast
import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from mock_provider.app import create_app as create_mock
from mock_provider.content import DEFAULT_ANSWER, split_tokens
from mock_provider.state import MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.resilience.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
# The keys policies/default.yaml sends when OPENAI_API_KEY / ANTHROPIC_API_KEY are unset;
# the mocks demand them, so an answer proves the sidecar, not the app, held the key.
OPENAI_KEY, ANTHROPIC_KEY = "sk-local-mock", "sk-ant-local-mock"
ServerFactory = Callable[..., Awaitable[TestServer]]
# The mock answers its fixed sentence, cut to max_tokens words: the app asks for
# at most 30 tokens of title.
TITLE = "".join(split_tokens(DEFAULT_ANSWER)[:30]).strip()


@pytest.fixture
def app_modules(monkeypatch: pytest.MonkeyPatch) -> Any:
    """examples.app, imported the way `python -m examples.app` finds it (from the repo root)."""
    monkeypatch.syspath_prepend(str(ROOT))
    import examples.app.__main__ as cli
    import examples.app.generate as generate
    import examples.app.web as web

    return cli, generate, web


@dataclass
class Stack:
    openai: TestServer
    anthropic: TestServer
    sidecar: TestServer
    app: TestServer
    http: aiohttp.ClientSession

    async def script(self, mock: TestServer, script: list[dict[str, object]]) -> None:
        async with self.http.post(mock.make_url("/config/failures"), json={"script": script}) as r:
            assert r.status == 200, await r.text()

    async def stats(self, mock: TestServer) -> dict[str, Any]:
        async with self.http.get(mock.make_url("/stats")) as response:
            stats: dict[str, Any] = await response.json()
            return stats

    async def generate(self, topic: str) -> tuple[int, dict[str, Any]]:
        async with self.http.post(self.app.make_url("/generate"), json={"topic": topic}) as r:
            return r.status, await r.json()


@pytest.fixture
async def stack(
    aiohttp_server: ServerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    app_modules: Any,
) -> AsyncIterator[Stack]:
    openai_mock = await aiohttp_server(create_mock(MockSettings(name="openai", api_key=OPENAI_KEY)))
    anthropic_mock = await aiohttp_server(
        create_mock(MockSettings(name="anthropic", api_key=ANTHROPIC_KEY))
    )
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(ROOT / "policies" / "default.yaml", policies / "default.yaml")
    environ = {
        "OPENAI_URL": str(openai_mock.make_url("")).rstrip("/"),
        "ANTHROPIC_URL": str(anthropic_mock.make_url("")).rstrip("/"),
    }
    config = SidecarConfig(
        policies=policies, environ=environ, clock=FakeClock(), watch=False, poll_interval=3600
    )
    sidecar = await aiohttp_server(create_sidecar(config))
    # The app's configuration, as a user gives it: the sidecar's URL, no provider key.
    monkeypatch.setenv("OPENAI_BASE_URL", str(sidecar.make_url("/v1")))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for name in ("APP_MODEL", "APP_SMALL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    _, _, web = app_modules
    app = await aiohttp_server(web.create_app())
    async with aiohttp.ClientSession() as http:
        yield Stack(openai_mock, anthropic_mock, sidecar, app, http)


def _upstreams(body: dict[str, Any]) -> dict[str, str]:
    return {call["step"]: call["upstream"] for call in body["calls"]}


async def test_health(stack: Stack) -> None:
    async with stack.http.get(stack.app.make_url("/health")) as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_generate_through_the_sidecar(stack: Stack) -> None:
    status, body = await stack.generate("why the sky is blue")
    assert status == 200, body
    assert body["topic"] == "why the sky is blue"
    assert body["title"] == TITLE  # the mock's fixed answer, cut to the title's max_tokens
    assert body["outline"] == [DEFAULT_ANSWER]  # streamed, one beat per line
    # The mock does not answer in JSON: its text becomes the description.
    assert body["metadata"] == {"description": DEFAULT_ANSWER, "tags": [], "audience": ""}
    assert [(c["step"], c["stream"]) for c in body["calls"]] == [
        ("title", False),
        ("outline", True),
        ("metadata", False),
    ]
    assert _upstreams(body) == {"title": "openai", "outline": "openai", "metadata": "openai"}
    assert [c["model"] for c in body["calls"]] == ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini"]
    assert all(call["attempts"] == 1 for call in body["calls"])
    assert (await stack.stats(stack.openai))["total"] == 3
    assert (await stack.stats(stack.anthropic))["total"] == 0


async def test_rate_limited_primary_is_absorbed_by_the_sidecar(stack: Stack) -> None:
    # Every call to "openai" is a 429 with a Retry-After far beyond the policy's
    # max_wait: the sidecar fails over to Anthropic at once, translating both ways.
    await stack.script(stack.openai, [{"fail": 429, "retry_after": 30}] * 3)
    status, body = await stack.generate("tides")
    assert status == 200, body
    assert body["title"] == TITLE
    assert body["outline"] == [DEFAULT_ANSWER]
    assert _upstreams(body) == {
        "title": "anthropic",
        "outline": "anthropic",
        "metadata": "anthropic",
    }
    # The model that answered, mapped by the policy's model_map.
    assert [c["model"] for c in body["calls"]] == [
        "claude-haiku-4-5",
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
    ]
    assert all(call["attempts"] == 2 for call in body["calls"])  # one 429, one answer
    openai_stats, anthropic_stats = (
        await stack.stats(stack.openai),
        await stack.stats(stack.anthropic),
    )
    assert openai_stats["total"] == 3
    assert openai_stats["by_outcome"] == {"429": 3}
    assert anthropic_stats["total"] == 3
    assert anthropic_stats["by_path"] == {"/v1/messages": 3}


async def test_stream_cut_mid_answer_is_finished_by_the_sidecar(stack: Stack) -> None:
    # Only the outline (gpt-4o, streaming) is cut after its third chunk; the
    # policy's continuation finishes it on Anthropic (prefill), so the app reads
    # one whole answer from a stream that broke.
    await stack.script(stack.openai, [{"model": "gpt-4o", "fail_chunk": 3}])
    status, body = await stack.generate("volcanoes")
    assert status == 200, body
    assert body["outline"] == [DEFAULT_ANSWER]
    assert _upstreams(body)["outline"] == "openai"  # headers are sent before the cut
    assert (await stack.stats(stack.anthropic))["total"] == 1


async def test_what_the_sidecar_cannot_save_is_reported_not_retried(stack: Stack) -> None:
    # 400s are never retried or failed over: the app gets one error, says so, and
    # makes no second call of its own.
    await stack.script(stack.openai, [{"fail": 400}])
    status, body = await stack.generate("glaciers")
    assert status == 502
    assert body["upstream_status"] == 400
    assert (await stack.stats(stack.openai))["total"] == 1
    assert (await stack.stats(stack.anthropic))["total"] == 0


async def test_bad_topic_is_refused(stack: Stack) -> None:
    for payload in ({}, {"topic": "  "}, {"topic": 5}, {"topic": "x" * 301}):
        async with stack.http.post(stack.app.make_url("/generate"), json=payload) as response:
            assert response.status == 400
    assert (await stack.stats(stack.openai))["total"] == 0


async def test_cli_prints_the_result(
    stack: Stack, app_modules: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cli, _, _ = app_modules
    # Title: a 503, retried on "openai" ({} is a success). Outline: a 429 with a long
    # Retry-After, failed over to "anthropic". Metadata: no fault left.
    await stack.script(stack.openai, [{"fail": 503}, {}, {"fail": 429, "retry_after": 30}])
    # The real entry point, in a thread: it runs its own event loop like
    # `python -m examples.app`, while the servers keep running on this one.
    assert await asyncio.to_thread(cli.main, ["--json", "coral reefs"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["title"] == TITLE
    assert result["outline"] == [DEFAULT_ANSWER]
    assert [(c["upstream"], c["attempts"]) for c in result["calls"]] == [
        ("openai", 2),
        ("anthropic", 2),
        ("openai", 1),
    ]

    assert await asyncio.to_thread(cli.main, ["coral reefs"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Title: {TITLE}\n\nOutline:\n{DEFAULT_ANSWER}")
    assert "upstream=openai" in out


def test_models_answers_are_parsed_leniently(app_modules: Any) -> None:
    _, generate, _ = app_modules
    fenced = 'Sure!\n```json\n{"description": "D.", "tags": ["a", "b"], "audience": "kids"}\n```'
    assert generate.parse_metadata(fenced) == {
        "description": "D.",
        "tags": ["a", "b"],
        "audience": "kids",
    }
    assert generate.parse_metadata("{not json}")["description"] == "{not json}"
    assert generate.parse_outline("1. Hook\n- Why\n\n* Wrap-up\n2) Call to action") == [
        "Hook",
        "Why",
        "Wrap-up",
        "Call to action",
    ]


def test_app_has_no_resilience_code() -> None:
    """The point of the example: nothing in the app retries, sleeps, times out or falls back."""
    sources = sorted((ROOT / "examples" / "app").glob("*.py"))
    assert sources
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [alias.name for alias in node.names]
                if isinstance(node, ast.ImportFrom):
                    modules.append(node.module or "")
                for module in modules:
                    assert module.split(".")[0] not in {"tenacity", "backoff", "stamina", "time"}, (
                        where
                    )
            if isinstance(node, ast.Attribute | ast.Name):
                name = node.attr if isinstance(node, ast.Attribute) else node.id
                assert name not in {"sleep", "wait_for", "timeout", "with_options"}, where
            if isinstance(node, ast.keyword) and node.arg in {"timeout", "max_retries"}:
                assert node.arg == "max_retries", where
                assert isinstance(node.value, ast.Constant), where
                assert node.value.value == 0, where
            assert not isinstance(node, ast.While), f"{where}: a loop that could retry"
    assert "max_retries=0" in (ROOT / "examples" / "app" / "generate.py").read_text()
