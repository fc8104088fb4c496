"""Loading a policy directory: read → interpolate → schema → cross-field checks → compile."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sidecar.policy.compiler import compile_policy
from sidecar.policy.errors import Issue, PolicyError
from sidecar.policy.model import PolicySet
from sidecar.policy.schema import schema_issues
from sidecar.policy.source import Document, content_hash, parse, read_files


def load_policy(directory: Path, environ: Mapping[str, str]) -> PolicySet:
    """Load every policy file of *directory*; raise PolicyError listing every issue found."""
    files = read_files(directory)
    return load_files(files, content_hash(files), environ)


def load_files(
    files: list[tuple[str, bytes]], digest: str, environ: Mapping[str, str]
) -> PolicySet:
    """Load already-read (name, bytes) files whose content hash is *digest*."""
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
    return compile_policy(documents, digest)
