"""A checkpoint directory as a series of snapshots, and the protocol that replaces one.

Layout (``gptref.run.checkpoint`` writes each snapshot's files)::

    checkpoint/
        LATEST                 one line: the name of the current snapshot
        save-00000120-0003/    a complete checkpoint: step 120, the directory's 3rd save
        save-00000240-0004/    the newest; the last ``keep`` snapshots are kept
        .lock                  held (flock) by the process that is saving

A save (1) writes the new snapshot into ``tmp-<pid>-<random>/``, every file fsynced and the
manifest last, then the directory fsynced; (2) renames it to ``save-SSSSSSSS-NNNN/`` and
fsyncs the parent; (3) writes ``LATEST.tmp-*``, fsyncs it and renames it over ``LATEST``
(one atomic rename), fsyncs the parent; (4) removes snapshots older than the last ``keep``
and the ``tmp-*`` leftovers of killed saves. At every instant ``LATEST`` names a complete
snapshot: the previous one until the rename of step 3, the new one after it, and nothing
is deleted before that rename. A reader takes the newest snapshot that verifies: ``LATEST``'s,
else (it is damaged, missing, or ``LATEST`` names none) the next newest, and says which it
skipped and why (``candidates`` lists them in that order; ``gptref.run.checkpoint`` verifies).
A directory that holds a checkpoint's files itself (gptref 0.1's layout), or such a
directory's ``.old-*`` / ``.tmp-*`` siblings left by a kill between its two renames, is
read as it is. Nothing here follows a symbolic link: a linked snapshot is never read, and
deleting (``_prune``, ``clear``) removes only a snapshot's own files and the folders of
killed saves (``gptref._owned``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from gptref._io import atomic_write_text, exclusive, fsync_dir
from gptref._owned import is_folder, lstat, remove, remove_folder

LATEST, LOCK, MANIFEST = "LATEST", ".lock", "manifest.json"
FILES = ("model.safetensors", "state.pt", "config.json", MANIFEST)  # a snapshot's own files
_SNAPSHOT = re.compile(r"save-(\d{8,})-(\d{4,})")
_TMP = "tmp-"
_SAVING = re.compile(r"tmp-\d+-[0-9a-f]{8}")  # what ``commit`` names a save in progress
_LEGACY = r"\.(tmp|old)-\d+-[0-9a-f]+"  # 0.1's siblings of a checkpoint directory


def _order(entry: Path) -> tuple[int, int]:
    """(save number, step): the number counts the directory's saves, so it orders them in
    time, even after a resume from an older snapshot saved a lower step."""
    match = _SNAPSHOT.fullmatch(entry.name)
    return int(match.group(2)), int(match.group(1))


def snapshots(path: Path, *, links: bool = False) -> list[Path]:
    """The snapshot directories in ``path``, oldest first (by save number); links to
    directories only with ``links`` (to be reported, never read or deleted)."""
    if not path.is_dir():
        return []
    found = [
        entry for entry in path.iterdir()
        if _SNAPSHOT.fullmatch(entry.name) and (is_folder(entry) or (links and entry.is_symlink()))
    ]  # fmt: skip
    return sorted(found, key=_order)


def latest(path: Path) -> Path | None:
    """The snapshot ``LATEST`` names (a regular file, not a link), or None."""
    st = lstat(path / LATEST)
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
        return None
    name = (path / LATEST).read_text(encoding="utf-8", errors="replace").strip()
    return path / name if _SNAPSHOT.fullmatch(name) and lstat(path / name) else None


def candidates(path: Path) -> tuple[list[Path], list[Path]]:
    """-> (the snapshots of the checkpoint directory ``path`` a reader tries, newest first:
    ``LATEST``'s, then the others, then the files of 0.1's layout in ``path`` itself;
    0.1's complete copies beside ``path`` left by a killed save, newest first). A reader
    takes the first that verifies and names the ones of the first list it skipped."""
    found = [] if (named := latest(path)) is None else [named]
    found += [s for s in reversed(snapshots(path, links=True)) if s not in found]
    if is_folder(path) and lstat(path / MANIFEST) is not None:
        found.append(path)  # gptref 0.1's layout: the files themselves
    beside = [p for p in path.parent.glob(f"{path.name}.*-*")
              if re.fullmatch(re.escape(path.name) + _LEGACY, p.name) and is_folder(p)]  # fmt: skip
    return found, sorted(beside, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def has_saves(path: Path) -> bool:
    """Whether a save to the checkpoint directory ``path`` ever committed (a snapshot, or
    0.1's layout): if so, a reader must find one that verifies or refuse, never start over."""
    found, beside = candidates(path)
    return bool(found or beside)


def is_leftover(name: str) -> bool:
    """Whether ``name`` in a checkpoint directory is what a killed save (or the lock) left."""
    return name == LOCK or name.startswith((_TMP, LATEST + ".tmp-"))


def leftovers(path: Path) -> list[str]:
    """Names of what killed saves left in or beside ``path`` (for error messages)."""
    inside = [p.name for p in path.glob(_TMP + "*")] if path.is_dir() else []
    return sorted(inside + [p.name for p in path.parent.glob(f"{path.name}.*-*")])


def locked(path: Path) -> contextlib.AbstractContextManager:
    """Hold ``path/.lock`` for the block: one writer per checkpoint directory at a time."""
    return exclusive(
        path / LOCK,
        lambda owner: ValueError(
            f"{path}: {owner} is saving a checkpoint here; one writer at a time"
        ),
    )


def commit(
    path: Path, step: int, write: Callable[[Path], None], keep: int = 2, legacy: bool = False
) -> Path:
    """Write a new snapshot of ``step`` with ``write(directory)`` and make it current, by the
    protocol of the module docstring -> the snapshot's directory. Keeps the newest ``keep``;
    ``legacy``: ``path`` holds 0.1's layout, whose files the new snapshot supersedes."""
    with locked(path):
        tmp = path / f"{_TMP}{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            write(tmp)
            fsync_dir(tmp)
            existing = snapshots(path, links=True)
            number = 1 + max((int(_SNAPSHOT.fullmatch(p.name).group(2)) for p in existing), default=0)  # fmt: skip
            final = path / f"save-{step:08d}-{number:04d}"
            os.replace(tmp, final)
            fsync_dir(path)
        except BaseException:
            _remove_save_in_progress(tmp)
            raise
        atomic_write_text(path / LATEST, final.name + "\n")  # the commit point
        _prune(path, keep, final, legacy)
    return final


def _prune(path: Path, keep: int, newest: Path, legacy: bool) -> None:
    """Remove snapshots older than the newest ``keep``, killed saves' leftovers, and (when
    ``legacy``: ``path`` held a checkpoint of gptref 0.1's layout) the files of that layout,
    now superseded by ``newest``. Only a snapshot's own files go; anything else stays."""
    for old in snapshots(path)[:-keep]:
        if old != newest:
            remove_folder(old, FILES)
    for stale in path.glob(_TMP + "*"):  # we hold the lock: no live writer owns them
        _remove_save_in_progress(stale)
    remove(
        path, [p.name for p in path.glob(LATEST + ".tmp-*")]
    )  # a pointer write killed before its rename
    for sibling in path.parent.glob(f"{path.name}.*-*"):
        if re.fullmatch(re.escape(path.name) + _LEGACY, sibling.name):
            remove_folder(sibling, FILES)
    if legacy:
        remove(path, FILES)


def _remove_save_in_progress(folder: Path) -> None:
    """A killed or failed save's folder, named by ``commit`` and written under its lock: all
    of it is that save's (the writers' own temporaries too, e.g. safetensors'), so all of it
    goes; a link or another name is not one, and stays."""
    if _SAVING.fullmatch(folder.name) and is_folder(folder):
        shutil.rmtree(folder, ignore_errors=True)


def is_legacy(path: Path, ours: Callable[[Path], bool]) -> bool:
    """Whether ``path`` holds a checkpoint of gptref 0.1's layout (its files in ``path``
    itself); ``ours(dir)`` tells a gptref checkpoint's manifest from another file's."""
    return is_folder(path) and not snapshots(path) and ours(path)


def foreign(path: Path, ours: Callable[[Path], bool]) -> list[str]:
    """Entries of the checkpoint directory ``path`` (and of its snapshots) that are not what
    gptref writes there: ``clear`` would have to leave them, so a caller refuses first.
    ``ours(dir)`` tells a gptref checkpoint's manifest (0.1's layout: files in ``path``)."""
    if not is_folder(path):
        return []
    legacy = is_legacy(path, ours)
    found = []
    for entry in sorted(path.iterdir()):
        if is_leftover(entry.name) and not entry.name.startswith(_TMP) or entry.name == LATEST:
            continue
        if _SAVING.fullmatch(entry.name) and is_folder(entry):
            continue  # a killed save's: all of it gptref's
        if _SNAPSHOT.fullmatch(entry.name) and is_folder(entry):
            found += [f"{entry.name}/{f}" for f in sorted(os.listdir(entry)) if f not in FILES]
        elif not (legacy and entry.name in FILES):
            found.append(entry.name)
    return found


def clear(path: Path, ours: Callable[[Path], bool]) -> None:
    """Remove the checkpoint directory ``path``: its snapshots, pointer, lock and leftovers,
    then ``path`` when that emptied it (anything else in it stays, and ``path`` with it)."""
    if not is_folder(path):
        return
    legacy = is_legacy(path, ours)
    for snapshot in snapshots(path):
        remove_folder(snapshot, FILES)
    for stale in path.glob(_TMP + "*"):
        _remove_save_in_progress(stale)
    remove(path, [LATEST, LOCK, *(p.name for p in path.glob(LATEST + ".tmp-*"))])
    if legacy:
        remove(path, FILES)
    remove_folder(path, [])
