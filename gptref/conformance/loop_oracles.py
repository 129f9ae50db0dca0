"""The book's training loops and their parts, restated as plain code: the expected behaviour
of ``train_model_simple`` / ``train_model`` (``test_book_loop.py``) and of ``evaluate_model`` /
``generate_and_print_sample`` (``test_book_parts.py``). Like ``oracles.py``, nothing here calls
gptref. ``trace(label)``, when given, is called before each forward pass and each optimizer
step with what the book's loop is doing there: the suite names the step at which another loop
departs from it.
"""

from __future__ import annotations

import math

import torch


def _note(trace, label: str) -> None:
    if trace is not None:
        trace(label)


def _book_loss(model, input_batch, target_batch, device):
    """The book's calc_loss_batch."""
    import torch.nn.functional as F

    logits = model(input_batch.to(device))
    return F.cross_entropy(logits.flatten(0, 1), target_batch.to(device).flatten())


def _book_loss_loader(data_loader, model, device, num_batches, trace=None, what="a loader"):
    """The book's calc_loss_loader: the mean of the first num_batches per-batch means."""
    if len(data_loader) == 0:
        return float("nan")
    n = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (x, y) in enumerate(data_loader):
        if i >= n:
            break
        _note(trace, f"calc_loss_loader over {what}, batch {i + 1} of {n}")
        total += _book_loss(model, x, y, device).item()
    return total / n


def oracle_evaluate(model, train_loader, val_loader, device, eval_iter, trace=None, when=""):
    """The book's evaluate_model: eval mode and no_grad for both losses (eval_iter batches of
    each), then train mode."""
    model.eval()
    with torch.no_grad():
        train_loss = _book_loss_loader(train_loader, model, device, eval_iter, trace, f"train_loader{when}")  # fmt: skip
        val_loss = _book_loss_loader(val_loader, model, device, eval_iter, trace, f"val_loader{when}")  # fmt: skip
    model.train()
    return train_loss, val_loss


def oracle_greedy_ids(model, idx, max_new_tokens, context_size, trace=None, when=""):
    """Chapter 4's generate_text_simple: max_new_tokens argmax tokens, each from the model's
    last position over the last context_size tokens, under no_grad; the model's mode as is."""
    with torch.no_grad():
        for j in range(max_new_tokens):
            _note(trace, f"generate_text_simple{when}: greedy token {j + 1} of {max_new_tokens} (argmax, no top_k or temperature)")  # fmt: skip
            logits = model(idx[:, -context_size:])[:, -1, :]
            next_id = torch.argmax(torch.softmax(logits, dim=-1), dim=-1, keepdim=True)
            idx = torch.cat((idx, next_id), dim=1)
    return idx


def oracle_sample(model, tokenizer, device, start_context, trace=None, when=""):
    """The book's generate_and_print_sample, returning the text it prints: 50 greedy tokens
    from start_context (its ids with <|endoftext|> allowed; the suite's tokenizers accept
    either way) in eval mode, then train mode."""
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    ids = tokenizer.encode(start_context, allowed_special={"<|endoftext|>"})
    idx = torch.tensor(ids).unsqueeze(0).to(device)
    out = oracle_greedy_ids(model, idx, 50, context_size, trace, f" in the sample{when}")
    model.train()
    return tokenizer.decode(out.squeeze(0).tolist()).replace("\n", " ")


def _book_loop(
    model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
    start_context, tokenizer, *, schedule=None, trace=None, sample="epoch",
):  # fmt: skip
    """The loop both of the book's trainers share. ``schedule(global_step)`` -> (lr, clip):
    appendix D's lr for this step and whether to clip (None: chapter 5's loop)."""
    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1
            at = f"global_step {global_step} (epoch {epoch + 1})"
            clip = False
            if schedule is not None:
                lr, clip = schedule(global_step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                track_lrs.append(lr)
            _note(trace, f"the update at {at}: calc_loss_batch in train mode with grad")
            loss = _book_loss(model, input_batch, target_batch, device)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            _note(trace, f"optimizer.step() at {at}" + (", after clip_grad_norm_(max_norm=1.0)" if clip else ", unclipped" if schedule else ""))  # fmt: skip
            optimizer.step()
            tokens_seen += input_batch.numel()
            if global_step % eval_freq == 0:
                when = f" in the evaluation after {at}"
                train_loss, val_loss = oracle_evaluate(model, train_loader, val_loader, device, eval_iter, trace, when)  # fmt: skip
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                if sample == "eval":
                    oracle_sample(model, tokenizer, device, start_context, trace, f" after {at}")
        if sample == "epoch":
            oracle_sample(model, tokenizer, device, start_context, trace, f" after epoch {epoch + 1}")  # fmt: skip
    return train_losses, val_losses, track_tokens_seen, track_lrs


def oracle_train_model_simple(
    model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
    start_context, tokenizer, *, trace=None, sample="epoch",
):  # fmt: skip
    """Chapter 5's train_model_simple -> (train_losses, val_losses, track_tokens_seen): per
    batch zero_grad, loss, backward, step, tokens_seen += inputs.numel(), global_step += 1
    (from -1), and an evaluation when global_step % eval_freq == 0; the 50-token sample after
    each epoch (``sample``: "epoch"; "eval" after each evaluation instead; "none")."""
    out = _book_loop(
        model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
        start_context, tokenizer, trace=trace, sample=sample,
    )  # fmt: skip
    return out[:3]


def oracle_train_model(
    model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq, eval_iter,
    start_context, tokenizer, warmup_steps, initial_lr=3e-05, min_lr=1e-6, clip_start=">=",
    *, trace=None, sample="epoch",
):  # fmt: skip
    """Appendix D's train_model -> (train_losses, val_losses, track_tokens_seen, track_lrs):
    train_model_simple plus, before each forward pass, the warmup-then-cosine lr on every param
    group (peak_lr: the optimizer's lr at the start), and clip_grad_norm_(max_norm=1.0) after
    the backward pass once global_step >= warmup_steps (clip_start ">=", the book's
    repository) or > warmup_steps (">", the print edition)."""
    peak_lr = optimizer.param_groups[0]["lr"]
    total_steps = len(train_loader) * n_epochs
    lr_increment = (peak_lr - initial_lr) / warmup_steps

    def schedule(global_step):
        if global_step < warmup_steps:
            lr = initial_lr + global_step * lr_increment
        else:
            progress = (global_step - warmup_steps) / (total_steps - warmup_steps)
            lr = min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        clip = global_step >= warmup_steps if clip_start == ">=" else global_step > warmup_steps
        return lr, clip

    return _book_loop(
        model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq, eval_iter,
        start_context, tokenizer, schedule=schedule, trace=trace, sample=sample,
    )  # fmt: skip
