"""Reproduce the book's chapter-5 training log on CPU (GPT-124M, context 256, 10 epochs).

    python benchmarks/reproduce_chapter5.py [--text ../shared/data/the-verdict.txt]

About half an hour on 2 cores. Prints the log as the book does, then compares every
line with the published log (3 decimals) and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from gptref.data import split
from gptref.loader import create_dataloader
from gptref.loop import train
from gptref.model import GPT_CONFIG_124M, GPTModel
from gptref.run.config import book_text_mismatch
from gptref.tokenizer import gpt2_tokenizer

BOOK_LOG = """\
Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933
Ep 1 (Step 000005): Train loss 8.111, Val loss 8.339
Ep 2 (Step 000010): Train loss 6.661, Val loss 7.048
Ep 2 (Step 000015): Train loss 5.961, Val loss 6.616
Ep 3 (Step 000020): Train loss 5.726, Val loss 6.600
Ep 3 (Step 000025): Train loss 5.201, Val loss 6.348
Ep 4 (Step 000030): Train loss 4.417, Val loss 6.278
Ep 4 (Step 000035): Train loss 4.069, Val loss 6.226
Ep 5 (Step 000040): Train loss 3.732, Val loss 6.160
Ep 6 (Step 000045): Train loss 2.850, Val loss 6.179
Ep 6 (Step 000050): Train loss 2.427, Val loss 6.141
Ep 7 (Step 000055): Train loss 2.104, Val loss 6.134
Ep 7 (Step 000060): Train loss 1.882, Val loss 6.233
Ep 8 (Step 000065): Train loss 1.320, Val loss 6.238
Ep 8 (Step 000070): Train loss 0.985, Val loss 6.242
Ep 9 (Step 000075): Train loss 0.717, Val loss 6.293
Ep 9 (Step 000080): Train loss 0.541, Val loss 6.393
Ep 10 (Step 000085): Train loss 0.391, Val loss 6.452"""

DEFAULT_TEXT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "the-verdict.txt"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT, help="the-verdict.txt")
    args = parser.parse_args()
    mismatch = book_text_mismatch([args.text])
    if mismatch:  # this script checks the book's lines: on another text every one differs
        sys.exit(f"reproduce_chapter5: {mismatch}")
    text = args.text.read_text(encoding="utf-8")
    cfg = {**GPT_CONFIG_124M, "context_length": 256}
    train_text, val_text = split(text, 0.90)
    # the book's sequence: seed, loaders; seed, model and optimizer; train
    torch.manual_seed(123)
    kw = dict(batch_size=2, max_length=256, stride=256)
    train_loader = create_dataloader(train_text, shuffle=True, drop_last=True, **kw)
    val_loader = create_dataloader(val_text, shuffle=False, drop_last=False, **kw)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    start = time.perf_counter()
    history = train(
        model, train_loader, val_loader, optimizer, "cpu",
        num_epochs=10, eval_freq=5, eval_iter=5,
        start_context="Every effort moves you", tokenizer=gpt2_tokenizer(), log=log,
    )  # fmt: skip
    print(f"wall time: {time.perf_counter() - start:.0f} s, tokens seen: {history.tokens_seen[-1]}")
    got = [line for line in lines if line.startswith("Ep ")]
    want = BOOK_LOG.splitlines()
    diffs = [(g, w) for g, w in zip(got, want, strict=False) if g != w]
    if diffs or len(got) != len(want):
        print(f"MISMATCH: {len(diffs)} differing lines, {len(got)} vs {len(want)} lines")
        for g, w in diffs:
            print(f"  got  {g}\n  book {w}")
        return 1
    print(f"all {len(want)} log lines equal the book's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
