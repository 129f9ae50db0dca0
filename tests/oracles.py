"""Naive, obviously-correct restatements used for differential tests.

Each oracle is a plain Python loop over lists, written for clarity, never speed.
Sections: data (split, windows, batches, collate), then model/loss, schedule, generation.
"""

from __future__ import annotations

# ---------------------------------------------------------------- data


def oracle_windows(
    ids: list[int], max_length: int, stride: int
) -> tuple[list[list[int]], list[list[int]]]:
    """The book's GPTDatasetV1 loop: one input/target list per window start."""
    inputs, targets = [], []
    for i in range(0, len(ids) - max_length, stride):
        inputs.append(ids[i : i + max_length])
        targets.append(ids[i + 1 : i + max_length + 1])
    return inputs, targets


def oracle_split(data, train_ratio: float):
    """Cut at int(train_ratio * len(data)), element by element."""
    k = int(train_ratio * len(data))
    head = [data[i] for i in range(k)]
    tail = [data[i] for i in range(k, len(data))]
    return head, tail


def oracle_pad(pairs: list[tuple[list[int], list[int]]], pad: int, ignore: int, max_length):
    """Right-pad every truncated pair to the longest, inputs with pad, targets with ignore."""
    if max_length is not None:
        pairs = [(x[:max_length], y[:max_length]) for x, y in pairs]
    width = max(len(x) for x, _ in pairs)
    inputs = [x + [pad] * (width - len(x)) for x, _ in pairs]
    targets = [y + [ignore] * (width - len(y)) for _, y in pairs]
    return inputs, targets


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


def oracle_lr(step, peak_lr, total_steps, warmup_steps, initial_lr, min_lr):
    """Warmup + cosine from its definition: a straight line, then half a cosine whose last
    point, total_steps - 1, is min_lr; min_lr after that."""
    import math

    last = total_steps - 1
    if step < warmup_steps:
        return initial_lr + (peak_lr - initial_lr) * step / warmup_steps
    if step >= last:
        return min_lr
    fraction = (step - warmup_steps) / (last - warmup_steps)
    return min_lr + (peak_lr - min_lr) * (1 + math.cos(math.pi * fraction)) / 2


def oracle_appendix_d_lrs(peak_lr, total_steps, warmup_steps, initial_lr, min_lr):
    """Every lr the book's appendix-D train_model sets, in its loop's own order (global_step
    starts at -1 and is incremented before each update)."""
    import math

    lrs = []
    global_step = -1
    lr_increment = (peak_lr - initial_lr) / warmup_steps
    for _ in range(total_steps):
        global_step += 1
        if global_step < warmup_steps:
            lr = initial_lr + global_step * lr_increment
        else:
            progress = (global_step - warmup_steps) / (total_steps - warmup_steps)
            lr = min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        lrs.append(lr)
    return lrs


# ---------------------------------------------------------------- generation (issue 4)


def oracle_greedy(next_logits, prompts, max_new_tokens, context_size):
    """Greedy decoding row by row: append the first index of the largest of
    next_logits(last context_size tokens), a plain loop over a list of floats."""
    out = []
    for prompt in prompts:
        seq = list(prompt)
        for _ in range(max_new_tokens):
            logits = next_logits(seq[-context_size:])
            best = 0
            for j in range(len(logits)):
                if logits[j] > logits[best]:
                    best = j
            seq.append(best)
        out.append(seq)
    return out


def oracle_book_generate(
    model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None
):
    """The book's chapter-5 ``generate``, operation for operation (batch size 1)."""
    import torch

    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        if top_k is not None:
            top_logits, _ = torch.topk(logits, top_k)
            min_val = top_logits[:, -1]
            logits = torch.where(
                logits < min_val, torch.tensor(float("-inf")).to(logits.device), logits
            )
        if temperature > 0.0:
            logits = logits / temperature
            probs = torch.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


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


def oracle_token_nll(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target] in double precision: log-sum-exp with the max taken out."""
    import math

    top = max(logits)
    total = 0.0
    for z in logits:
        total += math.exp(z - top)
    return -(logits[target] - top - math.log(total))


def oracle_mean_nll(
    logits: list[list[list[float]]], targets: list[list[int]], ignore_index: int = -100
) -> float:
    """Mean of oracle_token_nll over every (row, position) whose target is not ignore_index;
    rows may differ in length (so batches can be concatenated); nan when none count."""
    total, count = 0.0, 0
    for row_logits, row_targets in zip(logits, targets, strict=True):
        for position_logits, target in zip(row_logits, row_targets, strict=True):
            if target != ignore_index:
                total += oracle_token_nll(position_logits, target)
                count += 1
    return total / count if count else float("nan")


def oracle_book_loss_loader(batch_losses: list[float], num_batches: int | None = None) -> float:
    """The book's calc_loss_loader loop, given the per-batch mean losses it would compute."""
    total_loss = 0.0
    if len(batch_losses) == 0:
        return float("nan")
    elif num_batches is None:
        num_batches = len(batch_losses)
    else:
        num_batches = min(num_batches, len(batch_losses))
    for i, loss in enumerate(batch_losses):
        if i < num_batches:
            total_loss += loss
        else:
            break
    return total_loss / num_batches


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
