"""The CLI's options are frozen: a new, renamed or removed flag is a deliberate change here
(torchtitan's test_no_new_cli_options), and every flag is declared once, in a dataclass."""

from __future__ import annotations

import argparse
import subprocess
import sys

from gptref.cli.main import build_parser

RUN = ["--preset", "--context", "--stride", "--batch-size", "--accumulation-steps", "--epochs", "--max-steps", "--lr",
       "--weight-decay", "--warmup", "--min-lr", "--grad-clip", "--eval-freq", "--eval-iter",
       "--train-ratio", "--seed"]  # fmt: skip
FAST = ["--attn", "--dtype", "--optimizer", "--compile", "--tf32", "--vocab-pad", "--fused-layers",
        "--loss", "--loss-chunk", "--recompute"]  # fmt: skip
EXPECTED = {
    "prepare": ["--text", "--out", "--train-ratio", "--threads", "--overwrite", "--no-progress"],
    "train": [
        "--text",
        "--data",
        "--book",
        *RUN,
        *FAST,
        "--fast",
        "--device",
        "--out",
        "--resume",
        "--overwrite",
        "--checkpoint-every",
        "--no-verify",
        "--prompt",
        "--sample-every",
        "--no-sample",
        "--json",
        "--tensorboard",
        "--no-progress",
    ],  # fmt: skip
    "eval": [
        "--checkpoint",
        "--text",
        "--batch-size",
        "--max-batches",
        "--device",
        "--json",
        "--no-progress",
    ],  # fmt: skip
    "generate": [
        "--checkpoint",
        "--prompt",
        "--max-new-tokens",
        "--temperature",
        "--top-k",
        "--seed",
        "--device",
    ],  # fmt: skip
    "weights import-hf": ["--safetensors", "--out", "--overwrite", "--n-heads"],
    "weights export-hf": ["--checkpoint", "--out", "--overwrite"],
    "bench": [
        "--preset",
        "--context",
        "--batch-sizes",
        "--device",
        "--dtype",
        "--attn",
        "--steps",
        "--optimizer",
        "--compile",
        "--tf32",
        "--vocab-pad",
        "--fused-layers",
        "--loss",
        "--loss-chunk",
        "--recompute",
        "--compare",
        "--levers",
        "--out",
        "--overwrite",
        "--no-progress",
    ],  # fmt: skip
    "plan": [
        "--memory",
        "--target-batch",
        "--preset",
        "--context",
        "--dtype",
        "--device",
        "--levers",
        "--json",
    ],
    "conformance": ["impl", "--allow-missing", "--require", "pytest_args"],
    "track record": [
        "--store",
        "--label",
        "--src",
        "--python",
        "--bench",
        "--rounds",
        "--reps",
        "--counts",
        "--from-json",
    ],
    "track compare": [
        "--a",
        "--b",
        "--a-python",
        "--b-python",
        "--bench",
        "--rounds",
        "--reps",
        "--threshold",
        "--json",
        "--overwrite",
    ],
    "track report": ["--store", "--out", "--overwrite"],
    "track check": ["--baseline", "--counts-only", "--src", "--bench", "--rounds", "--update"],
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.dest == "debug":
            continue
        out.append(action.option_strings[0] if action.option_strings else action.dest)
    return out


def test_every_command_has_exactly_the_frozen_options_in_order():
    """Each subcommand's flags, in --help order; --debug and --help are on every one."""
    found = {}
    for name, sub in _subparsers(build_parser()).items():
        actions = _subparsers(sub)
        if actions:
            found |= {f"{name} {a}": _options(p) for a, p in actions.items()}
        else:
            found[name] = _options(sub)
    assert found == EXPECTED


def test_debug_works_before_and_after_the_subcommand(tmp_path):
    """`gptref --debug eval ...` and `gptref eval ... --debug` both re-raise."""
    parser = build_parser()
    for argv in (["--debug", "plan", "--memory", "1G"], ["plan", "--memory", "1G", "--debug"]):
        assert vars(parser.parse_args(argv))["debug"] is True, argv


def test_help_does_not_import_torch():
    """Building the parser and printing --help loads neither torch nor the library modules."""
    code = (
        "import sys, contextlib, io\n"
        "from gptref.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['train', '--help'])\n"
        "    except SystemExit: pass\n"
        "print('torch' in sys.modules, 'gptref.model' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out
