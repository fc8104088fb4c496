"""Loading a policy directory: read → interpolate → schema → cross-field checks → compile."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sidecar.policy.compiler import compile_policy, input_paths
from sidecar.policy.errors import Issue, PolicyError
from sidecar.policy.files import content_hash, read_files, read_inputs
from sidecar.policy.model import PolicySet
from sidecar.policy.schema import schema_issues
from sidecar.policy.source import Document, parse


def load_policy(directory: Path, environ: Mapping[str, str]) -> PolicySet:
    """Load every policy file of *directory*; raise PolicyError listing every issue found."""
    return load_files(read_files(directory), environ)


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
