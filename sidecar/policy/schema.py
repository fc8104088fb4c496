"""Validating one policy document against the JSON Schema, with messages people can act on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any, cast

from jsonschema import Draft202012Validator, ValidationError

from sidecar.policy.errors import Issue, did_you_mean, excerpt
from sidecar.policy.source import Document

_STRUCTURAL = frozenset({"additionalProperties", "required", "propertyNames"})


@cache
def schema() -> dict[str, Any]:
    """The policy language's JSON Schema (``sidecar/policy/schema.json``), the one source."""
    text = resources.files("sidecar.policy").joinpath("schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def schema_issues(document: Document) -> list[Issue]:
    """Every schema violation of *document*, in file order."""
    issues = [
        issue
        for error in _validator().iter_errors(document.data)
        for issue in _explain(document, error)
    ]
    unique = dict.fromkeys(issues)  # a wrong type can fail two checks with one message
    return sorted(unique, key=lambda issue: (issue.line, issue.column, str(issue.path)))


def _explain(document: Document, error: ValidationError) -> Iterator[Issue]:
    path = tuple(error.absolute_path)
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        path = (*path, error.instance)  # point at the offending key itself
    subschema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    custom = subschema.get("x-error")
    if error.validator == "additionalProperties":
        known = sorted(subschema.get("properties", {}))
        assert isinstance(error.instance, dict)
        for key in sorted(set(error.instance) - set(known)):
            hint = did_you_mean(key, known)
            yield document.issue((*path, key), f"unknown key {excerpt(key)}{hint}")
        return
    if error.validator == "required":
        missing = str(error.message).split("'")[1]
        yield document.issue(path, f"missing required key {missing!r}")
        return
    if error.validator == "propertyNames":  # a key: never interpolated
        yield document.issue(path, f"{excerpt(error.instance)} is not a valid name")
        return
    # The value as quoted: an excerpt, and ${VAR} for what came from the environment.
    shown = document.quote(path, error.instance)
    if custom and error.validator not in _STRUCTURAL:
        if error.validator == "oneOf" and isinstance(error.instance, dict):
            yield document.issue(path, str(custom))
        else:
            yield document.issue(path, f"{shown} {custom}")
        return
    if error.validator == "enum":
        values = cast(list[object], error.validator_value)
        options = [str(option) for option in values]
        choices = ", ".join(repr(option) for option in values)
        suggestion = did_you_mean(str(error.instance), options)
        yield document.issue(path, f"{shown} is not one of {choices}{suggestion}")
        return
    if error.validator == "const":
        yield document.issue(path, f"must be {error.validator_value!r}, got {shown}")
        return
    # jsonschema's own message starts with the instance's repr (possibly a whole file).
    yield document.issue(path, str(error.message).replace(repr(error.instance), shown))
