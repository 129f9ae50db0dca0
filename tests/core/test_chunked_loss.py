"""gptref/chunked_loss.py: the head and cross-entropy in row chunks equal the full logits' loss.

The reference is ``calc_loss_batch`` without ``loss_chunk``: ``F.cross_entropy`` over the
(b*T, V) logits of ``GPTModel.forward``. Tolerances, and why:

- float32, the loss: 1e-6 relative. Each chunk's sum of per-row losses is added to a float32
  total, where ``cross_entropy`` sums all rows at once: another summation order of b*T <= 200
  terms of one sign, whose rounding error is a few float32 ulps (eps 1.2e-7); seen: <= 1.5e-7.
- float32, every parameter's gradient: 1e-5 relative to the tensor's largest entry,
  elementwise. The softmax is ``exp(z - max) / sum`` instead of ``exp(log_softmax)``, and the
  head's weight gradient is summed over chunks: a few ulps in d loss / d logits, carried
  through the blocks' backward (seen: <= 1e-6 of the largest entry, 1e-5 leaves ~10x room).
- bf16 autocast: the chunked path casts the unscaled ``softmax - onehot`` to bf16 (the
  reference casts it after the 1/count scale, so the roundings differ) and accumulates the
  weight's gradient over chunks in float32. Both are bf16 computations of the same float32
  function, so the test holds the chunked path's distance from the float32 gradients to at
  most twice the bf16 reference's own distance (seen: <= 1.4x), and the loss to 1e-3 relative
  (the logits are the same bf16 products; float32 softmax).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptref.chunked_loss import chunked_cross_entropy
from gptref.loss import calc_loss_batch, calc_loss_loader, loader_loss
from gptref.model import GPTModel

CFG = {"vocab_size": 97, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": False}  # fmt: skip
B, T = 3, 16  # b*T = 48 rows
# chunks that divide 48 (1, 16, 48), that do not (5, 7, 37), and larger than the batch (1000)
CHUNKS = [1, 5, 7, 16, 37, 48, 1000]


def _batch(seed: int, ignored: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """-> inputs, targets int64 (B, T); the first ``ignored`` targets of every row are -100."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CFG["vocab_size"], (B, T + 1), generator=gen)
    x, y = ids[:, :-1].clone(), ids[:, 1:].clone()
    y[:, :ignored] = -100
    return x, y


def _loss_and_grads(model, x, y, *, chunk=None, autocast=False, reduction="mean"):
    """-> (loss float64 scalar, {name: gradient}) of one calc_loss_batch and its backward."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = calc_loss_batch(x, y, model, "cpu", loss_chunk=chunk, reduction=reduction)
    loss.backward()
    grads = {k.removeprefix("_orig_mod."): p.grad.clone() for k, p in model.named_parameters()}
    return loss.detach().double(), grads


def _model(seed: int = 0, **changes) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel({**CFG, **changes}).eval()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignored", [0, 5])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_chunked_loss_and_every_gradient_equal_the_full_logits_in_float32(
    chunk, ignored, reduction
):
    """For chunk sizes that do and do not divide b*T, with and without ignored targets, the
    loss is the full logits' to 1e-6 and every parameter's gradient to 1e-5 of its largest
    entry (see the module docstring)."""
    model = _model()
    x, y = _batch(1, ignored)
    ref_loss, ref_grads = _loss_and_grads(model, x, y, reduction=reduction)
    loss, grads = _loss_and_grads(model, x, y, chunk=chunk, reduction=reduction)
    where = f"chunk={chunk}, ignored={ignored}, reduction={reduction}"
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0, msg=f"loss, {where}")
    assert grads.keys() == ref_grads.keys()
    for name, ref in ref_grads.items():
        torch.testing.assert_close(
            grads[name], ref, rtol=0, atol=1e-5 * ref.abs().max().item(),
            msg=lambda m, name=name: f"{name}, {where}: {m}",
        )  # fmt: skip


@pytest.mark.parametrize("chunk", [7, 16, 1000])
def test_chunked_loss_under_bf16_autocast_is_as_close_to_float32_as_the_reference(chunk):
    """Under bf16 autocast the loss is the reference's to 1e-3, and every gradient is at most
    twice as far (Frobenius norm) from the float32 gradients as the bf16 reference's."""
    model = _model()
    x, y = _batch(2, ignored=3)
    _, fp32 = _loss_and_grads(model, x, y)
    ref_loss, ref = _loss_and_grads(model, x, y, autocast=True)
    loss, got = _loss_and_grads(model, x, y, chunk=chunk, autocast=True)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-3, atol=0, msg=f"loss, chunk={chunk}")
    for name, exact in fp32.items():
        ours, theirs = (got[name] - exact).norm().item(), (ref[name] - exact).norm().item()
        assert ours <= 2 * theirs + 1e-7 * exact.norm().item(), (
            f"{name}, chunk={chunk}: |chunked - fp32| = {ours:.3g}, |reference - fp32| = {theirs:.3g}"
        )


def test_chunked_loss_counts_the_same_targets():
    """The mean divides by the targets that are not ignore_index, as cross_entropy does: the
    sum over the mean is the number of counted targets, and all-ignored gives nan."""
    model = _model()
    x, y = _batch(3, ignored=4)
    with torch.no_grad():
        total = calc_loss_batch(x, y, model, "cpu", loss_chunk=5, reduction="sum")
        mean = calc_loss_batch(x, y, model, "cpu", loss_chunk=5)
        nothing = calc_loss_batch(x, torch.full_like(y, -100), model, "cpu", loss_chunk=5)
    counted = int((y != -100).sum())
    assert counted == B * (T - 4)
    torch.testing.assert_close(total / mean, torch.tensor(float(counted)), rtol=1e-6, atol=0)
    assert torch.isnan(nothing), nothing


def test_chunked_loss_honours_another_ignore_index():
    """Targets equal to a custom ignore_index are left out exactly as cross_entropy leaves them."""
    hidden = torch.randn(10, 8, dtype=torch.float64)
    weight = torch.randn(13, 8, dtype=torch.float64)
    targets = torch.tensor([0, 3, 12, 3, 3, 7, 1, 3, 9, 2])
    got = chunked_cross_entropy(hidden, weight, targets, 3, ignore_index=3)
    ref = F.cross_entropy(hidden @ weight.T, targets, ignore_index=3)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)


def test_chunked_loss_in_float64_matches_cross_entropy_to_rounding():
    """A float64 oracle: in float64 the loss and both gradients are F.cross_entropy(hidden @
    weight.T)'s to 1e-12 (rounding alone), ignored targets and a ragged last chunk included."""
    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(23, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(11, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    targets = torch.randint(0, 11, (23,), generator=gen)
    targets[::4] = -100
    ref = F.cross_entropy(hidden @ weight.T, targets)
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    got = chunked_cross_entropy(hidden, weight, targets, 4)
    grads = torch.autograd.grad(got, (hidden, weight))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    for g, r, name in zip(grads, ref_grads, ("hidden", "weight"), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12, msg=name)


def test_chunked_loss_scales_by_the_incoming_gradient():
    """d(c * loss) = c * d(loss): train_step multiplies the summed loss by its token scale."""
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(9, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(7, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    targets = torch.randint(0, 7, (9,), generator=gen)
    (g1,) = torch.autograd.grad(chunked_cross_entropy(hidden, weight, targets, 2), hidden)
    (g3,) = torch.autograd.grad(3.5 * chunked_cross_entropy(hidden, weight, targets, 2), hidden)
    torch.testing.assert_close(g3, 3.5 * g1, rtol=1e-12, atol=0)


def test_chunked_loss_backward_runs_once():
    """The saved gradients are scaled in place: a second backward through the graph raises."""
    hidden = torch.randn(4, 3, requires_grad=True)
    loss = chunked_cross_entropy(hidden, torch.randn(5, 3), torch.tensor([0, 1, 2, 3]), 2)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward runs once"):
        loss.backward()


def test_chunked_loader_losses_equal_the_full_logits_and_each_other():
    """calc_loss_loader and loader_loss with loss_chunk: the full logits' numbers to 1e-6, and
    loader_loss's equal calc_loss_loader's to the bit (both weightings)."""
    model = _model()
    batches = [_batch(s, ignored=s) for s in range(3)]
    both = loader_loss(batches, model, "cpu", loss_chunk=7)
    for weighting, value in (("batch", both.batch_weighted), ("token", both.token_weighted)):
        chunked = calc_loss_loader(batches, model, "cpu", weighting=weighting, loss_chunk=7)
        full = calc_loss_loader(batches, model, "cpu", weighting=weighting)
        assert chunked == value, (weighting, chunked, value)
        assert abs(chunked - full) <= 1e-6 * abs(full), (weighting, chunked, full)


def test_padded_head_chunked_loss_equals_the_unpadded_full_loss():
    """With vocab_pad_multiple the chunked loss uses the real rows of out_head alone; the pad
    rows get zero gradients."""
    x, y = _batch(6)
    ref_loss, ref = _loss_and_grads(_model(), x, y)
    padded = _model(vocab_pad_multiple=64)
    loss, got = _loss_and_grads(padded, x, y, chunk=7)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    head = got["out_head.weight"]
    assert not head[CFG["vocab_size"] :].any(), "the pad rows got a gradient"
    torch.testing.assert_close(head[: CFG["vocab_size"]], ref["out_head.weight"], rtol=0,
                               atol=1e-5 * ref["out_head.weight"].abs().max().item())  # fmt: skip


def test_forward_without_head_is_the_head_input_and_logits_are_unchanged():
    """model(x, head=False) @ head_weight().T is model(x) bitwise (the same matmul), so the
    reference path did not change."""
    model = _model()
    x, _ = _batch(7)
    with torch.no_grad():
        hidden = model(x, head=False)
        logits = model(x)
        assert hidden.shape == (B, T, CFG["emb_dim"])
        assert torch.equal(model.out_head(hidden), logits)
        assert model.head_weight().shape == (CFG["vocab_size"], CFG["emb_dim"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk": 0}, "chunk must be >= 1, got 0"),
        ({"reduction": "none"}, "reduction must be one of"),
        ({"targets": torch.zeros(3, dtype=torch.long)}, r"targets must have shape \(4,\)"),
        ({"weight": torch.zeros(5, 2)}, r"expected hidden \(n, E\) and weight \(V, E\)"),
    ],
)
def test_chunked_loss_rejects_bad_arguments(kwargs, message):
    """User errors are ValueErrors naming the value and the fix."""
    args = {"hidden": torch.zeros(4, 3), "weight": torch.zeros(5, 3),
            "targets": torch.zeros(4, dtype=torch.long), "chunk": 2, **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        chunked_cross_entropy(**args)


def test_calc_loss_batch_refuses_loss_chunk_for_a_model_without_the_seam():
    """A model without head_weight() (not a GPTModel) gets a TypeError naming the fix."""
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10))
    x = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="pass loss_chunk=None"):
        calc_loss_batch(x, x, model, "cpu", loss_chunk=2)


@pytest.mark.slow
def test_compiled_chunked_loss_matches_eager_to_1e_5():
    """torch.compile of the model and of the chunked loss: the same loss and gradients to 1e-5
    of the largest entry (inductor reorders float32 sums)."""
    torch._dynamo.reset()
    x, y = _batch(8, ignored=2)
    model = _model()
    ref_loss, ref = _loss_and_grads(model, x, y, chunk=7)
    compiled = torch.compile(model)
    loss, got = _loss_and_grads(compiled, x, y, chunk=7)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0)
    for name, r in ref.items():
        torch.testing.assert_close(got[name], r, rtol=0,
                                   atol=1e-5 * r.abs().max().item(), msg=name)  # fmt: skip
    loss_fn = torch.compile(chunked_cross_entropy)
    hidden = torch.randn(20, 8, requires_grad=True)
    weight = torch.randn(11, 8)
    targets = torch.randint(0, 11, (20,))
    torch.testing.assert_close(loss_fn(hidden, weight, targets, 6),
                               chunked_cross_entropy(hidden, weight, targets, 6), rtol=1e-5, atol=0)  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("autocast", [False, True])
def test_chunked_loss_on_cuda_matches_the_full_logits(autocast):
    """On CUDA (float32: 1e-5 of the largest entry, cuBLAS and the embedding's atomics
    reorder sums; bf16 autocast: within twice the bf16 reference's distance from float32)."""
    model = _model().cuda()
    x, y = (t.cuda() for t in _batch(9, ignored=2))
    _, fp32 = _loss_and_grads_on(model, x, y, "cuda")
    ref_loss, ref = _loss_and_grads_on(model, x, y, "cuda", autocast=autocast)
    loss, got = _loss_and_grads_on(model, x, y, "cuda", chunk=7, autocast=autocast)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-3 if autocast else 1e-5, atol=0)
    for name, exact in fp32.items():
        if autocast:
            ours, theirs = (got[name] - exact).norm(), (ref[name] - exact).norm()
            assert ours <= 2 * theirs + 1e-7 * exact.norm(), (name, ours, theirs)
        else:
            torch.testing.assert_close(got[name], exact, rtol=0,
                                       atol=1e-5 * exact.abs().max().item(), msg=name)  # fmt: skip


def _loss_and_grads_on(model, x, y, device, *, chunk=None, autocast=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        loss = calc_loss_batch(x, y, model, device, loss_chunk=chunk)
    loss.backward()
    return loss.detach().double(), {k: p.grad.clone() for k, p in model.named_parameters()}
