"""``gptref prepare`` throughput: tokens/s from text files to train.bin / val.bin (hashing,
streaming, parallel encoding, writing) against single-threaded tiktoken ``encode_ordinary``
on the same documents held in memory.

``python -m pytest benchmarks/test_bench_prepare.py --benchmark-json
benchmarks/results/prepare_cpu.json``. Each test records tokens/s, the load average
around it (other jobs on a shared machine slow it down) and, for prepare, the speed-up
over single-threaded encoding measured in the same test, the cores it actually got (CPU
seconds over wall seconds) and its peak RSS growth.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from benchmarks.conftest import peak_rss_growth
from gptref.corpus.prepare import default_threads, prepare
from gptref.tokenizer import gpt2_tokenizer

N_DOCUMENTS, DOCUMENT_CHARS = 8, 2_000_000  # 16 MB of English prose
VERDICT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "the-verdict.txt"


def prose() -> str:
    """English prose to repeat: the-verdict.txt if present, else Python's pydoc topics."""
    if VERDICT.is_file():
        return VERDICT.read_text(encoding="utf-8")
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> list[Path]:
    """N_DOCUMENTS files of DOCUMENT_CHARS characters, each starting elsewhere in the prose."""
    text = prose()
    folder = tmp_path_factory.mktemp("bench_texts")
    paths = []
    for i in range(N_DOCUMENTS):
        start = i * len(text) // N_DOCUMENTS
        doc = (text[start:] + text * (DOCUMENT_CHARS // len(text) + 1))[:DOCUMENT_CHARS]
        path = folder / f"doc{i}.txt"
        path.write_text(doc, encoding="utf-8")
        paths.append(path)
    return paths


def single_thread_encode(texts: list[str]) -> int:
    enc = gpt2_tokenizer()
    return sum(len(enc.encode_ordinary(t)) for t in texts)


def record(benchmark, tokens: int, load_before: tuple[float, ...], **extra) -> None:
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update(
        tokens=tokens,
        tokens_per_s=tokens / seconds,
        characters=N_DOCUMENTS * DOCUMENT_CHARS,
        loadavg_before=list(load_before),
        loadavg_after=list(os.getloadavg()),
        cpu_count=os.cpu_count(),
        **extra,
    )


def test_bench_encode_ordinary_single_thread(benchmark, documents):
    """The baseline: tiktoken's encode_ordinary on one thread, texts already in memory."""
    texts = [p.read_text(encoding="utf-8") for p in documents]
    gpt2_tokenizer()
    load = os.getloadavg()
    tokens = benchmark.pedantic(single_thread_encode, (texts,), rounds=3, warmup_rounds=1)
    record(benchmark, tokens, load)


def test_bench_encode_ordinary_batch(benchmark, documents):
    """tiktoken's own parallel API (encode_ordinary_batch, in memory, Python lists out)."""
    texts = [p.read_text(encoding="utf-8") for p in documents]
    enc, threads = gpt2_tokenizer(), default_threads()
    load = os.getloadavg()
    out = benchmark.pedantic(
        enc.encode_ordinary_batch, (texts,), {"num_threads": threads}, rounds=3, warmup_rounds=1
    )
    record(benchmark, sum(map(len, out)), load, threads=threads)


@pytest.mark.parametrize("threads", [1, None])
def test_bench_prepare(benchmark, documents, tmp_path, threads):
    """prepare from the files to a fresh directory each round (hash pass, streamed exact
    pieces, parallel encoding, uint16 writes, manifest); ratio to single-threaded
    encode_ordinary timed in the same test."""
    texts = [p.read_text(encoding="utf-8") for p in documents]
    single = []
    for _ in range(2):
        t0 = time.perf_counter()
        single_thread_encode(texts)
        single.append(time.perf_counter() - t0)
    del texts
    rounds = iter(range(100))

    def fresh_dir():
        return (documents, tmp_path / f"out{next(rounds)}"), {
            "num_threads": threads,
            "progress": False,
            "say": lambda _: None,
        }

    args, kwargs = fresh_dir()
    # the cores this process got: CPU seconds over wall seconds (other jobs take the rest)
    wall, cpu = time.perf_counter(), time.process_time()
    result, growth = peak_rss_growth(lambda: prepare(*args, **kwargs))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    m = result.manifest
    tokens = m["train"]["tokens"] + m["val"]["tokens"]
    load = os.getloadavg()
    benchmark.pedantic(prepare, setup=fresh_dir, rounds=3, warmup_rounds=0)
    record(
        benchmark,
        tokens,
        load,
        threads=threads or default_threads(),
        single_thread_encode_seconds_same_run=min(single),
        speedup_over_single_thread_encode=min(single) / benchmark.stats.stats.median,
        peak_rss_growth_bytes=growth,
        cores_used=cpu / wall,
        corpus_bytes=sum(p.stat().st_size for p in documents),
    )
