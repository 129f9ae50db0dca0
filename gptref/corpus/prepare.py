"""The corpus writer (``gptref prepare``): text files -> ``train.bin`` / ``val.bin`` (uint16
GPT-2 ids) + ``manifest.json``; the reader is ``gptref.corpus.tokens.PreparedCorpus``.

For corpora larger than memory: every file is streamed twice in bounded blocks (once to
hash and count it, once to tokenize it), never held whole, and the tokens are appended to
the output files as they come. ``gptref train --data DIR`` then memory-maps them
(``gptref.corpus.tokens.TokenFile``).

**Split rule (per document).** Each ``--text`` file is one document. Its characters
``[0, k)``, ``k = int(train_ratio * n_chars)``, go to ``train.bin`` and ``[k, n_chars)`` to
``val.bin``: the book's ``split`` (characters first, then tokenize each part), applied per
document, so a one-file corpus gives exactly the book's (and ``gptref train --text``'s) two
token sequences. Each part is tokenized as ``gptref.data.tokenize`` does (a literal
``<|endoftext|>`` in the text becomes id 50256), and the parts of consecutive documents are
separated by ``<|endoftext|>``.

**Exact pieces.** A large document is tokenized in pieces of about ``piece_chars``
characters, cut only where the tokens cannot change (``exact_pieces``), so the output is
token for token the tokenization of each whole part, whatever the piece size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gptref._check import check_int, check_number
from gptref._io import atomic_write_json, exclusive, fsync_dir, fsync_file, writing
from gptref._owned import Exists, Kind, claim_dir, locked_by_gptref, no_links, read_marker, remove
from gptref.corpus.tokens import (
    FORMAT,
    MANIFEST,
    MAX_UNCUT,
    SPLITS,
    VERSION,
    file_sha256,
    read_manifest,
    text_blocks,
    tokenizer_sha256,
)
from gptref.tokenizer import ENDOFTEXT, ENDOFTEXT_ID, N_VOCAB, gpt2_tokenizer

SPLIT_RULE = "per-document-characters"
SPLIT_DESCRIPTION = (
    "each source file is one document; its characters [0, k), k = int(train_ratio * n_chars), "
    "go to train.bin and the rest to val.bin (gptref.data.split, per document); each part is "
    "tokenized as gptref.data.tokenize (a literal <|endoftext|> is id 50256); the parts of "
    "consecutive documents are separated by <|endoftext|> (50256)"
)
# ~64K tokens per tokenizer call: big enough to amortize the call, small enough to bound memory
PIECE_CHARS = 1 << 18
_TMP_PREFIX = ".prepare-tmp-"
LOCK = ".lock"
_OWN = (LOCK, MANIFEST, *(f"{s}.bin" for s in SPLITS))  # what prepare writes, locks, replaces


def is_prepared(directory: Path) -> bool:
    """Whether ``directory`` holds a prepared corpus: its manifest (a regular file, not a
    link) is of gptref's token format; or, the manifest damaged or not written yet (a
    prepare killed between its renames removes it first), nothing but prepare's own files
    and the lock file of a gptref prepare."""
    manifest = read_marker(directory / MANIFEST)
    if manifest is not None and manifest.get("format") == FORMAT:
        return True
    names = os.listdir(directory)
    return locked_by_gptref(directory / LOCK) and all(n in _OWN or KIND.leftover(n) for n in names)


# what a prepared corpus is, to the ownership rule (gptref._owned): a killed prepare leaves
# its lock and temporary files, which make no folder someone else's
KIND = Kind("a prepared corpus", is_prepared,
            lambda name: name == LOCK or name.startswith((_TMP_PREFIX, MANIFEST + ".tmp-")))  # fmt: skip

# A cut point p: text[p] is ASCII whitespace and text[p-1] is not whitespace. GPT-2's
# pre-tokenizer regex has no look-behind, and none of its alternatives that can end in a
# non-space character can go on into whitespace, so a pre-token always ends at p; the
# pre-tokens after p depend only on text[p:] and those before p never look past p.
# Python's \S excludes a superset of Unicode White_Space, so (?<=\S) is safe.
_CUT = re.compile(r"(?<=\S)[ \t\n\r]")


def exact_pieces(
    blocks: Iterable[str], piece_chars: int = PIECE_CHARS
) -> Iterator[tuple[str, bool]]:
    """Consecutive blocks of one text -> (piece, eot_after) pairs whose tokens, joined with
    50256 after each ``eot_after`` piece, are exactly ``tokenize("".join(blocks))``.

    Pieces end at a literal ``<|endoftext|>`` (dropped from the text, ``eot_after=True``)
    or at the last cut point (see ``_CUT``) within ``piece_chars`` characters; a stretch
    with no cut point at all (e.g. a very long run without whitespace) becomes one longer piece.
    """
    if piece_chars < 1:
        raise ValueError(f"exact_pieces: piece_chars must be >= 1, got {piece_chars}")
    buf = ""
    for block in blocks:
        buf += block
        buf, out = _cut(buf, piece_chars, final=False)
        yield from out
    yield from _cut(buf, piece_chars, final=True)[1]


def _cut(buf: str, n: int, *, final: bool) -> tuple[str, list[tuple[str, bool]]]:
    """-> (the text not yet cut, pieces); without ``final``, keeps what more text could change."""
    pieces, start, eot = [], 0, buf.find(ENDOFTEXT)
    while True:
        if eot != -1 and eot < start:
            eot = buf.find(ENDOFTEXT, start)
        if eot != -1 and eot <= start + n:
            pieces.append((buf[start:eot], True))
            start = eot + len(ENDOFTEXT)
            continue
        if len(buf) - start <= n:  # short enough: only the end of the text may cut it
            break
        limit = start + n
        last = None
        for lo in (max(start + 1, limit - 1024), start + 1):  # the common case looks back 1 KB
            for last in _CUT.finditer(buf, lo, limit + 1):  # noqa: B007
                pass
            if last is not None:
                break
        if last is None:  # none within n characters: the first one after
            last = _CUT.search(buf, limit + 1, eot if eot != -1 else len(buf))
        if last is None:
            if eot != -1:
                pieces.append((buf[start:eot], True))
                start = eot + len(ENDOFTEXT)
                continue
            break
        pieces.append((buf[start : last.start()], False))
        start = last.start()
    rest = buf[start:]
    if final:
        pieces, rest = [*pieces, (rest, False)], ""
    longest = max([len(p) for p, _ in pieces] + [len(rest)])
    if longest > MAX_UNCUT:  # tiktoken would spend minutes on it, or abort the process
        raise UncuttableText(
            f"more than {MAX_UNCUT:,} characters with no whitespace to cut at ({longest:,}); "
            "break the text into lines"
        )
    return rest, pieces


class UncuttableText(ValueError):
    """A stretch of text longer than ``MAX_UNCUT`` with nowhere to cut it exactly."""


@dataclass(frozen=True)
class Source:
    """One --text file as the manifest records it."""

    path: str
    bytes: int
    characters: int
    sha256: str


def scan_source(path: str | Path, on_bytes: Callable[[int], Any] | None = None) -> Source:
    """A text file -> its size, character count and SHA-256 (one streamed pass)."""
    digest = hashlib.sha256()
    characters = sum(len(text) for text in text_blocks(Path(path), digest, on_bytes))
    return Source(
        str(Path(path).resolve()), Path(path).stat().st_size, characters, digest.hexdigest()
    )


def _parts(source: Source, train_ratio: float) -> Iterator[tuple[str, Iterator[str]]]:
    """-> ("train", blocks of the first k characters), ("val", blocks of the rest), streamed
    from one read of the file (consume each before asking for the next)."""
    digest = hashlib.sha256()
    blocks = text_blocks(Path(source.path), digest)
    k, carry = int(train_ratio * source.characters), []

    def head() -> Iterator[str]:
        remaining = k
        for text in blocks:
            if len(text) < remaining:
                remaining -= len(text)
                yield text
            else:
                yield text[:remaining]
                carry.append(text[remaining:])
                return

    def tail() -> Iterator[str]:  # runs after head() is exhausted, so carry is set
        yield from carry
        yield from blocks

    yield "train", head()
    yield "val", tail()
    if digest.hexdigest() != source.sha256:
        raise ValueError(
            f"{source.path}: it changed while gptref prepare read it; run prepare again"
        )


def default_threads() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class PrepareResult(NamedTuple):
    manifest: dict[str, Any]
    skipped: bool  # the directory was already up to date
    seconds: float


def prepare(
    texts: Sequence[str | Path],
    out: str | Path,
    *,
    train_ratio: float = 0.9,
    num_threads: int | None = None,
    piece_chars: int = PIECE_CHARS,
    progress: bool = True,
    say: Callable[[str], None] = print,
    overwrite: bool = False,
) -> PrepareResult:
    """Tokenize ``texts`` into ``out``: train.bin, val.bin (uint16 little-endian) and
    manifest.json -> (manifest, skipped, seconds). Writes the directory ``out``: new, empty,
    or a prepared corpus (never another folder: ``gptref._owned``).

    Skips, with one line to ``say``, when ``out``'s manifest already records these sources
    (by SHA-256), this split and this tokenizer; token files that no longer match it are
    written again. A corpus of other sources or settings is replaced only with
    ``overwrite``. The token files are written under
    temporary names and renamed into place, and the manifest is written last, so an
    interrupted prepare leaves either the previous complete output or none.
    ``num_threads`` tokenizer threads (default: every CPU) encode pieces in parallel.
    """
    from time import perf_counter

    from tqdm.auto import tqdm

    start = perf_counter()
    if not texts:
        raise ValueError("prepare: no text files given; pass one or more")
    check_number(
        "prepare", "train_ratio", train_ratio, low=0, high=1, open_low=True, open_high=True,
        hint="; e.g. 0.9",
    )  # fmt: skip
    threads = default_threads() if num_threads is None else num_threads
    check_int("prepare", "num_threads", threads, low=1)
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise ValueError(f"prepare: {out} is a symbolic link to nothing; choose another output")
    if out.exists() and not out.is_dir():
        raise ValueError(f"prepare: {out} exists and is not a directory; choose another output")
    _claim(out, overwrite=True)  # before a lock file goes into someone else's folder

    sizes = []
    for path in map(Path, texts):  # the common mistakes, before any progress bar
        if not path.exists():
            raise ValueError(f"{path}: no such file")
        if not path.is_file():
            raise ValueError(f"{path}: is a directory or device, not a text file")
        sizes.append(path.stat().st_size)
    with tqdm(total=sum(sizes), desc="hashing", unit="B", unit_scale=True, leave=False,
              disable=not progress) as bar:  # fmt: skip
        sources = [scan_source(p, bar.update) for p in texts]
    settings = _settings(sources, train_ratio)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    busy = lambda owner: ValueError(f"prepare: {out} is being written by {owner}; wait for it")  # noqa: E731
    with exclusive(out / LOCK, busy):  # two prepares of one directory would mix their files
        existing = _claim(out, overwrite=True)  # again: another prepare may have ended
        intact = existing is not None and _intact(existing, out)
        if intact and _same_settings(existing, settings):
            t, v = existing["train"]["tokens"], existing["val"]["tokens"]
            say(f"gptref prepare: {out} is up to date ({t:,} train + {v:,} val tokens from "
                f"{len(sources)} file{'s' if len(sources) != 1 else ''}); nothing to do")  # fmt: skip
            return PrepareResult(existing, True, perf_counter() - start)
        if intact and not overwrite:  # a usable corpus of other texts: not lost unasked
            raise Exists(out, "a prepared corpus of other texts or settings")
        with writing(out, "the prepared corpus"):
            manifest = _write(out, sources, settings, train_ratio, threads, piece_chars, progress)
    return PrepareResult(manifest, False, perf_counter() - start)


def _claim(out: Path, *, overwrite: bool) -> dict[str, Any] | None:
    """``out`` may take a prepare (``gptref._owned``) -> the manifest of the corpus there, or
    None. Another folder, or links among the files prepare writes: ValueError."""
    if out.is_dir():
        no_links(out, _OWN)
    return read_manifest(out) if claim_dir(out, KIND, overwrite=overwrite) else None


def _write(out, sources, settings, train_ratio, threads, piece_chars, progress) -> dict[str, Any]:
    """Tokenize into temporary files, rename them into place, write the manifest last."""
    # left by a prepare that was killed (we hold the lock: no live writer owns them)
    remove(out, [p.name for p in [*out.glob(_TMP_PREFIX + "*"), *out.glob(MANIFEST + ".tmp-*")]])
    tmp = {split: out / f"{_TMP_PREFIX}{os.getpid()}-{split}.bin" for split in SPLITS}
    try:
        outputs = _tokenize_into(sources, train_ratio, tmp, threads, piece_chars, progress)
        for path in tmp.values():
            fsync_file(path)
        # the old manifest goes first: token files without a manifest never count as prepared
        (out / MANIFEST).unlink(missing_ok=True)
        for split in SPLITS:
            tmp[split].replace(out / outputs[split]["file"])
        fsync_dir(out)
        fingerprint = hashlib.sha256(
            json.dumps({s: outputs[s]["sha256"] for s in SPLITS}, sort_keys=True).encode()
        ).hexdigest()
        manifest = {**settings, **outputs, "documents": len(sources), "sha256": fingerprint}
        atomic_write_json(out / MANIFEST, manifest)
    finally:
        for path in tmp.values():
            with contextlib.suppress(OSError):  # the error that brought us here matters more
                path.unlink(missing_ok=True)
    return manifest


def _settings(sources: Sequence[Source], train_ratio: float) -> dict[str, Any]:
    """The manifest's inputs: what decides the tokens."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "dtype": "uint16",
        "byteorder": "little",
        "tokenizer": {
            "name": "gpt2",
            "sha256": tokenizer_sha256(),
            "n_vocab": N_VOCAB,
            "endoftext_id": ENDOFTEXT_ID,
        },  # fmt: skip
        "split": {"rule": SPLIT_RULE, "train_ratio": train_ratio, "description": SPLIT_DESCRIPTION},
        "sources": [dict(vars(s)) for s in sources],
    }


def _same_settings(existing: dict[str, Any] | None, settings: dict[str, Any]) -> bool:
    """Same settings, same source contents in the same order (paths may differ): the corpus
    ``existing`` records is the one these settings make."""
    try:
        for key, value in settings.items():
            if key == "sources":
                same = [(s["sha256"], s["bytes"]) for s in existing["sources"]] == [
                    (s["sha256"], s["bytes"]) for s in value
                ]
            else:
                same = existing[key] == value
            if not same:
                return False
    except (KeyError, TypeError):
        return False
    return True


def _intact(existing: dict[str, Any], out: Path) -> bool:
    """Token files of the sizes and SHA-256 the manifest records (regular files, not links):
    a usable corpus (a flipped byte is not)."""
    try:
        return all(
            (out / s_file).is_file()
            and not (out / s_file).is_symlink()
            and (out / s_file).stat().st_size == 2 * existing[s]["tokens"]
            and file_sha256(out / s_file) == existing[s]["sha256"]
            for s, s_file in ((s, f"{s}.bin") for s in SPLITS)
        )
    except (KeyError, TypeError, OSError):
        return False


def _tokenize_into(
    sources: Sequence[Source],
    train_ratio: float,
    tmp: dict[str, Path],
    threads: int,
    piece_chars: int,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Stream every source's parts, as exact pieces, through a pool of tokenizer threads
    into the files ``tmp``, in order -> {split: {file, tokens, sha256}}."""
    from tqdm.auto import tqdm

    enc = gpt2_tokenizer()
    eot = np.array([ENDOFTEXT_ID], dtype="<u2").tobytes()
    digests = {s: hashlib.sha256() for s in SPLITS}
    counts = dict.fromkeys(SPLITS, 0)

    def encode(text: str) -> bytes:
        # encode_ordinary (pieces hold no literal <|endoftext|>), as a numpy buffer rather
        # than a list of Python ints; tiktoken releases the GIL while it encodes
        return enc.encode_to_numpy(text, disallowed_special=()).astype("<u2").tobytes()

    pending: deque[tuple[str, Future[bytes] | None, bool]] = deque()
    with (
        tqdm(
            total=sum(s.characters for s in sources),
            unit="char",
            unit_scale=True,
            desc="tokenizing",
            disable=not progress,
        ) as bar,
        open(tmp["train"], "wb") as train_file,
        open(tmp["val"], "wb") as val_file,
        ThreadPoolExecutor(threads) as pool,
    ):
        files = {"train": train_file, "val": val_file}

        def write(keep: int) -> None:  # in order, until at most `keep` pieces are in flight
            while len(pending) > keep:
                split, future, eot_after = pending.popleft()
                for data in (future.result() if future else b"", eot if eot_after else b""):
                    files[split].write(data)
                    digests[split].update(data)
                    counts[split] += len(data) // 2

        for i, source in enumerate(sources):
            for split, blocks in _parts(source, train_ratio):
                try:
                    for piece, eot_after in exact_pieces(blocks, piece_chars):
                        future = pool.submit(encode, piece) if piece else None
                        pending.append((split, future, eot_after))
                        bar.update(len(piece) + len(ENDOFTEXT) * eot_after)
                        write(keep=2 * threads)
                except UncuttableText as e:
                    raise ValueError(f"{source.path}: {e}") from None
                if i < len(sources) - 1:  # the document separator
                    pending.append((split, None, True))
        write(keep=0)
    return {
        s: {"file": f"{s}.bin", "tokens": counts[s], "sha256": digests[s].hexdigest()}
        for s in SPLITS
    }
