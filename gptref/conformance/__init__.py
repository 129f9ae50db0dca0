"""gptref's conformance suite: the reference's specification, run against any implementation.

Run it::

    GPTREF_IMPL=package.module pytest --pyargs gptref.conformance   # default: gptref itself
    gptref conformance package.module [--allow-missing] [pytest args, e.g. -x -k chunk]

``GPTREF_IMPL`` is a module importable from the current directory, or a path to a ``.py``
file. ``--allow-missing`` (or ``GPTREF_ALLOW_MISSING=1``) skips, instead of failing, the tests
of functions the module lacks; either way a missing function affects only its own tests.
The report header names the implementation, its file and ``__version__``.

**The adapter protocol.** The module under test (often a thin adapter that imports the real
code) provides any of these functions, with gptref's signatures (see gptref's README):

- ``split(data, train_ratio)`` -> ``(data[:k], data[k:])``, ``k = int(train_ratio * len(data))``,
  for a ``str``, a list and a 1-D tensor alike;
- ``num_chunks(n_tokens, max_length, stride)`` -> ``len(range(0, n_tokens - max_length, stride))``;
- ``chunk(ids, max_length, stride)`` -> ``(inputs, targets)``, int64 ``(num_chunks, max_length)``:
  the book's sliding windows, targets one token later (``ids``: int64 ``(N,)``);
- ``batch_order(n, batch_size, *, shuffle, drop_last, seed, epoch, rank, world_size)`` -> a
  list of index tensors: one epoch's batches for one rank, a pure function of its arguments;
- ``collate(samples, *, pad_token_id, ignore_index, max_length)`` -> ``(inputs, targets)``:
  ragged ``(input, target)`` pairs truncated to ``max_length`` and right-padded;
- ``calc_loss_batch(input_batch, target_batch, model, device)`` -> a differentiable scalar
  tensor, the mean cross-entropy over targets that are not -100;
- ``calc_loss_loader(data_loader, model, device, num_batches=None)`` -> float (``nan`` for no
  batches), weighted as ``LOADER_LOSS_WEIGHTING`` declares;
- ``train_step(model, optimizer, input_batch, target_batch, device, *, lr=None,
  grad_clip=None, accumulation_steps=1)`` -> an object with ``loss``, ``grad_norm`` (before
  clipping), ``tokens``, ``target_tokens`` and ``lr``: one optimizer update;
- ``lr_at(step, *, peak_lr, total_steps, warmup_steps, initial_lr, min_lr)`` -> float, as
  ``LR_SCHEDULE`` declares;
- ``generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None,
  eos_id=None)`` -> int64 ``(b, T + k)``: the book's generate (the suite batches several
  prompts only for greedy decoding without ``eos_id``).

Optional attributes:

- ``LOADER_LOSS_WEIGHTING``: ``"batch"`` (default, the book's mean of per-batch means) or
  ``"token"`` (the mean over every counted target): what ``calc_loss_loader`` returns;
- ``LOADER_LOSS_WEIGHTINGS``: the values ``calc_loss_loader`` accepts as a ``weighting=``
  keyword (default none; gptref: ``("batch", "token")``), each checked too;
- ``LR_SCHEDULE``: ``"appendix_d"`` (default: the book's formula as printed, which never
  reaches ``min_lr``; needs ``warmup_steps >= 1``) or ``"exact"`` (gptref's ``lr_at``: exactly
  ``min_lr`` at ``total_steps - 1`` and after, ``warmup_steps = 0`` allowed);
- ``make_model(config: dict) -> nn.Module``: builds the model the loss, train_step and generate
  tests use, from the book's config dict, after ``torch.manual_seed``; without it they use
  gptref's ``GPTModel`` (the functions, not the model, are under test);
- ``__version__``: shown in the header.

Every expected value comes from ``gptref.conformance.oracles`` (plain restatements of the
book's definitions), never from gptref's own functions. A failure shows the call that
reproduces it, with the expected and the actual result.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence

from gptref.conformance.impl import (
    CONTRACT,
    IMPL_ENV,
    SEMANTICS,
    Implementation,
    load_implementation,
)

__all__ = ["CONTRACT", "SEMANTICS", "Implementation", "load_implementation", "run_suite"]


def run_suite(impl: str, pytest_args: Sequence[str] = ()) -> int:
    """``GPTREF_IMPL=impl python -m pytest --pyargs gptref.conformance *pytest_args`` in a fresh
    interpreter (the current directory first on its path) -> pytest's exit status."""
    missing = [m for m in ("pytest", "hypothesis") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f"the conformance suite needs {' and '.join(missing)}: pip install 'gptref[test]'"
        )
    env = {**os.environ, IMPL_ENV: impl}
    command = [sys.executable, "-m", "pytest", "--pyargs", "gptref.conformance", *pytest_args]
    return subprocess.call(command, env=env)
