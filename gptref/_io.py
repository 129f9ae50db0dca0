"""Atomic writes: the one way gptref puts a file (or a directory) in place.

A reader of ``path`` sees the old complete content or the new complete content, never a
part: the data goes to a temporary name beside ``path`` (same file system), is fsynced,
renamed over ``path`` (``os.replace``, atomic on POSIX) and the directory entry is fsynced
too, so after the call returns the new content survives a power cut. An error or an
interrupt before the rename leaves ``path`` as it was and removes the temporary file.
``atomic_create`` never replaces anything; ``exclusive`` locks a file, never through a link.

A write that fails (a full disk, a read-only folder, a file in the way, torch's or
safetensors' own errors for these) becomes one line naming the path and the fix
(``writing``, ``write_error``; ``describe_os_error`` for the CLI). What a writer may replace
at all is ``gptref._owned``'s rule.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
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
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp = tmp.with_name(tmp.name + suffix)
    try:
        with writing(path):
            write(tmp)
            fsync_file(tmp)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a read-only folder refuses even this
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_create(path: str | os.PathLike, text: str) -> Path:
    """A new file ``path`` holding ``text`` (UTF-8), complete or absent, never replacing
    anything: FileExistsError when ``path`` exists (a link included)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with writing(path):
            tmp.write_text(text, encoding="utf-8")
            fsync_file(tmp)
        try:
            os.link(tmp, path)  # fails on anything at ``path``: a rename that cannot replace
        except FileExistsError:
            raise
        except OSError as e:
            raise write_error(path, e) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
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


_LOCKED_BY = "gptref process"  # = gptref._owned.LOCKED_BY: tells a lock file of gptref's


@contextlib.contextmanager
def exclusive(lock_file: Path, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an advisory lock on ``lock_file`` for the block (created if need be; it records
    this process's pid, and is removed when the block ends). Held elsewhere: ``raise
    busy(owner)``, owner as the holder wrote it. The kernel drops the lock when the holder
    dies, so a killed process never keeps it (its file stays, and is locked again). A link
    at ``lock_file`` is refused, never followed; a file there that is no lock of gptref's is
    locked as it is, its content left alone, and kept."""
    with writing(lock_file.parent):
        lock_file.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    while True:
        handle = _open_lock(lock_file)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = handle.read(200).decode("utf-8", "replace").strip() or "another process"
            handle.close()
            raise busy(owner) from None
        if _is_at(handle, lock_file):
            break
        handle.close()  # its holder removed it between our open and flock: lock the new one
    with handle:
        held = handle.read(200).strip()
        ours = not held or held.startswith(_LOCKED_BY.encode())  # else: someone's file, kept
        if ours:
            with writing(lock_file):
                handle.seek(0)
                handle.truncate()
                handle.write(f"{_LOCKED_BY} {os.getpid()}\n".encode())
                handle.flush()
        try:
            yield
        finally:  # removed while still held, so no one can lock the name's old file after us
            if ours:
                with contextlib.suppress(OSError):
                    lock_file.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock(lock_file: Path) -> Any:
    """``lock_file`` opened for reading and writing (created if need be), never through a
    link, and only if it is a regular file."""
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError(
                f"{lock_file} is a symbolic link; gptref never locks or writes through one: "
                "remove the link"
            ) from None
        raise write_error(lock_file.parent, e) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{lock_file} is not a regular file; remove it")
    return open(fd, "rb+")  # noqa: SIM115 - the caller closes it


def _is_at(handle: Any, path: Path) -> bool:
    """Whether the open file ``handle`` is the file ``path`` names now."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


# what to do when writing fails with this errno: the line's fix
_FIXES = {
    errno.ENOSPC: "the disk is full: free space there or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space or write elsewhere",
    errno.EFBIG: "the file is larger than this file system (or a limit) allows: write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "no permission to write there: write elsewhere, or change its permissions",
    errno.EPERM: "no permission to write there: write elsewhere, or change its permissions",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EEXIST: "something is in the way (a file, or a link to nothing): choose another path",
    errno.ELOOP: "a symbolic link is in the way; gptref never writes through one: remove it",
    errno.EISDIR: "it is a folder: give a file name",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
}
_FULL = 1 << 20  # bytes free below which a write that failed without an errno met a full disk


class WriteError(OSError):
    """Writing a path failed: one line naming it, what happened and the fix (``str(e)``)."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_error(path: str | os.PathLike, error: BaseException, doing: str = "") -> WriteError:
    """An error met while writing ``path`` (an OSError, or a library's error for one, such
    as torch.save's "file write failed", which carries no errno) -> a WriteError of one line
    naming ``path``, what happened and the fix. ``doing``: what was being written."""
    path = Path(path)
    code = getattr(error, "errno", None)
    if not isinstance(code, int):  # safetensors says "(os error 28)"; torch.save says nothing
        found = re.search(r"os error (\d+)|\[Errno (\d+)\]", str(error))
        code = int(found.group(1) or found.group(2)) if found else None
    if not isinstance(code, int):
        code = errno.ENOSPC if _free_bytes(path) < _FULL else None
    what = os.strerror(code) if code else " ".join(str(error).split())[:200]
    at = getattr(error, "filename", None)
    named = f" at {at}" if at and Path(at) != path else ""
    fix = _FIXES.get(code, "is the disk full or the folder not writable? write elsewhere")
    doing = f" ({doing})" if doing else ""
    return WriteError(
        code or errno.EIO, f"{path}: could not be written{doing}: {what}{named}; {fix}"
    )


def _free_bytes(path: Path) -> int:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            st = os.statvfs(folder)
            return st.f_bavail * st.f_frsize
    return 1 << 62


@contextlib.contextmanager
def writing(path: str | os.PathLike, doing: str = "") -> Iterator[None]:
    """Errors of the block (it writes ``path``) become one-line ``WriteError`` s naming it:
    OSErrors, and the errors torch and safetensors raise for a failed write."""
    try:
        yield
    except WriteError:
        raise
    except OSError as e:
        raise write_error(path, e, doing) from e
    except RuntimeError as e:  # torch.save: "... file write failed", "unexpected pos ..."
        if "write" not in str(e) and "unexpected pos" not in str(e):
            raise
        raise write_error(path, e, doing) from e
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        raise write_error(path, e, doing) from e


def describe_os_error(error: OSError) -> str:
    """An OSError -> one line naming its path and the fix (a WriteError is one already)."""
    if isinstance(error, WriteError) or error.errno not in _FIXES or not error.filename:
        return " ".join(str(error).split())
    return f"{error.filename}: {error.strerror}; {_FIXES[error.errno]}"
