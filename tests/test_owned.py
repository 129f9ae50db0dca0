"""The ownership rule itself (``gptref._owned``) and the lock and create primitives of
``gptref._io`` it relies on: what each says of a target, what each deletes, and that no link
is ever followed. The commands' behaviour is tests/test_ownership.py's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gptref._io import atomic_create, exclusive
from gptref._owned import (
    Exists,
    Kind,
    check_writable,
    claim_dir,
    claim_file,
    locked_by_gptref,
    no_links,
    read_marker,
    remove,
    remove_folder,
)

MINE = Kind("a test output", lambda d: read_marker(d / "marker.json") == {"format": "test"},
            lambda name: name == ".lock")  # fmt: skip


def folder(path: Path, files: dict[str, str]) -> Path:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_claim_dir_takes_a_new_an_empty_and_a_leftovers_only_folder(tmp_path):
    """New, empty, or holding only what a killed writer of the kind leaves: nothing to
    replace (False)."""
    assert claim_dir(tmp_path / "new", MINE, overwrite=False) is False
    assert claim_dir(folder(tmp_path / "empty", {}), MINE, overwrite=False) is False
    assert claim_dir(folder(tmp_path / "lock", {".lock": ""}), MINE, overwrite=False) is False


def test_claim_dir_replaces_its_own_kind_only_with_overwrite(tmp_path):
    """An earlier output of the kind: Exists without overwrite (naming the flag the CLI
    gives), True with it."""
    mine = folder(tmp_path / "mine", {"marker.json": '{"format": "test"}'})
    with pytest.raises(Exists) as info:
        claim_dir(mine, MINE, overwrite=False)
    assert "--overwrite" in info.value.with_flag() and str(mine) in str(info.value)
    assert claim_dir(mine, MINE, overwrite=True) is True


@pytest.mark.parametrize(
    "files", [{"notes.txt": "x"}, {"marker.json": '{"format": "other"}'}, {"marker.json": "[1]"}]
)
def test_claim_dir_refuses_any_other_folder_with_overwrite_too(files, tmp_path):
    """Another folder (a user's, a look-alike marker): ValueError, not Exists, so no flag
    makes gptref replace it."""
    other = folder(tmp_path / "other", files)
    with pytest.raises(ValueError, match="holds no test output") as info:
        claim_dir(other, MINE, overwrite=True)
    assert not isinstance(info.value, Exists)


def test_a_marker_is_never_read_through_a_link(tmp_path):
    """marker.json a link to a good marker elsewhere: the folder is not of the kind."""
    good = folder(tmp_path / "good", {"marker.json": '{"format": "test"}'})
    linked = folder(tmp_path / "linked", {})
    (linked / "marker.json").symlink_to(good / "marker.json")
    assert read_marker(linked / "marker.json") is None
    with pytest.raises(ValueError, match="holds no test output"):
        claim_dir(linked, MINE, overwrite=True)


def test_claim_dir_refuses_a_file_and_a_dangling_link(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        claim_dir(tmp_path / "file", MINE, overwrite=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    with pytest.raises(ValueError, match="symbolic link .* which does not exist"):
        claim_dir(tmp_path / "dangling", MINE, overwrite=True)


def test_claim_file_replaces_only_its_own_file_and_only_with_overwrite(tmp_path):
    """A new name: False; gptref's earlier file: Exists, then True with overwrite; a user's
    file, a link, a folder, a FIFO: ValueError whatever the flag."""
    ours = lambda p: p.read_text() == "ours"  # noqa: E731
    assert claim_file(tmp_path / "new", "a test file", ours, overwrite=False) is False
    (tmp_path / "earlier").write_text("ours")
    with pytest.raises(Exists):
        claim_file(tmp_path / "earlier", "a test file", ours, overwrite=False)
    assert claim_file(tmp_path / "earlier", "a test file", ours, overwrite=True) is True
    (tmp_path / "theirs").write_text("theirs")
    (tmp_path / "link").symlink_to(tmp_path / "earlier")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    for name, match in (("theirs", "is not a test file gptref wrote"), ("link", "symbolic link"),
                        ("dir", "is a folder"), ("fifo", "not a regular file")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            claim_file(tmp_path / name, "a test file", ours, overwrite=True)


def test_remove_deletes_regular_files_and_leaves_links_folders_and_their_targets(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("precious")
    d = folder(tmp_path / "d", {"a": "x"})
    (d / "link").symlink_to(target)
    (d / "sub").mkdir()
    remove(d, ["a", "link", "sub", "missing"])
    assert sorted(os.listdir(d)) == ["link", "sub"] and target.read_text() == "precious"


def test_remove_folder_keeps_a_folder_holding_anything_else(tmp_path):
    """The named files go; a user's file keeps the folder (False); an emptied one goes."""
    d = folder(tmp_path / "d", {"model.safetensors": "x", "notes.txt": "mine"})
    assert remove_folder(d, ["model.safetensors"]) is False
    assert os.listdir(d) == ["notes.txt"]
    e = folder(tmp_path / "e", {"model.safetensors": "x"})
    assert remove_folder(e, ["model.safetensors"]) is True and not e.exists()
    (tmp_path / "link").symlink_to(d)
    assert remove_folder(tmp_path / "link", ["notes.txt"]) is False
    assert (d / "notes.txt").exists()


def test_no_links_names_the_link_and_where_it_points(tmp_path):
    (tmp_path / "checkpoint").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"checkpoint is a symbolic link \(to .*elsewhere\)"):
        no_links(tmp_path, ["config.json", "checkpoint"])


def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match="is a symbolic link"), exclusive(tmp_path / ".lock", ValueError):  # fmt: skip
        pass
    assert victim.read_text() == "precious"


def test_a_lock_file_of_someone_else_keeps_its_content(tmp_path):
    """A .lock gptref did not write is locked as it is, and kept; one of gptref's records this
    pid while held, and goes with the lock."""
    theirs = folder(tmp_path / "theirs", {".lock": "my notes"})
    with exclusive(theirs / ".lock", lambda owner: ValueError(owner)):
        pass
    assert (theirs / ".lock").read_text() == "my notes" and not locked_by_gptref(theirs / ".lock")
    with exclusive(tmp_path / "ours.lock", lambda owner: ValueError(owner)):
        assert (tmp_path / "ours.lock").read_text() == f"gptref process {os.getpid()}\n"
        assert locked_by_gptref(tmp_path / "ours.lock")
    assert not (tmp_path / "ours.lock").exists()


def test_atomic_create_never_replaces_anything(tmp_path):
    """A new file is written whole; an existing file or link (a dangling one too) stays, and
    no temporary file is left."""
    atomic_create(tmp_path / "new.json", "{}")
    assert (tmp_path / "new.json").read_text() == "{}"
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    for name in ("new.json", "dangling"):
        with pytest.raises(FileExistsError):
            atomic_create(tmp_path / name, "other")
    assert (tmp_path / "new.json").read_text() == "{}" and not (tmp_path / "nothing").exists()
    assert sorted(os.listdir(tmp_path)) == ["dangling", "new.json"]


def test_check_writable_names_the_file_in_the_way(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        check_writable(tmp_path / "a-file" / "out" / "deeper")
    assert info.value.filename == str(tmp_path / "a-file")
    check_writable(tmp_path / "new" / "deeper")  # a writable ancestor: fine
