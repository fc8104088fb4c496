"""Parsing policy files: YAML with positions, duplicate-key checks, and ``${ENV}`` interpolation.

Every value read keeps the line and column it came from, so later stages
(schema, cross-field checks) can report ``file:line:col: path: message``.
A value that came (partly) from the environment also keeps the text it was
written as: an error quotes ``${VAR}``, never what the variable holds (it may
be a key), and no error quotes more than an excerpt of a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import yaml

from sidecar.policy.errors import EXCERPT, Issue, Path, PolicyError, cut, excerpt
from sidecar.policy.redaction import conceal, redact_url

_REFERENCE: Final = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_BROKEN: Final = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-.*?)?\})")
_WHOLE: Final = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")
# Bounds on what one file may build: aliases can expand a small file exponentially
# ("billion laughs"), and deep nesting exhausts the interpreter's recursion limit.
MAX_VALUES: Final = 100_000
MAX_DEPTH: Final = 64


class _TooLarge(Exception):
    """The document expands past MAX_VALUES values."""


@dataclass(frozen=True, slots=True)
class Interpolation:
    """A scalar with ``${VAR}`` references: as written, and what the environment put in."""

    written: str
    values: tuple[tuple[str, str], ...]  # (variable, value) for each one set

    def shown(self) -> str:
        """``${VAR}`` for a lone reference, else the written text quoted (excerpted)."""
        if _WHOLE.fullmatch(self.written):
            return self.written
        return excerpt(redact_url(self.written))


class _AsWritten:
    """Stands for an interpolated value inside a quoted value: its repr is the written text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed policy file: plain data plus where each value came from."""

    file: str
    data: object
    marks: Mapping[Path, tuple[int, int]] = field(repr=False)
    interpolated: Mapping[Path, Interpolation] = field(default_factory=dict, repr=False)
    multiline: frozenset[Path] = field(default=frozenset(), repr=False)  # never quoted

    def issue(self, path: Path, message: str) -> Issue:
        """An Issue at *path*, or at its nearest ancestor that has a position; any value
        of this document's variables in *message* is replaced by ``${VAR}``."""
        probe = path
        while probe not in self.marks and probe:
            probe = probe[:-1]
        line, column = self.marks.get(probe, (0, 0))
        return Issue(self.file, line, column, path, conceal(message, self.variables()))

    def quote(self, path: Path, value: object) -> str:
        """*value* (found at *path*) for an error: an excerpt of its repr, each interpolated
        scalar in it shown as written (``${KEY}``), never as its value, URLs' user info
        redacted."""
        return excerpt(self._as_written(path, value))

    def variables(self) -> list[tuple[str, str]]:
        """(variable, value) of every reference the environment filled in."""
        return [pair for found in self.interpolated.values() for pair in found.values]

    def _as_written(self, path: Path, value: object) -> object:
        found = self.interpolated.get(path)
        if found is not None:
            return _AsWritten(found.shown())
        if path in self.multiline:  # a file read as one folded text: not even its start
            return _AsWritten("a text of several lines")
        if isinstance(value, str):
            return redact_url(value)  # a URL's user info may be a key written in the file
        if isinstance(value, dict):
            return {key: self._as_written((*path, key), item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._as_written((*path, index), item) for index, item in enumerate(value)]
        return value


def parse(file: str, raw: bytes, environ: Mapping[str, str]) -> Document:
    """Parse one YAML file into a Document, interpolating ``${VAR}`` / ``${VAR:-default}``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([Issue(file, 0, 0, (), f"not UTF-8: {exc.reason}")]) from None
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # control characters are refused up front
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - before.rfind("\n")
        message = f"invalid YAML: unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise PolicyError([Issue(file, line, column, (), message)]) from None
    try:
        node = loader.get_single_node()
    except RecursionError:
        raise PolicyError([Issue(file, 0, 0, (), "invalid YAML: nested too deeply")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = cut(str(exc.problem), 2 * EXCERPT)  # may quote a tag or a character of the file
        raise PolicyError([Issue(file, line, column, (), f"invalid YAML: {problem}")]) from None
    finally:
        loader.dispose()
    if node is None:
        return Document(file, {}, {})
    builder = _Builder(file, environ)
    try:
        data = builder.build(node, ())
    except _TooLarge:
        message = f"the document expands to more than {MAX_VALUES} values (aliases?)"
        raise PolicyError([Issue(file, 0, 0, (), message)]) from None
    if builder.issues:
        raise PolicyError(builder.issues)
    return Document(file, data, builder.marks, builder.interpolated, frozenset(builder.multiline))


class _Builder:
    """Walks a composed YAML node tree into plain data, recording positions."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.marks: dict[Path, tuple[int, int]] = {}
        self.interpolated: dict[Path, Interpolation] = {}
        self.multiline: set[Path] = set()
        self.issues: list[Issue] = []
        self._constructor = yaml.SafeLoader("")
        self._open: set[yaml.Node] = set()  # collections being built (recursive aliases)
        self._values = 0

    def build(self, node: yaml.Node, path: Path) -> object:
        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        self._values += 1
        if self._values > MAX_VALUES:
            raise _TooLarge
        if len(path) > MAX_DEPTH:
            self._issue(node, path, f"nested more than {MAX_DEPTH} levels deep")
            return None
        if node in self._open:
            self._issue(node, path, "recursive alias")
            return None
        if not isinstance(node, yaml.ScalarNode):
            self._open.add(node)
            try:
                return self._collection(node, path)
            finally:
                self._open.discard(node)
        if node.end_mark.line != node.start_mark.line:
            self.multiline.add(path)
        value = self._construct(node, path)
        if isinstance(value, str) and "$" in value:
            return self._interpolate(node, value, path)
        return value

    def _collection(self, node: yaml.Node, path: Path) -> object:
        if isinstance(node, yaml.MappingNode):
            result: dict[str, object] = {}
            for key_node, value_node in node.value:
                # Keys are always text: YAML 1.1 would read `on:` as the boolean true.
                if not isinstance(key_node, yaml.ScalarNode):
                    self._issue(key_node, path, "keys must be plain strings")
                    continue
                key = str(key_node.value)
                if key in result:
                    self._issue(key_node, (*path, key), "duplicate key")
                    continue
                result[key] = self.build(value_node, (*path, key))
                if value_node.start_mark.line != key_node.start_mark.line:
                    # A block (or alias) starting on a later line: point at the key itself.
                    mark = key_node.start_mark
                    self.marks[(*path, key)] = (mark.line + 1, mark.column + 1)
            return result
        assert isinstance(node, yaml.SequenceNode)
        return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]

    def _construct(self, node: yaml.ScalarNode, path: Path, shown: str | None = None) -> object:
        """The scalar's value; *shown* stands for it in an error (an interpolated one)."""
        try:
            return self._constructor.construct_object(node)
        except yaml.MarkedYAMLError as exc:  # e.g. an unknown or unsafe !!tag
            self._issue(node, path, f"invalid value: {cut(str(exc.problem), 2 * EXCERPT)}")
        except (ValueError, TypeError) as exc:  # e.g. a timestamp with month 13
            if shown is not None:  # the reason may quote the value
                kind = str(node.tag).rpartition(":")[2]
                self._issue(node, path, f"invalid value {shown}: not a valid {kind}")
            else:
                reason = cut(str(exc), EXCERPT)
                self._issue(node, path, f"invalid value {excerpt(node.value)}: {reason}")
        return None

    def _interpolate(self, node: yaml.ScalarNode, value: str, path: Path) -> object:
        if _BROKEN.search(value.replace("$$", "")):
            self._issue(node, path, f"malformed ${{...}} reference in {excerpt(value)}")
            return value
        missing: list[str] = []
        referenced: list[str] = []
        taken: list[tuple[str, str]] = []

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            referenced.append(name)
            found = self.environ.get(name)
            if found is not None and (found or default is None):
                taken.append((name, found))
                return found
            if default is not None:
                return default
            missing.append(name)
            return ""

        result = _REFERENCE.sub(substitute, value)
        for name in missing:
            self._issue(node, path, f"environment variable {name} is not set (and has no default)")
        if referenced:
            self.interpolated[path] = Interpolation(value, tuple(taken))
        if node.style is None:  # plain scalar: `attempts: ${N:-3}` becomes the int 3
            tag = self._constructor.resolve(  # type: ignore[no-untyped-call]
                yaml.ScalarNode, result, (True, False)
            )
            shown = self.interpolated[path].shown() if path in self.interpolated else None
            return self._construct(yaml.ScalarNode(tag, result, node.start_mark), path, shown)
        return result

    def _issue(self, node: yaml.Node, path: Path, message: str) -> None:
        mark = node.start_mark
        self.issues.append(Issue(self.file, mark.line + 1, mark.column + 1, path, message))
