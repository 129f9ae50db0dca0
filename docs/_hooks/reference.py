"""MkDocs hooks: the pages made at build time, never written by hand.

- ``reference/cli.md``: every command's ``--help``, from the parser ``gptref`` itself builds
  (``gptref.cli.main.build_parser``, made from the commands' ``Args`` dataclasses), so a
  flag added, renamed or re-documented changes the page with it;
- ``reference/api/*.md``: one page per layer of the package, a ``:::`` block (mkdocstrings)
  for every public module found in the sources, so a new module is documented by being
  added; griffe reads the sources, nothing imports torch;
- ``results/...``: the committed measurements (``benchmarks/results/``) served beside the
  pages that cite them, as they are in the repository.

Building the parser imports only the standard library and gptref's light modules (the
commands import torch inside ``main``), from the source tree: the docs build needs neither
an installed gptref nor torch.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gptref"
RESULTS = ROOT / "benchmarks" / "results"
WIDTH = 100  # the columns argparse formats --help to

# the book's modules in the order the data flows (gptref/__init__.py's reading order); a
# top-level module not listed comes after them
CORE_ORDER = ("tokenizer", "data", "loader", "gpt_config", "model", "loss", "chunked_loss",
              "schedule", "step", "state", "rng", "generation", "loop")  # fmt: skip
LAYERS = {  # page -> (title, what the layer is)
    "core": ("The book (core)", "The top folder: the book's chapters 2 and 5 and appendix D, "
             "read in the order the data flows. It imports nothing of gptref outside itself."),
    "fast": ("gptref.fast", "Opt-in speed and memory paths, and data-parallel training."),
    "corpus": ("gptref.corpus", "Text and prepared (tokenized, memory-mapped) corpora."),
    "plan": ("gptref.plan", "The analytic training-memory model and the batch planner."),
    "run": ("gptref.run", "A training run on disk: settings, checkpoints, resuming, the job."),
    "weights": ("gptref.weights", "Hugging Face GPT-2 weights and the book's model.pth."),
    "bench": ("gptref.bench", "Benchmarks of train_step: what gptref bench runs."),
    "track": ("gptref.track", "Regression tracking across commits and torch versions."),
    "conformance": ("gptref.conformance", "The specification as a pytest suite, runnable "
                    "against any implementation. Its test modules are the specification "
                    "itself and are not listed here; read them in the package."),
}  # fmt: skip


def _import_path() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- the CLI


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommands, in the order --help lists them (argparse keeps them in the
    choices of its one subparsers action)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    """``--help`` as a terminal of WIDTH columns prints it."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return parser.format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def cli_reference() -> str:
    """The command-line reference page: ``gptref --help``, then each (sub)command's."""
    _import_path()
    from gptref.cli.main import build_parser

    parser = build_parser()
    out = [
        "# Command line",
        "",
        "Every command and flag of `gptref`, exactly as `--help` prints it. This page is "
        "generated from the parser `gptref` builds (`gptref.cli.main.build_parser`, made from "
        "each command's `Args` dataclass) each time the site is built; a flag's help text is "
        "written once, beside its field.",
        "",
        "Every mistake is one line on stderr and exit status 2 naming the value and the fix; "
        "`--debug` shows the traceback instead. `python -m gptref` is the same program.",
        "",
        "```text",
        _help(parser).rstrip(),
        "```",
    ]
    for name, sub in _subcommands(parser).items():
        out += ["", f"## gptref {name}", ""]
        actions = _subcommands(sub)
        if not actions:
            out += ["```text", _help(sub).rstrip(), "```"]
            continue
        out += ["```text", _help(sub).rstrip(), "```"]
        for action, leaf in actions.items():
            out += ["", f"### gptref {name} {action}", "", "```text", _help(leaf).rstrip(), "```"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- the API


def _public_modules(folder: Path) -> list[str]:
    """The module names (no package prefix) of a folder's public modules: not ``_x.py``, not
    the conformance suite's test files and conftest."""
    names = [p.stem for p in folder.glob("*.py")
             if not p.stem.startswith("_") and not p.stem.startswith("test_")
             and p.stem != "conftest"]  # fmt: skip
    return sorted(names)


def layer_modules() -> dict[str, list[str]]:
    """Each API page -> the dotted modules it documents, in page order."""
    top = _public_modules(PACKAGE)
    core = [m for m in CORE_ORDER if m in top] + [m for m in top if m not in CORE_ORDER]
    pages = {"core": [f"gptref.{m}" for m in core]}
    for layer in LAYERS:
        if layer != "core":
            pages[layer] = [f"gptref.{layer}.{m}" for m in _public_modules(PACKAGE / layer)]
    return pages


def _defined(module: str) -> set[str]:
    """The names a module's source binds at its top level (defs, classes, assignments)."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target)
                         if isinstance(n, ast.Name))  # fmt: skip
    return names


def _exports() -> dict[str, str]:
    """gptref's public names -> their modules (``gptref._EXPORTS``; importing gptref loads
    nothing else)."""
    _import_path()
    import gptref

    return dict(gptref._EXPORTS)


def api_pages() -> dict[str, str]:
    """``reference/api/<page>.md`` -> its Markdown."""
    pages = {}
    modules = layer_modules()
    where = {m: page for page, names in modules.items() for m in names}
    rows = []
    for name, module in sorted(_exports().items(), key=lambda kv: kv[0].lower()):
        # a name the module makes on first use (a module __getattr__, as gptref.fast.choice's
        # FAST) has no heading of its own: the link goes to its module, whose docstring says
        anchor = f"{module}.{name}" if name in _defined(module) else module
        rows.append(f"| [`{name}`]({where[module]}.md#{anchor}) | `{module}` |")
    pages["index"] = "\n".join([
        "# API",
        "",
        "Generated from the docstrings in the sources (mkdocstrings, which reads them "
        "with griffe without importing gptref). One page per layer; a layer may import only "
        "the layers before it (`tests/test_architecture.py` holds them to that order).",
        "",
        "::: gptref",
        "    options:",
        "      members: false",
        "      show_source: false",
        "",
        "## The public names",
        "",
        "`import gptref` loads none of them up front (`gptref --help` starts without torch); "
        "each loads its module on first use.",
        "",
        "| name | defined in |",
        "|---|---|",
        *rows,
    ]) + "\n"  # fmt: skip
    for page, names in modules.items():
        title, about = LAYERS[page]
        text = [f"# {title}", "", about, ""]
        if page != "core":
            text += [f"::: gptref.{page}", "    options:", "      members: false",
                     "      show_source: false", "      heading_level: 2", ""]  # fmt: skip
        for module in names:
            text += [f"::: {module}", ""]
        pages[page] = "\n".join(text)
    return pages


# ----------------------------------------------------------------------------- hooks


def on_files(files, config):
    """Add the generated pages and the committed results to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    for page, text in api_pages().items():
        files.append(File.generated(config, f"reference/api/{page}.md", content=text))
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file():
            files.append(File(str(path.relative_to(RESULTS.parent)), src_dir=str(RESULTS.parent),
                              dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))  # fmt: skip
    return files
