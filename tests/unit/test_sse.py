"""SSEParser: line endings, chunk boundaries, fields, comments, raw bytes, limits; encode."""

from __future__ import annotations

import random

import pytest

from sidecar.streaming.sse import Event, SSEError, SSEParser, encode

STREAM = (
    b": a comment first\n"
    b"\n"
    b"event: message_start\n"
    b"id: 1\n"
    b'data: {"type":"message_start"}\n'
    b"\n"
    b"data: line one\n"
    b"data:line two\n"
    b"data:  indented\n"
    b"\n"
    b": keep-alive\n"
    b"retry: 3000\n"
    b"unknown: field\n"
    b"data: after junk\n"
    b"\n"
    b"event: ping\n"
    b"data:\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)


def parse_all(data: bytes, *, close: bool = True) -> list[Event]:
    parser = SSEParser()
    events = parser.feed(data)
    if close:
        last = parser.close()
        if last is not None:
            events.append(last)
    return events


def parse_chunks(chunks: list[bytes]) -> list[Event]:
    parser = SSEParser()
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    last = parser.close()
    if last is not None:
        events.append(last)
    return events


def random_chunks(data: bytes, rng: random.Random, largest: int = 7) -> list[bytes]:
    chunks = []
    position = 0
    while position < len(data):
        size = rng.randint(1, largest)
        chunks.append(data[position : position + size])
        position += size
    return chunks


def with_endings(data: bytes, ending: bytes) -> bytes:
    return data.replace(b"\n", ending)


def test_fields_and_events() -> None:
    events = parse_all(STREAM)
    assert [(event.event, event.id, event.data) for event in events] == [
        ("message_start", "1", '{"type":"message_start"}'),
        ("message", None, "line one\nline two\n indented"),
        ("message", None, "after junk"),
        ("ping", None, ""),
        ("message", None, "[DONE]"),
    ]


def test_data_with_and_without_space() -> None:
    assert parse_all(b"data:x\n\n")[0].data == "x"
    assert parse_all(b"data: x\n\n")[0].data == "x"
    assert parse_all(b"data:  x\n\n")[0].data == " x"  # only one space is stripped
    assert parse_all(b"data\n\n")[0].data == ""  # a field without a colon: empty value


def test_id_and_event_reset_between_events() -> None:
    events = parse_all(b"event: a\nid: 7\ndata: 1\n\ndata: 2\n\n")
    assert [(event.event, event.id) for event in events] == [("a", "7"), ("message", None)]


def test_empty_event_name_is_message() -> None:
    assert parse_all(b"event:\ndata: x\n\n")[0].event == "message"


def test_comments_only_block_yields_nothing() -> None:
    assert parse_all(b": one\n: two\n\n") == []
    assert parse_all(b":\n\n\n\n") == []


def test_unknown_fields_alone_still_make_an_event() -> None:
    # A block with only retry:/unknown fields dispatches an event with empty data.
    events = parse_all(b"retry: 10\n\n")
    assert [event.data for event in events] == [""]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(ending: bytes) -> None:
    expected = [(event.event, event.id, event.data) for event in parse_all(STREAM)]
    events = parse_all(with_endings(STREAM, ending))
    assert [(event.event, event.id, event.data) for event in events] == expected


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_events_are_delivered_without_waiting_for_more_bytes(ending: bytes) -> None:
    parser = SSEParser()
    first = parser.feed(with_endings(b"data: a\n\n", ending))
    assert [event.data for event in first] == ["a"]
    assert not parser.pending


def test_cr_endings_deliver_every_event() -> None:
    # A lone CR at the end of a chunk may still be followed by LF, so the last
    # event waits for the next byte (or close()); none may be lost.
    parser = SSEParser()
    events = parser.feed(b"data: a\r\rdata: b\r\r")
    assert [event.data for event in events] == ["a"]
    assert parser.pending
    last = parser.close()
    assert last is not None
    assert last.data == "b"
    assert last.raw == b"data: b\r\r"


def test_mixed_line_endings() -> None:
    events = parse_all(b"data: a\r\ndata: b\rdata: c\n\r\n")
    assert [event.data for event in events] == ["a\nb\nc"]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_byte_by_byte_equals_all_at_once(ending: bytes) -> None:
    data = with_endings(STREAM, ending)
    whole = parse_all(data)
    assert parse_chunks([data[i : i + 1] for i in range(len(data))]) == whole


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_random_chunks_equal_all_at_once(seed: int, ending: bytes) -> None:
    data = with_endings(STREAM, ending) * 3
    whole = parse_all(data)
    assert len(whole) == 15
    assert parse_chunks(random_chunks(data, random.Random(seed))) == whole


def test_raw_is_exactly_the_event_bytes() -> None:
    events = parse_all(STREAM)
    assert events[0].raw == (b'event: message_start\nid: 1\ndata: {"type":"message_start"}\n\n')
    assert events[1].raw == b"data: line one\ndata:line two\ndata:  indented\n\n"
    # Comments inside an event's block belong to its bytes; comment-only blocks do not.
    assert events[2].raw == b": keep-alive\nretry: 3000\nunknown: field\ndata: after junk\n\n"
    assert b"".join(event.raw for event in events) == STREAM.replace(b": a comment first\n\n", b"")


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_raw_concatenation_is_the_stream(ending: bytes) -> None:
    data = with_endings(b"event: a\ndata: 1\n\ndata: 2\ndata: 3\n\n", ending)
    events = parse_chunks([data[i : i + 1] for i in range(len(data))])
    assert b"".join(event.raw for event in events) == data


def test_close_returns_an_unterminated_final_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\nevent: last\ndata: tail") == [Event("a", raw=b"data: a\n\n")]
    assert parser.pending
    last = parser.close()
    assert last == Event("tail", "last", None, b"event: last\ndata: tail")
    assert parser.close() is None


def test_close_after_a_line_without_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n") == []
    last = parser.close()
    assert last is not None
    assert last.data == "a"
    assert last.raw == b"data: a\n"


def test_close_strips_a_trailing_cr() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: tail\r") == []
    last = parser.close()
    assert last is not None
    assert last.data == "tail"
    assert last.raw == b"data: tail\r"


def test_close_with_nothing_pending() -> None:
    parser = SSEParser()
    assert not parser.pending
    assert parser.close() is None
    parser.feed(b"data: a\n\n: trailing comment")
    assert parser.close() is None


def test_an_unterminated_long_line_raises() -> None:
    parser = SSEParser(max_line=64)
    parser.feed(b"data: " + b"x" * 50)
    with pytest.raises(SSEError, match="longer than 64 bytes"):
        parser.feed(b"x" * 50)


def test_a_long_line_raises_whatever_the_chunking() -> None:
    line = b"data: " + b"x" * 100 + b"\n\n"
    with pytest.raises(SSEError):
        SSEParser(max_line=64).feed(line)
    parser = SSEParser(max_line=64)
    with pytest.raises(SSEError):  # noqa: PT012 - the error comes at some chunk
        for index in range(0, len(line), 10):
            parser.feed(line[index : index + 10])


def test_lines_at_the_limit_are_fine() -> None:
    line = b"data: " + b"x" * 58  # 64 bytes
    events = SSEParser(max_line=64).feed(line + b"\n" + line + b"\n\n")
    assert events[0].data == "x" * 58 + "\n" + "x" * 58


def test_invalid_utf8_is_replaced() -> None:
    events = parse_all(b"event: \xff\xfe\ndata: caf\xc3\xa9 \xc3\n\n")
    assert events[0].data == "café \ufffd"
    assert events[0].event == "\ufffd\ufffd"
    assert events[0].raw == b"event: \xff\xfe\ndata: caf\xc3\xa9 \xc3\n\n"


def test_utf8_split_across_chunks() -> None:
    data = "data: 日本語\n\n".encode()
    assert parse_chunks([data[i : i + 1] for i in range(len(data))])[0].data == "日本語"


def test_encode_writes_what_the_parser_reads_back() -> None:
    body = {"type": "content_block_delta", "delta": {"text": "caf\u00e9\nnext"}}
    named, plain = encode(body, "content_block_delta"), encode(["[DONE]"])
    assert named == b'event: content_block_delta\ndata: {"type":"content_block_delta",' + (
        b'"delta":{"text":"caf\xc3\xa9\\nnext"}}\n\n'
    )
    assert plain == b'data: ["[DONE]"]\n\n'
    events = SSEParser().feed(named + plain)
    assert [(e.event, e.raw) for e in events] == [
        ("content_block_delta", named),
        ("message", plain),
    ]
    assert events[0].data == '{"type":"content_block_delta","delta":{"text":"café\\nnext"}}'
