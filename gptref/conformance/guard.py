"""What the implementation under test may do to the suite's process, and what the suite makes
of it. Its code runs inside that process: at import and in every call (``repro.Call``).
``Guard`` turns what would end or stall the run without a verdict into a failure that names
the call:

- ``sys.exit(...)`` or ``os._exit(...)`` while the implementation's code runs raises
  ``ImplementationStopped``: the test fails naming the call, the run goes on to its verdict;
- a call that has not returned within the time limit (``--call-timeout``, default
  ``DEFAULT_CALL_TIMEOUT`` seconds) gets ``ImplementationStopped`` raised in it by SIGALRM; so
  does the use of its result (iterating a returned loader), timed from the call's return. A
  hang that the signal cannot interrupt (inside C code, or with SIGALRM blocked) is ended by a
  watchdog thread ``GRACE`` seconds later: one line naming the call, exit status
  ``EXIT_STOPPED``, and no verdict (the suite did not reach its end).

``ImplementationStopped`` is a ``BaseException`` and not an ``Exception``: Hypothesis does not
take it for a falsifying example, so it neither shrinks nor retries a call that hangs.
Imports nothing of torch, hypothesis or pytest.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DEFAULT_CALL_TIMEOUT = 60.0  # seconds: the slowest call of the book's code takes < 2 s on 2 cores
GRACE = 10.0  # seconds past the limit before the watchdog ends a hang the signal cannot reach
EXIT_STOPPED = 3  # the process's exit status when the watchdog ends the run
TIMEOUT_ENV = "GPTREF_CALL_TIMEOUT"


class ImplementationStopped(BaseException):
    """The implementation ended the process or did not return in time: nothing to judge."""


def parse_timeout(value: str | float | None, where: str = "--call-timeout") -> float | None:
    """'60' -> 60.0; '0' or 'none' -> None (no limit); None -> the default."""
    if value is None or value == "":
        return DEFAULT_CALL_TIMEOUT
    if isinstance(value, str) and value.strip().lower() in ("none", "off"):
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(
            f"{where} must be a number of seconds (0: no limit), got {value!r}"
        ) from None
    if not seconds >= 0:
        raise ValueError(f"{where} must be >= 0 seconds (0: no limit), got {value!r}")
    return seconds or None


Describe = Callable[[], tuple[str, str]]  # -> (function name, reproduce listing or "")


class Guard:
    """Exits and hangs of the implementation's code, turned into ``ImplementationStopped``.

    ``running(describe)`` brackets implementation code (a call, an import); ``using(describe)``
    the suite's use of a call's result. ``describe()`` -> (function name, reproduce listing),
    computed only when something goes wrong. ``on_stuck(line)`` writes the watchdog's last
    line where the user sees it."""

    def __init__(self, limit: float | None, on_stuck: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.on_stuck = on_stuck
        self.pid = os.getpid()
        self._frames: list[tuple[str, Describe]] = []  # (kind, describe), innermost last
        self.deadline: float | None = None
        self._signal = False
        self._watchdog: threading.Thread | None = None
        self._stop = threading.Event()
        self._saved: dict[str, object] = {}
        self.last: Describe | None = None  # the last call that returned

    # ------------------------------------------------------------ installation

    def install(self) -> Guard:
        global _ACTIVE
        self._saved = {"os._exit": os._exit, "sys.exit": sys.exit}
        os._exit = self._os_exit
        sys.exit = self._sys_exit
        main = threading.current_thread() is threading.main_thread()
        if self.limit is not None and main and hasattr(signal, "setitimer"):
            self._saved["handler"] = signal.signal(signal.SIGALRM, self._alarm)
            self._signal = True
        if self.limit is not None:
            self._watchdog = threading.Thread(target=self._watch, name="gptref-guard", daemon=True)
            self._watchdog.start()
        _ACTIVE = self
        return self

    def uninstall(self) -> None:
        global _ACTIVE
        self._stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            # ended here, not during the interpreter's exit: a daemon thread that drops the
            # last reference to a tensor while Python finalizes is killed inside torch's C++
            # destructor, and the process aborts ("terminate called without an active
            # exception") after a run that passed
            self._watchdog.join(timeout=5)
            self._watchdog = None
        if self._signal:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._saved["handler"])
            self._signal = False
        if "os._exit" in self._saved:
            os._exit = self._saved["os._exit"]
            sys.exit = self._saved["sys.exit"]
        if _ACTIVE is self:
            _ACTIVE = None

    # ------------------------------------------------------------ bracketing

    @contextmanager
    def running(self, describe: Describe, kind: str = "call") -> Iterator[None]:
        """Implementation code runs inside (``kind``: "call" or "import"): exits and the time
        limit apply to it."""
        with self._frame(kind, describe):
            try:
                yield
            except SystemExit as e:  # raise SystemExit / exit(): not through sys.exit
                raise ImplementationStopped(self.message(describe, _exit_text("SystemExit", e.code))) from None  # fmt: skip
            self.last = describe  # before the frame closes: the use of its result is timed

    @contextmanager
    def test(self, name: str) -> Iterator[None]:
        """One test: between its calls the suite uses what they returned (iterates a loader,
        runs a model the implementation built), timed from the last call's return."""
        self.last = None

        def describe() -> tuple[str, str]:
            return self.last() if self.last is not None else (name, "")

        with self._frame("use", describe):
            yield

    @contextmanager
    def _frame(self, kind: str, describe: Describe) -> Iterator[None]:
        self._frames.append((kind, describe))
        self._arm()
        fired_before = self._fired
        try:
            yield
        finally:
            self._frames.pop()
            self._arm()
        if self._fired is not fired_before and self._fired == (kind, describe):
            # the alarm's exception was swallowed (a bare except in the implementation)
            raise ImplementationStopped(self.message(describe, self._timeout_text(kind)))

    _fired: tuple[str, Describe] | None = None

    def _arm(self) -> None:
        if self.limit is None:
            return
        if not self._frames or (self._frames[-1][0] == "use" and self.last is None):
            # nothing of the implementation's runs (before a test's first call: the suite's own)
            self.deadline = None
            if self._signal:
                signal.setitimer(signal.ITIMER_REAL, 0)
            return
        self.deadline = time.monotonic() + self.limit
        if self._signal:
            signal.setitimer(signal.ITIMER_REAL, self.limit)

    # ------------------------------------------------------------ messages

    def message(self, describe: Describe, what: str) -> str:
        name, listing = describe()
        text = f"{name}: {what}"
        return f"{text}\n  reproduce: {listing}" if listing else text

    def _timeout_text(self, kind: str) -> str:
        limit = f"{self.limit:g} s"
        if kind == "import":
            return f"did not finish within {limit} (the time limit, --call-timeout)"
        if kind == "use":
            return (f"what it returned did not finish within {limit} of its return (the suite "
                    "was using it: iterating, indexing, calling it); the time limit is "
                    "--call-timeout")  # fmt: skip
        return f"did not return within {limit} (the time limit of one call, --call-timeout)"

    # ------------------------------------------------------------ the interceptions

    def _os_exit(self, status: int = 0) -> None:
        if self._frames and os.getpid() == self.pid:
            kind, describe = self._frames[-1]
            raise ImplementationStopped(self.message(describe, _exit_text("os._exit", status)))
        self._saved["os._exit"](status)

    def _sys_exit(self, status: object = None) -> None:
        if self._frames and os.getpid() == self.pid:
            kind, describe = self._frames[-1]
            raise ImplementationStopped(self.message(describe, _exit_text("sys.exit", status)))
        self._saved["sys.exit"](status)

    def _alarm(self, signum, frame) -> None:
        if not self._frames or self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        if left > 0.001:  # re-armed since: wait for the rest
            signal.setitimer(signal.ITIMER_REAL, left)
            return
        kind, describe = self._frames[-1]
        self._fired = (kind, describe)
        raise ImplementationStopped(self.message(describe, self._timeout_text(kind)))

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            deadline, frames = self.deadline, list(self._frames)
            if deadline is None or not frames or time.monotonic() < deadline + GRACE:
                del frames  # hold no call's arguments (tensors) between looks
                continue
            kind, describe = frames[-1]
            try:
                text = self.message(describe, self._timeout_text(kind))
            except Exception:  # the description itself needs the stuck main thread's objects
                text = f"{describe.__qualname__}: did not return within {self.limit:g} s"
            line = (f"gptref conformance: {text}\n"
                    f"gptref conformance: the signal could not interrupt it (a hang inside C "
                    f"code, or SIGALRM blocked); the run stops here, {GRACE:g} s later, without "
                    f"a verdict (exit status {EXIT_STOPPED})\n")  # fmt: skip
            try:
                (self.on_stuck or _write_stderr)(line)
            finally:
                self._saved["os._exit"](EXIT_STOPPED)


def _exit_text(how: str, status: object) -> str:
    call = "raised SystemExit" if how == "SystemExit" else f"called {how}({status!r})"
    return f"{call}: the implementation tried to end the process (an exit is never a verdict)"


def _write_stderr(line: str) -> None:
    os.write(2, line.encode("utf-8", "replace"))


_ACTIVE: Guard | None = None


def active() -> Guard | None:
    """The guard installed in this process, if any."""
    return _ACTIVE


@contextmanager
def running(describe: Describe) -> Iterator[None]:
    """``active().running(describe)``, or nothing when no guard is installed."""
    guard = _ACTIVE
    if guard is None or os.getpid() != guard.pid:
        yield
        return
    with guard.running(describe):
        yield
