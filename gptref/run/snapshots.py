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
is deleted before that rename. A reader takes ``LATEST``'s snapshot; where ``LATEST`` is
missing or names no snapshot (deleted by hand), the newest complete snapshot; a snapshot
``LATEST`` names that is damaged is an error, not a reason to go back to an older one. A directory that holds a checkpoint's files itself (gptref 0.1's layout), or
such a directory's ``.old-*`` / ``.tmp-*`` siblings left by a kill between its two
renames, is read as it is.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from gptref._io import atomic_write_text, exclusive, fsync_dir

LATEST, LOCK, MANIFEST = "LATEST", ".lock", "manifest.json"
_SNAPSHOT = re.compile(r"save-(\d{8,})-(\d{4,})")
_TMP = "tmp-"


def snapshots(path: Path) -> list[Path]:
    """The snapshot directories in ``path``, oldest first (by step, then save number)."""
    if not path.is_dir():
        return []
    found = []
    for entry in path.iterdir():
        match = _SNAPSHOT.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            found.append(((int(match.group(1)), int(match.group(2))), entry))
    return [entry for _, entry in sorted(found)]


def current(path: Path, complete: Callable[[Path], bool]) -> Path | None:
    """The snapshot to read in the checkpoint directory ``path`` (see the module docstring),
    or None when there is none; ``complete(dir)`` tells whether a snapshot is whole."""
    if (path / LATEST).is_file() and not (path / LATEST).is_symlink():
        name = (path / LATEST).read_text(encoding="utf-8", errors="replace").strip()
        if _SNAPSHOT.fullmatch(name) and (path / name).is_dir():
            # LATEST moves only to a finished snapshot: if that one is damaged now, say so
            # (the caller verifies it) rather than quietly train on from an older one
            return path / name
    for snapshot in reversed(snapshots(path)):
        if complete(snapshot):
            return snapshot
    if path.is_dir() and (path / MANIFEST).is_file():
        return path  # gptref 0.1's layout: the files themselves
    # a 0.1 save killed between its two renames: the complete copies beside the path
    beside = [p for p in path.parent.glob(f"{path.name}.*-*") if p.is_dir() and complete(p)]
    return max(beside, key=lambda p: p.stat().st_mtime_ns) if beside else None


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


def commit(path: Path, step: int, write: Callable[[Path], None], keep: int = 2) -> Path:
    """Write a new snapshot of ``step`` with ``write(directory)`` and make it current, by the
    protocol of the module docstring -> the snapshot's directory. Keeps the newest ``keep``."""
    with locked(path):
        tmp = path / f"{_TMP}{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            write(tmp)
            fsync_dir(tmp)
            existing = snapshots(path)
            number = 1 + max((int(_SNAPSHOT.fullmatch(p.name).group(2)) for p in existing), default=0)  # fmt: skip
            final = path / f"save-{step:08d}-{number:04d}"
            os.replace(tmp, final)
            fsync_dir(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(path / LATEST, final.name + "\n")  # the commit point
        _prune(path, keep, final)
    return final


def _prune(path: Path, keep: int, newest: Path) -> None:
    """Remove snapshots older than the newest ``keep``, killed saves' leftovers, and the files
    of gptref 0.1's layout (now superseded by ``newest``)."""
    for old in snapshots(path)[:-keep]:
        if old != newest:
            shutil.rmtree(old, ignore_errors=True)
    for stale in path.glob(_TMP + "*"):  # we hold the lock: no live writer owns them
        shutil.rmtree(stale, ignore_errors=True)
    for stale in path.glob(LATEST + ".tmp-*"):  # a pointer write killed before its rename
        stale.unlink(missing_ok=True)
    for legacy in path.parent.glob(f"{path.name}.*-*"):
        if legacy.is_dir() and re.fullmatch(rf"{re.escape(path.name)}\.(tmp|old)-\d+-[0-9a-f]+", legacy.name):  # fmt: skip
            shutil.rmtree(legacy, ignore_errors=True)
    for name in ("model.safetensors", "state.pt", "config.json", MANIFEST):
        (path / name).unlink(missing_ok=True)
