"""Argument checks: the one home of "``where``: ``name`` must be ..., got ``value``".

Every user error in gptref names the function (``where``), the argument, the value and,
where one helps, the fix: ``chunk: stride must be >= 1, got 0``. The checks raise
``FieldError`` (a ``ValueError``) for a bad value and ``TypeError`` for a bad type; a
``FieldError`` keeps the argument's name apart, so the CLI can say ``--batch-size must be
>= 1, got 0`` for ``RunConfig: batch_size must be >= 1, got 0`` without the library ever
naming a flag.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class FieldError(ValueError):
    """``where: name problem``, e.g. ``RunConfig: batch_size must be >= 1, got 0``."""

    def __init__(self, where: str, name: str, problem: str) -> None:
        super().__init__(f"{where}: {name} {problem}")
        self.where, self.name, self.problem = where, name, problem


def check_int(where: str, name: str, value: Any, *, low: int | None = None, hint: str = "") -> int:
    """An int (not a bool) >= ``low`` -> it; else TypeError / FieldError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    if low is not None and value < low:
        raise FieldError(where, name, f"must be >= {low}, got {value}{hint}")
    return value


def check_number(
    where: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    what: str = "",
    hint: str = "",
) -> float:
    """A finite int or float (not a bool) in the interval ``low .. high`` -> it as given.

    ``open_low`` / ``open_high`` exclude the end points; the message states the interval
    the way a reader writes it (``must be > 0``, ``must be in (0, 1)``, ``must be >= 0``),
    after ``what`` when given (``must be a finite number >= 0``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: {name} must be a float, got {value!r}")
    below = low is not None and (value <= low if open_low else value < low)
    above = high is not None and (value >= high if open_high else value > high)
    if math.isfinite(value) and not below and not above:
        return value
    if low is not None and high is not None:
        interval = f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    elif low is not None:
        interval = f"{'>' if open_low else '>='} {low}"
    elif high is not None:
        interval = f"{'<' if open_high else '<='} {high}"
    else:
        interval = "finite"
    raise FieldError(
        where, name, f"must be {what + ' ' if what else ''}{interval}, got {value}{hint}"
    )


def check_choice(where: str, name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``; else a FieldError listing them."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise FieldError(where, name, f"must be one of {listed}, got {value!r}")
    return value


def one_line(error: BaseException | str, *, kind: bool = False) -> str:
    """An exception (or text) -> one line: its message with every run of whitespace made one
    space; ``kind=True`` puts the exception's type first and keeps only the message's first
    line (for wrapping a library's error: ``ValueError: ...``)."""
    if isinstance(error, str) or not kind:
        text = " ".join(str(error).split())
        return text or type(error).__name__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def few(names: list[str], n: int = 3) -> str:
    """The first ``n`` names, for a message: ``[a, b, c, ...]``."""
    return "[" + ", ".join(names[:n]) + (", ...]" if len(names) > n else "]")
