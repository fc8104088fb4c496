"""Reading policy files: YAML with positions, duplicate-key checks, and ``${ENV}`` interpolation.

Every value read keeps the line and column it came from, so later stages
(schema, cross-field checks) can report ``file:line:col: path: message``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Final

import yaml

from sidecar.policy.errors import Issue, Path, PolicyError

_REFERENCE: Final = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_BROKEN: Final = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-.*?)?\})")
SUFFIXES: Final = (".yaml", ".yml")
# Bounds on what one file may build: aliases can expand a small file exponentially
# ("billion laughs"), and deep nesting exhausts the interpreter's recursion limit.
MAX_VALUES: Final = 100_000
MAX_DEPTH: Final = 64


class _TooLarge(Exception):
    """The document expands past MAX_VALUES values."""


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed policy file: plain data plus where each value came from."""

    file: str
    data: object
    marks: Mapping[Path, tuple[int, int]] = field(repr=False)

    def issue(self, path: Path, message: str) -> Issue:
        """An Issue at *path*, or at its nearest ancestor that has a position."""
        probe = path
        while probe not in self.marks and probe:
            probe = probe[:-1]
        line, column = self.marks.get(probe, (0, 0))
        return Issue(self.file, line, column, path, message)


def policy_files(directory: FsPath) -> list[FsPath]:
    """The ``*.yaml`` / ``*.yml`` files of *directory*, sorted; hidden ones (``..data``) skipped."""
    if not directory.is_dir():
        raise PolicyError([Issue(str(directory), 0, 0, (), "not a directory")])
    return sorted(
        entry
        for entry in directory.iterdir()
        if entry.suffix in SUFFIXES and not entry.name.startswith(".") and entry.is_file()
    )


def read_files(directory: FsPath) -> list[tuple[str, bytes]]:
    """(display name, bytes) of every policy file, following symlinks (Kubernetes ``..data``)."""
    files = []
    for entry in policy_files(directory):
        try:
            files.append((str(entry), entry.read_bytes()))
        except OSError as exc:  # swapped away between listing and reading
            raise PolicyError(
                [Issue(str(entry), 0, 0, (), f"cannot read: {exc.strerror}")]
            ) from None
    if not files:
        raise PolicyError([Issue(str(directory), 0, 0, (), "no *.yaml policy files found")])
    return files


@dataclass(frozen=True, slots=True)
class InputFile:
    """A file a policy reads besides its own (``access.keys_file``): its bytes, or why not."""

    path: str
    raw: bytes | None
    error: str | None = None  # the OS's reason when it cannot be read


def read_inputs(paths: Iterable[str]) -> tuple[InputFile, ...]:
    """Read each of *paths* once (in order, duplicates dropped); unreadable ones say why."""
    found = []
    for path in dict.fromkeys(paths):
        try:
            found.append(InputFile(path, FsPath(path).read_bytes()))
        except OSError as exc:
            found.append(InputFile(path, None, exc.strerror or type(exc).__name__))
    return tuple(found)


def content_hash(files: list[tuple[str, bytes]], inputs: Iterable[InputFile] = ()) -> str:
    """A short hash of names and contents, input files included; equal hashes mean
    nothing changed. Policy files count by name (a ConfigMap's ``..data`` swap keeps
    them), input files by their full path."""
    digest = hashlib.sha256()
    for name, raw in files:
        digest.update(FsPath(name).name.encode() + b"\0" + raw + b"\0")
    for extra in inputs:
        content = extra.raw if extra.raw is not None else f"\1{extra.error}".encode()
        digest.update(b"\2" + extra.path.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:12]


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
        raise PolicyError([Issue(file, line, column, (), f"invalid YAML: {exc.problem}")]) from None
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
    return Document(file, data, builder.marks)


class _Builder:
    """Walks a composed YAML node tree into plain data, recording positions."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.marks: dict[Path, tuple[int, int]] = {}
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

    def _construct(self, node: yaml.ScalarNode, path: Path) -> object:
        try:
            return self._constructor.construct_object(node)
        except yaml.MarkedYAMLError as exc:  # e.g. an unknown or unsafe !!tag
            self._issue(node, path, f"invalid value: {exc.problem}")
        except (ValueError, TypeError) as exc:  # e.g. a timestamp with month 13
            self._issue(node, path, f"invalid value {node.value!r}: {exc}")
        return None

    def _interpolate(self, node: yaml.ScalarNode, value: str, path: Path) -> object:
        if _BROKEN.search(value.replace("$$", "")):
            self._issue(node, path, f"malformed ${{...}} reference in {value!r}")
            return value
        missing: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            found = self.environ.get(name)
            if found is not None and (found or default is None):
                return found
            if default is not None:
                return default
            missing.append(name)
            return ""

        result = _REFERENCE.sub(substitute, value)
        for name in missing:
            self._issue(node, path, f"environment variable {name} is not set (and has no default)")
        if node.style is None:  # plain scalar: `attempts: ${N:-3}` becomes the int 3
            tag = self._constructor.resolve(  # type: ignore[no-untyped-call]
                yaml.ScalarNode, result, (True, False)
            )
            return self._construct(yaml.ScalarNode(tag, result, node.start_mark), path)
        return result

    def _issue(self, node: yaml.Node, path: Path, message: str) -> None:
        mark = node.start_mark
        self.issues.append(Issue(self.file, mark.line + 1, mark.column + 1, path, message))
