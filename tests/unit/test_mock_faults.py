"""The fault vocabulary: strict parsing of every name, and where request faults come from."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, MultiDict

from mock_provider.faults import (
    DEFAULT_TIMEOUT_MS,
    FAIL_MODES,
    HAPPY,
    VOCABULARY,
    Fault,
    FaultError,
    describe_vocabulary,
    fault_from_request,
    parse_fault,
)

# name -> (raw value as it arrives, parsed value). One valid example per vocabulary name.
VALID = {
    "delay": ("250", 250),
    "fail": ("429", 429),
    "retry_after": ("1.5", 1.5),
    "timeout_ms": ("1200", 1200),
    "fail_chunk": ("3", 3),
    "stall_chunk": ("2", 2),
    "stall_ms": ("400", 400),
    "malformed_chunk": ("4", 4),
    "error_chunk": ("0", 0),
    "no_done": ("1", True),
    "ttft_ms": ("150", 150),
    "chunk_ms": ("20", 20),
}
# name -> (bad raw value, a fragment the error message must contain).
INVALID = {
    "delay": ("soon", "delay must be an integer"),
    "fail": (
        "sometimes",
        "valid: an HTTP status 400-599 or one of timeout, reset, hang, context_length",
    ),
    "retry_after": ("later", "retry_after must be a number of seconds"),
    "timeout_ms": ("-5", "timeout_ms must be >= 0"),
    "fail_chunk": ("1.5", "fail_chunk must be an integer"),
    "stall_chunk": ("x", "stall_chunk must be an integer"),
    "stall_ms": ("-1", "stall_ms must be >= 0"),
    "malformed_chunk": ("two", "malformed_chunk must be an integer"),
    "error_chunk": ("-1", "error_chunk must be >= 0"),
    "no_done": ("maybe", "no_done must be a boolean"),
    "ttft_ms": ("fast", "ttft_ms must be an integer"),
    "chunk_ms": ("-20", "chunk_ms must be >= 0"),
}


def test_examples_cover_the_whole_vocabulary() -> None:
    assert set(VALID) == set(VOCABULARY) == set(INVALID)
    assert dict(describe_vocabulary()).keys() == VOCABULARY.keys()


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_name_parses_from_a_string(name: str) -> None:
    raw, expected = VALID[name]
    extra = {"stall_ms": "10"} if name == "stall_chunk" else {}
    fault = parse_fault({name: raw, **extra})
    assert getattr(fault, name) == expected


@pytest.mark.parametrize("name", sorted(INVALID))
def test_every_name_rejects_a_bad_value(name: str) -> None:
    raw, fragment = INVALID[name]
    extra = {"stall_ms": "10"} if name == "stall_chunk" else {}
    with pytest.raises(FaultError, match=fragment):
        parse_fault({name: raw, **extra})


def test_script_values_may_be_json_numbers_and_booleans() -> None:
    fault = parse_fault({"fail": 503, "retry_after": 2, "delay": 5, "no_done": True})
    assert fault == Fault(fail=503, retry_after=2.0, delay=5, no_done=True)


def test_empty_mapping_is_the_happy_path() -> None:
    assert parse_fault({}) == HAPPY == Fault()
    assert HAPPY.timeout_ms == DEFAULT_TIMEOUT_MS
    assert HAPPY.outcome == "ok"


@pytest.mark.parametrize("mode", FAIL_MODES)
@pytest.mark.parametrize("spelling", [str.lower, str.upper, lambda m: f"  {m.title()} "])
def test_fail_modes_are_case_and_space_insensitive(mode: str, spelling) -> None:
    assert parse_fault({"fail": spelling(mode)}).fail == mode


@pytest.mark.parametrize("status", ["400", "429", "500", "503", "529", "599", " 502 "])
def test_fail_accepts_any_status_from_400_to_599(status: str) -> None:
    assert parse_fault({"fail": status}).fail == int(status)


@pytest.mark.parametrize("status", ["200", "399", "600", "0", "1000"])
def test_fail_status_out_of_range_names_the_valid_values(status: str) -> None:
    with pytest.raises(FaultError, match=r"out of range; valid: an HTTP status 400-599") as info:
        parse_fault({"fail": status})
    assert "timeout, reset, hang, context_length" in str(info.value)


@pytest.mark.parametrize(
    "value", ["sometimes", "", "-429", "4_29", "429.0", 429.0, True, False, "²", "¹²³"]
)
def test_fail_rejects_non_statuses_naming_the_valid_values(value: object) -> None:
    # "²" passes str.isdigit() but not int(): it must still be a FaultError, not a ValueError.
    with pytest.raises(FaultError, match="unknown fail value") as info:
        parse_fault({"fail": value})
    assert str(info.value).endswith(
        "valid: an HTTP status 400-599 or one of timeout, reset, hang, context_length"
    )


@pytest.mark.parametrize("value", ["1", "true", "YES", "on", " True ", True])
def test_no_done_true_spellings(value: object) -> None:
    assert parse_fault({"no_done": value}).no_done is True


@pytest.mark.parametrize("value", ["0", "false", "No", "off", "", False])
def test_no_done_false_spellings(value: object) -> None:
    assert parse_fault({"no_done": value}).no_done is False


@pytest.mark.parametrize("name", ["delay", "timeout_ms", "fail_chunk", "ttft_ms", "chunk_ms"])
@pytest.mark.parametrize("value", [True, "1.5", "1e3", None, [1]])
def test_integer_names_reject_non_integers(name: str, value: object) -> None:
    with pytest.raises(FaultError, match=f"{name} must be an integer"):
        parse_fault({name: value})


def test_zero_is_a_valid_count() -> None:
    assert parse_fault({"fail_chunk": "0"}).fail_chunk == 0
    assert parse_fault({"malformed_chunk": 0}).malformed_chunk == 0


@pytest.mark.parametrize("value", ["-1", "86400", "inf", "nan", True, None])
def test_retry_after_range_and_type(value: object) -> None:
    with pytest.raises(FaultError, match="retry_after must be"):
        parse_fault({"retry_after": value})


def test_retry_after_accepts_zero_and_fractions() -> None:
    assert parse_fault({"retry_after": "0"}).retry_after == 0.0
    assert parse_fault({"retry_after": 0.25}).retry_after == 0.25


def test_unknown_name_lists_the_whole_vocabulary() -> None:
    with pytest.raises(FaultError, match="unknown fault parameter 'explode'") as info:
        parse_fault({"fail": "500", "explode": "1"})
    assert str(info.value).endswith("valid: " + ", ".join(sorted(VOCABULARY)))


def test_stall_chunk_needs_stall_ms() -> None:
    with pytest.raises(FaultError, match="stall_chunk needs stall_ms"):
        parse_fault({"stall_chunk": "2"})
    assert parse_fault({"stall_chunk": 2, "stall_ms": 0}) == Fault(stall_chunk=2, stall_ms=0)


@pytest.mark.parametrize(
    ("fault", "label"),
    [
        (Fault(), "ok"),
        (Fault(fail=429), "429"),
        (Fault(fail="timeout"), "timeout"),
        (Fault(fail="reset"), "reset"),
        (Fault(fail="hang"), "hang"),
        (Fault(fail_chunk=2), "stream_cut"),
        (Fault(malformed_chunk=2), "malformed_chunk"),
        (Fault(stall_chunk=2, stall_ms=5), "stream_stall"),
        (Fault(no_done=True), "no_done"),
        (Fault(delay=5, ttft_ms=5, chunk_ms=5), "ok"),
        (Fault(fail=500, fail_chunk=1), "500"),
    ],
)
def test_outcome_labels(fault: Fault, label: str) -> None:
    assert fault.outcome == label


def test_overlay_takes_only_the_fields_the_other_fault_sets() -> None:
    base = Fault(fail=429, retry_after=2, delay=10)
    merged = base.overlay(Fault(delay=50, no_done=True))
    assert merged == Fault(fail=429, retry_after=2, delay=50, no_done=True)
    assert base.overlay(HAPPY) == base


# ------------------------------------------------------------------ fault_from_request


def test_a_request_that_names_nothing_gives_none() -> None:
    query = MultiDict({"api-version": "2024-01-01"})
    headers = CIMultiDict({"Content-Type": "application/json", "x-stainless-retry-count": "0"})
    assert fault_from_request(query, headers) is None


def test_query_parameters() -> None:
    fault = fault_from_request(MultiDict({"fail": "429", "retry_after": "2"}), CIMultiDict())
    assert fault == Fault(fail=429, retry_after=2.0)


@pytest.mark.parametrize(
    "header",
    ["x-mock-retry-after", "x-mock-retry_after", "X-Mock-Retry-After", "X-MOCK-RETRY_AFTER"],
)
def test_headers_with_dashes_or_underscores_in_any_case(header: str) -> None:
    headers = CIMultiDict({"x-mock-fail": "503", header: "3"})
    assert fault_from_request(MultiDict(), headers) == Fault(fail=503, retry_after=3.0)


def test_headers_work_on_plain_dicts_too() -> None:
    headers = {"X-Mock-Stall-Chunk": "2", "X-Mock-Stall-Ms": "100", "X-Mock-No-Done": "true"}
    assert fault_from_request({}, headers) == Fault(stall_chunk=2, stall_ms=100, no_done=True)


def test_query_wins_over_headers() -> None:
    query = MultiDict({"fail": "500"})
    headers = CIMultiDict({"x-mock-fail": "429", "x-mock-delay": "7"})
    assert fault_from_request(query, headers) == Fault(fail=500, delay=7)


def test_stream_is_not_a_fault() -> None:
    assert fault_from_request(MultiDict({"stream": "true"}), CIMultiDict()) is None
    assert fault_from_request(MultiDict(), CIMultiDict({"x-mock-stream": "true"})) is None
    headers = CIMultiDict({"x-mock-stream": "1", "x-mock-fail": "reset"})
    assert fault_from_request(MultiDict({"stream": "1"}), headers) == Fault(fail="reset")


def test_unknown_query_parameters_are_ignored_but_unknown_headers_are_not() -> None:
    assert fault_from_request(MultiDict({"explode": "1"}), CIMultiDict()) is None
    with pytest.raises(FaultError, match="unknown fault parameter 'explode'"):
        fault_from_request(MultiDict(), CIMultiDict({"x-mock-explode": "1"}))


def test_bad_values_raise_from_either_channel() -> None:
    with pytest.raises(FaultError, match="unknown fail value 'sometimes'"):
        fault_from_request(MultiDict({"fail": "sometimes"}), CIMultiDict())
    with pytest.raises(FaultError, match="unknown fail value 'sometimes'"):
        fault_from_request(MultiDict(), CIMultiDict({"x-mock-fail": "sometimes"}))
