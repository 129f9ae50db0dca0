"""The learner's journey: their own book-style code, in the folder they are in, checked by
``gptref conformance`` in each form the README and ``--help`` name, and a bug of theirs caught.

The module is ``examples/book_style.py`` (the book's chapters as the book writes them; it
imports nothing of gptref), copied into the learner's folder; the planted bug is the one of
``examples/book_style_broken.py``: the window loop keeps back one token too many. Each run
selects the window tests (``-k chunk``): the point is which module is found and what is said
about it, not the whole suite (which ``tests/`` and CI run).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a conformance run in subprocesses: torch imported twice each

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WINDOWS = "range(0, n_tokens - max_length, stride)"  # window_starts' bound in book_style.py
SELECT = ("-q", "-k", "chunk")  # the window tests: 7 of the suite's tests


def _book_style(folder: Path, name: str, *, bug: bool = False) -> Path:
    """``examples/book_style.py`` as ``folder/name``, with the window bug if ``bug``."""
    source = (EXAMPLES / "book_style.py").read_text(encoding="utf-8")
    assert source.count(WINDOWS) == 1, "book_style.py's window loop changed: update WINDOWS"
    if bug:
        source = source.replace(WINDOWS, "range(0, n_tokens - max_length - 1, stride)")
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return path


def _two_modules(folder: Path) -> None:
    """The learner's code spread over two modules, as over the book's chapters: the data path
    in one, the rest in the other (each imports its part of mymodule)."""
    _book_style(folder, "mymodule.py")
    (folder / "chapter2.py").write_text(
        "from mymodule import GPTDatasetV1, batch_order, chunk, collate, create_dataloader_v1, "
        "num_chunks, split, text_to_token_ids, token_ids_to_text  # noqa: F401\n"
    )
    (folder / "chapter5.py").write_text(
        "from mymodule import calc_loss_batch, calc_loss_loader, evaluate_model, generate, "
        "generate_and_print_sample, generate_text_simple, lr_at, train_model, "
        "train_model_simple, train_step  # noqa: F401\n"
    )


FORMS = {
    # spec -> the files the learner has in their folder
    "mymodule": lambda f: _book_style(f, "mymodule.py"),
    "mymodule.py": lambda f: _book_style(f, "mymodule.py"),
    "pkg.mod": lambda f: (_book_style(f, "pkg/mod.py"), (f / "pkg" / "__init__.py").touch()),
    "chapter2+chapter5": _two_modules,
}


@pytest.mark.parametrize("spec", list(FORMS))
def test_conformance_finds_the_learners_module_in_the_current_folder(installed, outside, spec):
    """``gptref conformance SPEC`` run where the learner's code is: the module named as a
    module, as a .py file, as a package's module, and as two modules joined with +, is
    imported from the current folder (as ``python -m`` would), its header names it and the
    window tests pass."""
    FORMS[spec](outside)
    result = installed.gptref("conformance", spec, *SELECT, cwd=outside)
    assert result.status == 0, result.log
    header = next((line for line in result.stdout.splitlines()
                   if line.startswith("gptref conformance: implementation")), None)  # fmt: skip
    assert header is not None, result.log
    assert f"implementation {spec} " in header and "not provided: none" in header, header
    assert str(outside) in header, header  # the learner's own file, not a namesake elsewhere
    assert "7 passed" in result.stdout, result.log


def test_conformance_catches_a_bug_planted_in_the_learners_module(installed, outside):
    """The same module with its window loop one token short: the run fails (exit 1) and
    shows a call that reproduces the bug with the learner's module, the expected and the
    actual result, and the level it breaks."""
    _book_style(outside, "mymodule.py", bug=True)
    result = installed.gptref("conformance", "mymodule", *SELECT, cwd=outside)
    assert result.status == 1, result.log
    out = result.stdout
    assert "import mymodule as impl" in out and "impl.num_chunks(" in out, result.log
    assert "expected:" in out and "got:" in out, result.log
    level = [line.split() for line in out.splitlines() if line.startswith("book ")]
    assert level and level[0][1] == "failed", result.log


def test_conformance_names_the_current_folder_when_the_module_is_not_there(installed, outside):
    """A mistyped module name: one line on stderr naming it (exit 2), no traceback, no pytest."""
    shutil.copy(EXAMPLES / "book_style.py", outside / "mymodule.py")
    result = installed.gptref("conformance", "mymodul", cwd=outside)
    assert result.status == 2, result.log
    assert result.stderr.count("\n") == 1 and "mymodul" in result.stderr, result.log
    assert "Traceback" not in result.stderr and result.stdout == "", result.log
