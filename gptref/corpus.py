"""Training text: the built-in corpus, and user files read with errors a person can act on."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gptref.tokenizer import ENDOFTEXT


@dataclass(frozen=True)
class Corpus:
    name: str  # what the text is, for the first line of output
    text: str

    @property
    def sha256(self) -> str:
        """Fingerprint of the text: a resumed run must train on the same data."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def builtin_corpus() -> Corpus:
    """The documentation topics that ship with every CPython (``pydoc_data.topics``):
    about 0.5 MB of English prose about Python, in sorted topic order."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    name = (
        f"the built-in corpus: Python {platform.python_version()}'s documentation topics "
        f"(pydoc_data.topics, {len(text):,} characters)"
    )
    return Corpus(name, text)


def read_text(path: str | Path) -> str:
    """-> the file's text, decoded as UTF-8; ValueError naming the file and the problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a text file") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "convert it, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def load_corpus(paths: Sequence[str | Path] | None) -> Corpus:
    """No paths -> the built-in corpus; one file -> its text unchanged (so the book's
    corpus reproduces the book); several -> their texts joined by ``<|endoftext|>``."""
    if not paths:
        return builtin_corpus()
    texts = [read_text(p) for p in paths]
    names = ", ".join(str(p) for p in paths)
    text = texts[0] if len(texts) == 1 else ENDOFTEXT.join(texts)
    return Corpus(f"{names} ({len(text):,} characters)", text)
