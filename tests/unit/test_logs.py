"""Log lines under PYTHONUNBUFFERED: buffered (not one syscall per line), in order, all flushed."""

from __future__ import annotations

import subprocess
import sys

import orjson

SCRIPT = """
import io, logging
from sidecar.observability import logs
logs.configure()
print(type(logs._FastLines.sink).__name__, flush=True)
logs.log_request({"n": 1})
logging.getLogger("sidecar").warning({"n": 2})
logs.log_attempt({"n": 3})
"""


def test_unbuffered_stdout_gets_a_buffer_and_keeps_every_line_in_order() -> None:
    done = subprocess.run(
        [sys.executable, "-u", "-c", SCRIPT], capture_output=True, text=True, timeout=30, check=True
    )
    first, *lines = done.stdout.splitlines()
    assert first == "BufferedWriter"  # not FileIO: a syscall per line is what this avoids
    records = [orjson.loads(line) for line in lines]
    assert [record["n"] for record in records] == [1, 2, 3]  # flushed at exit, in order
    assert [record["logger"] for record in records] == [
        "sidecar.request",
        "sidecar",
        "sidecar.attempt",
    ]


def test_buffered_stdout_is_used_as_it_is() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.splitlines()[0] == "BufferedWriter"
    assert len(done.stdout.splitlines()) == 4


def test_bad_http_requests_are_one_warning_line_without_traceback_or_the_clients_bytes() -> None:
    import logging

    from aiohttp.http_exceptions import LineTooLong

    from sidecar.observability.logs import QuietBadRequests

    try:
        raise LineTooLong("Authorization: Bearer sk-secret-123 " + "a" * 9000, "8190")
    except LineTooLong as exc:
        record = logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
            ("127.0.0.1",), (type(exc), exc, exc.__traceback__),
        )  # fmt: skip
    assert QuietBadRequests().filter(record)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert isinstance(record.msg, dict)
    assert record.msg["event"] == "bad_http_request"
    assert record.msg["detail"] == "LineTooLong: Got more than 8190 bytes when reading"
    assert "sk-secret" not in str(record.msg)


def test_other_aiohttp_server_errors_keep_their_traceback() -> None:
    import logging

    from sidecar.observability.logs import QuietBadRequests

    try:
        raise RuntimeError("a real bug")
    except RuntimeError as exc:
        record = logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (),
            (type(exc), exc, exc.__traceback__),
        )  # fmt: skip
    assert QuietBadRequests().filter(record)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
