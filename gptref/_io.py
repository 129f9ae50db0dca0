"""Atomic writes: the one way gptref puts a file (or a directory) in place.

A reader of ``path`` sees the old complete content or the new complete content, never a
part: the data goes to a temporary name beside ``path`` (same file system), is fsynced,
renamed over ``path`` (``os.replace``, atomic on POSIX) and the directory entry is fsynced
too, so after the call returns the new content survives a power cut. An error or an
interrupt before the rename leaves ``path`` as it was and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks
    fcntl = None  # type: ignore[assignment]


def temp_path(path: Path, tag: str = "tmp") -> Path:
    """A fresh name beside ``path``: ``<name>.<tag>-<pid>-<random>``."""
    return path.parent / f"{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    """Make renames and new entries in ``directory`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], Any], *, suffix: str = ""
) -> Path:
    """Create ``path`` atomically and durably with ``write(tmp)`` -> ``path``.

    ``write`` receives the temporary path and must create that file; ``suffix`` is added to
    the temporary name (e.g. ``".png"`` for writers that pick a format by extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp = tmp.with_name(tmp.name + suffix)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8), atomically and durably."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json_object(file: Path, where: str, problem: str = "is damaged") -> dict[str, Any]:
    """``file``'s JSON object; else ValueError ``where: file <problem>: <what it is>``."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        detail = f"not readable JSON ({type(e).__name__}: {' '.join(str(e).split())})"
        raise ValueError(f"{where}: {file} {problem}: {detail}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {file} {problem}: a JSON {type(value).__name__}, not an object")
    return value


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented JSON with a final newline; NaN and inf are refused (not JSON)."""
    return atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def exclusive(lock_file: Path, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an advisory lock on ``lock_file`` for the block (created if need be; it records
    this process's pid, and is removed when the block ends). Held elsewhere: ``raise
    busy(owner)``, owner as the holder wrote it. The kernel drops the lock when the holder
    dies, so a killed process never keeps it (its file stays, and is locked again)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    while True:
        handle = open(lock_file, "a+")  # noqa: SIM115 - closed below, or on leaving the block
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise busy(owner) from None
        if _is_at(handle, lock_file):
            break
        handle.close()  # its holder removed it between our open and flock: lock the new one
    with handle:
        handle.seek(0)
        handle.truncate()
        handle.write(f"gptref process {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:  # removed while still held, so no one can lock the name's old file after us
            lock_file.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_at(handle: Any, path: Path) -> bool:
    """Whether the open file ``handle`` is the file ``path`` names now."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False
