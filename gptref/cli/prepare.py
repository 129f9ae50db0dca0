"""``gptref prepare``: tokenize text files once into a directory ``gptref train --data`` reads."""

from __future__ import annotations

import dataclasses
import sys

from gptref._check import check_int
from gptref._setting import required, same_as, setting
from gptref.cli.common import no_progress_flag
from gptref.run.config import RunConfig

NAME = "prepare"
HELP = "tokenize text files once into DIR/train.bin, val.bin for `train --data DIR`"
DESCRIPTION = (
    "Tokenize UTF-8 text files (each one document) with GPT-2 BPE, in parallel and streamed "
    "in bounded pieces, into --out DIR: train.bin and val.bin (uint16 little-endian ids, "
    "documents separated by <|endoftext|>) and manifest.json. Each document's first "
    "--train-ratio of characters goes to train.bin, the rest to val.bin. Skips when DIR is "
    "already up to date."
)


@dataclasses.dataclass(frozen=True)
class Args:
    text: tuple[str, ...] = required("UTF-8 text files, one document each", metavar="FILE")
    out: str = required("where train.bin, val.bin and manifest.json go", metavar="DIR")
    train_ratio: float = same_as(
        RunConfig, "train_ratio", help="share of each document's characters for training"
    )
    threads: int | None = setting(None, "tokenizer threads (default: every CPU)", metavar="N")
    overwrite: bool = setting(False, "replace a prepared corpus of other texts in --out DIR")
    no_progress: bool = no_progress_flag()

    def __post_init__(self) -> None:
        if self.threads is not None:
            check_int("prepare", "threads", self.threads, low=1)


def main(args: Args) -> int:
    from gptref.corpus.prepare import prepare

    result = prepare(
        args.text, args.out, train_ratio=args.train_ratio, num_threads=args.threads,
        progress=not args.no_progress and sys.stderr.isatty(), overwrite=args.overwrite,
    )  # fmt: skip
    if not result.skipped:
        m, s = result.manifest, result.seconds
        tokens = m["train"]["tokens"] + m["val"]["tokens"]
        print(
            f"wrote {args.out}/: train.bin ({m['train']['tokens']:,} tokens), val.bin "
            f"({m['val']['tokens']:,} tokens), manifest.json; {m['documents']} document"
            f"{'s' if m['documents'] != 1 else ''} in {s:.1f} s ({tokens / s:,.0f} tokens/s)"
        )
    return 0
