"""Atomic writes: the one way gptref puts a file (or a directory) in place.

A reader of ``path`` sees the old complete content or the new complete content, never a
part: the data goes to a temporary name beside ``path`` (same file system), is fsynced,
renamed over ``path`` (``os.replace``, atomic on POSIX) and the directory entry is fsynced
too, so after the call returns the new content survives a power cut. An error or an
interrupt before the rename leaves ``path`` as it was and removes the temporary file.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented JSON with a final newline; NaN and inf are refused (not JSON)."""
    return atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
