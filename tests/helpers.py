"""Helpers several test modules share: tiny models and token streams, text for CLI runs, the
CLI's one-line error, and the conformance suite run in a subprocess as a user runs it, on
implementations written for the test (variants of the examples, modules that exit, hang or
print). (The independent oracles are ``tests/oracles.py``, the Hypothesis
strategies ``tests/strategies.py``, the fault-injection harness ``tests/faultlib.py``.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from gptref.cli.main import main
from gptref.data import split
from gptref.loader import create_dataloader
from gptref.model import GPTModel

VOCAB = 101
MICRO = {
    "vocab_size": VOCAB,
    "context_length": 16,
    "emb_dim": 16,
    "n_heads": 2,
    "n_layers": 2,
    "drop_rate": 0.1,
    "qkv_bias": False,
}

# English-like text with enough distinct tokens; a few KB keeps a tiny run fast
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven",
         "wizards", "quietly", "hex", "the", "jolly", "king"]  # fmt: skip

# `gptref train` flags for a run of a few seconds
TINY = ["--preset", "tiny", "--context", "16", "--batch-size", "4", "--eval-freq", "2",
        "--eval-iter", "1", "--no-progress"]  # fmt: skip


def micro_model(seed: int, **overrides) -> GPTModel:
    """A 2-block GPT over a 101-token vocabulary, drawn after ``manual_seed(seed)``."""
    torch.manual_seed(seed)
    return GPTModel({**MICRO, **overrides})


def token_stream(n: int, seed: int = 0) -> torch.Tensor:
    """int64 (n,) ids below ``VOCAB`` from a private generator."""
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


def loaders(seed: int | None, n_tokens: int = 700, context: int = 8, batch: int = 3):
    """Train/val loaders over a generated token stream; book mode when seed is None."""
    train_ids, val_ids = split(token_stream(n_tokens), 0.85)
    kw = dict(batch_size=batch, max_length=context, stride=context, seed=seed)
    train_loader = create_dataloader(train_ids, shuffle=True, drop_last=True, **kw)
    val_loader = create_dataloader(val_ids, shuffle=False, drop_last=False, **kw)
    return train_loader, val_loader


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module, msg: str) -> None:
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), f"{msg}: parameter {name} differs"


def adamw(model: torch.nn.Module, lr: float = 1e-3) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)


def make_text(n_words: int, seed: int = 0) -> str:
    """``n_words`` of ``WORDS`` drawn from a private generator, ending in a full stop."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(WORDS), (n_words,), generator=g).tolist()
    return " ".join(WORDS[i] for i in picks) + ".\n"


def run_error(capsys, argv: list[str]) -> str:
    """Run the CLI expecting a user error -> its one stderr line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- the conformance suite, run as a user runs it

ROOT = Path(__file__).resolve().parents[1]


def suite(
    impl: str | Path, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``GPTREF_IMPL=impl python -m pytest --pyargs gptref.conformance *args`` in ``cwd`` (the
    examples importable: the project root on PYTHONPATH)."""
    command = [sys.executable, "-m", "pytest", "--pyargs", "gptref.conformance",
               "-p", "no:cacheprovider", *args]  # fmt: skip
    # COLUMNS: pytest cuts -rf's message to the terminal's width, and drops it where none fits
    full_env = {**os.environ, "GPTREF_IMPL": str(impl), "PYTHONPATH": str(ROOT), "COLUMNS": "1000", **(env or {})}  # fmt: skip
    return subprocess.run(
        command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def variant(
    folder: Path, name: str, edits: Sequence[tuple[str, str]] = (), *, example: str = "book_style",
    append: str = "",
) -> Path:  # fmt: skip
    """examples/<example>.py with each ``old`` (which must occur once) replaced by ``new``, and
    ``append`` added, written to folder/<name>.py."""
    text = (ROOT / "examples" / f"{example}.py").read_text()
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {example}.py"
        text = text.replace(old, new)
    path = folder / f"{name}.py"
    path.write_text(text + append)
    return path


def module(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def failures(out: str) -> dict[str, str]:
    """-rf's short summary: failing test name -> the first line of its message."""
    found = re.findall(r"^FAILED \S+::(\S+?)(?: - (.*))?$", out, re.M)
    return {name: message or "" for name, message in found}


def shown(done: subprocess.CompletedProcess, chars: int = 4000) -> str:
    """The end of a run's output, for an assertion message (separator lines shortened)."""
    out = re.sub(r"([=_!-])\1{20,}", r"\1\1\1", done.stdout)
    return out[-chars:] + "\n--- stderr ---\n" + done.stderr[-chars // 2 :]
