"""Text generation: the book's ``generate`` (top-k, temperature, eos), ``generate_text_simple``
and the per-epoch sample of its training loop (``sample_text``).

Neither function touches ``model.training``: in train mode dropout stays on, so even greedy
output is random and draws from the global RNG. The book's ``generate_and_print_sample``
calls ``model.eval()`` around generation (and ``model.train()`` after); do the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gptref._check import FieldError, check_int, check_number
from gptref.model import check_token_batch, unwrap
from gptref.tokenizer import text_to_token_ids, token_ids_to_text

Model = Callable[[torch.Tensor], torch.Tensor]  # ids int64 (b, T) -> logits (b, T, vocab)


def generate(
    model: Model,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """idx: int (b, T) -> int64 (b, T + k), k <= max_new_tokens: idx followed by new tokens.

    Each step feeds the last ``context_size`` tokens, keeps the last position's logits,
    optionally keeps only the ``top_k`` largest (ties with the k-th are kept, as in the
    book), then takes the argmax when ``temperature == 0`` or samples
    ``softmax(logits / temperature)`` with ``torch.multinomial``. Sampling draws from
    ``generator`` when given, else from the global RNG exactly as the book does. A
    ``top_k`` above the vocabulary size keeps every token.

    ``eos_id``: a row is finished at the step it produces ``eos_id``. Rows are never
    extended with the eos they stop at; a finished row is padded with ``eos_id`` while
    others go on, and generation stops at the step where the last row finishes (that
    step appends nothing). So each row is ``idx`` + its tokens before its first eos +
    ``eos_id`` padding, and the width is ``T +`` the longest row's count of tokens
    before eos. For ``b == 1`` this is the book's ``if idx_next == eos_id: break``.
    Finished rows still go through the model and the sampler, so (for a model whose
    rows do not interact) every row's tokens and the RNG stream are those of the same
    call without ``eos_id``, truncated.

    For ``b == 1`` the result, and the random numbers consumed, equal the book's
    ``generate``. For ``b > 1`` the book's top-k filter compares ``(b, V)`` logits with a
    ``(b,)`` threshold (a shape error, or the wrong row's threshold when ``b == V``) and its
    eos test is ambiguous; here each row has its own threshold and its own eos. Runs under
    ``torch.no_grad()``; ``model.training`` is left as it is.
    """
    idx = check_token_batch("generate", "idx", idx, nonempty=True).to(torch.int64)
    check_int("generate", "max_new_tokens", max_new_tokens, low=0)
    check_int("generate", "context_size", context_size, low=1)
    check_number(
        "generate", "temperature", temperature, low=0, what="a finite number",
        hint="; 0 is greedy decoding",
    )  # fmt: skip
    if top_k is not None:
        check_int("generate", "top_k", top_k, low=1)
    if eos_id is not None:
        check_int("generate", "eos_id", eos_id, low=0)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generate: generator must be a torch.Generator or None, got {type(generator).__name__}"
        )

    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -context_size:]
            logits = model(idx_cond)[:, -1, :]  # (b, vocab)
            idx_next = _next_token(logits, temperature, top_k, generator)  # (b, 1)
            if eos_id is not None:
                finished = finished | (idx_next[:, 0] == eos_id)
                if bool(finished.all()):
                    break
                idx_next = idx_next.masked_fill(finished[:, None], eos_id)
            idx = torch.cat((idx, idx_next), dim=1)
    return idx


def generate_text_simple(
    model: Model, idx: torch.Tensor, max_new_tokens: int, context_size: int
) -> torch.Tensor:
    """idx: int (b, T) -> int64 (b, T + max_new_tokens): the book's greedy ``generate_text_simple``.

    The book takes the argmax of ``softmax(logits)``, not of the logits, and so does this;
    the two differ only where softmax rounds the largest probabilities to a tie (then the
    lower id wins here), so this matches ``generate(temperature=0)`` almost always.
    """
    idx = check_token_batch("generate_text_simple", "idx", idx, nonempty=True).to(torch.int64)
    check_int("generate_text_simple", "max_new_tokens", max_new_tokens, low=0)
    check_int("generate_text_simple", "context_size", context_size, low=1)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(idx[:, -context_size:])[:, -1, :]  # (b, vocab)
            probas = torch.softmax(logits, dim=-1)
            idx_next = torch.argmax(probas, dim=-1, keepdim=True)  # (b, 1)
            idx = torch.cat((idx, idx_next), dim=1)
    return idx


def _next_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """logits: (b, vocab) -> int64 (b, 1), with the book's operations in the book's order."""
    if top_k is not None:
        top_logits, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
        min_val = top_logits[:, -1:]  # (b, 1): the book's top_logits[:, -1] is (b,)
        logits = torch.where(
            logits < min_val, torch.tensor(float("-inf"), device=logits.device), logits
        )
    if temperature > 0.0:
        scaled = logits / temperature
        if not bool(torch.isfinite(scaled[scaled != float("-inf")]).all()):
            if bool(torch.isfinite(logits[logits != float("-inf")]).all()):
                raise FieldError(
                    "generate", "temperature", f"{temperature} is too small: logits / "
                    "temperature overflow float32; use 0 for greedy decoding",
                )  # fmt: skip
            raise ValueError(
                "generate: the model's logits are not finite (nan or inf): its weights are; "
                "use an earlier checkpoint"
            )
        probs = torch.softmax(scaled, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator)
    return torch.argmax(logits, dim=-1, keepdim=True)


def sample_text(model: Model, start_context: str, device, tokenizer=None) -> str:
    """The book's ``generate_and_print_sample``, returning the text: 50 greedy tokens after
    ``start_context`` in eval mode, then the model's mode as it was."""
    was_training = model.training
    model.eval()
    inner = unwrap(model)
    context_size = inner.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    with torch.no_grad():
        ids = generate_text_simple(inner, encoded, max_new_tokens=50, context_size=context_size)
    model.train(was_training)
    return token_ids_to_text(ids, tokenizer)
