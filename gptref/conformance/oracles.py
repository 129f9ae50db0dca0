"""Naive, obviously-correct restatements of the book's definitions: the conformance suite's
expected values (and, re-exported by ``tests/oracles.py``, the project's own tests').

Each oracle is a plain Python loop over lists, or a straightforward torch restatement,
written for clarity, never speed, and none calls gptref: when the suite checks another
implementation, every expected value comes from here.
Sections: data (split, windows, batches, collate), schedule, generation, loss, training step.
The book's training loops and their parts (evaluate_model, the per-epoch sample) are
``loop_oracles.py``.
"""

from __future__ import annotations

import math

import torch

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


def oracle_window_count(n_tokens: int, max_length: int, stride: int) -> int:
    """How many times the book's loop ``for i in range(0, n_tokens - max_length, stride)`` runs,
    counted step by step."""
    count, start = 0, 0
    while start < n_tokens - max_length:
        count += 1
        start += stride
    return count


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


def oracle_unshuffled_batches(n_samples: int, batch_size: int, drop_last: bool) -> list[list[int]]:
    """0..n-1 cut into consecutive batches of batch_size; the short last one dropped or kept."""
    out, batch = [], []
    for i in range(n_samples):
        batch.append(i)
        if len(batch) == batch_size:
            out.append(batch)
            batch = []
    if batch and not drop_last:
        out.append(batch)
    return out


def oracle_batches_of(samples: list[int], batch_size: int, drop_last: bool) -> list[list[int]]:
    """samples cut into consecutive batches of batch_size; the short last one dropped or kept."""
    out = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    return [b for b in out if len(b) == batch_size] if drop_last else out


def oracle_shards(order: list[int], world_size: int, sharding: str) -> list[list[int]]:
    """Each rank's samples, in order, from the single-process order. "drop-remainder": the
    last len(order) % world_size are dropped; "pad" (DistributedSampler): the order's head is
    appended, repeatedly if need be, up to a multiple of world_size. Then rank r takes every
    world_size-th sample from position r."""
    n = len(order)
    if sharding == "drop-remainder":
        used = order[: n - n % world_size]
    else:
        total = -(-n // world_size) * world_size  # ceil(n / world_size) samples per rank
        used = list(order)
        while len(used) < total:
            used += order[: total - len(used)]
    return [used[r::world_size] for r in range(world_size)]


# ---------------------------------------------------------------- schedule


def oracle_warmup(step, peak_lr, warmup_steps, initial_lr, warmup: str = "book"):
    """The lr of warmup step ``step < warmup_steps``: "book", a line from initial_lr that would
    reach peak_lr at warmup_steps; "nanogpt", peak_lr * (step + 1) / (warmup_steps + 1)."""
    if warmup == "nanogpt":
        return peak_lr * (step + 1) / (warmup_steps + 1)
    return initial_lr + (peak_lr - initial_lr) * step / warmup_steps


def oracle_lr(step, peak_lr, total_steps, warmup_steps, initial_lr, min_lr, warmup="book"):
    """Warmup + cosine from its definition: the declared warmup, then half a cosine whose last
    point, total_steps - 1, is min_lr; min_lr after that."""
    last = total_steps - 1
    if step < warmup_steps:
        return oracle_warmup(step, peak_lr, warmup_steps, initial_lr, warmup)
    if step >= last:
        return min_lr
    fraction = (step - warmup_steps) / (last - warmup_steps)
    return min_lr + (peak_lr - min_lr) * (1 + math.cos(math.pi * fraction)) / 2


def oracle_appendix_d_lrs(peak_lr, total_steps, warmup_steps, initial_lr, min_lr, warmup="book"):
    """Every lr the book's appendix-D train_model sets, in its loop's own order (global_step
    starts at -1 and is incremented before each update); with warmup="nanogpt", nanoGPT's
    warmup in place of the book's line."""
    lrs = []
    global_step = -1
    lr_increment = (peak_lr - initial_lr) / warmup_steps
    for _ in range(total_steps):
        global_step += 1
        if global_step < warmup_steps and warmup == "nanogpt":
            lr = oracle_warmup(global_step, peak_lr, warmup_steps, initial_lr, warmup)
        elif global_step < warmup_steps:
            lr = initial_lr + global_step * lr_increment
        else:
            progress = (global_step - warmup_steps) / (total_steps - warmup_steps)
            lr = min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        lrs.append(lr)
    return lrs


# ---------------------------------------------------------------- generation


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


def oracle_kth_largest(values: list[float], k: int) -> float:
    """The k-th largest of values (k >= 1; the smallest when k > len(values)), by sorting a list."""
    ordered = sorted(values, reverse=True)
    return ordered[min(k, len(ordered)) - 1]


# ---------------------------------------------------------------- loss


def oracle_token_nll(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target] in double precision: log-sum-exp with the max taken out."""
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


# ---------------------------------------------------------------- training step


def oracle_sgd_step(
    model,
    input_batch,
    target_batch,
    lr: float,
    grad_clip=None,
    ignore_index: int = -100,
    accumulation_steps: int = 1,
    weighting: str = "token",
):
    """One plain-SGD update, restated in float64 on a copy of ``model`` (which is left alone):
    -> (loss, grad_norm, new parameters as a list of float64 tensors).

    The loss is the batch's mean cross-entropy over the targets that are not ignore_index
    ("token": what any accumulation_steps must give), or with weighting="batch" (nanoGPT's
    accumulation) the mean of the k = accumulation_steps micro-batches' means, the
    micro-batches being torch.tensor_split(batch, k) along rows. grad_norm is the L2 norm of
    all gradients together, before clipping; with grad_clip the gradients are scaled by
    min(1, grad_clip / grad_norm) (torch's clip_grad_norm_ adds 1e-6 to the norm: a difference
    far below the tolerances used); the update is p - lr * g."""
    import copy

    import torch.nn.functional as F

    def mean_ce(x, y):
        logits = twin(x)  # (b, T, vocab), float64
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=ignore_index)

    twin = copy.deepcopy(model).double()
    if weighting == "batch" and accumulation_steps > 1:
        parts = zip(
            torch.tensor_split(input_batch, accumulation_steps),
            torch.tensor_split(target_batch, accumulation_steps),
            strict=True,
        )
        loss = sum(mean_ce(x, y) for x, y in parts) / accumulation_steps
    else:
        loss = mean_ce(input_batch, target_batch)
    params = list(twin.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    grad_norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
    scale = 1.0 if grad_clip is None else min(1.0, grad_clip / grad_norm) if grad_norm else 1.0
    new = [(p - lr * scale * g).detach() for p, g in zip(params, grads, strict=True)]
    return float(loss.detach()), grad_norm, new
