"""Merging schema-valid documents: parts gathered across files, ``defaults`` into each route.

Upstream names are unique across files; ``state`` and ``defaults`` are set in at
most one file; routes keep file order, then list order. A route is deep-merged
over ``defaults``: mappings key by key, anything else (lists included) replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from sidecar.policy.errors import Issue, Path
from sidecar.policy.source import Document
from sidecar.typedefs import JSON as Tree  # a policy file's mapping, as parsed


@dataclass(frozen=True, slots=True)
class RouteSource:
    """A route as written: its document, its index in ``routes``, its own keys."""

    document: Document
    index: int
    tree: Tree  # before defaults


@dataclass(slots=True)
class Merged:
    """The parts of every document; a repeated definition is an issue, the first one kept."""

    upstreams: dict[str, Tree] = field(default_factory=dict)
    upstream_documents: dict[str, Document] = field(default_factory=dict)  # where each is
    state: tuple[Document, Tree] | None = None
    defaults: tuple[Document, Tree] | None = None
    routes: list[RouteSource] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


def merge_documents(documents: list[Document]) -> Merged:
    """Gather upstreams, ``state``, ``defaults`` and routes of *documents*, in order."""
    merged = Merged()
    for document in documents:
        data = cast(Tree, document.data)
        merged.state = _once("state", merged.state, document, merged.issues)
        for name, spec in cast(Tree, data.get("upstreams", {})).items():
            if name in merged.upstream_documents:
                message = f"upstream already defined in {merged.upstream_documents[name].file}"
                merged.issues.append(document.issue(("upstreams", name), message))
                continue
            merged.upstreams[name] = cast(Tree, spec)
            merged.upstream_documents[name] = document
        merged.defaults = _once("defaults", merged.defaults, document, merged.issues)
        for index, tree in enumerate(cast(list[Tree], data.get("routes", []))):
            merged.routes.append(RouteSource(document, index, tree))
    return merged


def route_tree(defaults: Tree, route: Tree) -> Tree:
    """*route* deep-merged over *defaults*."""
    return _deep_merge(_inherited(defaults, route), route)


def has(tree: Tree, path: Path) -> bool:
    """Whether *path* is written in *tree*."""
    node: object = tree
    for part in path:
        if isinstance(node, dict):
            if part not in node:
                return False
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False
    return True


def _once(
    key: str, first: tuple[Document, Tree] | None, document: Document, issues: list[Issue]
) -> tuple[Document, Tree] | None:
    """The first document's *key* block; another one is an issue."""
    data = cast(Tree, document.data)
    if key not in data:
        return first
    if first is not None:
        issues.append(document.issue((key,), f"{key} already defined in {first[0].file}"))
        return first
    return document, cast(Tree, data[key])


def _inherited(defaults: Tree, route: Tree) -> Tree:
    """*defaults* minus the breaker trigger a route replaces by choosing the other one."""
    breaker, own = defaults.get("breaker"), route.get("breaker")
    if not isinstance(breaker, dict) or not isinstance(own, dict):
        return defaults
    kept = dict(cast(Tree, breaker))
    for chosen, other in (("window", "consecutive_failures"), ("consecutive_failures", "window")):
        if chosen in own and other not in own:
            kept.pop(other, None)
    return {**defaults, "breaker": kept}


def _deep_merge(base: Tree, override: Tree) -> Tree:
    """Mappings merge key by key, anything else in *override* replaces."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _deep_merge(cast(Tree, current), cast(Tree, value))
        else:
            merged[key] = value
    return merged
