"""`make run`'s supervisor: starts both mocks, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest


def _read_until(stream: object, pattern: str, count: int) -> list[str]:
    """Read lines until *count* lines match; the per-test timeout bounds the wait."""
    assert hasattr(stream, "readline")
    found: list[str] = []
    while len(found) < count:
        line = stream.readline()
        if not line:
            raise AssertionError(f"stream closed after {found}")
        if re.search(pattern, line):
            found.append(line)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


PORTS: dict[str, int] = {}


@pytest.fixture
def devstack() -> Iterator[subprocess.Popen[str]]:
    openai_port, anthropic_port, sidecar_port, admin_port = _free_ports(4)
    PORTS.update(openai=openai_port, anthropic=anthropic_port, sidecar=sidecar_port,
                 admin=admin_port)  # fmt: skip
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sidecar.devstack",
            "--openai-port",
            str(openai_port),
            "--anthropic-port",
            str(anthropic_port),
            "--sidecar-port",
            str(sidecar_port),
            "--admin-port",
            str(admin_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()
    assert process.stdout is not None
    process.stdout.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stack_starts_both_mocks_and_stops_them_all(
    devstack: subprocess.Popen[str], signum: signal.Signals
) -> None:
    assert devstack.stdout is not None
    lines = _read_until(devstack.stdout, r"devstack: started|listening on", 6)
    pids = [int(m) for line in lines for m in re.findall(r"pid (\d+)", line)]
    urls = {
        line.split()[0]: re.findall(r"http://[\d.]+:\d+", line)[0]
        for line in lines
        if "listening on" in line
    }
    assert len(pids) == 3
    assert set(urls) == {"mock-provider", "sidecar"}
    sidecar = urls["sidecar"]
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    request = urllib.request.Request(
        f"{sidecar}/v1/chat/completions", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["x-sidecar-upstream"] == "openai"
        assert response.headers["x-mock-name"] == "openai"
    health = subprocess.run(
        [sys.executable, "-m", "sidecar.health"],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **os.environ,
            "SIDECAR_URL": f"http://127.0.0.1:{PORTS['sidecar']}",
            "SIDECAR_ADMIN_URL": f"http://127.0.0.1:{PORTS['admin']}",
            "OPENAI_MOCK_URL": f"http://127.0.0.1:{PORTS['openai']}",
            "ANTHROPIC_MOCK_URL": f"http://127.0.0.1:{PORTS['anthropic']}",
        },
    )
    assert health.returncode == 0, health.stdout  # `make health`: every service answers
    assert health.stdout.count("ok  ") == 4

    devstack.send_signal(signum)
    assert devstack.wait(timeout=15) == 0
    for pid in pids:
        assert not _alive(pid), f"child {pid} left running"


@pytest.mark.timeout(30)
def test_stack_stops_everything_when_one_process_dies(devstack: subprocess.Popen[str]) -> None:
    assert devstack.stdout is not None
    lines = _read_until(devstack.stdout, r"devstack: started|listening on", 6)
    pids = [int(m) for line in lines for m in re.findall(r"pid (\d+)", line)]
    os.kill(pids[0], signal.SIGKILL)
    assert devstack.wait(timeout=15) != 0
    assert not _alive(pids[1])
    assert not _alive(pids[2])


def test_sidecar_cli_entry_points() -> None:
    bindir = os.path.dirname(sys.executable)
    for argv in (
        [sys.executable, "-m", "sidecar", "--version"],
        [os.path.join(bindir, "sidecar"), "--version"],
    ):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
        assert result.stdout.startswith("sidecar ")
