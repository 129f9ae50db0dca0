"""gptref's conformance suite: the reference's specification, run against any implementation.

Run it::

    GPTREF_IMPL=package.module pytest --pyargs gptref.conformance   # default: gptref itself
    gptref conformance package.module [pytest args, e.g. -x -k chunk]  # --fast-fail by default
    gptref conformance llms_from_scratch                           # the book's own package

``GPTREF_IMPL`` is a module importable from the current directory, a path to a ``.py`` file
(its folder goes on ``sys.path``), modules joined by ``+`` (a name is looked up in each in
turn: ``pkg.ch02+pkg.ch05``), or a known name (``gptref``, ``llms_from_scratch``; see
``impl.KNOWN``). The header names the implementation, its version, its declared
conventions and what it does not provide; the end of the run gives each **level**'s verdict
(passed / failed / not provided), also under ``-q``, and ``--conformance-json PATH`` writes
it as JSON (``--junitxml`` works as pytest gives it, each test with its level as a property).

**The run** (``session.py``, ``guard.py``; the options come from ``plugin.py``, the pytest plugin
gptref installs): the offline tokenizer goes in, then the implementation is imported (an
import that raises, exits or hangs is one line naming the module); the tests run causes first
(``conftest.ORDER``: data, losses, schedule, step, generation, evaluation and the sample, the
loops last); a call that exits or outlasts ``--call-timeout`` (default 60 s) fails its test
naming the call; ``--fast-fail`` reports each failing test's first counterexample unshrunk
(``--shrink`` overrides it); the level verdicts appear only when the run reached its end.

**Levels** (``levels.LEVELS``): ``book`` (chapters 2, 5 and appendix D) and the extensions
``seeded``, ``distributed``, ``padding``, ``accumulation``, ``exact-schedule``. A test whose
function the implementation lacks, or that raises ``NotImplementedError``, is "not provided"
(``--require LEVEL,...`` makes that a failure); a test of a convention or feature declared
otherwise is "not applicable".

**The book's names and signatures** are accepted directly: a module exposing
``GPTDatasetV1(txt, tokenizer, max_length, stride)``, ``create_dataloader_v1(txt,
batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True, num_workers=0)``,
``text_to_token_ids(text, tokenizer)``, ``token_ids_to_text(ids, tokenizer)``,
``calc_loss_batch``, ``calc_loss_loader``, ``generate``, ``generate_text_simple``,
``evaluate_model``, ``generate_and_print_sample``, ``train_model_simple`` and ``train_model``
(and the book's ``GPTModel(cfg)``) is testable with no adapter at all.
(``tiktoken.get_encoding("gpt2")`` is made to work offline: ``tokenizer.py``.)

**gptref's function protocol** (its README has the signatures) checks the same definitions
as pure functions, plus the extensions:

- ``split(data, train_ratio)`` -> ``(data[:k], data[k:])``, ``k = int(train_ratio * len(data))``;
- ``num_chunks(n_tokens, max_length, stride)`` -> ``len(range(0, n_tokens - max_length, stride))``;
- ``chunk(ids, max_length, stride)`` -> ``(inputs, targets)``, int64 ``(num_chunks, max_length)``;
- ``batch_order(n, batch_size, *, shuffle, drop_last, seed, epoch, rank, world_size)`` -> a
  list of index tensors: one epoch's batches for one rank, a pure function of its arguments;
- ``collate(samples, *, pad_token_id, ignore_index, max_length)`` -> ``(inputs, targets)``;
- ``calc_loss_batch(input_batch, target_batch, model, device)`` -> a differentiable scalar
  tensor, the mean cross-entropy over targets that are not ``IGNORE_INDEX``;
- ``calc_loss_loader(data_loader, model, device, num_batches=None)`` -> float (``nan`` for no
  batches), weighted as ``LOADER_LOSS_WEIGHTING`` declares;
- ``train_step(model, optimizer, input_batch, target_batch, device, *, lr=None,
  grad_clip=None, accumulation_steps=1)`` -> an object with ``loss``, ``grad_norm`` (before
  clipping), ``tokens``, ``target_tokens`` and ``lr``: one optimizer update;
- ``lr_at(step, *, peak_lr, total_steps, warmup_steps, initial_lr, min_lr)`` -> float;
- ``generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None,
  eos_id=None)`` -> int64 ``(b, T + k)``.

**Declarable conventions** (module attributes; ``conventions.py`` has the full list and the
defaults, which are the book's): ``LOADER_LOSS_WEIGHTING`` / ``LOADER_LOSS_WEIGHTINGS``,
``LR_SCHEDULE`` (``"appendix_d"`` / ``"exact"``), ``WARMUP`` (``"book"`` / ``"nanogpt"``),
``IGNORE_INDEX`` (-100), ``SHARDING`` (``"drop-remainder"`` / ``"pad"``), ``CLIP_START``
(``">="`` / ``">"``), ``TEXT_TO_TOKEN_IDS`` (``"allow-endoftext"`` / ``"encode"``: the chapter-5
scripts' plain ``tokenizer.encode``), ``EPOCH_SAMPLE`` (``"epoch"`` / ``"eval"`` / ``"none"``:
where the loops print their sample), ``ACCUMULATION_WEIGHTING`` (``"token"`` / ``"batch"``), ``LR_ULPS``
(the one schedule tolerance, in ulps of peak_lr, default 4), ``UNSUPPORTED`` (a set of
``conventions.FEATURES``: ``greedy``, ``top_k``, ``eos_id``, ``grad_clip``), and
``make_model(config)`` (or ``GPTModel``) for the model the loss, step and generate tests use
(default: gptref's ``GPTModel``; the functions, not the model, are under test).

Every expected value comes from ``gptref.conformance.oracles`` (plain restatements of the
book's definitions, the training loops included), never from gptref's own functions. A
failure shows the call (for sharding: every rank's call) that reproduces it, with the
expected and the actual result.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence

from gptref.conformance.conventions import CHOICES, FEATURES
from gptref.conformance.impl import (
    BOOK,
    CONTRACT,
    IMPL_ENV,
    KNOWN,
    Implementation,
    load_implementation,
)
from gptref.conformance.levels import LEVELS

__all__ = [
    "BOOK",
    "CHOICES",
    "CONTRACT",
    "FEATURES",
    "KNOWN",
    "LEVELS",
    "Implementation",
    "load_implementation",
    "run_suite",
]


def run_suite(impl: str, pytest_args: Sequence[str] = (), *, fast_fail: bool = True) -> int:
    """``GPTREF_IMPL=impl python -m pytest --pyargs gptref.conformance [--fast-fail]
    *pytest_args`` in a fresh interpreter (the current directory first on its path) ->
    pytest's exit status. ``fast_fail`` (the default of ``gptref conformance``): each failing
    test reports its first counterexample unshrunk; ``--shrink`` in pytest_args overrides it."""
    missing = [m for m in ("pytest", "hypothesis") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f"the conformance suite needs {' and '.join(missing)}: pip install 'gptref[test]'"
        )
    env = {**os.environ, IMPL_ENV: impl}
    fast = ["--fast-fail"] if fast_fail else []
    command = [sys.executable, "-m", "pytest", "--pyargs", "gptref.conformance", *fast, *pytest_args]  # fmt: skip
    return subprocess.call(command, env=env)
