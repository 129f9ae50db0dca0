"""Shared, bounded hypothesis strategies, named as nouns: the conformance suite's and
(re-exported by ``tests/strategies.py``) the project's own tests'.

Every strategy is bounded (short token lists, tiny models) so that a property test stays
fast at the ``ci`` profile's 50 examples.
"""

from __future__ import annotations

import hypothesis.strategies as st

# ---------------------------------------------------------------- data

TOKEN_ID_MAX = 50256


@st.composite
def token_lists(draw, min_size: int = 0, max_size: int = 300) -> list[int]:
    """Lists of GPT-2 token ids (bounded length)."""
    return draw(st.lists(st.integers(0, TOKEN_ID_MAX), min_size=min_size, max_size=max_size))


@st.composite
def window_params(draw, max_tokens: int = 300) -> tuple[int, int, int]:
    """(n_tokens, max_length, stride), including texts too short for one window."""
    max_length = draw(st.integers(1, 40))
    stride = draw(st.integers(1, 50))
    n_tokens = draw(st.integers(0, max_tokens))
    return n_tokens, max_length, stride


@st.composite
def windowed_ids(draw, max_size: int = 200) -> tuple[list[int], int, int]:
    """(ids, max_length, stride) with at least one window: len(ids) >= max_length + 1 (the
    texts too short for one are test_edge_cases.py's)."""
    L = draw(st.integers(1, 40))
    ids = draw(token_lists(min_size=L + 1, max_size=max(max_size, L + 1)))
    return ids, L, draw(st.integers(1, 50))


# pieces of English, digits and non-ASCII: texts for the book's tokenizer (tiktoken "gpt2")
# through the book's GPTDatasetV1 / create_dataloader_v1; the end-of-text token is drawn only by
# the tests about it, so that an implementation that refuses it still gets every other check
TEXT_PIECES = (" the", " cat", " sat", ".", ",", "\n", " Jack", " Gisburn", " 2024", "é",
               " naïve", "  ", " I", "HAD")  # fmt: skip
ENDOFTEXT = "<|endoftext|>"


@st.composite
def book_texts(draw, min_pieces: int = 0, max_pieces: int = 60, endoftext: bool = False) -> str:
    """Texts joined from TEXT_PIECES (so they tokenize to roughly one token per piece); with
    ``endoftext``, <|endoftext|> is one of the pieces."""
    pieces = TEXT_PIECES + (ENDOFTEXT,) if endoftext else TEXT_PIECES
    return "".join(
        draw(st.lists(st.sampled_from(pieces), min_size=min_pieces, max_size=max_pieces))
    )


def synthetic_text(n_pieces: int = 3000, seed: int = 0) -> str:
    """A fixed text of about n_pieces tokens from TEXT_PIECES (no <|endoftext|>): the book's
    corpus where the-verdict.txt is not at hand."""
    import torch

    picks = torch.randint(0, len(TEXT_PIECES), (n_pieces,), generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return "".join(TEXT_PIECES[i] for i in picks.tolist())


train_ratios = st.floats(min_value=0.01, max_value=0.99, allow_nan=False)
batch_sizes = st.integers(1, 12)
seeds = st.integers(0, 2**32 - 1)
epochs = st.integers(0, 50)  # an adapter that replays a global-RNG loader pays per epoch


# ---------------------------------------------------------------- schedule and generation

# the book's rates, and arbitrary ones (0 included)
learning_rates = st.one_of(
    st.sampled_from([1e-6, 1e-5, 3e-5, 4e-4, 5e-4, 1e-3]),
    st.floats(min_value=0.0, max_value=1.0, allow_subnormal=False),
)


@st.composite
def lr_schedules(
    draw, max_total_steps: int = 2000, min_warmup: int = 0, max_min_ratio: float = 1.0
):
    """Keyword arguments valid for lr_at by construction: initial_lr, min_lr <= peak_lr and
    warmup_steps <= total_steps - 2; min_lr <= max_min_ratio * peak_lr."""
    peak_lr = draw(learning_rates)
    total_steps = draw(st.integers(min_warmup + 2, max_total_steps))
    warmup_steps = draw(st.integers(min_warmup, total_steps - 2))
    initial_lr = draw(st.one_of(st.just(0.0), st.floats(0.0, peak_lr, allow_subnormal=False)))
    min_lr = draw(
        st.one_of(
            st.just(0.0),
            st.just(peak_lr * max_min_ratio),
            st.floats(0.0, peak_lr * max_min_ratio, allow_subnormal=False),
        )
    )
    return dict(
        peak_lr=peak_lr,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        initial_lr=initial_lr,
        min_lr=min_lr,
    )


@st.composite
def prompts(draw, vocab_size: int, max_batch: int = 4, max_len: int = 12) -> list[list[int]]:
    """A batch of equal-length prompts (b >= 1 rows of T >= 1 token ids below vocab_size)."""
    b = draw(st.integers(1, max_batch))
    t = draw(st.integers(1, max_len))
    row = st.lists(st.integers(0, vocab_size - 1), min_size=t, max_size=t)
    return draw(st.lists(row, min_size=b, max_size=b))


# ---------------------------------------------------------------- model and loss


@st.composite
def tiny_configs(draw, *, min_context: int = 1, max_vocab: int = 64, attn_impl: str | None = None):
    """GPTConfig, valid by construction (emb_dim = n_heads * head_dim): vocab 2..max_vocab,
    context min_context..16, width <= 32, 1-2 layers, drop 0 / 0.1 / 0.5, either attention."""
    from gptref.gpt_config import GPTConfig

    n_heads = draw(st.integers(1, 4))
    head_dim = draw(st.integers(1, 8))
    return GPTConfig(
        vocab_size=draw(st.integers(2, max_vocab)),
        context_length=draw(st.integers(min_context, 16)),
        emb_dim=n_heads * head_dim,
        n_heads=n_heads,
        n_layers=draw(st.integers(1, 2)),
        drop_rate=draw(st.sampled_from([0.0, 0.1, 0.5])),
        qkv_bias=draw(st.booleans()),
        attn_impl=attn_impl or draw(st.sampled_from(["reference", "sdpa"])),
    )


@st.composite
def token_batches(
    draw,
    vocab_size: int,
    *,
    batch: int | None = None,
    length: int | None = None,
    max_batch: int = 3,
    min_len: int = 1,
    max_len: int = 16,
):
    """int64 (b, T) ids in [0, vocab_size); b in 1..max_batch and T in min_len..max_len unless given."""
    import torch

    b = batch if batch is not None else draw(st.integers(1, max_batch))
    T = length if length is not None else draw(st.integers(min_len, max_len))
    rows = draw(
        st.lists(
            st.lists(st.integers(0, vocab_size - 1), min_size=T, max_size=T), min_size=b, max_size=b
        )
    )
    return torch.tensor(rows, dtype=torch.int64).reshape(b, T)


@st.composite
def target_batches(draw, vocab_size: int, batch: int, length: int, *, ignore_index: int = -100):
    """int64 (batch, length) targets, each in [0, vocab_size) or ignore_index; [0, 0] is never
    ignored, so every batch counts at least one token."""
    import torch

    target = st.one_of(st.integers(0, vocab_size - 1), st.just(ignore_index))
    flat = draw(st.lists(target, min_size=batch * length, max_size=batch * length))
    flat[0] = draw(st.integers(0, vocab_size - 1))
    return torch.tensor(flat, dtype=torch.int64).reshape(batch, length)


@st.composite
def batch_lists(
    draw,
    vocab_size: int,
    max_len: int,
    *,
    min_batches: int = 0,
    max_batches: int = 4,
    ignore: bool = True,
    same_shape: bool = False,
    ignore_index: int = -100,
):
    """A loader's contents: [(inputs, targets): int64 (b_i, T_i)], with ignore_index
    targets when ``ignore`` (never at [0, 0]); all batches one shape when ``same_shape``."""
    n = draw(st.integers(min_batches, max_batches))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, max_len)))
    out = []
    for _ in range(n):
        b, T = shape if same_shape else (draw(st.integers(1, 3)), draw(st.integers(1, max_len)))
        inputs = draw(token_batches(vocab_size, batch=b, length=T))
        if ignore:
            targets = draw(target_batches(vocab_size, b, T, ignore_index=ignore_index))
        else:
            targets = draw(token_batches(vocab_size, batch=b, length=T))
        out.append((inputs, targets))
    return out


@st.composite
def logit_tensors(draw, batch: int, length: int, vocab_size: int, *, bound: float = 30.0):
    """float32 (batch, length, vocab_size) logits in [-bound, bound], extremes included."""
    import torch

    value = st.floats(-bound, bound, allow_nan=False, width=32)
    n = batch * length * vocab_size
    flat = draw(st.lists(value, min_size=n, max_size=n))
    return torch.tensor(flat, dtype=torch.float32).reshape(batch, length, vocab_size)
