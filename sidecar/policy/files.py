"""The bytes of a policy: its directory's ``*.yaml`` files and the files they read.

A policy file may be a symlink (a Kubernetes ConfigMap volume links ``name ->
..data/name -> ..<timestamp>/name``) but only to a file inside the policy
directory: a link out of it (to ``/etc/passwd``, a key file, a socket) is
refused before anything is read, so no other file's text can reach an error.
The file read is the one checked (its resolved path), not the link again.

Files named one by one (``sidecar check a.yaml b.yaml``, as pre-commit passes them)
are read together as one policy set, under the same rule: each must be a ``*.yaml`` /
``*.yml`` file, and a symlink only to a file inside the directory the link is in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Final

from sidecar.policy.errors import Issue, PolicyError

SUFFIXES: Final = (".yaml", ".yml")
OUTSIDE: Final = "a symlink to a file outside the policy directory: refused"
MIXED: Final = "give one policy directory or policy files, not both"


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
    """(display name, bytes) of every policy file, following symlinks that stay inside
    *directory* (Kubernetes ``..data``); one that leaves it is an issue."""
    root = directory.resolve()
    files, outside = [], []
    for entry in policy_files(directory):
        target = entry.resolve()
        if not target.is_relative_to(root):
            outside.append(Issue(str(entry), 0, 0, (), OUTSIDE))
            continue
        try:
            files.append((str(entry), target.read_bytes()))
        except OSError as exc:  # swapped away between listing and reading
            raise PolicyError(
                [Issue(str(entry), 0, 0, (), f"cannot read: {exc.strerror}")]
            ) from None
    if outside:
        raise PolicyError(outside)
    if not files:
        raise PolicyError([Issue(str(directory), 0, 0, (), "no *.yaml policy files found")])
    return files


def read_paths(paths: Sequence[FsPath]) -> list[tuple[str, bytes]]:
    """One directory's policy files (as ``read_files``), or the named files read as one
    policy set (duplicates dropped, in the order given)."""
    if len(paths) == 1 and (paths[0].is_dir() or paths[0].suffix not in SUFFIXES):
        return read_files(paths[0])  # a directory, or "not a directory"
    directories = [path for path in paths if path.is_dir()]
    if directories:
        raise PolicyError([Issue(str(directories[0]), 0, 0, (), MIXED)])
    files, issues = [], []
    for path in dict.fromkeys(paths):
        found = _read_named(path)
        if isinstance(found, Issue):
            issues.append(found)
        else:
            files.append((str(path), found))
    if issues:
        raise PolicyError(issues)
    if not files:
        raise PolicyError([Issue(".", 0, 0, (), "no policy files given")])
    return files


def directories_of(paths: Sequence[FsPath]) -> list[FsPath]:
    """The directory of each file in *paths* (a directory stays), once each, in order."""
    return list(dict.fromkeys(path if path.is_dir() else path.parent for path in paths))


def _read_named(path: FsPath) -> bytes | Issue:
    """A named policy file's bytes, or why not (a link may not leave its own directory)."""
    if path.suffix not in SUFFIXES:
        return Issue(str(path), 0, 0, (), "not a *.yaml / *.yml policy file")
    target = path.resolve()
    if not target.is_relative_to(path.absolute().parent.resolve()):
        return Issue(str(path), 0, 0, (), OUTSIDE)
    if not target.is_file():
        return Issue(str(path), 0, 0, (), "not a file" if target.exists() else "no such file")
    try:
        return target.read_bytes()
    except OSError as exc:
        return Issue(str(path), 0, 0, (), f"cannot read: {exc.strerror}")


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
