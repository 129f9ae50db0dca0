"""The ownership rule: gptref deletes or replaces only what it can prove it wrote.

Every writer (``train``, ``prepare``, ``weights import-hf`` / ``export-hf``, ``bench``,
``track``) asks here before it puts anything in place:

- **Folders of a kind.** A folder gptref writes is of one kind (a run, a checkpoint, a
  prepared corpus, benchmark results, a report), told by that kind's own marker, its record
  or manifest, read without following links (``Kind.owns``). A target folder may be new,
  empty (but for what a killed writer of the kind leaves: ``Kind.leftover``), or of that
  kind; an earlier one is replaced only with ``overwrite``, and then only the kind's own
  entries: whatever else a user put there stays. A folder holding anything else is refused.
- **Files.** A target file may be new; an existing one is replaced only with ``overwrite``,
  and only when gptref wrote it as that kind of file (``claim_file``).
- **Links.** No symbolic link is followed when gptref writes, locks or deletes: an entry it
  would write through that is a link is refused in one line (``no_links``), and deleting
  (``remove``) unlinks regular files and empties folders only. The folder a user names may
  itself be a link (it is theirs to point); what gptref puts inside it never is.

So gptref never writes outside the folder it was given, and never loses a file it did not
write. Refusals are ValueErrors of one line naming the path; ``Exists`` (an earlier output
of the kind, replaceable) keeps the path apart so the CLI can name its ``--overwrite``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
MARKER_BYTES = 64 << 20  # a record or manifest is small; a bigger "marker" is not ours


class Exists(ValueError):
    """``path`` holds an earlier output of gptref (``what``): replaced only with overwrite."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = Path(path), what
        super().__init__(f"{path} holds {what} already; pass overwrite=True to replace it")

    def with_flag(self, flag: str = "--overwrite") -> str:
        return f"{self.path} holds {self.what} already; add {flag} to replace it, or choose another"


@dataclass(frozen=True)
class Kind:
    """A kind of folder gptref writes: ``what`` it is called in messages, ``owns(folder)``
    whether a folder is one (its marker checked), ``leftover(name)`` whether an entry is what
    a killed writer of the kind leaves (a lock, a temporary file): no reason to call a folder
    someone else's."""

    what: str
    owns: Callable[[Path], bool]
    leftover: Callable[[str], bool] = lambda name: False


def lstat(path: Path) -> os.stat_result | None:
    """``os.lstat(path)``, or None when there is nothing at ``path``."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def link_error(path: Path) -> ValueError:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return ValueError(
        f"{path} is a symbolic link (to {target}); gptref never writes, locks or deletes "
        "through one: remove the link"
    )


def no_links(directory: Path, names: Iterable[str]) -> None:
    """Refuse (ValueError) when ``directory/name`` is a symbolic link, for any of ``names``."""
    for name in names:
        st = lstat(directory / name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise link_error(directory / name)


def read_marker(file: Path) -> dict[str, Any] | None:
    """The JSON object in ``file`` when it is a regular file (not a link) of at most
    ``MARKER_BYTES``; else None. What tells a folder's kind: never trusted through a link."""
    try:
        fd = os.open(file, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MARKER_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            value = json.loads(f.read(MARKER_BYTES + 1))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return value if isinstance(value, dict) else None


LOCKED_BY = "gptref process"  # how a lock file of gptref's begins (gptref._io.exclusive)


def locked_by_gptref(file: Path) -> bool:
    """Whether ``file`` is a lock file gptref wrote (a regular file, not a link, that names
    a gptref process): a folder holding one was written by gptref, finished or not."""
    try:
        fd = os.open(file, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 64).startswith(LOCKED_BY.encode())
    except OSError:
        return False
    finally:
        os.close(fd)


def is_folder(path: Path) -> bool:
    """A real folder at ``path`` (not a link to one)."""
    st = lstat(path)
    return st is not None and stat.S_ISDIR(st.st_mode)


def check_writable(path: Path) -> None:
    """Refuse early (an OSError naming the path, as a write would meet it) when nothing can be
    created at ``path``: its nearest existing ancestor is a file, or a folder of a read-only
    file system or without write permission. Checked before minutes of work, not after."""
    path = Path(path).absolute()
    for ancestor in (path, *path.parents):
        if os.path.lexists(ancestor):
            break
    if ancestor == path:
        return  # there already: whether it may be replaced is the caller's question
    if not ancestor.is_dir():
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(ancestor))
    if not os.access(ancestor, os.W_OK):
        read_only = bool(os.statvfs(ancestor).f_flag & getattr(os, "ST_RDONLY", 1))
        code = errno.EROFS if read_only else errno.EACCES
        raise OSError(code, os.strerror(code), str(ancestor))


def claim_dir(path: Path, kind: Kind, *, overwrite: bool) -> bool:
    """May ``kind`` be written into the folder ``path``? -> whether it holds an earlier one
    (to be replaced: ``overwrite`` was given). New, or empty but for leftovers: False. An
    earlier one without ``overwrite``: ``Exists``. A file, a dangling link, or a folder
    holding anything else: ValueError. ``path`` itself may be a link to a folder."""
    path = Path(path)
    st = lstat(path)
    if st is None:
        check_writable(path)
        return False
    if stat.S_ISLNK(st.st_mode) and not path.exists():
        raise ValueError(f"{path} is a symbolic link to {os.readlink(path)}, which does not "
                         "exist; give a folder")  # fmt: skip
    if not path.is_dir():
        raise ValueError(
            f"{path} is a file, not a folder; give a new or empty folder (gptref replaces no "
            "file it did not write)"
        )
    names = os.listdir(path)
    no_links(path, [n for n in names if kind.leftover(n)])
    if all(kind.leftover(n) for n in names):
        return False
    if not kind.owns(path):
        raise ValueError(
            f"{path} is not empty and holds no {kind.what.removeprefix('a ')}; gptref writes "
            f"only into a new or empty folder or into {kind.what} it wrote: choose another"
        )
    if not overwrite:
        raise Exists(path, kind.what)
    return True


def claim_file(path: Path, what: str, owns: Callable[[Path], bool], *, overwrite: bool) -> bool:
    """May a file (``what``, e.g. "a gptref export") be written at ``path``? -> whether one is
    there (to be replaced: ``overwrite`` was given and ``owns(path)`` says gptref wrote it).
    A link, a folder, a FIFO or device, or a file gptref did not write: ValueError; an
    earlier one of ours without ``overwrite``: ``Exists``."""
    path = Path(path)
    st = lstat(path)
    if st is None:
        check_writable(path)
        return False
    if stat.S_ISLNK(st.st_mode):
        raise link_error(path)
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path} is a folder; give a file name inside it, e.g. {path / 'x'}")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file (a FIFO, device or socket); give a file name")  # fmt: skip
    if not owns(path):
        raise ValueError(
            f"{path} exists and is not {what} gptref wrote; gptref replaces only its own files: "
            "remove it yourself or choose another name"
        )
    if not overwrite:
        raise Exists(path, what)
    return True


def remove(directory: Path, names: Iterable[str]) -> None:
    """Delete the regular files ``directory/name``; anything else there (a link, a folder, a
    FIFO) is not a file gptref wrote, and stays. Never follows a link."""
    for name in names:
        file = directory / name
        st = lstat(file)
        if st is not None and stat.S_ISREG(st.st_mode):
            os.unlink(file)


def remove_folder(folder: Path, names: Iterable[str]) -> bool:
    """Delete ``names`` in ``folder`` (``remove``), then the folder when that emptied it ->
    whether it is gone. Anything else in it is not gptref's to delete, so it stays, and the
    folder with it. A link in place of the folder is left alone (False)."""
    if not is_folder(folder):
        return lstat(folder) is None
    remove(folder, names)
    try:
        os.rmdir(folder)
    except OSError:
        return False
    return True
