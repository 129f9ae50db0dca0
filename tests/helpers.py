"""Helpers several test modules share: tiny models and token streams, text for CLI runs, and
the CLI's one-line error. (The independent oracles are ``tests/oracles.py``, the Hypothesis
strategies ``tests/strategies.py``, the fault-injection harness ``tests/faultlib.py``.)"""

from __future__ import annotations

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
