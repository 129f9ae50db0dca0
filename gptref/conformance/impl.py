"""The implementation under test: its modules, their functions and declared conventions.

A spec names one module (``package.module``), a ``.py`` file (its folder goes first on
``sys.path``, so it can import its neighbours), or several joined by ``+``
(``pkg.ch02+pkg.ch05``): a name is looked up in each module in turn, so a package that
spreads the book's functions over several modules needs no adapter. ``KNOWN`` maps short
names to specs: ``gptref`` (gptref's public API and the book's names over it) and
``llms_from_scratch`` (the book's own package, with no adapter at all).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from gptref.conformance.conventions import declared, describe

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
    Implementation; ``None`` reads ``$GPTREF_IMPL`` (default ``gptref``)."""
    if spec is None:
        spec = (env if env is not None else _environ()).get(IMPL_ENV) or DEFAULT_IMPL
    parts = KNOWN.get(spec, spec).split("+")
    return Implementation(spec, [_load_module(part.strip()) for part in parts])


def _load_module(spec: str) -> ModuleType:
    if spec.endswith(".py"):
        path = Path(spec).resolve()
        if not path.is_file():
            raise ValueError(f"{IMPL_ENV}={spec}: no such file")
        if str(path.parent) not in sys.path:  # so the adapter can import its neighbours
            sys.path.insert(0, str(path.parent))
        name = f"gptref_conformance_impl_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        assert loader_spec is not None and loader_spec.loader is not None
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        loader_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(spec)
    except ImportError as e:
        raise ValueError(
            f"{IMPL_ENV}={spec}: cannot import it ({type(e).__name__}: {e}); give a module "
            "importable from here (e.g. run from the directory that holds it), a .py path, "
            f"modules joined by '+', or one of {', '.join(KNOWN)}"
        ) from e


def require_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """``$GPTREF_REQUIRE``: levels (comma-separated, or "all") whose "not provided" fails."""
    value = (env if env is not None else _environ()).get("GPTREF_REQUIRE", "")
    return [v.strip() for v in value.split(",") if v.strip()]


def _environ() -> Mapping[str, str]:
    import os

    return os.environ
