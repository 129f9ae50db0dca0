"""Training tokens: a corpus is something with a name, a fingerprint and two token splits.

Two kinds sit behind the one protocol (``Corpus``):

- ``TextCorpus``: text in memory (``--text`` files, or the built-in corpus), split the
  book's way on demand: characters first (``split``), then each part tokenized;
- ``PreparedCorpus``: a directory ``gptref prepare`` wrote (``train.bin``, ``val.bin``,
  ``manifest.json``), opened and checked; its splits are ``TokenFile``s, memory-mapped
  uint16 ids that are never read whole.

The on-disk token format (``FORMAT``, the manifest keys, ``tokenizer_sha256``) is defined
here, beside its reader; ``gptref.corpus.prepare`` is the writer.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import platform
import re
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from gptref.tokenizer import (
    ENCODER_JSON_SHA256,
    ENDOFTEXT,
    ENDOFTEXT_ID,
    N_VOCAB,
    VOCAB_BPE_SHA256,
)

FORMAT, VERSION = "gptref-tokens", 1
MANIFEST, SPLITS = "manifest.json", ("train", "val")
BLOCK_BYTES = 1 << 20  # read size of text_blocks
MAX_UNCUT = 1 << 24  # the longest run without whitespace gptref tokenizes (16M characters)


class Corpus(Protocol):
    """What training needs of its data; ``record()`` is what a run's config.json keeps."""

    name: str  # what the data is, for the first line of output

    @property
    def sha256(self) -> str: ...  # fingerprint: a resumed run must train on the same data

    def splits(self) -> tuple[Any, Any]: ...  # (train ids, val ids): tensors or TokenFiles

    def record(self) -> dict[str, Any]: ...  # where to find the data again, and its fingerprint


class TokenFile:
    """A memory-mapped file of uint16 little-endian token ids (``gptref prepare``'s
    train.bin / val.bin): ``.ids`` is a uint16 (N,) tensor over an ``np.memmap``.

    Nothing is read up front: the OS reads pages as windows touch them (they count as
    file-backed, reclaimable resident memory). ``chunk``, ``GPTDataset`` and
    ``create_dataloader`` take it in place of ids; each window they hand out becomes
    int64 on its own, so memory does not grow with the file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
        except OSError:
            raise ValueError(f"{self.path}: no such token file; run `gptref prepare`") from None
        if size % 2:
            raise ValueError(
                f"{self.path}: {size} bytes is not a whole number of uint16 tokens; it is "
                "truncated or not a token file: run `gptref prepare` again"
            )
        if sys.byteorder != "little":
            raise ValueError(f"{self.path}: token files are little-endian; this machine is not")
        if size == 0:  # mmap cannot map an empty file
            self.ids = torch.zeros(0, dtype=torch.uint16)
        else:
            # copy-on-write: writable as torch expects, yet a write never reaches the file
            self.ids = torch.from_numpy(np.memmap(self.path, dtype="<u2", mode="c"))

    def __len__(self) -> int:
        return self.ids.numel()

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r}, {len(self):,} tokens)"

    def __reduce__(self):  # a DataLoader worker re-maps the file instead of copying it
        return TokenFile, (self.path,)


# ---------------------------------------------------------------- text in memory


@dataclass(frozen=True)
class TextCorpus:
    """Text split the book's way: its first ``int(train_ratio * len(text))`` characters for
    training, the rest for validation, each part tokenized (``gptref.data.split``)."""

    name: str
    text: str
    train_ratio: float = 0.9
    paths: tuple[str, ...] = ()  # the files it was read from (none: built in)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (train ids, val ids): int64 (N_train,), (N_val,)."""
        from gptref.data import split, tokenize  # data.py reads TokenFile: a real cycle

        if len(self.text) > MAX_UNCUT and re.search(rf"\S{{{MAX_UNCUT + 1}}}", self.text):
            raise ValueError(
                f"{self.name}: more than {MAX_UNCUT:,} characters without whitespace; the "
                "tokenizer would take minutes on them or abort: break the text into lines"
            )
        train_text, val_text = split(self.text, self.train_ratio)
        return tokenize(train_text), tokenize(val_text)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "texts": list(self.paths)}


def builtin_corpus(train_ratio: float = 0.9) -> TextCorpus:
    """The documentation topics that ship with every CPython (``pydoc_data.topics``):
    about 0.5 MB of English prose about Python, in sorted topic order."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    name = (
        f"the built-in corpus: Python {platform.python_version()}'s documentation topics "
        f"(pydoc_data.topics, {len(text):,} characters)"
    )
    return TextCorpus(name, text, train_ratio)


def text_blocks(
    path: Path, digest: Any = None, on_bytes: Callable[[int], Any] | None = None
) -> Iterator[str]:
    """-> the file's text in decoded blocks of ``BLOCK_BYTES``, feeding its bytes to ``digest``
    (a hashlib object, optional) and their count to ``on_bytes``; ValueError naming the file
    and the offset of the first byte that is not UTF-8, or why it cannot be read."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    try:
        if path.exists() and not path.is_dir() and not stat.S_ISREG(path.stat().st_mode):
            raise ValueError(
                f"{path}: not a regular file (a device, pipe or socket, which may never end); "
                "give a text file"
            )
        with open(path, "rb") as f:
            while True:
                data = f.read(BLOCK_BYTES)
                pending = decoder.getstate()[0]
                try:
                    text = decoder.decode(data, final=not data)
                except UnicodeDecodeError as e:
                    bad = (pending + data)[e.start]
                    utf16 = offset == 0 and (
                        data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\0" in data[:1024]
                    )
                    source = "utf-16" if utf16 else "latin1"
                    raise ValueError(
                        f"{path}: not UTF-8 text (byte 0x{bad:02x} at offset "
                        f"{offset - len(pending) + e.start}); convert it, e.g. "
                        f"`iconv -f {source} -t utf-8`"
                    ) from None
                if digest is not None:
                    digest.update(data)
                offset += len(data)
                if on_bytes is not None:
                    on_bytes(len(data))
                if text:
                    yield text
                if not data:
                    return
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a text file") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror})") from None


def read_text(path: str | Path) -> str:
    """-> the file's text, decoded as UTF-8; ValueError naming the file and the problem."""
    return "".join(text_blocks(Path(path)))


def text_corpus(paths: Sequence[str | Path] | None, train_ratio: float = 0.9) -> TextCorpus:
    """No paths -> the built-in corpus; one file -> its text unchanged (so the book's
    corpus reproduces the book); several -> their texts joined by ``<|endoftext|>``."""
    if not paths:
        return builtin_corpus(train_ratio)
    texts = [read_text(p) for p in paths]
    names = ", ".join(str(p) for p in paths)
    text = texts[0] if len(texts) == 1 else ENDOFTEXT.join(texts)
    resolved = tuple(str(Path(p).resolve()) for p in paths)
    return TextCorpus(f"{names} ({len(text):,} characters)", text, train_ratio, resolved)


# ---------------------------------------------------------------- prepared token files


def tokenizer_sha256() -> str:
    """Fingerprint of the GPT-2 tokenizer: its pinned BPE files, pre-tokenizer and specials."""
    from tiktoken_ext.openai_public import r50k_pat_str

    spec = {
        "name": "gpt2",
        "vocab_bpe_sha256": VOCAB_BPE_SHA256,
        "encoder_json_sha256": ENCODER_JSON_SHA256,
        "n_vocab": N_VOCAB,
        "pat_str": r50k_pat_str,
        "special_tokens": {ENDOFTEXT: ENDOFTEXT_ID},
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path, *, progress: bool = False, desc: str = "hashing") -> str:
    """SHA-256 of a file, streamed in ``BLOCK_BYTES`` blocks (with a progress bar)."""
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=desc, leave=False, disable=not progress) as bar:  # fmt: skip
        while block := f.read(BLOCK_BYTES):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """``directory/manifest.json`` as a dict; None when it is missing or not a JSON object."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


@dataclass(frozen=True)
class PreparedCorpus:
    """A directory written by ``gptref.corpus.prepare.prepare``, checked and opened for training."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(
        cls, path: str | Path, *, verify: bool = True, progress: bool = False
    ) -> PreparedCorpus:
        """-> the prepared corpus at ``path``; ValueError naming what is wrong and the fix.

        ``verify``: the token files' SHA-256 are checked against the manifest (streamed,
        ~0.5 s per GB here; a flipped byte would otherwise train silently)."""
        path = Path(path)
        fix = f"run `gptref prepare --text FILE ... --out {path}`"
        if not path.is_dir():
            raise ValueError(f"{path}: no such directory; {fix}")
        manifest = read_manifest(path)
        if manifest is None:
            raise ValueError(
                f"{path}: no readable {MANIFEST} (not prepared, or prepare was interrupted); {fix}"
            )
        if (manifest.get("format"), manifest.get("version")) != (FORMAT, VERSION):
            raise ValueError(
                f"{path}: format {manifest.get('format')!r} version "
                f"{manifest.get('version')!r}, this gptref reads {FORMAT!r} version {VERSION}; {fix}"
            )
        try:
            same_tokenizer = manifest["tokenizer"]["sha256"] == tokenizer_sha256()
            files = {s: (path / f"{s}.bin", int(manifest[s]["tokens"])) for s in SPLITS}
            manifest["split"]["train_ratio"], manifest["sha256"], manifest["documents"]  # noqa: B018
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: {MANIFEST} is incomplete or damaged; {fix}") from None
        if not same_tokenizer:
            raise ValueError(f"{path}: prepared with another tokenizer; {fix}")
        for file, tokens in files.values():
            size = file.stat().st_size if file.is_file() else None
            if size != 2 * tokens:
                raise ValueError(
                    f"{path}: {file.name} has {size} bytes, the manifest says {tokens} "
                    f"tokens ({2 * tokens} bytes); it was changed or truncated: {fix}"
                )
        if verify:
            for split, (file, _) in files.items():
                digest = file_sha256(file, progress=progress, desc=f"verifying {file.name}")
                if digest != manifest[split]["sha256"]:
                    raise ValueError(
                        f"{path}: {file.name} has SHA-256 {digest[:12]}..., the manifest says "
                        f"{str(manifest[split]['sha256'])[:12]}...; it was changed: {fix}"
                    )
        return cls(path, manifest)

    @property
    def name(self) -> str:
        m = self.manifest
        return (
            f"the prepared corpus {self.path} ({m['documents']} document"
            f"{'s' if m['documents'] != 1 else ''}, {m['train']['tokens']:,} train + "
            f"{m['val']['tokens']:,} val tokens)"
        )

    @property
    def sha256(self) -> str:
        """Fingerprint of the token files (from the manifest): a resumed run checks it."""
        return self.manifest["sha256"]

    @property
    def train_ratio(self) -> float:
        return self.manifest["split"]["train_ratio"]

    def tokens(self, split: str) -> TokenFile:
        """split ("train" or "val") -> its memory-mapped token file."""
        if split not in SPLITS:
            raise ValueError(f"tokens: split must be 'train' or 'val', got {split!r}")
        return TokenFile(self.path / f"{split}.bin")

    def splits(self) -> tuple[TokenFile, TokenFile]:
        return self.tokens("train"), self.tokens("val")

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "texts": [],
            "prepared": str(self.path.resolve()),
            "split": self.manifest["split"],
        }


def open_corpus(
    texts: Sequence[str | Path] | None = None,
    data: str | Path | None = None,
    train_ratio: float = 0.9,
    *,
    verify: bool = True,
    progress: bool = False,
) -> TextCorpus | PreparedCorpus:
    """The ``texts``' corpus (none: the built-in one) split at ``train_ratio``, or the
    prepared corpus in the directory ``data`` (split when it was prepared; ``verify``: its
    files' digests checked)."""
    if data is None:
        return text_corpus(texts, train_ratio)
    if texts:
        raise ValueError(
            f"give text files or a prepared corpus, not both: {data} holds text files that "
            "`gptref prepare` already tokenized"
        )
    return PreparedCorpus.open(data, verify=verify, progress=progress)


def reopen(record: dict[str, Any], train_ratio: float = 0.9) -> TextCorpus | PreparedCorpus:
    """A run's ``record()`` -> its corpus again, checked against the fingerprint."""
    corpus = open_corpus(record.get("texts") or None, record.get("prepared"), train_ratio)
    if corpus.sha256 != record["sha256"]:
        raise ValueError(
            f"the run's data ({record['name']}) has changed since training; evaluate on "
            "other text instead"
        )
    return corpus
