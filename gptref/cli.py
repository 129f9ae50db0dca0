"""The ``gptref`` command line: argparse only; the work lives in the library modules."""

from __future__ import annotations

import argparse
import sys

from gptref import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptref",
        description=(
            "gptref: the reference GPT pretraining data path and training step of "
            "'Build a Large Language Model (From Scratch)' (chapters 2 and 5, appendix D)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"gptref {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
