"""The implementation under test: an adapter module, its functions and declared semantics."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

IMPL_ENV = "GPTREF_IMPL"  # the module (or .py file) under test
ALLOW_MISSING_ENV = "GPTREF_ALLOW_MISSING"  # "1": skip the tests of missing functions
DEFAULT_IMPL = "gptref"

# the functions of the contract, in the order the suite tests them
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

# declared semantics: attribute -> (allowed values, the book's, which is the default)
SEMANTICS: dict[str, tuple[tuple[str, ...], str]] = {
    # what calc_loss_loader(loader, model, device, num_batches) returns: "batch", the mean of
    # the per-batch mean losses (the book's), or "token", the mean over all counted targets
    "LOADER_LOSS_WEIGHTING": (("batch", "token"), "batch"),
    # lr_at's cosine: "appendix_d", the book's formula as printed (progress divided by
    # total_steps - warmup_steps, so it never reaches min_lr; warmup_steps >= 1), or "exact",
    # which ends at exactly min_lr on step total_steps - 1 and stays there
    "LR_SCHEDULE": (("appendix_d", "exact"), "appendix_d"),
}


class MissingFunction(AttributeError):
    """The implementation does not provide a function the suite needs."""


class Implementation:
    """An adapter module seen through the contract: ``impl.chunk(...)`` calls its ``chunk``."""

    def __init__(self, spec: str, module: ModuleType) -> None:
        self.spec = spec
        self.module = module
        self.semantics = {
            key: getattr(module, key, default) for key, (_, default) in SEMANTICS.items()
        }
        for key, (allowed, _) in SEMANTICS.items():
            if self.semantics[key] not in allowed:
                raise ValueError(
                    f"{spec}.{key} must be one of {', '.join(map(repr, allowed))}, "
                    f"got {self.semantics[key]!r}"
                )
        weightings = tuple(getattr(module, "LOADER_LOSS_WEIGHTINGS", ()))
        unknown = [w for w in weightings if w not in SEMANTICS["LOADER_LOSS_WEIGHTING"][0]]
        if unknown:
            raise ValueError(
                f"{spec}.LOADER_LOSS_WEIGHTINGS may hold only 'batch' and 'token', got {unknown}"
            )
        self.loader_loss_weightings = weightings
        self.make_model: Callable[[dict[str, Any]], Any] | None = getattr(
            module, "make_model", None
        )

    @property
    def name(self) -> str:
        return self.spec if self.spec.endswith(".py") else self.module.__name__

    @property
    def file(self) -> str:
        return getattr(self.module, "__file__", None) or "(no file)"

    @property
    def version(self) -> str:
        version = getattr(self.module, "__version__", None)
        return str(version) if version is not None else "(no __version__)"

    @property
    def loader_loss_weighting(self) -> str:
        return self.semantics["LOADER_LOSS_WEIGHTING"]

    @property
    def lr_schedule(self) -> str:
        return self.semantics["LR_SCHEDULE"]

    def has(self, name: str) -> bool:
        return callable(getattr(self.module, name, None))

    def missing(self) -> list[str]:
        return [name for name in CONTRACT if not self.has(name)]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        fn = getattr(self.module, name, None)
        if not callable(fn):
            raise MissingFunction(f"{self.name} has no function {name!r}")
        return fn

    def describe(self) -> str:
        """One line for the report header."""
        semantics = ", ".join(f"{k}={v!r}" for k, v in self.semantics.items())
        missing = ", ".join(self.missing()) or "none"
        return (
            f"gptref conformance: implementation {self.name} {self.version} ({self.file}); "
            f"{semantics}; missing: {missing}"
        )

    def __repr__(self) -> str:
        return f"<implementation {self.name}>"


def load_implementation(
    spec: str | None = None, env: Mapping[str, str] | None = None
) -> Implementation:
    """A module name (``package.module``) or a path to a ``.py`` file -> Implementation;
    ``None`` reads ``$GPTREF_IMPL`` (default ``gptref``)."""
    if spec is None:
        spec = (env if env is not None else _environ()).get(IMPL_ENV) or DEFAULT_IMPL
    if spec.endswith(".py"):
        path = Path(spec).resolve()
        if not path.is_file():
            raise ValueError(f"{IMPL_ENV}={spec}: no such file")
        name = f"gptref_conformance_impl_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        assert loader_spec is not None and loader_spec.loader is not None
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        loader_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(spec)
        except ImportError as e:
            raise ValueError(
                f"{IMPL_ENV}={spec}: cannot import it ({type(e).__name__}: {e}); give a module "
                "importable from here (e.g. run from the directory that holds it) or a .py path"
            ) from e
    return Implementation(spec, module)


def allow_missing_from_env(env: Mapping[str, str] | None = None) -> bool:
    value = (env if env is not None else _environ()).get(ALLOW_MISSING_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def _environ() -> Mapping[str, str]:
    import os

    return os.environ
