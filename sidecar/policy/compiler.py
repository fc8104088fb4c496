"""Compiling schema-valid documents into one PolicySet, or a PolicyError with every issue.

Order: the documents are merged (``merge``), each route deep-merged over
``defaults``; each part is built into the frozen objects of ``model``
(``build``), running the cross-field checks on the way (``checks``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import cast

from sidecar.policy import build
from sidecar.policy.checks import (
    Checker,
    check_route_name,
    check_shadowed,
    check_state,
    check_upstream,
)
from sidecar.policy.errors import Issue, PolicyError
from sidecar.policy.fields import subtree
from sidecar.policy.files import InputFile
from sidecar.policy.merge import RouteSource, merge_documents, route_tree
from sidecar.policy.model import PolicySet, Route
from sidecar.policy.redaction import conceal
from sidecar.policy.source import Document
from sidecar.typedefs import JSON as Tree


def input_paths(documents: list[Document]) -> list[str]:
    """The files schema-valid *documents* read besides themselves (``access.keys_file``,
    in ``defaults`` and in routes), in order; they are part of the content hash."""
    paths: list[str] = []
    for document in documents:
        data = cast(Tree, document.data)
        for tree in [subtree(data, "defaults"), *cast(list[Tree], data.get("routes", []))]:
            path = subtree(tree, "access").get("keys_file")
            if isinstance(path, str):
                paths.append(path)
    return paths


def compile_policy(
    documents: list[Document], content_hash: str, inputs: Iterable[InputFile]
) -> PolicySet:
    """Merge schema-valid *documents* into a PolicySet or raise PolicyError with every issue.

    *inputs* are the files of ``input_paths(documents)``, already read (and hashed)."""
    read = {extra.path: extra for extra in inputs}
    merged = merge_documents(documents)
    upstreams = {name: build.upstream(name, spec) for name, spec in merged.upstreams.items()}
    policy = PolicySet(content_hash, tuple(d.file for d in documents), upstreams, ())
    checker = Checker(merged.defaults, merged.issues)
    for name, spec in merged.upstreams.items():
        check_upstream(merged.upstream_documents[name], name, spec, checker.issues)
    state = policy.state
    if merged.state is not None:
        document, spec = merged.state
        state = build.state(spec, policy.state)
        check_state(document, state, checker.issues)
    if not merged.routes:
        files = ", ".join(document.file for document in documents)
        checker.issues.append(Issue(files, 0, 0, (), "no routes defined"))
    defaults = merged.defaults[1] if merged.defaults else {}
    compiled: list[Route] = []
    names: dict[str, RouteSource] = {}
    for source in merged.routes:
        name = cast(str, source.tree["name"])
        if not check_route_name(source, names.get(name), checker):
            continue
        names[name] = source
        tree = route_tree(defaults, source.tree)
        route = build.route(tree, upstreams, source, checker, read)
        if route is not None:
            check_shadowed(route, compiled, source, checker)
            compiled.append(route)
    if checker.issues:
        unique = dict.fromkeys(checker.issues)  # a bad default is reported once, not per route
        # A message may quote a value of another file (a route's name): no file's variables.
        variables = [pair for document in documents for pair in document.variables()]
        concealed = [replace(i, message=conceal(i.message, variables)) for i in unique]
        raise PolicyError(sorted(concealed, key=lambda i: (i.file, i.line, i.column)))
    return replace(policy, routes=tuple(compiled), state=state)
