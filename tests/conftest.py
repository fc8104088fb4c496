"""Shared fixtures: mock providers on loopback and official SDK clients pointed at them.

``mock_server(**settings)`` starts a mock provider (``MockSettings(**settings)``) on
127.0.0.1 with pytest-aiohttp's ``aiohttp_server`` (handler cancellation on, as in the
CLI). ``openai_for(server)`` / ``anthropic_for(server)`` / ``http_for(server)`` give
clients for any such server and close them after the test; ``mock``, ``openai_client``,
``anthropic_client`` and ``http`` are the same for one default server.

``chat_for(server, flavour)`` gives a ``ChatDriver``: it sends one chat request through
the official SDK of either flavour, streaming or not, and records what came back and
when, so fault tests can be written once for both wire formats.

The SDKs are imported lazily (they take seconds to import), so test runs that use none
of these fixtures do not pay for them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from redis_support import REDIS_URL, redis_unavailable

from mock_provider.app import create_app
from mock_provider.state import MockSettings

if TYPE_CHECKING:
    import anthropic
    import openai

MESSAGES = [{"role": "user", "content": "Say something, please"}]
# Anthropic models the SDK does not flag as deprecated (a DeprecationWarning is an error).
MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-6"}

MockServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on REDIS_URL; its keys are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        client.close()
        redis_unavailable(f"no Redis at {REDIS_URL} ({type(error).__name__}); set REDIS_URL")
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def base_url(server: TestServer) -> str:
    return f"http://{server.host}:{server.port}"


def watch_arrivals(app: web.Application) -> asyncio.Event:
    """An event set as soon as any request reaches *app* (install before starting it)."""
    arrived = asyncio.Event()

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        arrived.set()
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.append(middleware)
    return arrived


@pytest.fixture
def mock_server(aiohttp_server: Any) -> MockServerFactory:
    """Factory: ``await mock_server(name="x", echo=True)`` or ``await mock_server(app=app)``."""

    async def start(app: web.Application | None = None, **settings: Any) -> TestServer:
        if app is None:
            app = create_app(MockSettings(**settings))
        server: TestServer = await aiohttp_server(app)
        return server

    return start


@pytest.fixture
def watched_server(mock_server: MockServerFactory) -> Callable[..., Awaitable[Any]]:
    """Factory: ``server, arrived = await watched_server(**settings)``; *arrived* is set
    when a request reaches the server (clear it to wait for the next one)."""

    async def start(**settings: Any) -> tuple[TestServer, asyncio.Event]:
        app = create_app(MockSettings(**settings))
        arrived = watch_arrivals(app)
        return await mock_server(app=app), arrived

    return start


@pytest.fixture
async def mock(mock_server: MockServerFactory) -> TestServer:
    return await mock_server(name="mock-test")


@pytest.fixture(scope="session")
def tls_context() -> ssl.SSLContext:
    """One TLS context for every SDK client.

    Building the default context (loading the CA bundle) costs ~25 ms per client, which
    is most of a test's time here; the mock is plain HTTP, so sharing one changes nothing
    else: the SDKs' own ``DefaultAsyncHttpxClient`` keeps their timeouts and limits.
    """
    return ssl.create_default_context()


@pytest.fixture
async def openai_for(
    tls_context: ssl.SSLContext,
) -> AsyncIterator[Callable[..., openai.AsyncOpenAI]]:
    import openai

    clients: list[openai.AsyncOpenAI] = []

    def make(server: TestServer, **kwargs: Any) -> openai.AsyncOpenAI:
        options: dict[str, Any] = {"api_key": "test", "max_retries": 0, **kwargs}
        options.setdefault("http_client", openai.DefaultAsyncHttpxClient(verify=tls_context))
        client = openai.AsyncOpenAI(base_url=f"{base_url(server)}/v1", **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def anthropic_for(
    tls_context: ssl.SSLContext,
) -> AsyncIterator[Callable[..., anthropic.AsyncAnthropic]]:
    import anthropic

    clients: list[anthropic.AsyncAnthropic] = []

    def make(server: TestServer, **kwargs: Any) -> anthropic.AsyncAnthropic:
        options: dict[str, Any] = {"api_key": "test", "max_retries": 0, **kwargs}
        options.setdefault("http_client", anthropic.DefaultAsyncHttpxClient(verify=tls_context))
        client = anthropic.AsyncAnthropic(base_url=base_url(server), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def http_for() -> AsyncIterator[Callable[[TestServer], ClientSession]]:
    """Raw aiohttp sessions (base URL set) for header, byte and control-API checks."""
    sessions: list[ClientSession] = []

    def make(server: TestServer) -> ClientSession:
        session = ClientSession(base_url=base_url(server))
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        await session.close()


@pytest.fixture
def openai_client(mock: TestServer, openai_for: Callable[..., openai.AsyncOpenAI]) -> Any:
    return openai_for(mock)


@pytest.fixture
def anthropic_client(
    mock: TestServer, anthropic_for: Callable[..., anthropic.AsyncAnthropic]
) -> Any:
    return anthropic_for(mock)


@pytest.fixture
async def http(mock: TestServer, http_for: Callable[[TestServer], ClientSession]) -> ClientSession:
    return http_for(mock)


# --------------------------------------------------------------------------- chat driver


@dataclass
class Outcome:
    """What one SDK chat request produced, with monotonic timestamps."""

    started: float
    finished: float = 0.0
    text: str = ""
    chunk_times: list[float] = field(default_factory=list)  # one per content chunk
    events: list[str] = field(default_factory=list)  # anthropic stream event types
    error: BaseException | None = None
    raw: bytes = b""  # raw mode: the response body as received
    headers: Mapping[str, str] = field(default_factory=dict)
    final: Any = None  # the non-stream response object / last stream chunk

    @property
    def status(self) -> int | None:
        """HTTP status of an SDK status error, 200 for an answer, None for no response."""
        import anthropic
        import openai

        if isinstance(self.error, openai.APIStatusError | anthropic.APIStatusError):
            return self.error.status_code
        return None if self.error is not None else 200

    @property
    def elapsed(self) -> float:
        return self.finished - self.started

    @property
    def chunks(self) -> int:
        return len(self.chunk_times)


def _request_errors() -> tuple[type[BaseException], ...]:
    """What an SDK request or a broken stream inside an SDK iterator can raise."""
    import anthropic
    import httpx2
    import openai

    return (openai.APIError, anthropic.APIError, httpx2.HTTPError, json.JSONDecodeError)


class ChatDriver:
    """Sends chat requests through the official SDK of one flavour."""

    def __init__(self, flavour: str, client: Any) -> None:
        self.flavour = flavour
        self.client = client
        self.model = MODELS[flavour]

    async def __call__(
        self,
        *,
        stream: bool = False,
        raw: bool = False,
        model: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        extra_query: Mapping[str, object] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Outcome:
        params: dict[str, Any] = {
            "model": model or self.model,
            "messages": messages or MESSAGES,
            **kwargs,
        }
        if self.flavour == "anthropic":
            params.setdefault("max_tokens", 1024)
        if extra_query:
            params["extra_query"] = {key: str(value) for key, value in extra_query.items()}
        if extra_headers:
            params["extra_headers"] = dict(extra_headers)
        outcome = Outcome(started=time.monotonic())
        try:
            if raw:
                await self._raw(outcome, params)
            elif stream:
                await self._stream(outcome, params)
            else:
                await self._complete(outcome, params)
        except _request_errors() as exc:
            outcome.error = exc
        outcome.finished = time.monotonic()
        return outcome

    @property
    def _create(self) -> Any:
        if self.flavour == "openai":
            return self.client.chat.completions
        return self.client.messages

    async def _complete(self, outcome: Outcome, params: dict[str, Any]) -> None:
        response = await self._create.with_raw_response.create(**params)
        outcome.headers = response.headers
        outcome.final = await _parsed(response)
        if self.flavour == "openai":
            outcome.text = outcome.final.choices[0].message.content
        else:
            outcome.text = "".join(block.text for block in outcome.final.content)

    async def _stream(self, outcome: Outcome, params: dict[str, Any]) -> None:
        response = await self._create.with_raw_response.create(stream=True, **params)
        outcome.headers = response.headers
        stream = await _parsed(response)
        async with stream:
            async for event in stream:
                outcome.final = event
                text = self._delta_text(outcome, event)
                if text:
                    outcome.chunk_times.append(time.monotonic())
                    outcome.text += text

    def _delta_text(self, outcome: Outcome, event: Any) -> str | None:
        if self.flavour == "openai":
            return event.choices[0].delta.content if event.choices else None
        outcome.events.append(event.type)
        if event.type == "content_block_delta":
            text: str = event.delta.text
            return text
        return None

    async def _raw(self, outcome: Outcome, params: dict[str, Any]) -> None:
        """Streaming request read as bytes: what the wire carried, markers included."""
        async with self._create.with_streaming_response.create(stream=True, **params) as response:
            outcome.headers = response.headers
            async for piece in response.iter_bytes():
                outcome.raw += piece


async def _parsed(response: Any) -> Any:
    """openai's raw responses parse synchronously, anthropic's asynchronously."""
    parsed = response.parse()
    return await parsed if inspect.isawaitable(parsed) else parsed


@pytest.fixture
def chat_for(
    openai_for: Callable[..., openai.AsyncOpenAI],
    anthropic_for: Callable[..., anthropic.AsyncAnthropic],
) -> Callable[..., ChatDriver]:
    """``chat_for(server, "openai")`` -> a ChatDriver with a fresh SDK client."""

    def make(server: TestServer, flavour: str, **client_options: Any) -> ChatDriver:
        factory = openai_for if flavour == "openai" else anthropic_for
        return ChatDriver(flavour, factory(server, **client_options))

    return make
