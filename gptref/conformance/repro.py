"""Failure messages that reproduce: every call the suite makes is shown as code.

``Call(impl, "chunk", ids, 4, 1)`` runs ``impl.chunk(ids, 4, 1)``; when the implementation
raises, the exception carries the call as a note, and a wrong result fails with::

    chunk: the windows differ from the book's loop
      reproduce: import torch; from gptref.conformance import models; import mymod as impl
                 impl.chunk(torch.tensor([0, 1]), 1, 1)
      expected:  ...
      got:       ...
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from gptref.conformance import guard

MAX_SHOWN = 1500  # characters of one shown value; hypothesis shrinks failures far below this


class Code:
    """``value`` shown as the given source text (e.g. a variable defined in the setup lines);
    a Call passes ``value`` itself."""

    def __init__(self, text: str, value: Any = None) -> None:
        self.text, self.value = text, value

    def __repr__(self) -> str:
        return self.text


def tagged(obj: Any, code: str) -> Any:
    """Mark ``obj`` (a model, an optimizer) to be shown as ``code`` in reproductions."""
    obj._gptref_repro = code
    return obj


def show(value: Any) -> str:
    """A value as Python source (tensors as ``torch.tensor(...)``), cut to MAX_SHOWN characters
    (an expected or actual value; the code of a reproduction is ``source``, never cut)."""
    text = _show(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + " ...(cut)"


def source(value: Any) -> str:
    """A value as Python source, whole: what a reproduce line shows, so that it runs as pasted
    (the strategies bound every drawn value, so it stays a few kilobytes at most)."""
    return _show(value)


def _show(value: Any) -> str:
    code = getattr(value, "_gptref_repro", None)
    if code is not None:
        return code
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu()
        default = torch.tensor(data.tolist()).dtype if data.numel() else torch.float32
        dtype = "" if data.dtype == default else f", dtype={data.dtype}"
        if data.dim() == 0:
            return f"torch.tensor({data.item()!r}{dtype})"
        return f"torch.tensor({data.tolist()!r}{dtype})"
    if isinstance(value, tuple):
        inner = ", ".join(_show(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` (Python >= 3.11); on 3.10 the note joins the exception's args."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        exc.args = (f"{exc.args[0] if exc.args else ''}\n{note}", *exc.args[1:])


class Verdicts:
    """fail / check / equal / close, shared by one call and a group of calls: a failure names
    the function (``name()``) and shows the code that reproduces it (``listing()``)."""

    def name(self) -> str:
        raise NotImplementedError

    def listing(self) -> str:
        raise NotImplementedError

    def note(self) -> str:
        """A last line for the failure message ("" for none)."""
        return ""

    def fail(self, what: str, expected: Any, got: Any) -> None:
        __tracebackhide__ = True
        note = self.note()
        raise AssertionError(
            f"{self.name()}: {what}\n"
            f"  reproduce: {self.listing()}\n"
            f"  expected:  {show(expected)}\n"
            f"  got:       {show(got)}" + (f"\n  note:      {note}" if note else "")
        )

    def check(self, ok: bool, what: str, expected: Any, got: Any) -> None:
        __tracebackhide__ = True
        if not ok:
            self.fail(what, expected, got)

    def equal(self, got: Any, expected: Any, what: str) -> None:
        """Equal as nested lists (tensors by value: check shapes separately where they matter)."""
        __tracebackhide__ = True
        self.check(_plain(got) == _plain(expected), what, expected, got)

    def close(self, got: float, expected: float, what: str, *, rtol: float, atol: float) -> None:
        """Floats equal within rtol/atol; nan equals nan."""
        __tracebackhide__ = True
        got, expected = float(got), float(expected)
        ok = (math.isnan(got) and math.isnan(expected)) or math.isclose(
            got, expected, rel_tol=rtol, abs_tol=atol
        )
        self.check(ok, f"{what} (rtol={rtol}, atol={atol})", expected, got)


class Call(Verdicts):
    """``impl.<fn>(*args, **kwargs)`` with optional setup lines (``model = ...``), shown as code."""

    def __init__(
        self, impl: Any, fn: str, *args: Any, setup: Sequence[str] = (), **kwargs: Any
    ) -> None:
        self.impl, self.fn, self.args, self.kwargs, self.setup = impl, fn, args, kwargs, setup
        self.depends: Sequence[str] = ()  # the functions it calls whose own failures it names

    def note(self) -> str:
        failed = getattr(self.impl, "failed", {})
        first = [(name, failed[name]) for name in self.depends if name in failed]
        if not first:
            return ""
        named = ", ".join(f"{name} ({test})" for name, test in first)
        return f"{self.fn} calls what failed its own test first: {named}; fix that first"

    def code(self) -> str:
        parts = [source(a) for a in self.args] + [
            f"{k}={source(v)}" for k, v in self.kwargs.items()
        ]
        return f"impl.{self.fn}({', '.join(parts)})"

    def name(self) -> str:
        return self.fn

    def listing(self) -> str:
        return listing(self.impl, [*self.setup, self.code()])

    def describe(self) -> tuple[str, str]:
        """(function name, reproduce listing): what the guard names when the call hangs."""
        return self.fn, self.listing()

    def __call__(self) -> Any:
        fn = getattr(self.impl, self.fn)
        args = [a.value if isinstance(a, Code) else a for a in self.args]
        kwargs = {k: v.value if isinstance(v, Code) else v for k, v in self.kwargs.items()}
        try:
            with guard.running(self.describe):  # exits and the time limit: guard.py
                return fn(*args, **kwargs)
        except NotImplementedError as e:
            # the implementation says it lacks this: the test is "not provided", not failed
            pytest.skip(f"not provided: {self.impl.name}.{self.fn} raised NotImplementedError({e})")
        except Exception as e:
            add_note(e, f"gptref conformance: raised by\n  reproduce: {self.listing()}")
            with contextlib.suppress(AttributeError):
                e._gptref_call = self  # the conftest names the call in the failure's first line
            raise


def listing(impl: Any, body: Sequence[str]) -> str:
    """The import line that loads ``impl``, then ``body``: code to paste into a shell."""
    spec = impl.spec
    if spec.endswith(".py") or "+" in spec or len(impl.modules) > 1:
        load = f"from gptref.conformance import load_implementation; impl = load_implementation({spec!r})"
    else:
        load = f"import {spec} as impl"
    needs = [m for m in ("models", "tokenizer", "strategies") if any(f"{m}." in line for line in body)]  # fmt: skip
    extra = "".join(f"from gptref.conformance import {m}; " for m in needs)
    return "\n             ".join([f"import torch; {extra}{load}", *body])


class Calls(Verdicts):
    """Several calls whose results are judged together (the ranks of one sharded epoch): a
    failure shows every call, since the expectation depends on all of them."""

    def __init__(self, calls: Sequence[Call]) -> None:
        self.calls = list(calls)

    def name(self) -> str:
        return self.calls[0].fn

    def listing(self) -> str:
        impl = self.calls[0].impl
        body = [line for c in self.calls for line in c.setup] + [c.code() for c in self.calls]
        return listing(impl, body)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
