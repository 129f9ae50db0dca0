"""Naive, obviously-correct restatements used for differential tests.

The oracles of the public contract live in ``gptref.conformance.oracles`` (the conformance
suite's expected values) and are re-exported here; this module adds those only gptref's own
tests need (the book's training loop, generate_text_simple, GPT-2 weights, memory).
"""

from __future__ import annotations

from gptref.conformance.oracles import (
    oracle_appendix_d_lrs,
    oracle_book_loss_loader,
    oracle_mean_nll,
    oracle_windows,
)

__all__ = [
    "OracleBookDataset",
    "oracle_appendix_d_lrs",
    "oracle_book_generate_text_simple",
    "oracle_book_loss_loader",
    "oracle_book_training",
    "oracle_gpt2_logits",
    "oracle_mean_nll",
    "oracle_saved_bytes",
    "oracle_windows",
]

# ---------------------------------------------------------------- data


class OracleBookDataset:
    """The book's GPTDatasetV1: one freshly built tensor per window (a map-style dataset)."""

    def __init__(self, ids: list[int], max_length: int, stride: int) -> None:
        import torch

        ins, outs = oracle_windows(ids, max_length, stride)
        self.input_ids = [torch.tensor(x) for x in ins]
        self.target_ids = [torch.tensor(y) for y in outs]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, idx: int):
        return self.input_ids[idx], self.target_ids[idx]


# ---------------------------------------------------------------- training


def oracle_book_training(model, train_loader, val_loader, optimizer, num_epochs, eval_freq, eval_iter,
                         lr_of_step=None, clip_when=None):  # fmt: skip
    """The book's train_model_simple (and, with lr_of_step / clip_when, appendix D's
    train_model), restated with plain torch calls: returns (train_losses, val_losses,
    tokens_seen, lrs)."""
    import torch
    import torch.nn.functional as F

    def batch_loss(x, y):
        logits = model(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def loader_loss(loader, n):
        if len(loader) == 0:
            return float("nan")
        n = min(n, len(loader))
        total = 0.0
        for i, (x, y) in enumerate(loader):
            if i >= n:
                break
            total += batch_loss(x, y).item()
        return total / n

    train_losses, val_losses, seen, lrs = [], [], [], []
    tokens, step = 0, -1
    for _ in range(num_epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            step += 1
            if lr_of_step is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr_of_step(step)
            lrs.append(optimizer.param_groups[0]["lr"])
            loss = batch_loss(x, y)
            loss.backward()
            if clip_when is not None and clip_when(step):
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            tokens += x.numel()
            if step % eval_freq == 0:
                model.eval()
                with torch.no_grad():
                    train_losses.append(loader_loss(train_loader, eval_iter))
                    val_losses.append(loader_loss(val_loader, eval_iter))
                model.train()
                seen.append(tokens)
    return train_losses, val_losses, seen, lrs


# ---------------------------------------------------------------- schedule (issue 4)


# ---------------------------------------------------------------- generation (issue 4)


def oracle_book_generate_text_simple(model, idx, max_new_tokens, context_size):
    """The book's chapter-4 ``generate_text_simple``: argmax of the softmax, every step."""
    import torch

    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        probas = torch.softmax(logits, dim=-1)
        idx_next = torch.argmax(probas, dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


# ---------------------------------------------------------------- model and loss


# ---------------------------------------------------------------- Hugging Face GPT-2 weights (issue 5)


def oracle_gpt2_logits(hf: dict, ids, n_heads: int):
    """GPT-2's forward pass read straight off the Hugging Face tensors (names without
    ``transformer.``; no gptref code): ids int64 (b, T) -> logits (b, T, vocab).

    Conv1D is ``x @ W + b`` with W (in, out); c_attn's output is q | k | v; causal softmax
    of q k^T / sqrt(head_dim); tanh GELU; LayerNorm with eps 1e-5; the head is
    ``lm_head.weight`` when present, else ``wte.weight`` (tied). Dropout is off (eval)."""
    import math

    import torch
    import torch.nn.functional as F

    def conv1d(x, name):
        return x @ hf[f"{name}.weight"] + hf[f"{name}.bias"]

    def layer_norm(x, name):
        return F.layer_norm(x, x.shape[-1:], hf[f"{name}.weight"], hf[f"{name}.bias"], eps=1e-5)

    b, T = ids.shape
    x = hf["wte.weight"][ids] + hf["wpe.weight"][:T]  # (b, T, E)
    emb = x.shape[-1]
    head_dim = emb // n_heads
    n_layers = 1 + max(int(k.split(".")[1]) for k in hf if k.startswith("h."))
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
    for i in range(n_layers):
        q, k, v = conv1d(layer_norm(x, f"h.{i}.ln_1"), f"h.{i}.attn.c_attn").split(emb, dim=-1)
        q, k, v = (t.reshape(b, T, n_heads, head_dim).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)  # (b, h, T, T)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        heads = (weights @ v).transpose(1, 2).reshape(b, T, emb)
        x = x + conv1d(heads, f"h.{i}.attn.c_proj")
        hidden = F.gelu(conv1d(layer_norm(x, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc"), approximate="tanh")
        x = x + conv1d(hidden, f"h.{i}.mlp.c_proj")
    x = layer_norm(x, "ln_f")
    return x @ hf.get("lm_head.weight", hf["wte.weight"]).T


# ---------------------------------------------------------------- memory


def oracle_saved_bytes(fn, exclude=()) -> int:
    """Bytes of every distinct storage autograd saves while ``fn()`` runs, leaving out the
    storages of ``exclude`` (the parameters): the quantity a formula for activations predicts.

    Counts by storage, not by tensor: views and tensors saved twice by two ops count once.
    """
    import torch

    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())
