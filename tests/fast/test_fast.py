"""The fast paths (``gptref.fast``) compute the fp32 reference's function.

Each path trains the same tiny model on the same batches for a few AdamW steps and is
compared with the reference (reference attention, the per-parameter AdamW loop, fp32,
eager). Tolerances, and why:

- bitwise: AdamW "foreach" (the same per-element arithmetic, grouped into fewer kernels)
  and vocabulary padding (the real rows' products are the same dot products; the pad is
  sliced off before the loss);
- 1e-6 absolute on parameters: fused AdamW (one kernel; its fused multiply-adds round once
  where the loop rounds twice: a few float32 ulps per step);
- 1e-5 relative on the step losses: sdpa, fused LayerNorm/GELU and torch.compile (fp32
  throughout, but other summation orders: softmax, LayerNorm statistics, tanh; float32 eps is 1.2e-7 and the errors of
  a few hundred-term reductions stay far below 1e-5);
- 5e-3 relative on the step losses: bf16 autocast (matmul inputs are rounded to 8
  significant bits, unit roundoff 2^-9 = 2e-3; the loss, a mean over all tokens, averages
  most of that out; parameters are not compared: Adam's normalised steps turn tiny
  gradient differences into differences of up to lr per step);
- 1e-3 relative (CUDA only): TF32 matmuls (10-bit significand, unit roundoff 2^-11 = 5e-4);
- bitwise (CUDA only): pinned memory with non_blocking copies moves the same bytes;
- bitwise: activation checkpointing (``recompute``), with dropout on: a checkpointed block
  runs the same ops again on the same input, with the RNG state it first ran with restored
  (``preserve_rng_state=True``), so its masks and every product are the first run's; the
  global RNG ends where the reference leaves it;
- 1e-5 relative on the step losses: the chunked loss (``loss="chunked"``; its own tests, with
  each gradient's tolerance, are in ``tests/core/test_chunked_loss.py``).

On CUDA the bitwise and 1e-6 parameter checks become 1e-5 checks of the step losses: the
embedding's backward there adds with atomics, so even two runs of the reference differ in
the last bits, and Adam's normalised steps carry that into the parameters (seen on an H100:
tok_emb differed between two otherwise identical runs). cuBLAS also picks kernels by shape,
so a padded head's products are not bitwise the unpadded ones' there.
"""

from __future__ import annotations

import pytest
import torch

from gptref.fast.paths import OPTIMIZER_IMPLS, compile_model, make_optimizer, set_tf32
from gptref.loader import create_dataloader
from gptref.loss import calc_loss_batch
from gptref.model import GPTModel, unwrap
from gptref.step import train_step

CFG = {"vocab_size": 500, "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": False}  # fmt: skip
STEPS = 5
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _batches() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, CFG["vocab_size"], (STEPS, 4, CFG["context_length"] + 1), generator=gen)


def _train(device="cpu", *, attn="reference", optimizer="for-loop", autocast=None,
           compile=False, pad=1, fused_layers=False, loss_chunk=None, recompute=0,
           config=None):  # fmt: skip
    """-> (step losses float64 (STEPS,), the trained model)."""
    torch.manual_seed(0)
    cfg = {**(config or CFG), "attn_impl": attn, "vocab_pad_multiple": pad,
           "fused_layers": fused_layers, "recompute": recompute}  # fmt: skip
    model = GPTModel(cfg).to(device)
    opt = make_optimizer(model, 1e-3, 0.1, optimizer)
    run = compile_model(model, compile)
    losses = [
        train_step(run, opt, b[:, :-1], b[:, 1:], device, autocast_dtype=autocast,
                   loss_chunk=loss_chunk).loss
        for b in _batches()
    ]  # fmt: skip
    return torch.tensor(losses, dtype=torch.float64), model


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs() / b.abs()).max().item()


def _assert_trains_like(reference, got_losses, model, *, atol: float) -> None:
    """Step losses and parameters equal the reference's (``atol=0``: bitwise) on CPU; on
    CUDA, where runs are not bitwise reproducible (see above), the losses to 1e-5."""
    device, losses, params = reference
    if device == "cuda":
        assert _rel(got_losses, losses) < 1e-5
        return
    torch.testing.assert_close(got_losses, losses, rtol=atol, atol=atol)
    got = _params(model)
    if "out_head.weight" in got:  # a padded head: its real rows
        got["out_head.weight"] = got["out_head.weight"][: CFG["vocab_size"]]
    for name, value in got.items():
        torch.testing.assert_close(value, params[name], rtol=0, atol=atol, msg=name)


@pytest.fixture(scope="module", params=DEVICES)
def reference(request):
    device = request.param
    losses, model = _train(device)
    return device, losses, _params(model)


def test_make_optimizer_chooses_the_implementation():
    model = GPTModel(CFG)
    chosen = {impl: make_optimizer(model, 1e-3, 0.1, impl).defaults for impl in OPTIMIZER_IMPLS}
    assert chosen["fused"]["fused"] is True
    assert chosen["foreach"]["foreach"] is True
    assert chosen["for-loop"]["foreach"] is False
    assert chosen["default"]["foreach"] is None and chosen["default"]["fused"] is None
    with pytest.raises(ValueError, match="optimizer must be one of .* got 'adam'"):
        make_optimizer(model, 1e-3, 0.1, "adam")


def test_foreach_adamw_is_bitwise_the_loop(reference):
    got_losses, model = _train(reference[0], optimizer="foreach")
    _assert_trains_like(reference, got_losses, model, atol=0)


def test_fused_adamw_matches_the_loop_to_1e_6(reference):
    got_losses, model = _train(reference[0], optimizer="fused")
    _assert_trains_like(reference, got_losses, model, atol=1e-6)


def test_vocab_padding_is_bitwise_the_unpadded_model(reference):
    got_losses, model = _train(reference[0], pad=64)
    assert model.out_head.weight.shape == (512, CFG["emb_dim"])
    assert not model.out_head.weight[CFG["vocab_size"] :].any()  # the pad stays zero
    _assert_trains_like(reference, got_losses, model, atol=0)


def test_vocab_padded_logits_have_the_real_vocabulary_width():
    model = GPTModel({**CFG, "vocab_pad_multiple": 64}).eval()
    logits = model(torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, CFG["vocab_size"])


def test_sdpa_matches_the_reference_to_1e_5(reference):
    device, losses, _ = reference
    got, _ = _train(device, attn="sdpa")
    assert _rel(got, losses) < 1e-5


def test_fused_layers_match_the_reference_to_1e_5(reference):
    device, losses, params = reference
    got, model = _train(device, fused_layers=True)
    assert _rel(got, losses) < 1e-5
    assert _params(model).keys() == params.keys()  # the book's parameter names
    x = torch.randn(3, 7, CFG["emb_dim"], device=device)
    from gptref.model import GELU, LayerNorm

    book, fused = LayerNorm(CFG["emb_dim"]).to(device), LayerNorm(CFG["emb_dim"], fused=True)
    torch.testing.assert_close(fused.to(device)(x), book(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(GELU(fused=True)(x), GELU()(x), rtol=1e-5, atol=1e-6)


def test_bf16_autocast_matches_the_reference_to_5e_3(reference):
    device, losses, _ = reference
    got, _ = _train(device, autocast=torch.bfloat16)
    assert _rel(got, losses) < 5e-3
    got, _ = _train(device, autocast=torch.bfloat16, attn="sdpa", optimizer="fused")
    assert _rel(got, losses) < 5e-3


@pytest.mark.slow
def test_compiled_model_matches_the_reference_to_1e_5(reference):
    """torch.compile (inductor; ~30 s to compile on 2 CPU cores, cached afterwards)."""
    torch._dynamo.reset()
    device, losses, params = reference
    got, model = _train(device, compile=True)
    assert _rel(got, losses) < 1e-5
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it really compiled
    assert unwrap(compile_model(model)) is model
    assert _params(model).keys() == params.keys()  # state dicts keep the book's names


@cuda_only
def test_tf32_matches_the_reference_to_1e_3():
    losses, _ = _train("cuda")
    set_tf32(True)
    try:
        got, _ = _train("cuda")
    finally:
        set_tf32(False)
    assert _rel(got, losses) < 1e-3


@cuda_only
def test_pinned_loader_moves_the_same_batches_and_trains_alike():
    ids = torch.randint(0, CFG["vocab_size"], (3000,), generator=torch.Generator().manual_seed(1))
    runs = []
    for pin in (False, True):
        loader = create_dataloader(ids, 4, 32, 32, seed=5, pin_memory=pin)
        torch.manual_seed(0)
        model = GPTModel(CFG).cuda()
        opt = make_optimizer(model, 1e-3, 0.1)
        batches = list(loader)[:STEPS]
        assert all(x.is_pinned() == pin for x, _ in batches)
        on_device = [x.to("cuda", non_blocking=True) for x, _ in batches]
        losses = [train_step(model, opt, x, y, "cuda").loss for x, y in batches]
        runs.append((torch.tensor(losses, dtype=torch.float64), torch.stack(on_device).cpu()))
    assert torch.equal(runs[0][1], runs[1][1])  # the bytes that arrived
    assert _rel(runs[1][0], runs[0][0]) < 1e-5


def test_chunked_loss_trains_like_the_reference_to_1e_5(reference):
    """loss="chunked" (chunks of 37 rows: 128 rows per batch, a ragged last chunk) takes the
    reference's steps: step losses to 1e-5 relative."""
    device, losses, params = reference
    got, model = _train(device, loss_chunk=37)
    assert _rel(got, losses) < 1e-5
    assert _params(model).keys() == params.keys()


def test_chunked_loss_with_bf16_autocast_trains_like_the_reference_to_5e_3(reference):
    device, losses, _ = reference
    got, _ = _train(device, autocast=torch.bfloat16, loss_chunk=50)
    assert _rel(got, losses) < 5e-3


DROPOUT = {**CFG, "n_layers": 3, "drop_rate": 0.2}


@pytest.mark.parametrize("attn", ["reference", "sdpa"])
@pytest.mark.parametrize("recompute", [1, 2, 3])
def test_recompute_trains_bitwise_like_the_reference_with_dropout(recompute, attn):
    """Activation checkpointing of every block (1), every 2nd (blocks 0, 2) or every 3rd
    (block 0) of 3, dropout 0.2: step losses, parameters and the global RNG state after
    training are the reference's, bitwise (the recomputed dropout masks are the same)."""
    ref_losses, ref_model = _train(attn=attn, config=DROPOUT)
    ref_rng = torch.get_rng_state()
    losses, model = _train(attn=attn, config=DROPOUT, recompute=recompute)
    assert torch.equal(losses, ref_losses), (recompute, attn, losses, ref_losses)
    assert torch.equal(torch.get_rng_state(), ref_rng), "the dropout draws differ in number"
    for name, value in _params(model).items():
        assert torch.equal(value, _params(ref_model)[name]), (recompute, attn, name)


@pytest.mark.parametrize("recompute", [1, 2])
def test_recompute_under_bf16_autocast_trains_bitwise_like_the_bf16_reference(recompute):
    """bf16 autocast, dropout 0.2: the recomputed blocks run under the same autocast state
    (torch.utils.checkpoint saves it), so step losses and parameters are the bf16 reference's,
    bitwise, on CPU."""
    ref_losses, ref_model = _train(config=DROPOUT, autocast=torch.bfloat16)
    losses, model = _train(config=DROPOUT, autocast=torch.bfloat16, recompute=recompute)
    assert torch.equal(losses, ref_losses), (recompute, losses, ref_losses)
    for name, value in _params(model).items():
        assert torch.equal(value, _params(ref_model)[name]), (recompute, name)


def test_recompute_gives_the_reference_gradients_with_dropout_and_chunked_loss():
    """One backward with both levers and dropout: every gradient equals the reference's to
    the chunked loss's tolerance (1e-5 of the largest entry), the same masks being drawn."""
    batch = _batches()[0]
    grads = []
    for recompute, chunk in ((0, None), (1, 20)):
        torch.manual_seed(0)
        model = GPTModel({**DROPOUT, "recompute": recompute}).train()
        torch.manual_seed(7)
        train_loss = calc_loss_batch(batch[:, :-1], batch[:, 1:], model, "cpu", loss_chunk=chunk)
        train_loss.backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    for name, ref in grads[0].items():
        torch.testing.assert_close(grads[1][name], ref, rtol=0,
                                   atol=1e-5 * ref.abs().max().item(), msg=name)  # fmt: skip


@pytest.mark.parametrize(("recompute", "twice"), [(0, []), (1, [0, 1, 2]), (2, [0, 2]), (3, [0])])
def test_recompute_runs_the_chosen_blocks_forward_again_in_the_backward(recompute, twice):
    """Block i runs twice per training step exactly when i % recompute == 0; in eval mode
    or under no_grad nothing is recomputed."""
    torch.manual_seed(0)
    model = GPTModel({**DROPOUT, "recompute": recompute})
    calls = [0] * DROPOUT["n_layers"]
    for i, block in enumerate(model.trf_blocks):
        block.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    batch = _batches()[0]
    calc_loss_batch(batch[:, :-1], batch[:, 1:], model, "cpu").backward()
    assert [i for i, n in enumerate(calls) if n == 2] == twice, calls
    assert all(n in (1, 2) for n in calls), calls
    with torch.no_grad():
        model(batch[:, :-1])
    model.eval()
    model(batch[:, :-1])
    assert [n - (2 if i in twice else 1) for i, n in enumerate(calls)] == [2] * len(calls), calls


def test_levers_reach_the_model_and_the_step_through_fast_paths():
    """FastPaths(loss="chunked", loss_chunk=c, recompute=k): apply() sets GPTConfig.recompute,
    loss_chunk_rows is train_step's loss_chunk (None for the full loss)."""
    from gptref.fast.paths import FastPaths
    from gptref.model import GPTConfig

    paths = FastPaths(loss="chunked", loss_chunk=256, recompute=2)
    assert paths.apply(GPTConfig()).recompute == 2
    assert paths.loss_chunk_rows == 256
    assert FastPaths(loss_chunk=256).loss_chunk_rows is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "fused"}, "loss must be one of"),
        ({"loss_chunk": 0}, "loss_chunk must be >= 1, got 0"),
        ({"recompute": -1}, "recompute must be >= 0, got -1"),
    ],
)
def test_fast_paths_reject_bad_levers(kwargs, message):
    from gptref.fast.paths import FastPaths

    with pytest.raises(ValueError, match=message):
        FastPaths(**kwargs)


@cuda_only
@pytest.mark.parametrize("recompute", [1, 2])
def test_recompute_on_cuda_trains_like_the_reference_to_1e_5(recompute):
    """On CUDA the reference is not bitwise reproducible (the embedding's atomics), so the
    checkpointed run's step losses are held to 1e-5, dropout on."""
    ref, _ = _train("cuda", config=DROPOUT)
    got, _ = _train("cuda", config=DROPOUT, recompute=recompute)
    assert _rel(got, ref) < 1e-5
