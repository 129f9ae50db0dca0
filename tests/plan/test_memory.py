"""gptref/plan/memory.py and gptref/plan/planner.py: the analytic training-memory model and the batch planner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from gptref.model import GPT_CONFIG_124M, GPT_CONFIG_SMALL, GPT_CONFIG_TINY, GPTModel
from gptref.plan.memory import estimate_training_memory, parameter_count
from gptref.plan.planner import lever_choices, lever_cost, max_batch_size, plan_batches, plan_levers
from tests.oracles import oracle_saved_bytes
from tests.strategies import tiny_configs

CONFIG_124M_256 = {**GPT_CONFIG_124M, "context_length": 256}
autocasts = st.sampled_from([None, "bfloat16"])
presets = st.sampled_from([GPT_CONFIG_TINY, GPT_CONFIG_SMALL, CONFIG_124M_256])


@given(tiny_configs())
def test_parameter_count_matches_the_built_model(cfg):
    """parameter_count(cfg) == the number of elements in GPTModel(cfg).parameters()."""
    built = sum(p.numel() for p in GPTModel(cfg).parameters())
    assert parameter_count(cfg) == built, f"{cfg}: computed {parameter_count(cfg)}, built {built}"


@given(presets, st.integers(1, 64))
def test_fp32_adamw_costs_16_bytes_per_parameter(cfg, b):
    """float32 AdamW: weights 4 + gradients 4 + exp_avg and exp_avg_sq 8 bytes per parameter."""
    est = estimate_training_memory(cfg, b)
    n = parameter_count(cfg)
    assert (est.parameters, est.gradients, est.optimizer_state) == (4 * n, 4 * n, 8 * n), est


@given(presets, st.integers(1, 64))
def test_autocast_keeps_parameters_gradients_and_adam_state_float32(cfg, b):
    """bf16 autocast shrinks activations, never the float32 parameters, gradients or AdamW state."""
    fp32 = estimate_training_memory(cfg, b)
    bf16 = estimate_training_memory(cfg, b, autocast="bfloat16")
    for name in ("parameters", "gradients", "optimizer_state", "buffers"):
        assert getattr(bf16, name) == getattr(fp32, name), (name, fp32, bf16)
    assert bf16.activations < fp32.activations, (fp32.activations, bf16.activations)


@given(presets, st.integers(1, 63), autocasts, st.sampled_from(["cpu", "cuda"]))
def test_estimate_grows_with_batch_size(cfg, b, autocast, device):
    """estimate(b + 1) > estimate(b): every batch-dependent term grows with b."""
    small = estimate_training_memory(cfg, b, autocast=autocast, device=device).total
    large = estimate_training_memory(cfg, b + 1, autocast=autocast, device=device).total
    assert large >= small, (b, small, large)


@given(presets, st.integers(1, 8), st.data())
def test_estimate_grows_with_context(cfg, b, data):
    """estimate(T + 1) >= estimate(T) for T < context_length."""
    T = data.draw(st.integers(1, cfg["context_length"] - 1), label="T")
    shorter = estimate_training_memory(cfg, b, context=T).total
    longer = estimate_training_memory(cfg, b, context=T + 1).total
    assert longer >= shorter, (T, shorter, longer)


@given(presets, st.integers(1, 16))
def test_accumulation_keeps_the_gradients_live(cfg, b):
    """With accumulation the micro-batch's peak holds all gradients: it is at least as high."""
    plain = estimate_training_memory(cfg, b)
    accumulating = estimate_training_memory(cfg, b, accumulation_steps=4)
    assert accumulating.total >= plain.total, (plain.total, accumulating.total)
    assert accumulating.breakdown["gradients"] >= plain.gradients, accumulating.breakdown


precisions = st.sampled_from([("float32", None), ("float32", "bfloat16"), ("bfloat16", None)])


@given(tiny_configs(max_vocab=64), st.integers(1, 3), precisions, st.data())
def test_activations_are_the_bytes_autograd_saves(cfg, b, precision, data):
    """Differential: the formula's activations + log-softmax + autocast weight copies equal the
    bytes of the storages autograd saves in forward + cross_entropy (the oracle counts them),
    up to the 0-dim tensors (GELU's sqrt(2/pi) per layer, nll_loss's total weight), for float32,
    bf16 autocast and bfloat16 parameters."""
    dtype, autocast = precision
    T = data.draw(st.integers(1, cfg.context_length), label="T")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    torch.manual_seed(seed)
    model = GPTModel(cfg).to(getattr(torch, dtype)).train()
    # separate tensors, as a DataLoader collates them (slices of one would share a storage)
    x, y = torch.randint(0, cfg.vocab_size, (2, b, T)).unbind(0)
    x, y = x.clone(), y.clone()

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast is not None):
            logits = model(x)
            F.cross_entropy(logits.flatten(0, 1), y.flatten())

    saved = oracle_saved_bytes(forward, exclude=list(model.parameters()))
    est = estimate_training_memory(cfg, b, context=T, dtype=dtype, autocast=autocast)
    predicted = est.activations + est.logits // 3 + est.autocast_weights
    assert 0 <= saved - predicted <= 4 * cfg.n_layers + 4, (
        f"{cfg}, b={b}, T={T}, {precision}: saved {saved}, predicted {predicted}"
    )


@given(presets, st.integers(2**20, 2**36), autocasts)
def test_max_batch_size_is_the_largest_that_fits(cfg, budget, autocast):
    """estimate(b).total <= budget < estimate(b + 1).total, b = max_batch_size (0: not even 1)."""
    b = max_batch_size(cfg, budget, autocast=autocast)
    if b > 0:
        assert estimate_training_memory(cfg, b, autocast=autocast).total <= budget, (b, budget)
    assert estimate_training_memory(cfg, b + 1, autocast=autocast).total > budget, (b, budget)


def test_max_batch_size_stops_at_its_limit():
    """A budget with room for more than ``limit`` rows answers ``limit``."""
    assert max_batch_size(GPT_CONFIG_TINY, 2**40, limit=100) == 100


@given(presets, st.integers(2**28, 2**36), st.integers(1, 4096), autocasts)
def test_plan_reaches_the_target_within_the_budget(cfg, budget, target, autocast):
    """micro * accumulation >= target, micro <= max_batch_size, and the predicted peak fits."""
    try:
        plan = plan_batches(cfg, budget, target, autocast=autocast)
    except ValueError:  # then rows of 1, in as many passes as the target, do not fit
        ones = estimate_training_memory(
            cfg, 1, accumulation_steps=max(2, target), autocast=autocast
        )
        assert ones.total > budget, (budget, ones.total)
        return
    largest = max_batch_size(cfg, budget, autocast=autocast)
    assert plan.micro_batch * plan.accumulation_steps >= target, plan
    assert plan.effective_batch - target < plan.accumulation_steps, (plan, target)
    assert 1 <= plan.micro_batch <= largest, (plan, largest)
    assert plan.predicted_peak <= budget, (plan, budget)


def test_plan_for_124m_in_24gib_accumulates_to_1024_rows():
    """The README's example: GPT-124M, context 1024, 24 GiB, target 1024 rows."""
    plan = plan_batches({**GPT_CONFIG_124M}, 24 * 2**30, 1024)
    assert plan.accumulation_steps > 1 and plan.effective_batch >= 1024, plan
    assert plan.predicted_peak <= 24 * 2**30, plan


def test_plan_raises_when_one_row_does_not_fit():
    """A budget below the parameters alone is a ValueError that names both sizes."""
    with pytest.raises(ValueError, match="even a micro-batch of 1 row needs"):
        plan_batches(GPT_CONFIG_124M, 2**30, 1024)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"context": 65}, "exceeds context_length 64"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"autocast": "float64"}, "autocast must be one of"),
        ({"optimizer": "lion"}, "optimizer must be one of"),
        ({"device": "tpu"}, "device must be one of"),
        ({"attn_impl": "flash"}, "attn_impl must be"),
    ],
)
def test_estimate_rejects_bad_arguments(kwargs, message):
    """User errors are ValueErrors naming the offending value."""
    args = {"batch_size": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        estimate_training_memory(GPT_CONFIG_TINY, args.pop("batch_size"), **args)


def test_dtype_names_and_torch_dtypes_agree():
    """'bf16', 'bfloat16' and torch.bfloat16 name the same autocast."""
    by_name = [
        estimate_training_memory(GPT_CONFIG_TINY, 2, autocast=a).total
        for a in ("bf16", "bfloat16", torch.bfloat16)
    ]
    assert len(set(by_name)) == 1, by_name


@given(tiny_configs(max_vocab=64), st.integers(1, 3), precisions, st.data())
def test_lever_activations_are_the_bytes_autograd_saves(cfg, b, precision, data):
    """Differential, with the levers: recomputation of every k-th block (k drawn) and the
    chunked loss (chunk drawn) save what the formula says: the activations, the autocast
    weight copies and, for the chunked loss, the gradients it computed in its forward pass
    (``h``'s, ``u*r``, and the head's float32 ``V*E*4``) instead of the log-softmax."""
    import dataclasses

    from gptref.loss import calc_loss_batch

    dtype, autocast = precision
    k = data.draw(st.integers(0, cfg.n_layers + 1), label="recompute")
    chunk = data.draw(st.none() | st.integers(1, 2 * b * cfg.context_length), label="loss_chunk")
    cfg = dataclasses.replace(cfg, recompute=k)
    T = data.draw(st.integers(1, cfg.context_length), label="T")
    torch.manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    model = GPTModel(cfg).to(getattr(torch, dtype)).train()
    x, y = torch.randint(0, cfg.vocab_size, (2, b, T)).unbind(0)
    x, y = x.clone(), y.clone()

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast is not None):
            calc_loss_batch(x, y, model, "cpu", loss_chunk=chunk)

    saved = oracle_saved_bytes(forward, exclude=list(model.parameters()))
    est = estimate_training_memory(
        cfg, b, context=T, dtype=dtype, autocast=autocast, loss_chunk=chunk
    )
    if chunk is None:
        loss_side = est.logits // 3
    else:
        r = 4 if dtype == "float32" else 2
        loss_side = b * T * cfg.emb_dim * r + cfg.vocab_size * cfg.emb_dim * 4
    predicted = est.activations + loss_side + est.autocast_weights
    assert 0 <= saved - predicted <= 4 * cfg.n_layers + 8, (
        f"{cfg}, b={b}, T={T}, {precision}, chunk={chunk}: saved {saved}, predicted {predicted}"
    )


@given(presets, st.integers(1, 32), autocasts, st.integers(1, 13), st.sampled_from([None, 256]))
def test_recomputation_never_raises_the_estimate(cfg, b, autocast, k, chunk):
    """Checkpointing any blocks frees more saved activations than the recomputation of the
    last one costs: estimate(recompute=k) <= estimate(recompute=0)."""
    plain = estimate_training_memory(cfg, b, autocast=autocast, loss_chunk=chunk).total
    levered = estimate_training_memory(cfg, b, autocast=autocast, loss_chunk=chunk, recompute=k)
    assert levered.total <= plain, (k, plain, levered.total, levered.peak_phase)


@given(st.sampled_from([GPT_CONFIG_SMALL, CONFIG_124M_256]), st.integers(8, 32), autocasts)
def test_chunked_loss_lowers_the_estimate_once_the_logits_outweigh_the_head(cfg, b, autocast):
    """With b*T rows much more than a chunk, the chunked loss's (V, E) gradient and one chunk
    cost less than the full logits it removes."""
    full = estimate_training_memory(cfg, b, autocast=autocast)
    chunked = estimate_training_memory(cfg, b, autocast=autocast, loss_chunk=256)
    assert chunked.total < full.total, (full.total, chunked.total)
    assert "loss-forward" in chunked.phases and "loss-backward" not in chunked.phases


def test_levers_at_least_double_the_largest_124m_batch_at_context_1024_in_24gib():
    """The issue's goal, as the model predicts it: the chunked loss with every block
    recomputed fits at least twice the rows of the reference in 24 GiB at context 1024."""
    budget = 24 * 2**30
    before = max_batch_size(GPT_CONFIG_124M, budget)
    after = max_batch_size(GPT_CONFIG_124M, budget, loss_chunk=1024, recompute=1)
    assert before >= 1 and after >= 2 * before, (before, after)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_chunk": 0}, "loss_chunk must be >= 1, got 0"),
        ({"recompute": -1}, "recompute must be >= 0, got -1"),
    ],
)
def test_estimate_rejects_bad_levers(kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate_training_memory(GPT_CONFIG_TINY, 1, **kwargs)


@given(presets, st.integers(2**28, 2**36), st.integers(1, 2048), autocasts)
def test_every_lever_plan_reaches_the_target_within_the_budget(cfg, budget, target, autocast):
    """plan_levers: each plan's micro-batch x accumulation reaches the target, its predicted
    peak (with its levers) fits, and the plans come fastest first."""
    try:
        plans = plan_levers(cfg, budget, target, autocast=autocast)
    except ValueError:  # then not even one row fits with every lever
        ones = estimate_training_memory(
            cfg, 1, accumulation_steps=2, autocast=autocast, loss_chunk=1024, recompute=1
        )
        assert ones.total > budget, (budget, ones.total)
        return
    for p in plans:
        b = p.batches
        assert b.effective_batch >= target and b.predicted_peak <= budget, p
        est = estimate_training_memory(
            cfg, b.micro_batch, accumulation_steps=b.accumulation_steps, autocast=autocast,
            loss_chunk=b.loss_chunk, recompute=b.recompute,
        )  # fmt: skip
        assert est.total == b.predicted_peak, (p, est.total)
    speeds = [round(p.speed, 4) for p in plans]
    assert speeds == sorted(speeds, reverse=True), speeds


def test_full_recomputation_costs_a_third_of_the_blocks_training_flops():
    """lever_cost: recomputing all 12 blocks of GPT-124M at context 1024 adds 12 block
    forwards, (24*E*E + 4*T*E) FLOPs per token each, over 6N + 12*L*E*T: 24.3 %."""
    from gptref.bench.flops import flops_per_token

    E, T, L = 768, 1024, 12
    expected = L * (24 * E * E + 4 * T * E) / flops_per_token(GPT_CONFIG_124M)
    assert lever_cost(GPT_CONFIG_124M, recompute=1) == pytest.approx(expected)
    assert round(expected, 3) == 0.243, expected
    assert lever_cost(GPT_CONFIG_124M, recompute=2) == pytest.approx(expected / 2)
    assert lever_cost(GPT_CONFIG_124M) == 0.0


def test_lever_choices_are_both_losses_times_every_recomputation():
    """For 12 blocks: k = 0 (none) and 1..12, each with the full and the chunked loss."""
    choices = lever_choices(12)
    assert sorted({k for _, k in choices}) == list(range(13)), choices
    assert {c for c, _ in choices} == {None, 1024} and len(choices) == 26, choices


def test_plan_for_124m_at_context_1024_chooses_levers_and_prints_their_costs(monkeypatch):
    """The issue's example: gptref plan --memory 24GiB --target-batch 512 --preset 124M
    --context 1024 lists lever plans with their costs, and the run command carries the
    chosen levers (on a CPU class whose chunked loss is not measured: its cost is 0)."""
    from gptref.plan import planner
    from gptref.plan.planner import format_plan, plan

    monkeypatch.setattr(planner, "device_class", lambda: "cpu of no measured class")

    chosen = plan("124M", "24GiB", 512, context=1024)
    text = format_plan("124M", "24GiB", 512, context=1024)
    assert "no levers" in text and "recompute 12/12 blocks (--recompute 1)" in text, text
    assert "cost +24.3 %" in text, text
    flags = (" --loss chunked" if chosen.loss_chunk else "") + (
        f" --recompute {chosen.recompute}" if chosen.recompute else ""
    )
    assert text.splitlines()[-1].endswith(
        f"--accumulation-steps {chosen.accumulation_steps}{flags}"
    )
    none = plan("124M", "24GiB", 512, context=1024, levers="none")
    assert (none.loss_chunk, none.recompute) == (None, 0), none


@pytest.mark.parametrize(("cost", "chunked"), [(-0.081, True), (0.05, False)])
def test_a_measured_chunked_loss_speed_up_makes_the_planner_choose_it(monkeypatch, cost, chunked):
    """Where the chunked loss measures faster (cost < 0) the planner chooses it even when
    the full loss fits the whole target batch; where it measures slower, not; the printed
    plan names the measured cost and its device class."""
    from gptref.plan import planner

    monkeypatch.setattr(planner, "device_class", lambda: "cpu TEST")
    monkeypatch.setitem(planner.CHUNKED_LOSS_COST, ("cpu TEST", "float32"), cost)
    chosen = planner.plan("small", "24GiB", 8)
    assert (chosen.loss_chunk is not None, chosen.recompute) == (chunked, 0), chosen
    text = planner.format_plan("small", "24GiB", 8)
    assert f"the chunked loss measured on cpu TEST in float32: {100 * cost:+.1f} %" in text, text
    assert planner.lever_cost(GPT_CONFIG_124M, loss_chunk=1024) == cost
    assert planner.lever_cost(GPT_CONFIG_124M, loss_chunk=1024, dtype="bfloat16") == 0.0
    assert planner.lever_cost(GPT_CONFIG_124M, loss_chunk=1024, device="cuda") == 0.0
