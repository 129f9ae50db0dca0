"""A setting: a dataclass field with its help text, from which ``gptref.cli.main`` makes a flag.

``batch_size: int = setting(8, "sequences per step", metavar="N")`` becomes ``--batch-size N``
with that help and ``(default 8)``. Hints for argparse go in the metadata: ``metavar``,
``flag`` (another spelling), ``choices``, ``nargs``, ``positional``, ``group`` (mutually
exclusive flags share one), ``required``; ``nested`` marks a dataclass field whose own
settings become flags (``exclude`` leaves some out).
"""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, help: str, **hints: Any) -> Any:
    """A field with ``default`` that the CLI offers as a flag."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("setting: use a tuple or None as a default, not a mutable value")
    return dataclasses.field(default=default, metadata={"help": help, **hints})


def required(help: str, **hints: Any) -> Any:
    """A flag that must be given."""
    return dataclasses.field(default=None, metadata={"help": help, "required": True, **hints})


def nested(factory: Any, **hints: Any) -> Any:
    """A dataclass-valued field whose own settings are flags of the same command."""
    return dataclasses.field(default_factory=factory, metadata={"nested": True, **hints})


def same_as(cls: type, name: str, **changes: Any) -> Any:
    """``cls``'s setting ``name`` declared again for another command (its help and hints,
    ``changes`` to the default or the metadata), so a flag's text lives in one place."""
    field = cls.__dataclass_fields__[name]
    default = changes.pop("default", field.default)
    return setting(default, **{**field.metadata, **changes})
