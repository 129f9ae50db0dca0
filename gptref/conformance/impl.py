"""The implementation under test: its modules, their functions and declared conventions.

A spec names one module (``package.module``), a ``.py`` file (its folder goes first on
``sys.path``, so it can import its neighbours), or several joined by ``+``
(``pkg.ch02+pkg.ch05``): a name is looked up in each module in turn, so a package that
spreads the book's functions over several modules needs no adapter. ``KNOWN`` maps short
names to specs: ``gptref`` (gptref's public API and the book's names over it) and
``llms_from_scratch`` (the book's own package, with no adapter at all).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from gptref.conformance.conventions import declared, describe
from gptref.conformance.guard import (
    TIMEOUT_ENV,
    Guard,
    ImplementationStopped,
    active,
    parse_timeout,
)
from gptref.conformance.tokenizer import install_offline_gpt2

IMPL_ENV = "GPTREF_IMPL"  # the module (or .py file, or modules joined by +) under test
DEFAULT_IMPL = "gptref"

KNOWN: dict[str, str] = {
    # gptref's own functions first (and its declared conventions), then the book's names
    "gptref": "gptref+gptref.conformance.adapters.gptref_book",
    # the book's package (PyPI llms-from-scratch): chapter 2's loader, chapter 4's model,
    # chapter 5's losses, generate and loop, appendix D's train_model; no adapter
    "llms_from_scratch": "llms_from_scratch.ch02+llms_from_scratch.ch04+llms_from_scratch.ch05"
    "+llms_from_scratch.appendix_d",
}

# gptref's function protocol, in the order the suite tests them
CONTRACT = (
    "split",
    "num_chunks",
    "chunk",
    "batch_order",
    "collate",
    "calc_loss_batch",
    "calc_loss_loader",
    "train_step",
    "lr_at",
    "generate",
)
# the book's own names (chapters 2, 5, appendix D), accepted with the book's signatures
BOOK = (
    "GPTDatasetV1",
    "create_dataloader_v1",
    "text_to_token_ids",
    "token_ids_to_text",
    "calc_loss_batch",
    "calc_loss_loader",
    "generate",
    "generate_text_simple",
    "evaluate_model",
    "generate_and_print_sample",
    "train_model_simple",
    "train_model",
)


class Implementation:
    """The modules of a spec seen as one: ``impl.chunk(...)`` calls the first module's
    ``chunk``; ``impl.conventions`` holds what they declare (see ``conventions``)."""

    def __init__(self, spec: str, modules: list[ModuleType]) -> None:
        self.spec = spec
        self.modules = modules
        self.conventions = declared(modules, spec)
        self.failed: dict[str, str] = {}  # function -> the first test of it that failed
        self.make_model: Callable[[dict[str, Any]], Any] | None = self._find("make_model")
        if self.make_model is None:
            # the book's GPTModel(cfg) takes the config dict: it serves as make_model
            self.make_model = self._find("GPTModel")

    def _find(self, name: str) -> Any:
        for module in self.modules:
            fn = getattr(module, name, None)
            if callable(fn):
                return fn
        return None

    @property
    def name(self) -> str:
        if len(self.modules) == 1 and not self.spec.endswith(".py"):
            return self.modules[0].__name__
        return self.spec

    @property
    def file(self) -> str:
        files = [getattr(m, "__file__", None) or "(no file)" for m in self.modules]
        return ", ".join(files)

    @property
    def version(self) -> str:
        version = getattr(self.modules[0], "__version__", None)
        if version is None:  # a package's modules: the distribution's version
            top = self.modules[0].__name__.split(".")[0]
            try:
                version = importlib.metadata.version(top.replace("_", "-"))
            except importlib.metadata.PackageNotFoundError:
                return "(no __version__)"
        return str(version)

    # the conventions, by name
    @property
    def loader_loss_weighting(self) -> str:
        return self.conventions["LOADER_LOSS_WEIGHTING"]

    @property
    def loader_loss_weightings(self) -> tuple[str, ...]:
        return self.conventions["LOADER_LOSS_WEIGHTINGS"]

    @property
    def lr_schedule(self) -> str:
        return self.conventions["LR_SCHEDULE"]

    @property
    def ignore_index(self) -> int:
        return self.conventions["IGNORE_INDEX"]

    def supports(self, feature: str) -> bool:
        return feature not in self.conventions["UNSUPPORTED"]

    def has(self, name: str) -> bool:
        return self._find(name) is not None

    def missing(self, names=CONTRACT + BOOK) -> list[str]:
        return [name for name in dict.fromkeys(names) if not self.has(name)]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        fn = self._find(name)
        if fn is None:
            raise MissingFunction(f"{self.name} has no function {name!r}")
        return fn

    def describe(self) -> str:
        """One line for the report header."""
        missing = ", ".join(self.missing()) or "none"
        return (
            f"gptref conformance: implementation {self.name} {self.version} ({self.file}); "
            f"{describe(self.conventions)}; not provided: {missing}"
        )

    def __repr__(self) -> str:
        return f"<implementation {self.name}>"


class MissingFunction(AttributeError):
    """The implementation does not provide a function the suite needs."""


def load_implementation(
    spec: str | None = None, env: Mapping[str, str] | None = None
) -> Implementation:
    """A spec (module, ``.py`` path, modules joined by ``+``, or a KNOWN name) ->
    Implementation; ``None`` reads ``$GPTREF_IMPL`` (default ``gptref``).

    The offline "gpt2" encoding goes into tiktoken first, so a module that calls
    ``tiktoken.get_encoding("gpt2")`` at import works offline. Each module is imported under
    the guard (``guard.py``: the suite's, or one of this call's own): an import that raises,
    exits or outlasts the time limit is a ``ValueError`` of one line naming the module; what
    the import prints is kept out of the way."""
    environ = env if env is not None else _environ()
    if spec is None:
        spec = environ.get(IMPL_ENV) or DEFAULT_IMPL
    install_offline_gpt2()
    parts = [part.strip() for part in KNOWN.get(spec, spec).split("+")]
    guard = active()
    own = None
    if guard is None:
        try:
            limit = parse_timeout(environ.get(TIMEOUT_ENV), TIMEOUT_ENV)
        except ValueError as e:
            raise ValueError(str(e)) from None
        own = guard = Guard(limit).install()
    try:
        modules = [_load_module(part, spec, guard) for part in parts]
    finally:
        if own is not None:
            own.uninstall()
    return Implementation(spec, modules)


def _load_module(part: str, spec: str, guard: Guard) -> ModuleType:
    """Import one module of the spec under ``guard``, its output captured."""
    printed = io.StringIO()
    shown = Path(part).name if part.endswith(".py") else part  # the spec shows the whole path
    try:
        with (
            guard.running(lambda: (f"importing {shown}", ""), kind="import"),
            contextlib.redirect_stdout(printed),
            contextlib.redirect_stderr(printed),
        ):
            return _import(part)
    except ImplementationStopped as e:
        raise ValueError(f"{IMPL_ENV}={spec}: {e}") from None
    except ValueError as e:
        if str(e).startswith(f"{IMPL_ENV}="):
            raise
        raise ValueError(_import_error(part, spec, e)) from None
    except ImportError as e:
        if e.name is not None and part.startswith(e.name):  # the module itself is not found
            raise ValueError(
                f"{IMPL_ENV}={spec}: cannot import {part} ({type(e).__name__}: {e}); give a "
                "module importable from here (e.g. run from the directory that holds it), a .py "
                f"path, modules joined by '+', or one of {', '.join(KNOWN)}"
            ) from None
        raise ValueError(_import_error(part, spec, e)) from None
    except Exception as e:
        raise ValueError(_import_error(part, spec, e)) from None


def _import(part: str) -> ModuleType:
    if not part.endswith(".py"):
        return importlib.import_module(part)
    path = Path(part).resolve()
    if not path.is_file():
        raise ValueError(f"{IMPL_ENV}={part}: no such file")
    if str(path.parent) not in sys.path:  # so the adapter can import its neighbours
        sys.path.insert(0, str(path.parent))
    name = f"gptref_conformance_impl_{path.stem}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_error(part: str, spec: str, e: BaseException) -> str:
    """One line: the module, the exception and the line of the module that raised it."""
    frames = traceback.extract_tb(e.__traceback__)
    stem = Path(part).stem if part.endswith(".py") else part.rsplit(".", 1)[-1]
    inside = [f for f in frames if Path(f.filename).stem == stem] or frames[-1:]
    where = f" at {Path(inside[-1].filename).name}:{inside[-1].lineno}" if inside else ""
    text = " ".join(str(e).split()) or "(no message)"
    text = text if len(text) <= 300 else text[:300] + " ..."
    shown = Path(part).name if part.endswith(".py") else part
    return f"{IMPL_ENV}={spec}: importing {shown} raised {type(e).__name__}: {text}{where}"


def require_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """``$GPTREF_REQUIRE``: levels (comma-separated, or "all") whose "not provided" fails."""
    value = (env if env is not None else _environ()).get("GPTREF_REQUIRE", "")
    return [v.strip() for v in value.split(",") if v.strip()]


def _environ() -> Mapping[str, str]:
    import os

    return os.environ
