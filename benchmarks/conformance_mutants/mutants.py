"""Plausible single-edit bugs in ``examples/book_style.py``: what a reader of the book might
get wrong in each function, including across consecutive steps (gradients never zeroed) and
in the state a function leaves behind (a model left in eval mode, a reseeded global RNG).

Each mutant replaces the ``nth`` occurrence (0-based) of ``old`` with ``new`` in the source.
``equivalent`` holds the argument why no conformance test can tell the mutant from the
original (so the script expects it to survive); every other mutant must be killed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # what the reader got wrong, in words
    old: str
    new: str
    nth: int = 0
    equivalent: str | None = None
    at_fault: str | None = None  # the function the first failure must name
    argument: str | None = None  # a name that first failure's message must show


MUTANTS: tuple[Mutant, ...] = (
    # ------------------------------------------------------------ chapter 2: data
    Mutant("split_round", "rounds the split point instead of truncating it",
           "split_idx = int(train_ratio * len(data))", "split_idx = round(train_ratio * len(data))"),
    Mutant("windows_one_too_many", "one window start too many (the last target runs off the end)",
           "range(0, n_tokens - max_length, stride)", "range(0, n_tokens - max_length + 1, stride)"),
    Mutant("windows_one_too_few", "keeps back one token too many (examples/book_style_broken.py)",
           "range(0, n_tokens - max_length, stride)", "range(0, n_tokens - max_length - 1, stride)"),
    Mutant("windows_ignore_stride", "steps by max_length instead of stride",
           "range(0, n_tokens - max_length, stride)", "range(0, n_tokens - max_length, max_length)"),
    Mutant("targets_not_shifted", "targets are the inputs (forgot the shift by one)",
           "token_ids[i + 1 : i + max_length + 1]", "token_ids[i : i + max_length]"),
    Mutant("targets_one_short", "targets stop one token early",
           "token_ids[i + 1 : i + max_length + 1]", "token_ids[i + 1 : i + max_length]"),
    Mutant("dataset_no_endoftext", "tokenizes without allowing <|endoftext|>",
           'tokenizer.encode(txt, allowed_special={"<|endoftext|>"})', "tokenizer.encode(txt)"),
    Mutant("loader_never_shuffles", "passes shuffle=False to the DataLoader",
           "batch_size=batch_size, shuffle=shuffle,", "batch_size=batch_size, shuffle=False,"),
    Mutant("loader_forgets_drop_last", "does not pass drop_last (the DataLoader's default is False)",
           "shuffle=shuffle, drop_last=drop_last,", "shuffle=shuffle,"),
    Mutant("loader_default_stride", "default stride 256 instead of the book's 128",
           "max_length=256, stride=128, shuffle=True", "max_length=256, stride=256, shuffle=True"),
    Mutant("loader_reseeds", "calls torch.manual_seed(123) inside the loader (copied from a notebook)",
           '    tokenizer = tiktoken.get_encoding("gpt2")\n    dataset',
           '    tokenizer = tiktoken.get_encoding("gpt2")\n    torch.manual_seed(123)\n    dataset'),
    Mutant("ids_no_batch_dim", "text_to_token_ids forgets the batch dimension",
           "return torch.tensor(encoded).unsqueeze(0)", "return torch.tensor(encoded)"),
    Mutant("ids_to_text_first_row", "token_ids_to_text takes row 0 instead of squeezing dim 0",
           "token_ids.squeeze(0).tolist()", "token_ids[0].tolist()",
           equivalent="for the (1, T) tensors the book (and the suite) passes, squeeze(0) and [0] "
           "are the same row; they differ only for a (T,) tensor, which the book never passes"),
    Mutant("order_same_every_epoch", "seeds the shuffle with the seed only (every epoch alike)",
           "generator.manual_seed(seed * 1_000_003 + epoch)", "generator.manual_seed(seed)"),
    Mutant("order_always_drops_last", "drops the short last batch even without drop_last",
           "if len(batch) < batch_size and drop_last:", "if len(batch) < batch_size:"),
    Mutant("shards_keep_remainder", "shards the whole order (ranks get unequal shards)",
           "mine = order[: per_rank * world_size][rank::world_size]", "mine = order[rank::world_size]"),
    Mutant("collate_pads_targets_with_pad", "pads the targets with the pad token, not ignore_index",
           "y + [ignore_index] * missing", "y + [pad_token_id] * missing"),
    Mutant("collate_pads_left", "pads the inputs on the left",
           "torch.tensor(x + [pad_token_id] * missing)", "torch.tensor([pad_token_id] * missing + x)"),
    # ------------------------------------------------------------ chapter 5: loss
    Mutant("loss_last_position_only", "the loss of the last position only",
           "F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())",
           "F.cross_entropy(logits[:, -1, :], target_batch[:, -1])"),
    Mutant("loss_sum", "sums the per-token losses instead of averaging them",
           "F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())",
           'F.cross_entropy(logits.flatten(0, 1), target_batch.flatten(), reduction="sum")'),
    Mutant("loss_forgets_device", "does not move the batches to the device",
           "input_batch, target_batch = input_batch.to(device), target_batch.to(device)\n    logits",
           "logits",
           equivalent="every test runs on device 'cpu', where the tensors already are; only a "
           "run on a GPU could tell (the suite's tests are CPU-only by design)"),
    Mutant("loader_loss_divides_by_len", "divides by len(loader) even when num_batches is smaller",
           "    return total / n\n", "    return total / len(data_loader)\n"),
    Mutant("loader_loss_empty_is_zero", "returns 0.0 for an empty loader (the book: nan)",
           'if len(data_loader) == 0:\n        return float("nan")',
           "if len(data_loader) == 0:\n        return 0.0"),
    Mutant("loader_loss_ignores_num_batches", "sums every batch, divides by num_batches",
           "itertools.islice(data_loader, n)", "data_loader"),
    # ------------------------------------------------------------ training step and schedule
    Mutant("step_never_zeroes_grads", "train_step forgets optimizer.zero_grad() (grads pile up)",
           "    optimizer.zero_grad()\n    counted", "    counted"),
    Mutant("step_accumulation_divides_by_k", "divides each micro-batch loss by k, not by its share",
           "* (share / counted)", "/ accumulation_steps"),
    Mutant("step_clips_values", "clips each gradient value instead of the total norm",
           "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=grad_clip)",
           "torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=grad_clip)"),
    Mutant("step_reports_rows", "reports the batch rows as the tokens seen",
           "Step(total, grad_norm, input_batch.numel(),", "Step(total, grad_norm, input_batch.shape[0],"),
    Mutant("lr_warmup_off_by_one", "the warmup starts one increment high",
           "return initial_lr + step * lr_increment", "return initial_lr + (step + 1) * lr_increment"),
    Mutant("lr_cosine_exact_denominator", "decays over total_steps - 1 - warmup (not the book's)",
           "(step - warmup_steps) / (total_steps - warmup_steps)",
           "(step - warmup_steps) / (total_steps - 1 - warmup_steps)"),
    Mutant("lr_cosine_no_pi", "forgets the pi in the cosine",
           "math.cos(math.pi * progress)", "math.cos(progress)"),
    # ------------------------------------------------------------ chapter 5: generation
    Mutant("generate_crops_the_start", "feeds the first context_size tokens, not the last",
           "model(idx[:, -context_size:])[:, -1, :]  # the model", "model(idx[:, :context_size])[:, -1, :]  # the model"),
    Mutant("top_k_drops_the_kth", "drops the k-th largest logit too (<= instead of <)",
           "logits < kth_largest", "logits <= kth_largest"),
    Mutant("top_k_keeps_only_the_max", "takes the largest logit as the threshold (top-1)",
           ".values[:, -1]", ".values[:, 0]"),
    Mutant("temperature_multiplies", "multiplies the logits by the temperature",
           "logits / temperature", "logits * temperature"),
    Mutant("eos_skipped_not_stopped", "skips the end-of-text token instead of stopping",
           "break  # one sequence", "continue  # one sequence"),
    Mutant("generate_reseeds", "reseeds the global RNG in generate (copied from a notebook)",
           '    """Append up to max_new_tokens tokens to idx (b, T), each from the model\'s last position."""\n',
           '    """Append up to max_new_tokens tokens to idx (b, T), each from the model\'s last position."""\n    torch.manual_seed(123)\n'),
    Mutant("sample_with_grad", "the per-epoch sample runs with gradients enabled",
           "        with torch.no_grad():\n            logits = model(idx[:, -context_size:])[:, -1, :]\n        idx",
           "        logits = model(idx[:, -context_size:])[:, -1, :]\n        idx"),
    # ------------------------------------------------------------ chapter 5 and appendix D: loops
    Mutant("loop_never_zeroes_grads", "train_model_simple forgets optimizer.zero_grad()",
           "            optimizer.zero_grad()\n            loss", "            loss"),
    Mutant("loop_global_step_from_zero", "counts global_step from 0 (evaluations one step late)",
           "tokens_seen, global_step = 0, -1\n    for epoch in range(num_epochs)",
           "tokens_seen, global_step = 0, 0\n    for epoch in range(num_epochs)"),
    Mutant("loop_counts_rows", "adds the batch rows, not its tokens, to tokens_seen",
           "tokens_seen += input_batch.numel()\n            global_step", "tokens_seen += input_batch.shape[0]\n            global_step"),
    Mutant("loop_evaluates_one_late", "evaluates when (global_step + 1) % eval_freq == 0",
           "if global_step % eval_freq == 0", "if (global_step + 1) % eval_freq == 0"),
    Mutant("loop_no_train_mode", "never calls model.train() at the start of an epoch",
           "        model.train()\n        for input_batch, target_batch in train_loader:\n            optimizer.zero_grad()\n            loss",
           "        for input_batch, target_batch in train_loader:\n            optimizer.zero_grad()\n            loss"),
    Mutant("evaluate_leaves_eval_mode", "evaluate_model does not switch back to train mode",
           "    model.train()\n    return train_loss, val_loss", "    return train_loss, val_loss"),
    Mutant("evaluate_without_eval_mode", "evaluates in train mode (dropout on)",
           "    model.eval()\n    with torch.no_grad():", "    with torch.no_grad():"),
    Mutant("evaluate_all_batches", "evaluates every batch, ignoring eval_iter",
           "calc_loss_loader(train_loader, model, device, num_batches=eval_iter)",
           "calc_loss_loader(train_loader, model, device)"),
    Mutant("sample_leaves_eval_mode", "the per-epoch sample leaves the model in eval mode",
           '.replace("\\n", " "))\n    model.train()', '.replace("\\n", " "))'),
    Mutant("appendix_d_clips_as_printed", "clips from global_step > warmup_steps (the print edition)",
           "if global_step >= warmup_steps:", "if global_step > warmup_steps:"),
    Mutant("appendix_d_steps_per_epoch", "total steps of one epoch, not of n_epochs",
           "total_training_steps = len(train_loader) * n_epochs", "total_training_steps = len(train_loader)"),
    Mutant("appendix_d_lr_after_step", "records the lr but never sets it on the optimizer",
           '                param_group["lr"] = lr\n', "                pass\n"),
)  # fmt: skip
