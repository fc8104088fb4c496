"""Log lines: buffered under PYTHONUNBUFFERED (in order, all flushed); one line per record in
both formats whatever a client sends (control characters escaped, every field bounded)."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import subprocess
import sys

import orjson
import pytest

from sidecar.observability.fields import MAX_FIELD_LENGTH, MAX_ITEMS, clip
from sidecar.observability.logs import JSONLineFormatter, TextLineFormatter
from sidecar.observability.refusals import BURST, RATE, SUMMARY_EVERY, RefusalLog
from sidecar.resilience.clock import FakeClock

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


# -- lines that cannot be forged or grown by what a client sends ---------------------------

FORGED = [
    '\r\n{"forged": true}',
    "\n2026-01-01 INFO forged",
    "a\tb\x1b[2Jc\x00\x7f\x85\u2028\u2029\u202ed",  # tab, ANSI, NUL, DEL, NEL, LS, PS, RLO
]


def _record(msg: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("sidecar.request", logging.INFO, __file__, 1, msg, (), info)


def _everywhere(value: str) -> dict[str, object]:
    """*value* as a field, a key, a list item and nested inside a dict."""
    return {
        "request_id": "r1",
        "model": value,
        value: "as a key",
        "fallbacks": [value, "b:timeout"],
        "nested": {value: [value, {"deep": value}]},
    }


@pytest.mark.parametrize("forged", FORGED)
def test_text_lines_escape_control_characters_in_every_field_and_key(forged: str) -> None:
    line = TextLineFormatter().format(_record(_everywhere(forged)))
    assert line.isprintable()  # no CR, LF, tab, escape, NEL, line separator, ...: one line
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} info +sidecar.request +request_id=r1 ", line)
    if "\n" in forged:
        assert line.count("\\n") == 6  # visible, escaped, wherever the value was
        assert "\n2026" not in line


@pytest.mark.parametrize("forged", FORGED)
def test_json_lines_escape_control_characters_in_every_field_and_key(forged: str) -> None:
    line = JSONLineFormatter().format(_record(_everywhere(forged)))
    assert "\n" not in line
    assert "\r" not in line
    assert orjson.loads(line)["model"] == forged  # escaped, not lost


def test_plain_values_stay_readable_in_text_lines() -> None:
    fields = {"route": "chat", "status": 200, "upstream": None, "fallbacks": ["a:429"]}
    line = TextLineFormatter().format(_record(fields))
    assert line.endswith("route=chat status=200 upstream=- fallbacks=a:429")
    spaced = TextLineFormatter().format(_record({"model": "a b", "k": 'x"=y'}))
    assert spaced.endswith("""model='a b' k='x"=y'""")  # quoted: no value reads as a key


def test_a_traceback_in_a_text_line_is_indented_so_it_cannot_start_a_record() -> None:
    try:
        raise ValueError("boom\n2026-01-01 INFO forged\rmore\x1b[2J")
    except ValueError as exc:
        text = TextLineFormatter().format(_record({"event": "x"}, exc))
    first, *rest = text.split("\n")
    assert first.endswith("event=x")
    assert rest
    assert all(line.startswith("    ") and line.isprintable() for line in rest)


NESTED: dict[str, object] = {
    "model": "m" * 10_000,
    "k" * 10_000: 1,
    "many": ["x" * 300] * 10_000,
    "nested": {7: "int key", "key" * 1000: {"deeper": ["v" * 10_000] * 100}, "gone": 1},
    "deep": functools.reduce(lambda inner, _: [inner], range(10_000), []),
    "object": ValueError("e" * 10_000),
    "huge": 10**5000,
}


@pytest.mark.parametrize("formatter", [JSONLineFormatter(), TextLineFormatter()])
def test_every_field_is_bounded_nested_ones_and_keys_too(formatter: logging.Formatter) -> None:
    line = formatter.format(_record(NESTED))
    assert "\n" not in line
    assert len(line) < 7 * 20_000  # each field: at most MAX_ITEMS strings of 256 characters
    assert "x" * (MAX_FIELD_LENGTH + 1) not in line
    assert "k" * (MAX_FIELD_LENGTH + 1) not in line
    assert "e" * (MAX_FIELD_LENGTH + 1) not in line


def test_bounded_fields_say_what_was_cut() -> None:
    clipped = clip(NESTED)
    many = clipped["many"]
    assert isinstance(many, list)
    assert len(many) == MAX_ITEMS + 1
    assert many[-1] == f"…[+{10_000 - MAX_ITEMS} items]"
    assert f"{'k' * MAX_FIELD_LENGTH}…[+{10_000 - MAX_FIELD_LENGTH} chars]" in clipped
    nested = clipped["nested"]
    assert isinstance(nested, dict)
    assert nested["7"] == "int key"  # keys are strings (orjson refuses others)
    assert nested["…"] == "+1 items"  # the budget is shared by every level of one field
    assert clipped["huge"] == "<int of 16610 bits>"
    assert NESTED["model"] == "m" * 10_000  # the caller's dict is not changed


def test_a_plain_message_is_bounded_too() -> None:
    record = logging.LogRecord("sidecar", logging.WARNING, __file__, 1, "x %s", ("y" * 9000,), None)
    assert len(orjson.loads(JSONLineFormatter().format(record))["msg"]) < 300


# -- refusal lines at a bounded rate --------------------------------------------------------


class Refusals:
    """A RefusalLog on a frozen fake clock, and the lines it wrote."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, "sidecar.refusal")
        self.caplog = caplog
        self.clock = FakeClock(autoadvance=False)
        self.log = RefusalLog(self.clock)

    def lines(self) -> list[dict[str, object]]:
        return [r.msg for r in self.caplog.records if isinstance(r.msg, dict) and "n" in r.msg]

    def summaries(self) -> list[dict[str, object]]:
        return [r.msg for r in self.caplog.records if isinstance(r.msg, dict) and "event" in r.msg]

    async def turn(self) -> None:
        """Let the summary's timer task run, once the clock has moved past it."""
        for _ in range(3):
            await asyncio.sleep(0)


async def test_refusal_lines_pass_a_burst_then_the_rate(caplog: pytest.LogCaptureFixture) -> None:
    r = Refusals(caplog)
    for n in range(BURST + 10):
        r.log.write({"n": n})
    assert [line["n"] for line in r.lines()] == list(range(BURST))
    assert r.log.suppressed == 10
    r.clock.advance(1 / RATE)  # one token back
    r.log.write({"n": "next"})
    r.log.write({"n": "held"})
    assert r.lines()[-1] == {"n": "next"}
    assert r.log.suppressed == 11


async def test_one_summary_follows_the_first_suppressed_line_after_the_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = Refusals(caplog)
    for n in range(BURST + 7):
        r.log.write({"n": n})
    r.clock.advance(SUMMARY_EVERY - 0.5)
    await r.turn()
    assert r.summaries() == []  # not yet
    r.clock.advance(0.5)
    await r.turn()
    (summary,) = r.summaries()
    assert summary["suppressed"] == 7
    assert summary["msg"] == f"suppressed 7 refusal lines in the last {SUMMARY_EVERY:.1f} s"
    assert r.log.suppressed == 0
    r.clock.advance(SUMMARY_EVERY * 3)
    await r.turn()
    assert len(r.summaries()) == 1  # nothing held back since: no more summaries


async def test_a_long_flood_writes_the_rate_plus_one_summary_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = Refusals(caplog)
    seconds, per_second = 100, 100
    for _ in range(seconds):
        for n in range(per_second):
            r.log.write({"n": n})
        r.clock.advance(1.0)
        await r.turn()
    await r.log.close()
    written = len(r.lines())
    assert written == BURST + RATE * (seconds - 1)  # the first second's burst, then the rate
    summaries = r.summaries()
    assert len(summaries) == seconds / SUMMARY_EVERY  # one per period, the last one at close
    assert sum(s["suppressed"] for s in summaries) == seconds * per_second - written


async def test_close_writes_the_pending_summary_and_stops_its_timer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = Refusals(caplog)
    await r.log.close()
    assert r.summaries() == []  # nothing suppressed: nothing to say
    for n in range(BURST + 3):
        r.log.write({"n": n})
    r.clock.advance(2.5)
    await r.log.close()
    (summary,) = r.summaries()
    assert (summary["suppressed"], summary["seconds"]) == (3, 2.5)
    r.clock.advance(SUMMARY_EVERY)
    await r.turn()
    assert len(r.summaries()) == 1  # the timer was cancelled, not left to fire again
