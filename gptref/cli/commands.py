"""The subcommands of ``gptref``, one module each, in the order ``gptref --help`` lists them.

Each module has ``NAME``, ``HELP``, ``DESCRIPTION``, an ``Args`` dataclass whose fields are
its flags (``gptref.cli.main`` builds argparse from them) and ``main(args) -> exit status``; a
command with actions (``weights``) has ``ACTIONS`` instead. Modules import torch and the
rest of gptref inside ``main``, so building the parser (``gptref --help``) stays light.

To add a subcommand: a module here with those names, and a line in ``COMMANDS``.
"""

from __future__ import annotations

from gptref.cli import (
    bench,
    conformance,
    evaluation,
    generate,
    plan,
    prepare,
    track,
    train,
    weights,
)

COMMANDS = (prepare, train, evaluation, generate, weights, bench, plan, conformance, track)
