"""``--env-file`` parsing: KEY=VALUE lines, comments, ``export``, quotes; errors never quote."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.policy.envfile import MAX_BYTES, read_env_file


def write(tmp_path: Path, raw: bytes) -> Path:
    path = tmp_path / "ci.env"
    path.write_bytes(raw)
    return path


def test_lines_comments_export_and_quotes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        b"# a comment\n\n  export A=1\nB = two words \r\nC='x#y = z'\nD=\"q\"\nE=\nF='\nA=last\n",
    )
    assert read_env_file(path) == {
        "A": "last",
        "B": "two words",
        "C": "x#y = z",
        "D": "q",
        "E": "",
        "F": "'",
    }


@pytest.mark.parametrize("line", [b"sk-secret-value", b"1A=x", b"=x", b"A-B=x", b"export"])
def test_a_bad_line_names_its_number_not_its_text(tmp_path: Path, line: bytes) -> None:
    path = write(tmp_path, b"OK=1\n" + line + b"\n")
    with pytest.raises(ValueError, match="expected KEY=VALUE") as caught:
        read_env_file(path)
    assert str(caught.value).startswith(f"{path}:2: ")
    assert line.decode() not in str(caught.value).removeprefix(f"{path}:2: ")


def test_unreadable_oversized_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read: No such file or directory"):
        read_env_file(tmp_path / "none.env")
    with pytest.raises(ValueError, match=f"larger than {MAX_BYTES} bytes"):
        read_env_file(write(tmp_path, b"A=" + b"x" * MAX_BYTES))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_env_file(write(tmp_path, b"A=\xff\n"))
