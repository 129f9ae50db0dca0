"""The ``gptref`` command line, built from the commands' ``Args`` dataclasses.

A flag is a dataclass field with help text (``RunConfig``'s fields for ``gptref train``):
``batch_size`` becomes ``--batch-size``, its type the argparse type, a ``Literal`` its
choices and the field's default the default shown in ``--help``. Only flags a user gives
reach the command (argparse's ``SUPPRESS``), so ``--fast`` and ``--book`` can tell them from
defaults. Every user error ends as one line on stderr and exit status 2 (``--debug`` shows
the traceback instead); an error about a setting speaks of its flag (``RunConfig:
batch_size must be >= 1, got 0`` is printed as ``--batch-size must be >= 1, got 0``), a
library function's name heading a message is left out, a failed write names its path and the
fix (``gptref._io.describe_os_error``), and gptref's warnings (a damaged snapshot skipped)
are one line each.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import select
import sys
import types
import typing
import warnings
from collections.abc import Mapping
from typing import Any, Literal, NoReturn

from gptref import __version__
from gptref._check import FieldError, one_line
from gptref._io import describe_os_error
from gptref._owned import Exists
from gptref.cli.commands import COMMANDS

EPILOG = """\
examples:
  gptref prepare --text a.txt b.txt --out data/ab  # tokenize once, streamed: corpora larger than memory
  gptref train --data data/ab                   # train on it, memory-mapped
  gptref train                                  # a small GPT on the built-in corpus, ~2-3 min on CPU
  gptref train --book --text the-verdict.txt    # the book's chapter-5 run (GPT-124M, 10 epochs)
  gptref eval --checkpoint runs/NAME            # loss and perplexity of a trained run
  gptref generate --checkpoint runs/NAME --prompt "Every effort moves you" --temperature 1.4 --top-k 25
  gptref train --fast                           # the fastest tested paths for this device (measured)
  torchrun --standalone --nproc_per_node=2 -m gptref train --batch-size 4   # DDP, 2 processes
  gptref bench --preset small --batch-sizes 1,2,4,8 --dtype float32,bfloat16
  gptref plan --memory 24GiB --target-batch 1024 --preset 124M --context 1024
  gptref conformance examples.book_style        # check another implementation against gptref's spec
"""


def _parser(kind: type, word: str):
    """argparse's ``type=``: ``kind(text)``, or a usage error naming the text."""

    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {word}, got {text!r}") from None

    return parse


_PARSERS = {int: _parser(int, "an integer"), float: _parser(float, "a number")}


def flag_name(field: dataclasses.Field) -> str:
    """The field's flag: ``metadata["flag"]``, else ``--`` + its name with dashes."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _walk(cls: type, exclude: tuple[str, ...] = ()):
    """-> (owner class, field, type hint) of every field of ``cls``, nested ones included
    after their own entry; a nested field's ``metadata["exclude"]`` leaves some out."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        yield cls, f, hints[f.name]
        if f.metadata.get("nested"):
            yield from _walk(hints[f.name], f.metadata.get("exclude", ()))


def flag_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """Every (field, type hint) of ``cls`` that is a flag, nested dataclasses flattened."""
    return [(f, hint) for _, f, hint in _walk(cls) if "help" in f.metadata]


def _kind(hint: Any) -> tuple[Any, bool]:
    """A type hint -> (the type without None, whether it is a sequence of str)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _kind(args[0])
    if typing.get_origin(hint) in (tuple, list):
        return str, True
    return hint, False


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argparse argument per flag field of ``cls``."""
    groups: dict[str, Any] = {}
    for f, hint in flag_fields(cls):
        meta, (kind, many) = f.metadata, _kind(hint)
        kw: dict[str, Any] = {"help": meta["help"]}
        default = f.default if f.default is not dataclasses.MISSING else None
        if kind is bool:
            kw.update(action="store_true")
        else:
            if typing.get_origin(kind) is Literal:
                kw["choices"] = typing.get_args(kind)
            elif "choices" in meta:
                kw["choices"] = meta["choices"]
            kw["type"] = _PARSERS.get(kind, str)
            if "metavar" in meta:
                kw["metavar"] = meta["metavar"]
            if many:
                kw["nargs"] = meta.get("nargs", "+")
            if default not in (None, ()) and "default" not in kw["help"]:
                kw["help"] += f" (default {default})"
        if meta.get("positional"):
            if "nargs" in meta:
                kw["nargs"] = meta["nargs"]
                kw.pop("type", None)
            parser.add_argument(f.name, **kw)
            continue
        kw.update(dest=f.name, default=argparse.SUPPRESS, required=bool(meta.get("required")))
        target = parser
        if "group" in meta:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_mutually_exclusive_group()
            target = groups[meta["group"]]
        target.add_argument(flag_name(f), **kw)


def from_flags(cls: type, given: Mapping[str, Any]) -> Any:
    """The flags given -> an instance of ``cls`` (nested dataclasses too); missing flags take
    the fields' defaults. ``cls.from_flags`` does it where a command needs more."""
    if hasattr(cls, "from_flags"):
        return cls.from_flags(given)
    values: dict[type, dict[str, Any]] = {}
    for owner, f, hint in reversed(list(_walk(cls))):  # inner dataclasses first
        mine = values.setdefault(owner, {})
        if f.metadata.get("nested"):
            mine[f.name] = hint(**values.pop(hint, {}))
        elif f.name in given:
            value = given[f.name]
            mine[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values.get(cls, {}))


class Formatter(argparse.HelpFormatter):
    """argparse's help, but arguments passed on as they are (``nargs=REMAINDER``) show as
    optional, ``[PYTEST_ARGS ...]``, which they are."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if action.nargs == argparse.REMAINDER:
            return f"[{self._metavar_formatter(action, default_metavar)(1)[0]} ...]"
        return super()._format_args(action, default_metavar)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (no usage block) naming the help to read,
    and a mistyped choice (a subcommand, ``--device cpuu``) suggests the closest one:
    argparse's own ``suggest_on_error`` where it has it (Python 3.14), else difflib's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if SUGGESTS:
            kwargs.setdefault("suggest_on_error", True)
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}; see `{self.prog} --help`\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as e:
            close = did_you_mean(str(value), [str(c) for c in action.choices or ()])
            if SUGGESTS or not close or repr(value) not in e.message:
                raise
            message = e.message.replace(repr(value), f"{value!r} ({close})", 1)
            raise argparse.ArgumentError(action, message) from None


SUGGESTS = sys.version_info >= (3, 14)  # argparse's suggest_on_error


def did_you_mean(word: str, candidates: list[str]) -> str:
    """``"did you mean 'train'?"`` for the candidate closest to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def _unrecognized(
    parser: argparse.ArgumentParser, ns: dict[str, Any], extras: list[str]
) -> NoReturn:
    """Arguments no parser took: an error from the (sub)command's own parser, so that it
    points to ``gptref train --help``, with the closest flag of that command."""
    parser = ns.get("_parser", parser)
    flags = ["--help", "--debug"] + (
        [flag_name(f) for f, _ in flag_fields(ns["_args"])] if "_args" in ns else ["--version"]
    )
    hints = [did_you_mean(arg.split("=")[0], flags) for arg in extras if arg.startswith("-")]
    hint = next((f" ({h})" for h in hints if h), "")
    parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks for errors")  # fmt: skip
    parser = Parser(
        prog="gptref",
        description=(
            "gptref: the reference GPT pretraining data path and training step of "
            "'Build a Large Language Model (From Scratch)' (chapters 2 and 5, appendix D)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"gptref {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION,
                           parents=[common])  # fmt: skip
        actions = getattr(command, "ACTIONS", None)
        if actions is None:
            add_flags(p, command.Args)
            p.set_defaults(_args=command.Args, _main=command.main, _parser=p)
            continue
        asub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser)
        p.set_defaults(_parser=p)
        for name, (help_text, args_cls, function) in actions.items():
            a = asub.add_parser(name, help=help_text, description=help_text, parents=[common])
            add_flags(a, args_cls)
            a.set_defaults(_args=args_cls, _main=function, _parser=a)
    return parser


def _line_buffered(stream) -> None:
    """Each printed line reaches a file or pipe when printed (``gptref train > train.log`` shows
    the evaluations while the run goes), not when 8 KiB have gathered or the process ends."""
    if hasattr(stream, "reconfigure") and not stream.line_buffering:
        stream.reconfigure(line_buffering=True)


def _reader_gone(stream) -> bool:
    """Whether ``stream`` is a pipe whose reader has closed it (``gptref train | head -n 1``
    once ``head`` has its line): poll reports an error on such a pipe's write end."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parsed, extras = parser.parse_known_args(argv)
    ns = vars(parsed)
    if extras:
        _unrecognized(parser, ns, extras)
    command, debug = ns.pop("command", None), ns.pop("debug", False)
    ns.pop("_parser", None)
    if command is None:
        parser.print_help()
        return 0
    args_cls, function = ns.pop("_args"), ns.pop("_main")
    ns.pop("action", None)
    flags = {f.name: flag_name(f) for f, _ in flag_fields(args_cls)}
    _line_buffered(sys.stdout)
    try:
        with warnings.catch_warnings():  # (which also forgets the warnings of earlier calls)
            warnings.showwarning = _one_line_warning(command)
            return function(from_flags(args_cls, ns))
    except (ValueError, TypeError, OSError, FloatingPointError) as e:
        if isinstance(e, BrokenPipeError) and _reader_gone(sys.stdout):
            # the reader has what it wanted: stop quietly, as a shell tool stopped by SIGPIPE
            # (and send what is still buffered nowhere, or Python's exit says it again)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + 13
        if debug:
            raise
        if isinstance(e, FieldError) and e.name in flags:  # a setting: speak of its flag
            message = f"{flags[e.name]} {e.problem}"
        elif isinstance(e, Exists):  # an earlier output: replaced only with --overwrite
            message = e.with_flag("--overwrite")
        elif isinstance(e, OSError):
            message = describe_os_error(e)
        else:
            message = _without_library_name(one_line(e))
        print(f"gptref {command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gptref {command}: aborted", file=sys.stderr)
        return 130
    except Exception as e:  # torch.OutOfMemoryError is a RuntimeError
        if debug:
            raise
        if _importing_torch(e):  # any type: SystemError, RuntimeError, ImportError, ... seen
            print(f"gptref {command}: error: torch failed to import ({one_line(e)[:200]}); "
                  "too little memory for it? (an address-space limit, ulimit -v)", file=sys.stderr)  # fmt: skip
            return 2
        if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and _out_of_memory(e)):
            print(f"gptref {command}: error: out of memory ({one_line(e)[:200]}); use a smaller "
                  "--batch-size or --context (gptref plan predicts the peak)", file=sys.stderr)  # fmt: skip
            return 2
        raise


_WHERE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*): (.+)")


def _without_library_name(message: str) -> str:
    """``load_checkpoint: X is corrupted`` -> ``X is corrupted``: a CLI line names flags and
    files, not the library function that raised (a path of that name is kept)."""
    found = _WHERE.fullmatch(message)
    if found is None or os.path.lexists(found.group(1)):
        return message
    names = {
        name
        for module_name, module in list(sys.modules.items())
        if module_name.split(".")[0] == "gptref"
        for name, value in vars(module).items()
        if callable(value) and getattr(value, "__module__", "").startswith("gptref")
    }
    return found.group(2) if found.group(1) in names else message


def _one_line_warning(command: str):
    """``warnings.showwarning`` for the CLI: gptref's own warnings (a skipped snapshot) as one
    line, ``gptref COMMAND: warning: ...``; anything else as Python shows it."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("gptref"):
            print(f"gptref {command}: warning: {one_line(str(message))}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    return show


def _importing_torch(error: BaseException) -> bool:
    """Raised while ``import torch`` ran its __init__: under a low address-space limit a CUDA
    build fails there in varying ways (std::bad_alloc, a truncated "Unable to insta")."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith("/torch/__init__.py"):
            return True
        tb = tb.tb_next
    return False


def _out_of_memory(error: RuntimeError) -> bool:
    """torch.OutOfMemoryError, the CPU allocator's "can't allocate memory", or C++'s
    std::bad_alloc (a CUDA build of torch can meet it while importing, under an address-space
    limit). torch is not imported here: out of memory, that import could fail in turn."""
    text = str(error)
    if "can't allocate memory" in text or "std::bad_alloc" in text:
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


if __name__ == "__main__":
    sys.exit(main())
