"""Fault injection for the kill, hostile-file and CLI-error suites (a test helper, not a test).

Two halves:

- **In the child** (``python tests/faultlib.py ARGS...`` runs ``python -m gptref ARGS...``
  with hooks installed): every file-system operation under ``$GPTREF_FAULT_ROOT`` (os.mkdir,
  os.replace, os.rename, os.unlink, os.rmdir, os.fsync, os.symlink, os.truncate, opening a
  file for writing, ...) is a numbered *kill point*. With ``$GPTREF_FAULT_LOG`` each one is
  appended to that JSON-lines file as ``{"i", "op", "path", "save_step"}`` (``save_step``:
  the ``step`` argument of the ``save_checkpoint`` call it happens in, else None); with
  ``$GPTREF_FAULT_KILL_AT=k`` the child SIGKILLs itself just *before* operation ``k``, so
  operations ``0 .. k-1`` happened and ``k`` did not. A probe run with the log and no kill
  lists the operations; a run killed at each of them visits every instant between two
  operations of a save. Files written by C code (safetensors, torch.save) are one operation
  each (their open is not seen, their fsync is); random-delay kills cover the instants
  inside them.
- **In the test**: ``gptref(...)`` runs the CLI in a subprocess, ``cli(...)`` in-process
  (fast), both -> ``Result(rc, out, err)``; ``one_line_error`` checks the CLI's promise for a
  user error; ``final_state`` reads a finished run's weights and metrics for bitwise
  comparison.

Nothing here changes gptref: the hooks replace module attributes in the child only.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
ENV_ROOT, ENV_LOG, ENV_KILL = "GPTREF_FAULT_ROOT", "GPTREF_FAULT_LOG", "GPTREF_FAULT_KILL_AT"
ENV_KILL_SAVE = "GPTREF_FAULT_KILL_SAVE"  # "S:J": before the J-th operation of the step-S save

# ---------------------------------------------------------------- the child's hooks

_WRITE_MODES = set("wax+")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class _Hooks:
    """Counts the operations under ``root``; logs them; kills the process at ``kill_at``."""

    def __init__(
        self, root: str, log: str | None, kill_at: int | None, kill_save: tuple[int, int] | None
    ) -> None:
        self.root = os.path.abspath(root)
        self.kill_at, self.kill_save = kill_at, kill_save
        self.count = 0
        self.in_save: dict[int, int] = {}  # save step -> operations seen in that save
        self.lock = threading.RLock()
        self.busy = threading.local()  # an operation inside another (open inside replace) is one
        self._os_open, self._os_write, self._os_kill = os.open, os.write, os.kill
        self.log_fd = None
        if log:
            self.log_fd = self._os_open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _under_root(self, path: str) -> str | None:
        path = os.path.abspath(path)
        if path == self.root or path.startswith(self.root + os.sep):
            return os.path.relpath(path, self.root)
        return None

    def _save_step(self) -> int | None:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name == "save_checkpoint" and "step" in frame.f_locals:
                step = frame.f_locals["step"]
                return step if isinstance(step, int) else None
            frame = frame.f_back
        return None

    def point(self, op: str, *paths: str | None) -> None:
        """A kill point (one per operation, however many paths it names): log it, and die
        here if it is the chosen one."""
        if getattr(self.busy, "on", False):
            return
        rel = next((r for p in paths if p is not None and (r := self._under_root(p))), None)
        if rel is None:
            return
        with self.lock:
            i, step = self.count, self._save_step()
            self.count += 1
            j = None
            if step is not None:
                j = self.in_save.get(step, 0)
                self.in_save[step] = j + 1
            if self.log_fd is not None:
                record = {"i": i, "op": op, "path": rel, "save_step": step, "j": j,
                          "t": time.monotonic()}  # fmt: skip
                self._os_write(self.log_fd, (json.dumps(record) + "\n").encode())
            if (self.kill_at is not None and i == self.kill_at) or (
                self.kill_save is not None and (step, j) == self.kill_save
            ):
                self._os_kill(os.getpid(), signal.SIGKILL)
                time.sleep(60)  # SIGKILL is asynchronous only in theory; never run on


def _path_of(arg: Any, dir_fd: int | None = None) -> str | None:
    if isinstance(arg, int):  # a file descriptor
        try:
            return os.readlink(f"/proc/self/fd/{arg}")
        except OSError:
            return None
    try:
        path = os.fsdecode(arg)
    except TypeError:
        return None
    if dir_fd is not None and not os.path.isabs(path):
        try:
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        except OSError:
            return None
    return path


def install(
    root: str,
    log: str | None = None,
    kill_at: int | None = None,
    kill_save: tuple[int, int] | None = None,
) -> _Hooks:
    """Replace the os / open entry points with counting wrappers (in the child only)."""
    hooks = _Hooks(root, log, kill_at, kill_save)

    def wrap(module, name, paths=(0,), when=None):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            if when is None or when(*args, **kwargs):
                dir_fd = kwargs.get("dir_fd")
                hooks.point(name, *(_path_of(args[k], dir_fd) for k in paths if k < len(args)))
            hooks.busy.on, before = True, getattr(hooks.busy, "on", False)
            try:
                return original(*args, **kwargs)
            finally:
                hooks.busy.on = before

        wrapper.__wrapped__ = original
        setattr(module, name, wrapper)

    for name in ("mkdir", "rmdir", "remove", "unlink", "truncate", "utime", "chmod"):
        if hasattr(os, name):
            wrap(os, name)
    for name in ("replace", "rename", "link", "symlink"):
        wrap(os, name, paths=(0, 1))
    for name in ("fsync", "fdatasync", "ftruncate"):
        if hasattr(os, name):
            wrap(os, name)

    def os_open_writes(path, flags, *args, **kwargs):
        return bool(flags & _WRITE_FLAGS)

    wrap(os, "open", when=os_open_writes)

    def opens_for_writing(file, mode="r", *args, **kwargs):
        return bool(_WRITE_MODES & set(mode))

    original_open = builtins.open

    def counted_open(file, mode="r", *args, **kwargs):
        if opens_for_writing(file, mode) and not isinstance(file, int):
            hooks.point("open", _path_of(file))
        hooks.busy.on, before = True, getattr(hooks.busy, "on", False)
        try:
            return original_open(file, mode, *args, **kwargs)
        finally:
            hooks.busy.on = before

    builtins.open = counted_open
    io.open = counted_open
    return hooks


def _child_main() -> None:
    root = os.environ[ENV_ROOT]
    kill, kill_save = os.environ.get(ENV_KILL), os.environ.get(ENV_KILL_SAVE)
    save = tuple(int(x) for x in kill_save.split(":")) if kill_save else None
    install(root, os.environ.get(ENV_LOG), int(kill) if kill else None, save)  # type: ignore[arg-type]
    import runpy

    sys.argv = ["gptref", *sys.argv[1:]]
    runpy.run_module("gptref", run_name="__main__", alter_sys=True)


# ---------------------------------------------------------------- the test's side


WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven",
         "wizards", "quietly", "hex", "the", "jolly", "king"]  # fmt: skip


def words(n: int, seed: int = 0) -> str:
    """``n`` English-like words, reproducibly (a few KB trains a tiny model in seconds)."""
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n)) + ".\n"


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        """The non-blank lines of stderr as a terminal shows them: a progress bar redrawn
        with carriage returns and cleared (tqdm's ``leave=False``) leaves nothing."""
        shown = (line.rsplit("\r", 1)[-1] for line in self.err.split("\n"))
        return [line for line in shown if line.strip()]


def child_env(threads: int = 1, **extra: str) -> dict[str, str]:
    """The environment of a gptref subprocess: one intra-op thread (as the in-process tests
    run: the same float reductions), unbuffered output, the checkout importable."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    for key in (ENV_ROOT, ENV_LOG, ENV_KILL, ENV_KILL_SAVE):
        env.pop(key, None)
    env.update(extra)
    return env


def gptref(
    args: list[str], *, timeout: float = 300, faults: dict[str, str] | None = None, **popen: Any
) -> Result:
    """``python -m gptref ARGS`` (through the fault hooks when ``faults`` is given) -> Result."""
    command = [sys.executable, str(HERE), *args] if faults else [sys.executable, "-m", "gptref", *args]  # fmt: skip
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout,
        env=child_env(**(faults or {})), cwd=popen.pop("cwd", REPO), **popen,
    )  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)


# ``python -c`` body: import torch unlimited, then cap the address space at what that import
# mapped plus sys.argv[1] bytes, then run ``gptref ARGS`` (sys.argv[2:]).
_ABOVE_IMPORT = """\
import resource, runpy, sys
import torch
status = open("/proc/self/status").read()
mapped = int(status.split("VmSize:")[1].split()[0]) * 1024
limit = mapped + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.argv = ["gptref", *sys.argv[2:]]
runpy.run_module("gptref", run_name="__main__", alter_sys=True)
"""


def limited(
    args: list[str],
    *,
    memory: int | None = 4 << 30,
    above_import: int | None = None,
    file_size: int | None = None,
    timeout: float = 120,
    stdin: Any = subprocess.DEVNULL,
) -> Result:
    """``python -m gptref ARGS`` under resource limits: ``memory`` bytes of address space (an
    unbounded read or a huge allocation fails instead of swapping the shared machine),
    ``file_size`` bytes per file written (RLIMIT_FSIZE: a write beyond it fails with EFBIG, as
    on a full disk; Python ignores SIGXFSZ). A run past ``timeout`` is killed and reported
    as rc 124.

    ``above_import`` (instead of ``memory``): the limit is set after ``import torch``, at the
    address space it mapped plus this many bytes; what a CUDA build maps (3.1 GiB for torch
    2.14.1+cu130, 0.6 GiB for the CPU build 2.13.0) then cannot make the import itself the
    thing that fails."""
    import resource

    if above_import is not None:
        command = [sys.executable, "-c", _ABOVE_IMPORT, str(above_import), *args]
        memory = None
    else:
        command = [sys.executable, "-m", "gptref", *args]

    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    try:
        proc = subprocess.run(
            command, capture_output=True, text=True,
            timeout=timeout, env=child_env(), cwd=REPO, preexec_fn=limit, stdin=stdin,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Result(124, out, err + f"\n(killed after {timeout} s)")
    return Result(proc.returncode, proc.stdout, proc.stderr)


def spawn(
    args: list[str], *, faults: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen:
    """``python -m gptref ARGS`` in the background (stdout/stderr to pipes, text)."""
    command = [sys.executable, str(HERE), *args] if faults else [sys.executable, "-m", "gptref", *args]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(**(faults or {})), cwd=REPO, **popen,
    )  # fmt: skip


def cli(args: list[str]) -> Result:
    """``gptref.cli.main(ARGS)`` in this process -> Result (a usage error's SystemExit too)."""
    from gptref.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return Result(rc, out.getvalue(), err.getvalue())


def error_problems(result: Result, *, named: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with ``result`` as the CLI's answer to a user error: exit 2, exactly one
    line on stderr, no traceback, each of ``named`` in that line -> the problems (none: ok)."""
    problems = []
    if result.rc != 2:
        problems.append(f"exit status {result.rc}, expected 2")
    if "Traceback" in result.err or "Traceback" in result.out:
        problems.append("a traceback")
    lines = result.err_lines
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, expected 1")
    text = lines[-1] if lines else ""
    for value in named:  # "a|b": either
        if not any(option in text for option in value.split("|")):
            problems.append(f"the line does not name {value!r}")
    return problems


def describe(result: Result) -> str:
    tail = result.err.strip().splitlines()[-3:]
    return f"rc={result.rc}, stderr tail={tail!r}"


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def read_ops(log: Path) -> list[dict[str, Any]]:
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def final_state(run: Path) -> tuple[dict[str, Any], str]:
    """A run directory -> (its checkpoint's model state dict, its metrics.jsonl text)."""
    import torch

    from gptref.run.rundir import load_model

    model, _ = load_model(run, torch.device("cpu"))
    return {k: v.clone() for k, v in model.state_dict().items()}, (
        run / "metrics.jsonl"
    ).read_text()


def tensor_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of the entries that are not bitwise equal (missing ones included)."""
    import torch

    names = sorted(set(a) | set(b))
    return [n for n in names if n not in a or n not in b or not torch.equal(a[n], b[n])]


TINY_RUN = ["--preset", "tiny", "--context", "16", "--batch-size", "4", "--eval-freq", "1",
            "--eval-iter", "1", "--no-progress"]  # fmt: skip


def tiny_corpus(directory: Path, seed: int = 3) -> Path:
    """``directory``/corpus.txt: 400 English-like words, a tiny run's whole corpus."""
    path = directory / "corpus.txt"
    path.write_text(words(400, seed=seed), encoding="utf-8")
    return path


def set_at(path: list, value: Any):
    """-> change(data): puts ``value`` at ``path`` (keys and indices) in a JSON document."""

    def change(data: Any) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def two_snapshot_run(corpus: Path, out: Path, steps: int = 2) -> Path:
    """A real run directory of ``steps`` steps saved after each (its checkpoint/ keeps the
    last two snapshots, save-...-0001 of step 1 and save-...-0002 of step 2 for 2 steps)."""
    result = cli(["train", "--text", str(corpus), *TINY_RUN, "--max-steps", str(steps),
                  "--checkpoint-every", "1", "--out", str(out)])  # fmt: skip
    assert result.rc == 0, describe(result)
    return out


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy of the tree ``src`` at ``dst`` whose files are hard links (fast): change a file
    of the copy only by writing a new one in its place (``replace_bytes``)."""
    import shutil

    shutil.copytree(src, dst, symlinks=True, copy_function=os.link)
    return dst


def replace_bytes(file: Path, data: bytes) -> None:
    """Put ``data`` at ``file`` as a new file (the original's other hard links keep theirs)."""
    file.unlink()
    file.write_bytes(data)


def truncate_to_half(file: Path) -> None:
    data = file.read_bytes()
    replace_bytes(file, data[: len(data) // 2])


def flip_one_byte(file: Path) -> None:
    """The same size, one byte different: only a hash tells."""
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    replace_bytes(file, bytes(data))


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed) -> (kind, content SHA-256 or link
    target): what to compare before and after a command."""
    import hashlib
    import stat

    state: dict[str, tuple] = {}
    for path in [root, *sorted(root.rglob("*"))] if os.path.lexists(root) else []:
        st = os.lstat(path)
        rel = str(path.relative_to(root)) if path != root else "."
        if stat.S_ISLNK(st.st_mode):
            state[rel] = ("link", os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            state[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
        elif stat.S_ISDIR(st.st_mode):
            state[rel] = ("dir",)
        else:
            state[rel] = ("other", stat.S_IFMT(st.st_mode))
    return state


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> dict[str, list[str]]:
    """-> {"added", "removed", "changed"}: entries of two ``tree_state`` s."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }


def leftovers(directory: Path) -> list[str]:
    """Entries under ``directory`` that look like temporary files of an interrupted write."""
    if not directory.exists():
        return []
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if any(tag in p.name for tag in (".tmp", "tmp-", ".old-", ".partial"))
    )


if __name__ == "__main__":
    _child_main()
