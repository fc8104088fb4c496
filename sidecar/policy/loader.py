"""Loading a policy directory (or named files): read → interpolate → schema → cross-field
checks → compile."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.policy.compiler import compile_policy, input_paths
from sidecar.policy.errors import Issue, PolicyError
from sidecar.policy.files import content_hash, read_files, read_inputs, read_paths
from sidecar.policy.model import PolicySet
from sidecar.policy.schema import schema_issues
from sidecar.policy.source import Document, parse
from sidecar.policy.unset import EmptyWhenUnset, Tainted, split, unset_references, unset_warnings


def load_policy(directory: Path, environ: Mapping[str, str]) -> PolicySet:
    """Load every policy file of *directory*; raise PolicyError listing every issue found."""
    return load_files(read_files(directory), environ)


def load_paths(paths: Sequence[Path], environ: Mapping[str, str]) -> PolicySet:
    """Load one directory, or the named files as one policy set (``files.read_paths``)."""
    return load_files(read_paths(paths), environ)


def load_files(files: list[tuple[str, bytes]], environ: Mapping[str, str]) -> PolicySet:
    """Load already-read (name, bytes) files; the hash covers the files they read too."""
    documents = parse_files(files, environ)
    inputs = read_inputs(input_paths(documents))
    return compile_policy(documents, content_hash(files, inputs), inputs)


def parse_files(files: list[tuple[str, bytes]], environ: Mapping[str, str]) -> list[Document]:
    """Parse and schema-check every file; raise PolicyError with the issues of all of them."""
    documents: list[Document] = []
    issues: list[Issue] = []
    for name, raw in files:
        try:
            document = parse(name, raw, environ)
        except PolicyError as error:
            issues.extend(error.issues)
            continue
        found = schema_issues(document)
        if found:
            issues.extend(found)
        else:
            documents.append(document)
    if issues:
        raise PolicyError(issues)
    return documents


@dataclass(frozen=True, slots=True)
class Checked:
    """What ``sidecar check`` found: the policy (None when it has errors, or when its
    cross-field checks needed a value from an unset variable), errors, warnings."""

    policy: PolicySet | None
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)


def check_files(
    files: list[tuple[str, bytes]], environ: Mapping[str, str], allow_unset: bool
) -> Checked:
    """``load_files``, or with *allow_unset* the lenient load of ``sidecar.policy.unset``."""
    if not allow_unset:
        try:
            return Checked(load_files(files, environ))
        except PolicyError as error:
            return Checked(None, list(error.issues))
    lenient = EmptyWhenUnset(environ)
    documents: list[Document] = []
    errors: list[Issue] = []
    warnings: list[Issue] = []
    tainted: Tainted = {}
    partial = False  # a file failed the schema only where an unset variable went
    for name, raw in files:
        try:
            document = parse(name, raw, lenient)
        except PolicyError as error:
            errors.extend(error.issues)
            continue
        found = unset_references(document, environ)
        tainted.update(found)
        warnings.extend(unset_warnings(document, found))
        hard, soft = split(schema_issues(document), found)
        errors.extend(hard)
        warnings.extend(soft)
        partial = partial or bool(soft)
        if not hard and not soft:
            documents.append(document)
    if errors or partial:
        return Checked(None, errors, warnings)
    inputs = read_inputs(input_paths(documents))
    try:
        return Checked(compile_policy(documents, content_hash(files, inputs), inputs), [], warnings)
    except PolicyError as error:
        hard, soft = split(error.issues, tainted)
        return Checked(None, hard, warnings + soft)
