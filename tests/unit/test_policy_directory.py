"""Finding and reading policy files: discovery, the Kubernetes layout, links out of the
directory refused, the content hash."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.policy.errors import PolicyError
from sidecar.policy.files import content_hash, policy_files, read_files


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_policy_files_sorted_yaml_and_yml_hidden_skipped(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "b.yaml": "",
            "a.yml": "",
            ".x.yaml": "",
            "notes.txt": "",
            "c.YAML": "",
            "..data": "",
        },
    )
    (tmp_path / "dir.yaml").mkdir()
    assert [entry.name for entry in policy_files(tmp_path)] == ["a.yml", "b.yaml"]


def test_kubernetes_configmap_layout_is_followed(tmp_path: Path) -> None:
    stamp = tmp_path / "..2024_01_01_00_00_00.1"
    write(stamp, {"policy.yaml": "version: 1\n"})
    (tmp_path / "..data").symlink_to(stamp.name)
    (tmp_path / "policy.yaml").symlink_to("..data/policy.yaml")
    assert read_files(tmp_path) == [(str(tmp_path / "policy.yaml"), b"version: 1\n")]


def configmap(directory: Path, files: dict[str, str]) -> Path:
    """A ConfigMap volume as the kubelet writes it: name -> ..data/name -> ..<stamp>/name."""
    stamp = "..2026_01_31_12_00_00.123456789"
    write(directory / stamp, files)
    (directory / "..data").symlink_to(stamp)
    for name in files:
        (directory / name).symlink_to(f"..data/{name}")
    return directory


def test_configmap_links_stay_allowed_also_through_a_linked_directory(tmp_path: Path) -> None:
    real = configmap(tmp_path / "volume", {"a.yaml": "version: 1\n", "b.yaml": "routes: []\n"})
    (tmp_path / "policies").symlink_to(real)  # the directory itself reached through a link
    assert read_files(tmp_path / "policies") == [
        (str(tmp_path / "policies" / "a.yaml"), b"version: 1\n"),
        (str(tmp_path / "policies" / "b.yaml"), b"routes: []\n"),
    ]


SECRET_FILE = "root:x:0:0:root:/root:/bin/bash\nsk-live-not-a-policy-0123\n"


@pytest.mark.parametrize(
    "link",
    [
        pytest.param(lambda outside: outside, id="absolute"),
        pytest.param(
            lambda outside: Path("..") / outside.parent.name / outside.name, id="relative"
        ),
    ],
)
def test_a_link_out_of_the_policy_directory_is_refused_unread(
    tmp_path: Path, link: Callable[[Path], Path]
) -> None:
    outside = tmp_path / "etc" / "passwd.yaml"
    write(outside.parent, {outside.name: SECRET_FILE})
    directory = configmap(tmp_path / "policies", {"a.yaml": "version: 1\n"})
    (directory / "passwd.yaml").symlink_to(link(outside))
    with pytest.raises(PolicyError) as caught:
        read_files(directory)
    assert str(caught.value) == (
        f"{directory / 'passwd.yaml'}: a symlink to a file outside the policy directory: refused"
    )


def test_a_configmap_link_that_leaves_the_directory_is_refused(tmp_path: Path) -> None:
    """..data itself pointing out of the directory (only the kubelet should write it)."""
    write(tmp_path / "elsewhere", {"a.yaml": SECRET_FILE})
    directory = write(tmp_path / "policies", {})
    (directory / "..data").symlink_to(tmp_path / "elsewhere")
    (directory / "a.yaml").symlink_to("..data/a.yaml")
    with pytest.raises(PolicyError) as caught:
        read_files(directory)
    assert "outside the policy directory" in str(caught.value)
    assert "sk-live" not in str(caught.value)


def test_dangling_symlink_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": "version: 1\n"})
    (tmp_path / "gone.yaml").symlink_to("nowhere.yaml")
    assert [name for name, _ in read_files(tmp_path)] == [str(tmp_path / "a.yaml")]


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, {"README.md": "", ".hidden.yaml": "version: 1\n"})
    with pytest.raises(PolicyError) as caught:
        read_files(tmp_path)
    assert [str(issue) for issue in caught.value.issues] == [
        f"{tmp_path}: no *.yaml policy files found"
    ]


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        read_files(tmp_path / "nope")
    assert str(caught.value) == f"{tmp_path / 'nope'}: not a directory"


def test_file_vanishing_between_listing_and_reading_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, {"a.yaml": "version: 1\n"})

    def vanish(self: Path) -> bytes:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(Path, "read_bytes", vanish)
    with pytest.raises(PolicyError) as caught:
        read_files(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'a.yaml'}: cannot read: No such file or directory"


def test_content_hash_changes_with_content_and_names_only(tmp_path: Path) -> None:
    one = [("/x/a.yaml", b"version: 1\n")]
    assert content_hash(one) == content_hash([("/x/a.yaml", b"version: 1\n")])
    assert len(content_hash(one)) == 12
    # The directory a file is read from does not matter (..data swaps change it).
    assert content_hash(one) == content_hash([("/y/..2024/a.yaml", b"version: 1\n")])
    assert content_hash(one) != content_hash([("/x/a.yaml", b"version: 1\n\n")])
    assert content_hash(one) != content_hash([("/x/b.yaml", b"version: 1\n")])
    two = [("a.yaml", b"x"), ("b.yaml", b"y")]
    assert content_hash(two) != content_hash([("a.yaml", b"xb.yaml"), ("b.yaml", b"y")])


def test_content_hash_of_a_directory_is_stable(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": "version: 1\n", "b.yml": "routes: []\n"})
    first = content_hash(read_files(tmp_path))
    os.utime(tmp_path / "a.yaml", (0, 0))  # touching a file changes nothing
    assert content_hash(read_files(tmp_path)) == first
    (tmp_path / "b.yml").write_text("routes: []  # edited\n")
    assert content_hash(read_files(tmp_path)) != first
