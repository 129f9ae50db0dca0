"""gptref prepare and memory-mapped token files: exact pieces, the split rule, idempotent and
atomic output, memmapped loaders equal to the in-memory ones, bounded memory, `train --data`,
and every user error as one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import gptref.corpus.prepare as prepare_module
from gptref._owned import Exists
from gptref.cli.main import main
from gptref.corpus.prepare import exact_pieces, prepare
from gptref.corpus.tokens import PreparedCorpus, TokenFile
from gptref.data import batches, chunk, split, tokenize
from gptref.loader import create_dataloader
from gptref.tokenizer import ENDOFTEXT, ENDOFTEXT_ID, gpt2_tokenizer
from tests.helpers import run_error

VOCABULARY = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "it's", "we'll",
              "3.14", "2026", "naïve", "café", "Zürich", "(see", "below)", "—", "end.", "well,",
              "Hello!", "x=1;", "\t", "don't", "ENDNOTE", "--", "ok?"]  # fmt: skip
SEPARATORS = [" "] * 12 + ["  ", "\n", "\n\n", " \n", "\n\n\n", ". ", ", "]


def make_document(n_chars: int, seed: int) -> str:
    """About n_chars of random words and whitespace from a fixed vocabulary (seeded)."""
    rng = random.Random(seed)
    n = n_chars // 5
    words, seps = rng.choices(VOCABULARY, k=n), rng.choices(SEPARATORS, k=n)
    return "".join(w + s for w, s in zip(words, seps, strict=True))[:n_chars]


def expected_tokens(docs: list[str], train_ratio: float) -> dict[str, torch.Tensor]:
    """The split rule restated in memory: each document's character split, each part
    tokenized whole, parts of consecutive documents joined by <|endoftext|>."""
    eot = torch.tensor([ENDOFTEXT_ID])
    out = {}
    for i, name in enumerate(("train", "val")):
        parts = [tokenize(split(doc, train_ratio)[i]) for doc in docs]
        pieces = [p for part in parts for p in (part, eot)][:-1]
        out[name] = torch.cat(pieces)
    return out


@pytest.fixture(scope="module")
def docs() -> list[str]:
    """~4.3 MB in three documents of very different sizes; one holds a literal <|endoftext|>."""
    big = make_document(3_000_000, seed=1)
    mid = make_document(1_000_000, seed=2)
    small = make_document(150_000, seed=3) + ENDOFTEXT + make_document(50_000, seed=4)
    return [big, mid, small]


@pytest.fixture(scope="module")
def sources(docs, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("texts")
    paths = [folder / f"doc{i}.txt" for i in range(len(docs))]
    for path, doc in zip(paths, docs, strict=True):
        path.write_text(doc, encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory) -> Path:
    """The corpus prepared with small pieces (many cuts inside each document)."""
    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare(sources, out, piece_chars=1 << 14, num_threads=2, progress=False)
    return out


@pytest.fixture(scope="module")
def expected(docs) -> dict[str, torch.Tensor]:
    return expected_tokens(docs, 0.9)


# ---------------------------------------------------------------- exact pieces

TRICKY = ["a", "Z", "é", "中", "7", " ", "  ", "\n", "\n\n", "\t", "\r", "\x1c", "\xa0", "\u3000",
          "'", "'s", "'ll", ".", "!", "<|endoftext|>", "<|endo", "ftext|>"]  # fmt: skip


@given(
    text=st.lists(st.sampled_from(TRICKY), max_size=60).map("".join),
    piece_chars=st.integers(1, 16),
    cuts=st.lists(st.integers(0, 200), max_size=4),
)
@example(text="a\n\nb", piece_chars=3, cuts=[])
@example(text="x<|endoftext|>y  z", piece_chars=1, cuts=[4])
def test_exact_pieces_tokenize_exactly_like_the_whole_text(text, piece_chars, cuts):
    """Whatever the piece size and the block boundaries, the pieces' tokens (with 50256
    after each eot_after piece) equal tokenize(text)."""
    bounds = sorted({min(c, len(text)) for c in cuts})
    blocks = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    enc, got = gpt2_tokenizer(), []
    for piece, eot_after in exact_pieces(blocks, piece_chars):
        assert ENDOFTEXT not in piece, (text, piece)
        got += enc.encode_ordinary(piece) + [ENDOFTEXT_ID] * eot_after
    assert got == tokenize(text).tolist(), (text, piece_chars, blocks)


def test_a_paragraph_cut_would_change_the_tokens_but_exact_pieces_does_not():
    """Why the cut rule matters: "a\\n\\nb" is [64, 198, 198, 65] whole but [64, 628, 65]
    when cut after the paragraph break ("\\n\\n" becomes one token); exact_pieces cuts
    before the whitespace instead."""
    assert tokenize("a\n\nb").tolist() == [64, 198, 198, 65]
    assert tokenize("a\n\n").tolist() + tokenize("b").tolist() == [64, 628, 65]
    assert list(exact_pieces(["a\n\nb"], 1)) == [("a", False), ("\n\nb", False)]


def test_exact_pieces_are_bounded_where_the_text_allows(docs):
    """On prose, no piece exceeds piece_chars (a cut point is never far)."""
    lengths = [len(p) for p, _ in exact_pieces([docs[1]], 4096)]
    assert max(lengths) <= 4096 and sum(lengths) == len(docs[1]), max(lengths)


# ---------------------------------------------------------------- the split rule


def test_prepared_tokens_equal_the_in_memory_tokenize_of_each_part(prepared, expected):
    """train.bin / val.bin hold, token for token, each document's character split tokenized
    whole, documents separated by <|endoftext|> (in-memory restatement: expected_tokens)."""
    corpus = PreparedCorpus.open(prepared)
    for name in ("train", "val"):
        got = corpus.tokens(name).ids
        assert got.dtype == torch.uint16
        assert torch.equal(got.long(), expected[name]), (name, got.numel(), expected[name].numel())
        assert corpus.manifest[name]["tokens"] == expected[name].numel()
    assert corpus.manifest["split"]["rule"] == "per-document-characters"
    assert corpus.manifest["split"]["train_ratio"] == 0.9


def test_one_document_gives_exactly_the_books_split(verdict_text, tmp_path):
    """A one-file corpus: train.bin == tokenize(split(text, 0.9)[0]), val.bin likewise,
    the two sequences `gptref train --text` trains on."""
    path = tmp_path / "verdict.txt"
    path.write_text(verdict_text, encoding="utf-8")
    prepare([path], tmp_path / "out", piece_chars=512, progress=False)
    corpus = PreparedCorpus.open(tmp_path / "out")
    train_text, val_text = split(verdict_text, 0.9)
    assert torch.equal(corpus.tokens("train").ids.long(), tokenize(train_text))
    assert torch.equal(corpus.tokens("val").ids.long(), tokenize(val_text))


def test_tokens_do_not_depend_on_piece_size_or_threads(sources, tmp_path):
    """Pieces of 1 KB on one thread and of the default size on four threads: same files."""
    one = prepare(sources[2:], tmp_path / "a", piece_chars=1024, num_threads=1, progress=False)
    four = prepare(sources[2:], tmp_path / "b", num_threads=4, progress=False)
    assert one.manifest["sha256"] == four.manifest["sha256"]
    assert (tmp_path / "a" / "train.bin").read_bytes() == (
        tmp_path / "b" / "train.bin"
    ).read_bytes()


def test_encoder_matches_tiktokens_encode_ordinary_batch(docs):
    """The numpy-buffer encoder prepare uses equals Encoding.encode_ordinary_batch."""
    enc = gpt2_tokenizer()
    texts = [docs[2][:5000], "it's 3.14 — naïve\n\n", ""]
    want = enc.encode_ordinary_batch(texts, num_threads=2)
    got = [enc.encode_to_numpy(t, disallowed_special=()).tolist() for t in texts]
    assert got == want


# ---------------------------------------------------------------- idempotent and atomic


def test_prepare_skips_when_up_to_date_and_redoes_changed_inputs(sources, tmp_path, capsys):
    """A second prepare of the same files skips (one line, files untouched); a changed
    source or another --train-ratio make it prepare again with overwrite=True (without it,
    the earlier corpus is kept and the call refused: Exists); a deleted token file makes it
    prepare again (a damaged corpus is repaired unasked)."""
    src = tmp_path / "doc.txt"
    src.write_text(make_document(20_000, seed=9), encoding="utf-8")
    out = tmp_path / "out"
    first = prepare([src, sources[2]], out, progress=False)
    stamp = (out / "train.bin").stat().st_mtime_ns
    capsys.readouterr()
    again = prepare([src, sources[2]], out, progress=False)
    assert again.skipped and not first.skipped
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "is up to date" in said[0], said
    assert (out / "train.bin").stat().st_mtime_ns == stamp
    src.write_text(make_document(20_000, seed=10), encoding="utf-8")
    with pytest.raises(Exists, match="holds a prepared corpus of other texts"):
        prepare([src, sources[2]], out, progress=False)
    assert (out / "train.bin").stat().st_mtime_ns == stamp
    changed = prepare([src, sources[2]], out, progress=False, overwrite=True)
    assert not changed.skipped and changed.manifest["sha256"] != first.manifest["sha256"]
    with pytest.raises(Exists):
        prepare([src, sources[2]], out, train_ratio=0.8, progress=False)
    assert not prepare([src, sources[2]], out, train_ratio=0.8, progress=False, overwrite=True).skipped  # fmt: skip
    (out / "val.bin").unlink()
    assert not prepare([src, sources[2]], out, train_ratio=0.8, progress=False).skipped
    assert PreparedCorpus.open(out).train_ratio == 0.8


def test_an_interrupted_prepare_leaves_the_previous_output_whole(sources, tmp_path, monkeypatch):
    """Ctrl-C in the middle of a prepare: the previous train.bin / val.bin / manifest stay
    as they were, no temporary file is left, and a fresh directory gets no output at all."""
    out = tmp_path / "out"
    before = prepare(sources[2:], out, progress=False).manifest
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = prepare_module.exact_pieces, []

    def interrupted(blocks, piece_chars):
        for piece in real(blocks, piece_chars):
            calls.append(piece)
            if len(calls) == 5:
                raise KeyboardInterrupt
            yield piece

    monkeypatch.setattr(prepare_module, "exact_pieces", interrupted)
    for target in (out, tmp_path / "fresh"):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            prepare(sources[1:], target, piece_chars=4096, progress=False, overwrite=True)
    # (.lock, prepare's lock file, is removed when the lock is released)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert PreparedCorpus.open(out).manifest == before
    assert [p.name for p in (tmp_path / "fresh").iterdir()] == []


# ---------------------------------------------------------------- memory-mapped loaders


def test_token_file_windows_are_views_of_the_file(prepared, expected):
    """chunk(TokenFile) gives uint16 views into the mapped file (no copy); their values
    are chunk's int64 windows of the in-memory ids; the dataset hands out int64."""
    tokens = TokenFile(prepared / "train.bin")
    inputs, targets = chunk(tokens, 256, 128)
    want_inputs, want_targets = chunk(expected["train"], 256, 128)
    assert inputs.dtype == torch.uint16
    assert inputs.untyped_storage().data_ptr() == tokens.ids.untyped_storage().data_ptr()
    assert torch.equal(inputs.long(), want_inputs) and torch.equal(targets.long(), want_targets)
    x, y = next(batches(inputs, targets, 4, shuffle=True, seed=3))
    wx, wy = next(batches(want_inputs, want_targets, 4, shuffle=True, seed=3))
    assert x.dtype == torch.int64 and torch.equal(x, wx) and torch.equal(y, wy)


@pytest.mark.parametrize("seed", [None, 7])
def test_memmapped_loader_yields_the_in_memory_batches(prepared, expected, seed):
    """create_dataloader over train.bin and over the in-memory int64 ids: the same batches,
    in book mode (same global RNG state) and seeded mode."""
    kwargs = dict(batch_size=8, max_length=256, stride=256, shuffle=True, drop_last=True, seed=seed)
    torch.manual_seed(123)
    mapped = list(create_dataloader(TokenFile(prepared / "train.bin"), **kwargs))
    torch.manual_seed(123)
    in_memory = list(create_dataloader(expected["train"], **kwargs))
    assert len(mapped) == len(in_memory) > 100
    for i, ((x, y), (wx, wy)) in enumerate(zip(mapped, in_memory, strict=True)):
        assert x.dtype == y.dtype == torch.int64, i
        assert torch.equal(x, wx) and torch.equal(y, wy), f"batch {i} differs (seed={seed})"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def test_peak_memory_while_iterating_a_token_file_is_bounded(tmp_path):
    """One epoch over a 32 MB token file (16M tokens; 128 MB as int64): the process's
    anonymous memory grows by about a batch, not with the file, and the peak resident set
    (which also counts the file's mapped pages) stays far below an int64 copy."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    path = tmp_path / "tokens.bin"
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for _ in range(16):  # written in 2 MB slices: never 32 MB in memory here either
            rng.integers(0, 50257, 1 << 20, dtype=np.uint16).tofile(f)
    n_tokens = path.stat().st_size // 2
    loader = create_dataloader(TokenFile(path), 16, 256, 256, shuffle=True, seed=0)
    Path("/proc/self/clear_refs").write_text("5")
    peak_before, anon_before = _status_kib("VmHWM"), _status_kib("RssAnon")
    anon_peak, seen = anon_before, 0
    for i, (x, _) in enumerate(loader):
        seen += x.numel()
        if i % 64 == 0:
            anon_peak = max(anon_peak, _status_kib("RssAnon"))
    peak_growth = (_status_kib("VmHWM") - peak_before) * 1024
    anon_growth = (anon_peak - anon_before) * 1024
    int64_bytes = 8 * n_tokens
    assert seen > 0.99 * n_tokens
    assert anon_growth < 16 << 20, f"anonymous memory grew {anon_growth / 2**20:.1f} MiB"
    assert peak_growth < int64_bytes / 2, (
        f"peak RSS grew {peak_growth / 2**20:.1f} MiB over a file of {n_tokens:,} tokens "
        f"({int64_bytes / 2**20:.0f} MiB as int64)"
    )


def test_a_dataset_over_a_token_file_pickles_as_its_path(prepared):
    """A spawned DataLoader worker gets the file's path, not a copy of its tokens."""
    import pickle

    from gptref.loader import GPTDataset

    ds = GPTDataset(TokenFile(prepared / "train.bin"), None, 64, 64)
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000, len(blob)
    again = pickle.loads(blob)
    assert len(again) == len(ds) and torch.equal(again[5][0], ds[5][0])


# ---------------------------------------------------------------- gptref train --data

TINY = ["--preset", "tiny", "--context", "16", "--batch-size", "4", "--eval-freq", "2",
        "--eval-iter", "1", "--no-progress"]  # fmt: skip


def test_train_on_a_prepared_corpus_equals_train_on_its_text_and_resumes(tmp_path, capsys):
    """`train --data` on a prepared one-file corpus logs the very metrics of `train --text`
    on that file (the split rule is the book's); config.json records the manifest's
    fingerprint; --resume checks it; eval finds the data again."""
    text = tmp_path / "text.txt"
    text.write_text(make_document(30_000, seed=5), encoding="utf-8")
    data = tmp_path / "data"
    assert main(["prepare", "--text", str(text), "--out", str(data), "--no-progress"]) == 0
    assert main(["train", "--text", str(text), *TINY, "--max-steps", "4", "--out", str(tmp_path / "t")]) == 0  # fmt: skip
    assert main(["train", "--data", str(data), *TINY, "--max-steps", "4", "--out", str(tmp_path / "d")]) == 0  # fmt: skip
    assert (tmp_path / "d" / "metrics.jsonl").read_text() == (tmp_path / "t" / "metrics.jsonl").read_text()  # fmt: skip
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["data"]["sha256"] == PreparedCorpus.open(data).sha256
    assert config["data"]["prepared"] == str(data.resolve())
    capsys.readouterr()
    line = run_error(capsys, ["train", "--resume", str(tmp_path / "d"), "--no-progress"])
    assert f"pass --data {data.resolve()}" in line
    assert main(["train", "--data", str(data), "--resume", str(tmp_path / "d"), "--no-progress"]) == 0  # fmt: skip
    assert main(["eval", "--checkpoint", str(tmp_path / "d"), "--json"]) == 0


# ---------------------------------------------------------------- errors


def test_cli_errors_are_one_line_naming_the_value_and_the_fix(capsys, tmp_path, prepared):
    """Missing file, non-UTF-8 file, bad ratio, --out on a file, a directory that was never
    prepared, a truncated token file, --data with --text or --train-ratio."""
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9 au lait")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    cut = tmp_path / "cut"
    prepare([a_file], cut, progress=False)
    with open(cut / "train.bin", "ab") as f:
        f.write(b"\0")
    p = ["prepare", "--no-progress"]
    cases = [
        (
            [*p, "--text", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o")],
            "none.txt: no such file",
        ),  # fmt: skip
        (
            [*p, "--text", str(bad), "--out", str(tmp_path / "o")],
            "not UTF-8 text (byte 0xe9 at offset 3); convert it",
        ),  # fmt: skip
        (
            [*p, "--text", str(a_file), "--out", str(tmp_path / "o"), "--train-ratio", "1.5"],
            "--train-ratio must be in (0, 1), got 1.5",
        ),  # fmt: skip
        ([*p, "--text", str(a_file), "--out", str(a_file)], "exists and is not a directory"),
        (["train", "--data", str(tmp_path / "nowhere")], "no such directory; run `gptref prepare"),
        (["train", "--data", str(empty)], "no readable manifest.json"),
        (["train", "--data", str(cut)], "it was changed or truncated"),
        (
            ["train", "--data", str(prepared), "--text", str(a_file)],
            "--data and --text exclude each other",
        ),  # fmt: skip
        (
            ["train", "--data", str(prepared), "--train-ratio", "0.5"],
            "gptref prepare --train-ratio X",
        ),  # fmt: skip
    ]
    for argv, message in cases:
        line = run_error(capsys, argv)
        assert message in line, (argv, line)
    assert not (tmp_path / "o").exists()
