"""Data path benchmarks: zero-copy ``chunk`` vs the book's per-window copy loop; BPE MB/s.

``python -m pytest benchmarks/test_bench_data.py``. Timing lives in the benchmark
stats; ``extra_info`` records windows, peak RSS growth and the in-run ratio.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from benchmarks.conftest import peak_rss_growth
from gptref.data import chunk, num_chunks, tokenize

MAX_LENGTH = 256
VERDICT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "the-verdict.txt"


def book_windows(ids: list[int], max_length: int, stride: int):
    """The book's GPTDatasetV1 loop: a new tensor per window, inputs and targets."""
    inputs, targets = [], []
    for i in range(0, len(ids) - max_length, stride):
        inputs.append(torch.tensor(ids[i : i + max_length]))
        targets.append(torch.tensor(ids[i + 1 : i + max_length + 1]))
    return inputs, targets


def token_ids(n: int) -> torch.Tensor:
    return torch.randint(0, 50257, (n,), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("stride", [1, 128, 256])
@pytest.mark.parametrize("n_tokens", [100_000, 1_000_000])
def test_bench_chunk(benchmark, n_tokens, stride):
    """chunk: two strided views, whatever the number of windows."""
    ids = token_ids(n_tokens)
    (inputs, _), growth = peak_rss_growth(lambda: chunk(ids, MAX_LENGTH, stride))
    benchmark(chunk, ids, MAX_LENGTH, stride)
    benchmark.extra_info.update(
        windows=inputs.shape[0],
        peak_rss_growth_bytes=growth,
        bytes_in_views=0,
    )


@pytest.mark.parametrize(
    ("n_tokens", "stride"),
    [(100_000, 1), (100_000, 128), (100_000, 256), (1_000_000, 128), (1_000_000, 256)],
)
def test_bench_book_loop(benchmark, n_tokens, stride):
    """The book's loop, for comparison (stride 1 at 1e6 takes ~1 min and ~5 GB: not run)."""
    ids = token_ids(n_tokens)
    as_list = ids.tolist()
    (inputs, _), growth = peak_rss_growth(lambda: book_windows(as_list, MAX_LENGTH, stride))
    del inputs
    rounds = 1 if num_chunks(n_tokens, MAX_LENGTH, stride) > 50_000 else 3
    result = benchmark.pedantic(book_windows, (as_list, MAX_LENGTH, stride), rounds=rounds)
    del result
    t0 = time.perf_counter()
    for _ in range(100):
        chunk(ids, MAX_LENGTH, stride)
    chunk_s = (time.perf_counter() - t0) / 100
    benchmark.extra_info.update(
        windows=num_chunks(n_tokens, MAX_LENGTH, stride),
        peak_rss_growth_bytes=growth,
        chunk_seconds_same_run=chunk_s,
        book_over_chunk_ratio=benchmark.stats.stats.median / chunk_s,
    )


def corpus_text() -> str:
    """About 1 MB of English prose: the-verdict.txt repeated if present, else pydoc topics."""
    if VERDICT.is_file():
        text = VERDICT.read_text(encoding="utf-8")
        return text * (1_000_000 // len(text) + 1)
    from pydoc_data.topics import topics

    return "\n\n".join(topics.values())[:1_000_000]


def test_bench_tokenize(benchmark):
    """GPT-2 BPE throughput of tokenize() (tiktoken, one thread) in MB/s."""
    text = corpus_text()
    n_bytes = len(text.encode("utf-8"))
    ids = benchmark.pedantic(tokenize, (text,), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(
        bytes=n_bytes,
        tokens=ids.numel(),
        mb_per_s=n_bytes / 1e6 / benchmark.stats.stats.median,
        tokens_per_s=ids.numel() / benchmark.stats.stats.median,
    )
