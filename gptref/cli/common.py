"""What several subcommands share: flags declared once (``--device``, ``--checkpoint``,
``--no-progress``). This is the CLI's layer: its errors may name flags.
"""

from __future__ import annotations

from typing import Any, Literal

from gptref._setting import required, setting

Device = Literal["auto", "cpu", "cuda"]


def device_flag() -> Any:
    return setting("auto", "where to run: auto (cuda when available), cpu or cuda")


def checkpoint_flag() -> Any:
    return required("a run folder, its checkpoint/ or a snapshot in it (checkpoint/save-*)",
                    metavar="DIR")  # fmt: skip


def no_progress_flag() -> Any:
    return setting(False, "no progress bar")
