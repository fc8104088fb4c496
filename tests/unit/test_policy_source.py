"""Parsing policy files: positions, duplicate keys, ``${ENV}`` interpolation."""

from __future__ import annotations

import pytest

from sidecar.policy.errors import Issue, PolicyError, format_path
from sidecar.policy.source import parse


def issues_of(text: str | bytes, environ: dict[str, str] | None = None) -> list[str]:
    raw = text.encode() if isinstance(text, str) else text
    with pytest.raises(PolicyError) as caught:
        parse("p.yaml", raw, environ or {})
    return [str(issue) for issue in caught.value.issues]


def data_of(text: str, environ: dict[str, str] | None = None) -> object:
    return parse("p.yaml", text.encode(), environ or {}).data


# --- positions and structure ---------------------------------------------------------


def test_positions_are_recorded_one_based() -> None:
    text = "version: 1\nroutes:\n  - name: chat\n    retry: {attempts: 3}\n"
    document = parse("p.yaml", text.encode(), {})
    assert document.marks[("version",)] == (1, 10)
    assert document.marks[("routes", 0)] == (3, 5)
    assert document.marks[("routes", 0, "name")] == (3, 11)
    assert document.marks[("routes", 0, "retry", "attempts")] == (4, 23)


def test_a_block_value_on_the_next_line_is_located_at_its_key() -> None:
    text = "routes:\n  - name: chat\n    retry:\n      attempts: 3\n"
    document = parse("p.yaml", text.encode(), {})
    assert document.marks[("routes",)] == (1, 1)
    assert document.marks[("routes", 0, "retry")] == (3, 5)
    assert document.marks[("routes", 0, "retry", "attempts")] == (4, 17)


def test_issue_falls_back_to_the_nearest_located_ancestor() -> None:
    document = parse("p.yaml", b"routes:\n  - name: chat\n", {})
    issue = document.issue(("routes", 0, "retry", "attempts"), "boom")
    assert issue == Issue("p.yaml", 2, 5, ("routes", 0, "retry", "attempts"), "boom")
    assert str(issue) == "p.yaml:2:5: routes[0].retry.attempts: boom"


def test_issue_formatting() -> None:
    assert format_path(("routes", 0, "retry", "on", 1)) == "routes[0].retry.on[1]"
    assert format_path(()) == "(document)"
    assert str(Issue("p.yaml", 0, 0, (), "no routes")) == "p.yaml: no routes"
    assert str(Issue("p.yaml", 3, 1, ("version",), "bad")) == "p.yaml:3:1: version: bad"
    error = PolicyError([Issue("a.yaml", 1, 1, (), "x"), Issue("b.yaml", 2, 2, (), "y")])
    assert str(error) == "a.yaml:1:1: x\nb.yaml:2:2: y"


def test_empty_file_is_an_empty_document() -> None:
    assert data_of("") == {}
    assert data_of("# only a comment\n") == {}


def test_duplicate_keys_are_reported_with_their_location() -> None:
    text = "version: 1\nroutes:\n  - name: a\n    name: b\nversion: 1\n"
    assert issues_of(text) == [
        "p.yaml:4:5: routes[0].name: duplicate key",
        "p.yaml:5:1: version: duplicate key",
    ]


def test_on_key_stays_the_string_on() -> None:
    data = data_of("retry:\n  on: [429, timeout]\n  yes: 1\n")
    assert data == {"retry": {"on": [429, "timeout"], "yes": 1}}


def test_yaml_1_1_scalars_still_type_values() -> None:
    assert data_of("a: on\nb: 'on'\nc: 3\nd: 1.5\ne: ~\n") == {
        "a": True,
        "b": "on",
        "c": 3,
        "d": 1.5,
        "e": None,
    }


def test_non_scalar_keys_are_refused() -> None:
    assert issues_of("? [a, b]\n: 1\n") == ["p.yaml:1:3: keys must be plain strings"]


def test_aliases_are_expanded() -> None:
    data = data_of("a: &x {n: 1}\nb: *x\n")
    assert data == {"a": {"n": 1}, "b": {"n": 1}}


def test_recursive_alias_is_an_error_not_a_crash() -> None:
    # The alias is the anchored node itself, so it is located at the anchor.
    assert issues_of("a: &x [*x]\n") == ["p.yaml:1:4: a[0]: recursive alias"]


# --- invalid input -----------------------------------------------------------------------


def test_invalid_yaml_reports_line_and_column() -> None:
    assert issues_of("version: 1\nname: a: b\n") == [
        "p.yaml:2:8: invalid YAML: mapping values are not allowed here"
    ]


def test_bad_indentation_reports_line_and_column() -> None:
    issues = issues_of("a:\n  b: 1\n c: 2\n")
    assert len(issues) == 1
    assert issues[0].startswith("p.yaml:3:2: invalid YAML: ")


def test_several_documents_in_one_file_are_refused() -> None:
    assert issues_of("version: 1\n---\nversion: 1\n") == [
        "p.yaml:2:1: invalid YAML: but found another document"
    ]


def test_non_utf8_is_refused() -> None:
    assert issues_of(b"version: 1\nname: caf\xe9\n") == [
        "p.yaml: not UTF-8: invalid continuation byte"
    ]


def test_control_character_is_an_error_with_position() -> None:
    assert issues_of("version: 1\nx: a\x07b\n") == [
        "p.yaml:2:5: invalid YAML: unacceptable character #x0007: "
        "special characters are not allowed"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "x: !!python/name:os.system\n",
            "p.yaml:1:4: x: invalid value: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/name:os.system'",
        ),
        (
            "x: 2024-13-01\n",
            "p.yaml:1:4: x: invalid value '2024-13-01': month must be in 1..12",
        ),
        (
            "x: !!int abc\n",
            "p.yaml:1:4: x: invalid value 'abc': invalid literal for int() with base 10: 'abc'",
        ),
    ],
)
def test_unconstructable_values_are_errors_not_crashes(text: str, expected: str) -> None:
    assert issues_of(text) == [expected]


# --- interpolation -----------------------------------------------------------------------


def test_interpolates_a_variable() -> None:
    assert data_of("url: ${URL}\n", {"URL": "http://x:1"}) == {"url": "http://x:1"}


def test_interpolates_inside_text() -> None:
    data = data_of('value: "Bearer ${KEY}"\n', {"KEY": "sk-1"})
    assert data == {"value": "Bearer sk-1"}


def test_default_used_when_unset() -> None:
    assert data_of("url: ${URL:-http://d}\n") == {"url": "http://d"}


def test_default_used_when_set_but_empty() -> None:
    assert data_of("url: ${URL:-http://d}\n", {"URL": ""}) == {"url": "http://d"}


def test_set_value_wins_over_default() -> None:
    assert data_of("url: ${URL:-http://d}\n", {"URL": "http://e"}) == {"url": "http://e"}


def test_empty_default_is_allowed() -> None:
    assert data_of("a: 'x${V:-}y'\n") == {"a": "xy"}


def test_set_but_empty_without_default_is_empty() -> None:
    assert data_of("a: 'x${V}y'\n", {"V": ""}) == {"a": "xy"}


def test_double_dollar_is_a_literal_dollar() -> None:
    assert data_of("a: 'p$$w'\nb: $${NOT}\nc: $$$${X}\n", {"X": "1"}) == {
        "a": "p$w",
        "b": "${NOT}",
        "c": "$${X}",
    }


def test_a_lone_dollar_is_kept() -> None:
    assert data_of("a: cost $5\n") == {"a": "cost $5"}


def test_missing_variable_names_it_with_location() -> None:
    text = "version: 1\nupstreams:\n  openai:\n    url: ${OPENAI_URL}\n"
    assert issues_of(text) == [
        "p.yaml:4:10: upstreams.openai.url: environment variable OPENAI_URL is not set "
        "(and has no default)"
    ]


def test_every_missing_variable_is_reported() -> None:
    assert issues_of("a: ${A}-${B}\nb: ${C}\n") == [
        "p.yaml:1:4: a: environment variable A is not set (and has no default)",
        "p.yaml:1:4: a: environment variable B is not set (and has no default)",
        "p.yaml:2:4: b: environment variable C is not set (and has no default)",
    ]


@pytest.mark.parametrize("reference", ["${}", "${1A}", "${A", "${A-b}", "${A:b}", "${A B}"])
def test_malformed_reference(reference: str) -> None:
    assert issues_of(f"a: '{reference}'\n", {"A": "x"}) == [
        f"p.yaml:1:4: a: malformed ${{...}} reference in {reference!r}"
    ]


def test_plain_scalars_are_retyped_after_interpolation() -> None:
    environ = {"N": "5", "ON": "false", "R": "0.5"}
    data = data_of("n: ${N}\nd: ${M:-3}\non: ${ON}\nr: ${R}\n", environ)
    assert data == {"n": 5, "d": 3, "on": False, "r": 0.5}


def test_quoted_scalars_stay_strings() -> None:
    environ = {"N": "5", "ON": "false"}
    data = data_of("n: '${N}'\nd: \"${M:-3}\"\non: '${ON}'\n", environ)
    assert data == {"n": "5", "d": "3", "on": "false"}


def test_interpolated_text_is_not_parsed_as_yaml() -> None:
    data = data_of("a: ${V}\n", {"V": "{b: 1}, [c]"})
    assert data == {"a": "{b: 1}, [c]"}


def test_keys_are_not_interpolated() -> None:
    assert data_of("${A}: 1\n", {"A": "x"}) == {"${A}": 1}


def test_unquoted_reference_in_a_flow_mapping_is_a_yaml_error() -> None:
    """`{` is flow syntax: inside `{...}` a reference must be quoted."""
    issues = issues_of("retry: {attempts: ${N}}\n", {"N": "3"})
    assert issues == ["p.yaml:1:20: invalid YAML: expected ',' or '}', but got '{'"]
    assert data_of("retry: {value: '${N}'}\n", {"N": "3"}) == {"retry": {"value": "3"}}
