"""Reads from the device to the host in the training step, counted: none per forward, one per
``train_step`` (the loss, gradient norm and target count together, before
``optimizer.step()``). On a GPU each such read makes the CPU wait for the device, so a new
one on the hot path costs throughput without failing anything else; this pins the count.

Two counters, because a read can enter at two levels: ``aten::_local_scalar_dense`` (the op
behind ``.item()``, ``int()``, ``float()``, ``bool()`` of a tensor) under a
``TorchDispatchMode``, and the Python calls that copy a tensor's values out (``tolist``,
``numpy``, ``cpu``, ``item`` and the conversions) under a ``TorchFunctionMode``. The
optimizer's own reads of its CPU step counters are PyTorch's (not a device wait): the pinned
counts use SGD, which has none, and AdamW is counted apart from its ``step()``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from gptref import GPT_CONFIG_TINY, GPTModel, NonFiniteError, calc_loss_batch, train_step

READS = {"item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__"}


class _Scalars(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


class _Copies(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counted():
    """-> {"scalars": the ``_local_scalar_dense`` count, "copies": the Python-level reads} of
    the block (an ``.item()`` shows in both)."""
    with _Scalars() as scalars, _Copies() as copies:
        yield {"scalars": scalars, "copies": copies}


@contextlib.contextmanager
def paused(optimizer: torch.optim.Optimizer):
    """``optimizer.step`` run with both modes off (its reads are its own)."""
    step = optimizer.step

    def quiet_step(*args, **kwargs):
        with _disable_current_modes(), torch._C.DisableTorchFunction():
            return step(*args, **kwargs)

    optimizer.step = quiet_step
    try:
        yield
    finally:
        optimizer.step = step


def tiny(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel({**GPT_CONFIG_TINY, "context_length": 16})


def batch(rows: int = 4, width: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50257, (rows, width + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


@pytest.mark.parametrize("training", [True, False])
def test_a_forward_reads_nothing_back_from_the_device(training):
    model = tiny().train(training)
    x, _ = batch()
    with counted() as c:
        model(x)
    assert (c["scalars"].count, c["copies"].calls) == (0, [])


@pytest.mark.parametrize("chunk", [None, 8])
def test_a_loss_reads_nothing_back_from_the_device(chunk):
    model = tiny()
    x, y = batch()
    with counted() as c:
        calc_loss_batch(x, y, model, "cpu", loss_chunk=chunk).backward()
    assert (c["scalars"].count, c["copies"].calls) == (0, [])


@pytest.mark.parametrize("accumulation", [1, 2, 4])
@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("chunk", [None, 8])
def test_train_step_reads_from_the_device_once(accumulation, clip, chunk):
    """Once per step, whatever the accumulation, clipping or loss path: the one
    ``tolist`` of (loss, gradient norm, target count)."""
    model = tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batch()
    with counted() as c:
        result = train_step(model, optimizer, x, y, "cpu", grad_clip=clip,
                            accumulation_steps=accumulation, loss_chunk=chunk)  # fmt: skip
    assert (c["scalars"].count, c["copies"].calls) == (0, ["tolist"])
    assert result.target_tokens == y.numel() and result.tokens == x.numel()


def test_train_step_with_adamw_reads_once_outside_the_optimizer():
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = batch()
    with paused(optimizer), counted() as c:
        train_step(model, optimizer, x, y, "cpu", lr=1e-3)
    assert (c["scalars"].count, c["copies"].calls) == (0, ["tolist"])


def test_the_counters_see_a_read_put_back_into_the_step(monkeypatch):
    """The test above can fail: an ``.item()`` per micro-batch, as the step had before,
    is counted."""
    import gptref.step as step_module

    real = step_module.calc_loss_batch

    def reads_its_loss(*args, **kwargs):
        loss = real(*args, **kwargs)
        loss.item()
        return loss

    monkeypatch.setattr(step_module, "calc_loss_batch", reads_its_loss)
    model = tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batch()
    with counted() as c:
        train_step(model, optimizer, x, y, "cpu", accumulation_steps=2)
    assert (c["scalars"].count, c["copies"].calls) == (2, ["item", "item", "tolist"])


@pytest.mark.parametrize("accumulation", [1, 2])
def test_a_batch_with_no_counted_targets_raises_before_the_update_whatever_the_accumulation(
    accumulation,
):
    """The contract: the mean over no targets is nan (the book's calc_loss_batch), so the step
    raises NonFiniteError naming the cause, and the parameters stay as they were."""
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = batch()
    with pytest.raises(NonFiniteError, match=r"no counted targets \(all ignore_index\)"):
        train_step(model, optimizer, x, torch.full_like(y, -100), "cpu",
                   accumulation_steps=accumulation)  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not optimizer.state  # AdamW never stepped: no moments were created
