"""Data-parallel training (``gptref.fast.distributed``): 2 CPU processes on loopback (gloo).

One ``torch.multiprocessing.spawn`` of 2 ranks (file rendezvous) runs three phases in one
process group, so the process start-up is paid once:

1. dropout 0, k steps: the parameters must equal one process trained on the global
   batch (2 x b rows) to 1e-6, and the rows the ranks trained on must be disjoint with
   the single-process epoch's rows as their union;
2. dropout 0.1, 4 steps straight;
3. dropout 0.1, 2 steps + checkpoint, then a fresh model resumed from it to 4 steps
   (the RNG scrambled in between): bitwise phase 2's parameters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from gptref.fast import distributed, make_optimizer
from gptref.loader import create_dataloader
from gptref.loop import train
from gptref.model import GPTModel, unwrap
from gptref.run.checkpoint import snapshot
from gptref.run.resume import train_checkpointed

CFG = {"vocab_size": 97, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.0, "qkv_bias": False}  # fmt: skip
B, STEPS, SEED = 3, 5, 11  # rows per rank, steps of phase 1, loader seed


def _ids() -> torch.Tensor:
    return torch.randint(0, CFG["vocab_size"], (2000,), generator=torch.Generator().manual_seed(0))


def _loaders(batch_size: int, rank: int, world_size: int):
    ids = _ids()
    kw = {"seed": SEED, "rank": rank, "world_size": world_size}
    train_loader = create_dataloader(
        ids[:1600], batch_size, 8, 8, shuffle=True, drop_last=True, **kw
    )
    val_loader = create_dataloader(
        ids[1600:], batch_size, 8, 8, shuffle=False, drop_last=False, **kw
    )
    return train_loader, val_loader


def _train(batch_size, rank, world_size, *, drop_rate=0.0, steps=STEPS, seen=None, **kw):
    torch.manual_seed(0)
    model = GPTModel({**CFG, "drop_rate": drop_rate})
    if seen is not None:  # the rows the model trains on (not the evaluation batches)
        model.register_forward_pre_hook(
            lambda m, args: seen.append(args[0].clone()) if m.training else None
        )
    torch.manual_seed(100 + rank)  # a dropout stream per rank
    optimizer = make_optimizer(model, 1e-2, 0.1)
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    train_loader, val_loader = _loaders(batch_size, rank, world_size)
    loop = train_checkpointed if kw else train  # (with a checkpoint_dir or resume_from)
    kw = {"checkpoint_dir": None, **kw} if kw else kw
    history = loop(
        model, train_loader, val_loader, optimizer, "cpu", num_epochs=1, eval_freq=2,
        eval_iter=2, max_steps=steps, log=None, group=distributed.current(), **kw,
    )  # fmt: skip
    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}, history


def _worker(rank: int, world_size: int, rendezvous: str, out: str) -> None:
    torch.set_num_threads(1)
    distributed.init("cpu", rank=rank, world_size=world_size, init_method=rendezvous)
    try:
        seen: list[torch.Tensor] = []
        params, history = _train(B, rank, world_size, seen=seen)
        straight, _ = _train(B, rank, world_size, drop_rate=0.1, steps=4)
        ckpt = Path(out) / "ckpt"
        _train(B, rank, world_size, drop_rate=0.1, steps=2, checkpoint_dir=ckpt)
        torch.manual_seed(999)  # the resumed run must restore each rank's RNG itself
        resumed, _ = _train(B, rank, world_size, drop_rate=0.1, steps=4, resume_from=ckpt)
        torch.save(
            {"params": params, "history": history.to_dict(), "seen": torch.cat(seen),
             "straight": straight, "resumed": resumed},
            Path(out) / f"rank{rank}.pt",
        )  # fmt: skip
    except BaseException:
        distributed.shutdown()
        raise
    distributed.shutdown(wait=True)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, f"file://{out}/rendezvous", str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_ranks_equal_one_process_on_the_global_batch(two_ranks):
    """After k steps, 2 ranks at batch b == 1 process at batch 2b (allclose 1e-6)."""
    single, history = _train(2 * B, 0, 1)
    for rank in two_ranks:
        assert rank["params"].keys() == single.keys()
        for name, value in single.items():
            torch.testing.assert_close(rank["params"][name], value, rtol=0, atol=1e-6, msg=name)
    # the logged step losses and evaluations are the global ones
    ddp = two_ranks[0]["history"]
    torch.testing.assert_close(ddp["step_losses"], history.step_losses, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ddp["val_losses"], history.val_losses, rtol=1e-6, atol=1e-6)
    assert ddp["tokens_seen"] == history.tokens_seen


def test_ranks_train_on_disjoint_rows_whose_union_is_the_epoch(two_ranks):
    seen_single: list[torch.Tensor] = []
    _train(2 * B, 0, 1, seen=seen_single)
    single = torch.cat(seen_single)
    rows = [r["seen"] for r in two_ranks]
    assert rows[0].shape == rows[1].shape == (STEPS * B, CFG["context_length"])
    as_set = [{tuple(row.tolist()) for row in r} for r in rows]
    assert not as_set[0] & as_set[1]
    assert as_set[0] | as_set[1] == {tuple(row.tolist()) for row in single}
    # step j of the single process trains on exactly rank 0's and rank 1's j-th batches
    for j in range(STEPS):
        step = {tuple(r.tolist()) for r in single[j * 2 * B : (j + 1) * 2 * B]}
        mine = {tuple(r.tolist()) for x in rows for r in x[j * B : (j + 1) * B]}
        assert step == mine


def test_ddp_checkpoint_resumes_bitwise(two_ranks):
    for rank in two_ranks:
        for name, value in rank["straight"].items():
            assert torch.equal(rank["resumed"][name], value), name
    # with dropout the ranks' streams differ, yet DDP keeps their weights identical
    for name, value in two_ranks[0]["resumed"].items():
        assert torch.equal(two_ranks[1]["resumed"][name], value), name


def test_resume_at_another_world_size_is_refused(tmp_path):
    """A checkpoint records its world size; resuming with another one is a ValueError that
    names the torchrun flag to use (a 1-process checkpoint relabelled as 2 ranks' here)."""
    ckpt = tmp_path / "ckpt"
    _train(B, 0, 1, steps=2, checkpoint_dir=ckpt)
    from gptref.run.checkpoint import load_checkpoint, save_checkpoint

    model = GPTModel(CFG)
    optimizer = make_optimizer(model, 1e-2, 0.1)
    state = load_checkpoint(ckpt, model, optimizer)
    save_checkpoint(
        ckpt, model, optimizer, step=state["step"], epoch=state["epoch"],
        batch_in_epoch=state["batch_in_epoch"], config=state["config"],
        history=state["history"], extra={**state["extra"], "world_size": 2},
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"2 process\(es\), this one has 1; .*--nproc_per_node=2"):
        _train(B, 0, 1, steps=4, resume_from=ckpt)


@pytest.mark.slow
def test_torchrun_cli_trains_and_only_rank_0_writes(tmp_path):
    """``torchrun --standalone --nproc_per_node=2 -m gptref train``: one report, one run dir."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(f"word{i % 50}" for i in range(6000)))
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "gptref", "train", "--text", str(corpus), "--preset", "tiny", "--context", "16",
        "--batch-size", "2", "--max-steps", "4", "--eval-freq", "2", "--eval-iter", "1",
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("final train loss") == 1, proc.stdout
    assert "2 processes (global batch 4)" in proc.stdout
    assert (snapshot(out / "checkpoint") / "manifest.json").is_file()
    # two evaluations (steps 0 and 2) and the final record, written once (by rank 0)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in records[:2]] == [0, 2] and len(records) == 3, records
    state = torch.load(snapshot(out / "checkpoint") / "state.pt", weights_only=True)
    assert state["extra"]["world_size"] == 2 and len(state["extra"]["ranks"]) == 2


def _failing_worker(rank: int, world_size: int, rendezvous: str) -> None:
    torch.set_num_threads(1)
    distributed.init("cpu", rank=rank, world_size=world_size, init_method=rendezvous)

    def fail_on_rank_1(info) -> None:
        if rank == 1 and info["step"] == 1:
            raise RuntimeError("rank 1 fails on purpose")

    try:
        _train(B, rank, world_size, callback=fail_on_rank_1)
    except BaseException:
        distributed.shutdown()
        raise
    distributed.shutdown(wait=True)


def test_an_error_in_one_rank_ends_every_rank(tmp_path):
    """Rank 1 raises mid-training; rank 0, waiting in a collective, must fail too rather than
    hang (no launcher kills it here: the processes are joined one by one)."""
    ctx = mp.start_processes(
        _failing_worker, args=(2, f"file://{tmp_path}/rendezvous"), nprocs=2, join=False,
        start_method="spawn",
    )  # fmt: skip
    try:
        for process in ctx.processes:
            process.join(timeout=120)
        assert [p.exitcode for p in ctx.processes] != [None, None], "a rank hung"
        assert all(p.exitcode not in (0, None) for p in ctx.processes)
    finally:
        for process in ctx.processes:
            if process.is_alive():
                process.kill()
