"""Durations, sizes and ratios: the unit grammar of the policy language."""

from __future__ import annotations

import re

import pytest

from sidecar.policy.units import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    format_duration,
    parse_duration,
    parse_ratio,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("0ms", 0.0),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("1m", 60.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("0.5h", 1800.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["250", "2 s", "2S", "-1s", "1d", "s", "", "1.s", ".5s", "2sec"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape("is not a duration")) as caught:
        parse_duration(text)
    assert str(caught.value) == f"{text!r} is not a duration (expected e.g. 250ms, 2s, 1m)"


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1000, 1000),
        ("1000", 1000),
        ("12B", 12),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("2MB", 2_000_000),
        ("1MiB", 1_048_576),
        ("1GB", 10**9),
        ("1GiB", 1024**3),
        ("512KiB", 524_288),
    ],
)
def test_parse_size(value: str | int, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["1.5MiB", "1 MiB", "1mib", "1TB", "MiB", "-1", ""])
def test_parse_size_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="is not a size") as caught:
        parse_size(value)
    assert str(caught.value) == f"{value!r} is not a size (expected e.g. 1MiB, 512KiB, 1000000)"


@pytest.mark.parametrize(
    ("value", "ratio"),
    [("50%", 0.5), ("0%", 0.0), ("100%", 1.0), ("12.5%", 0.125), (0.2, 0.2), (0, 0.0), (1, 1.0)],
)
def test_parse_ratio(value: str | float, ratio: float) -> None:
    assert parse_ratio(value) == pytest.approx(ratio)


def test_parse_ratio_rejects_text_without_percent() -> None:
    with pytest.raises(ValueError, match="is not a percentage") as caught:
        parse_ratio("0.5")
    assert str(caught.value) == "'0.5' is not a percentage (expected e.g. 50%)"


@pytest.mark.parametrize(("value", "shown"), [("150%", "'150%'"), (1.5, "1.5"), (-0.1, "-0.1")])
def test_parse_ratio_rejects_out_of_range(value: str | float, shown: str) -> None:
    with pytest.raises(ValueError, match="between") as caught:
        parse_ratio(value)
    assert str(caught.value) == f"{shown} is not between 0% and 100%"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (0.001, "1ms"),
        (1.5, "1500ms"),
        (2.0, "2s"),
        (0.0, "0s"),
        (60.0, "1m"),
        (90.0, "90s"),
        (3600.0, "60m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["250ms", "2s", "1m", "90s", "1500ms"])
def test_format_duration_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_patterns_are_the_parsers_patterns() -> None:
    """The schema's duration/size patterns must accept exactly what the parsers accept."""
    import json
    from importlib import resources

    schema = json.loads(resources.files("sidecar.policy").joinpath("schema.json").read_text())
    assert schema["$defs"]["duration"]["pattern"] == DURATION_PATTERN
    assert schema["$defs"]["size"]["pattern"] == SIZE_PATTERN
