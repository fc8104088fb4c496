"""The ``mock-provider`` command, as a real subprocess."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import openai
import pytest

from mock_provider.cli import main, parse_args
from mock_provider.content import DEFAULT_ANSWER

LISTENING = re.compile(
    r"^mock-provider '(?P<name>[^']+)' listening on (?P<url>http://127\.0\.0\.1:\d+)$"
)
STARTUP_TIMEOUT = 20  # seconds: interpreter start and imports on a loaded machine
STOP_TIMEOUT = 10


async def start(*args: str) -> tuple[asyncio.subprocess.Process, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mock_provider",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=STARTUP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    match = LISTENING.match(line.decode().strip())
    if match is None:
        process.kill()
        _, stderr = await process.communicate()
        pytest.fail(f"unexpected first line {line!r}; stderr: {stderr.decode()}")
    return process, match["name"], match["url"]


async def stop(process: asyncio.subprocess.Process) -> tuple[int, bytes]:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=STOP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    return process.returncode, stderr


async def test_serves_until_sigterm_and_exits_cleanly() -> None:
    args = ("--port", "0", "--name", "x", "--answer", "Hello from the CLI.", "--api-key", "k")
    process, name, url = await start(*args)
    try:
        assert name == "x"
        async with aiohttp.ClientSession(base_url=url) as http:
            async with http.get("/health") as response:
                assert response.status == 200
                assert response.headers["x-mock-name"] == "x"
                assert await response.json() == {"status": "healthy", "name": "x"}
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
            async with client:
                completion = await client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
                )
            assert completion.choices[0].message.content == "Hello from the CLI."

            # A stream stalled for a minute must not hold the process up after SIGTERM.
            response = await http.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": "Bearer k"},
                params={"stream": "true", "stall_chunk": "1", "stall_ms": "60000"},
            )
            async with response:
                assert response.status == 200
                # The role chunk has arrived, the stall is on: the request is in flight.
                first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=5)
                assert first.startswith(b"data: ")
                started = time.monotonic()
                returncode, stderr = await stop(process)
                elapsed = time.monotonic() - started
    finally:
        if process.returncode is None:
            await stop(process)
    assert returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    assert elapsed < 5  # aiohttp's default shutdown grace would be 60 s


def test_bad_settings_exit_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("logging.basicConfig", lambda **_: None)  # leave pytest's logging be
    with pytest.raises(SystemExit) as info:
        main(["--chunk-ms", "-5", "--port", "0"])
    assert info.value.code == "mock-provider: chunk_ms must be >= 0"


def test_console_script_help() -> None:
    script = Path(sys.executable).with_name("mock-provider")
    assert script.exists()
    result = subprocess.run(
        [str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mock-provider")
    for option in (
        "--host",
        "--port",
        "--name",
        "--answer",
        "--echo",
        "--models",
        "--chunk-ms",
        "--api-key",
        "--access-log",
    ):
        assert option in result.stdout


def test_parse_args_defaults_and_overrides() -> None:
    args = parse_args([])
    assert (args.host, args.port, args.name, args.answer) == (
        "127.0.0.1",
        8001,
        "mock",
        DEFAULT_ANSWER,
    )
    assert (args.echo, args.chunk_ms, args.api_key, args.access_log) == (False, 0, None, False)
    args = parse_args(["--port", "0", "--echo", "--models", "a, b,,c", "--api-key", "k"])
    assert (args.port, args.echo, args.models, args.api_key) == (0, True, "a, b,,c", "k")
