"""Properties of gptref/run/checkpoint.py: round trips, atomic saves, rejected damage, book .pth files."""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import nn

from gptref.model import GPTConfig, GPTModel
from gptref.rng import capture_rng, restore_rng
from gptref.run import checkpoint, snapshots
from gptref.run.checkpoint import load_checkpoint, load_config, save_checkpoint
from gptref.weights.pth import load_state_dict, save_state_dict
from tests.strategies import seeds

CFG = GPTConfig(vocab_size=50, context_length=6, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1)
FILES = ("model.safetensors", "state.pt", "config.json", "manifest.json")

histories = st.dictionaries(
    st.sampled_from(["train_losses", "val_losses", "tokens_seen", "lrs", "steps"]),
    st.lists(st.one_of(st.floats(allow_nan=False), st.integers(0, 2**40)), max_size=20),
)
extras = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.lists(st.integers(), max_size=4)),
    max_size=3,
)
counts = st.integers(0, 10**6)


def trained(seed: int, cfg: GPTConfig = CFG, steps: int = 2) -> tuple[GPTModel, torch.optim.AdamW]:
    """A tiny GPTModel and its AdamW after `steps` updates on random ids (moments non-zero)."""
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(steps):
        ids = torch.randint(0, cfg.vocab_size, (2, cfg.context_length))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
        optimizer.step()
    return model, optimizer


def fresh(seed: int, cfg: GPTConfig = CFG) -> tuple[GPTModel, torch.optim.AdamW]:
    torch.manual_seed(seed + 1)
    model = GPTModel(cfg)
    return model, torch.optim.AdamW(model.parameters(), lr=5e-4)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), sa.keys() ^ sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def save(path, model, optimizer=None, **kw):
    args = dict(step=3, epoch=1, config=CFG, history={"train_losses": [1.5]}) | kw
    return save_checkpoint(path, model, optimizer, **args)


def saved_step(path) -> int:
    return load_checkpoint(path, GPTModel(CFG))["step"]


@functools.lru_cache(maxsize=2)
def _trained_once(seed: int) -> tuple[GPTModel, torch.optim.AdamW]:
    return trained(seed)


def same_values(a, b) -> bool:
    """Equal nested containers, tensors compared bit for bit (dtype and shape included)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_values, a, b))
    return a == b


@given(
    seed=st.integers(0, 1), step=counts, epoch=counts, batch=counts, history=histories, extra=extras
)
def test_checkpoint_round_trips_weights_optimizer_and_training_state(
    seed, step, epoch, batch, history, extra
):
    """load_checkpoint into a differently initialized model and optimizer restores every
    state-dict entry (masks included) and the optimizer's state bit for bit, and step,
    epoch, batch_in_epoch, history, extra and config as saved."""
    model, optimizer = _trained_once(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt"
        save_checkpoint(
            path,
            model,
            optimizer,
            step=step,
            epoch=epoch,
            batch_in_epoch=batch,
            config=CFG,
            history=history,
            extra=extra,
        )
        model2, optimizer2 = fresh(seed)
        state = load_checkpoint(path, model2, optimizer2)
    assert_same_weights(model, model2)
    assert same_values(optimizer.state_dict(), optimizer2.state_dict())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (step, epoch, batch)
    assert state["history"] == history and state["extra"] == extra
    assert GPTConfig.from_dict(state["config"]) == CFG


def test_resumed_model_and_optimizer_take_the_same_next_step(tmp_path):
    """After save and load into fresh objects, one more AdamW update (same batch, eval mode)
    gives bitwise the parameters the uninterrupted objects reach."""
    model, optimizer = trained(0)
    path = save(tmp_path / "ckpt", model, optimizer)
    model2, optimizer2 = fresh(0)
    load_checkpoint(path, model2, optimizer2)
    ids = torch.randint(0, CFG.vocab_size, (2, CFG.context_length))
    for m, opt in ((model, optimizer), (model2, optimizer2)):
        m.eval()
        opt.zero_grad()
        nn.functional.cross_entropy(m(ids).flatten(0, 1), ids.flatten()).backward()
        opt.step()
    assert_same_weights(model, model2)


@given(seed=seeds)
def test_restore_rng_makes_the_next_random_numbers_equal(seed, tmp_path_factory):
    """After restore_rng(load_checkpoint(...)), torch and Python `random` draw exactly the
    numbers they drew right after the save."""
    model = GPTModel(CFG)
    path = tmp_path_factory.mktemp("rng") / "ckpt"
    torch.manual_seed(seed)
    random.seed(seed)
    save(path, model)
    after_save = (torch.rand(5), torch.randint(0, 100, (3,)), random.random())
    torch.manual_seed(seed + 1)
    random.seed(seed + 1)
    restore_rng(load_checkpoint(path, model))
    again = (torch.rand(5), torch.randint(0, 100, (3,)), random.random())
    assert torch.equal(after_save[0], again[0]) and torch.equal(after_save[1], again[1])
    assert after_save[2] == again[2]


def test_restore_rng_accepts_capture_rng_and_rejects_other_dicts():
    """restore_rng takes capture_rng()'s dict too; a dict without RNG states is a ValueError."""
    state = capture_rng()
    first = torch.rand(3)
    restore_rng(state)
    assert torch.equal(torch.rand(3), first)
    with pytest.raises(ValueError, match="restore_rng: expected the state"):
        restore_rng({"step": 1})


def test_checkpoint_files_are_plain_formats(tmp_path):
    """The layout is four files; state.pt loads with torch.load(weights_only=True), the
    weights with safetensors alone (masks included), the config as JSON."""
    model, optimizer = _trained_once(0)
    path = checkpoint.snapshot(save(tmp_path / "ckpt", model, optimizer))
    assert sorted(os.listdir(path)) == sorted(FILES)
    state = torch.load(path / "state.pt", weights_only=True)
    assert state["step"] == 3 and state["optimizer"]["state"]
    tensors = load_file(path / "model.safetensors")
    assert "trf_blocks.0.att.mask" in tensors
    assert torch.equal(tensors["out_head.weight"], model.out_head.weight.detach())
    assert json.loads((path / "config.json").read_text()) == CFG.to_dict()
    assert load_config(path) == CFG.to_dict()


def test_saving_again_keeps_the_last_two_snapshots_and_the_newest_loads(tmp_path):
    """Three saves to one path: LATEST names the third, the second is kept, the first is
    gone, and nothing is left beside the path."""
    model = GPTModel(CFG)
    for step in (1, 2, 3):
        save(tmp_path / "ckpt", model, step=step)
    assert saved_step(tmp_path / "ckpt") == 3
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.name != ".lock")
    assert names == ["LATEST", "save-00000002-0002", "save-00000003-0003"], names
    assert (tmp_path / "ckpt" / "LATEST").read_text().strip() == "save-00000003-0003"
    assert os.listdir(tmp_path) == ["ckpt"]


@pytest.mark.parametrize("crash_at", range(4))
@pytest.mark.parametrize("cleanup", [True, False], ids=["exception", "killed"])
def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, crash_at, cleanup):
    """A save that dies while writing file `crash_at` leaves the previous checkpoint current
    and unchanged. Raised as an exception, it cleans up after itself; killed (no cleanup),
    its temporary directory stays until the next save removes it."""
    model = GPTModel(CFG)
    path = save(tmp_path / "ckpt", model, step=1)
    real_write, calls = checkpoint._write_file, []

    def dying_write(file, write):
        calls.append(file.name)
        if len(calls) > crash_at:
            raise OSError(f"disk full while writing {file.name}")
        real_write(file, write)

    monkeypatch.setattr(checkpoint, "_write_file", dying_write)
    if not cleanup:
        monkeypatch.setattr(snapshots.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(OSError, match="disk full"):
        save(path, model, step=2)
    monkeypatch.undo()
    assert saved_step(path) == 1
    leftovers = sorted(p.name for p in path.glob("tmp-*"))
    assert len(leftovers) == (0 if cleanup else 1), leftovers
    save(path, model, step=3)  # the next save clears what the killed one left
    assert saved_step(path) == 3 and not list(path.glob("tmp-*"))


@pytest.mark.parametrize("crash_at", range(4))
def test_interrupted_first_save_leaves_nothing_loadable(tmp_path, monkeypatch, crash_at):
    """Without an earlier checkpoint, a killed save leaves no checkpoint at the path, and
    the error names what it left."""
    real_write, calls = checkpoint._write_file, []

    def dying_write(file, write):
        calls.append(file.name)
        if len(calls) > crash_at:
            raise KeyboardInterrupt
        real_write(file, write)

    monkeypatch.setattr(checkpoint, "_write_file", dying_write)
    monkeypatch.setattr(snapshots.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "ckpt", GPTModel(CFG))
    monkeypatch.undo()
    with pytest.raises(
        ValueError, match=r"no complete checkpoint in .*ckpt; an interrupted save left \['tmp-"
    ):
        load_checkpoint(tmp_path / "ckpt", GPTModel(CFG))


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_kill_at_each_rename_of_the_protocol_leaves_a_complete_checkpoint(
    tmp_path, monkeypatch, kill_at
):
    """The save's two renames: the snapshot into place (1), LATEST.tmp over LATEST (2, the
    commit point); 3: no kill. Killed at rename k, the loader finds step 1 (before the commit
    point) or step 2 (after it), complete, every time."""
    model = GPTModel(CFG)
    path = save(tmp_path / "ckpt", model, step=1)
    real_replace, calls = os.replace, []

    def dying_replace(src, dst):
        calls.append(dst)
        if len(calls) == kill_at:
            raise SystemExit("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    monkeypatch.setattr(snapshots.shutil, "rmtree", lambda *a, **k: None)
    if kill_at <= 2:
        with pytest.raises(SystemExit):
            save(path, model, step=2)
    else:
        save(path, model, step=2)
    monkeypatch.undo()
    assert saved_step(path) == (1 if kill_at <= 2 else 2)


def test_a_lost_latest_pointer_falls_back_to_the_newest_complete_snapshot(tmp_path):
    model = GPTModel(CFG)
    for step in (1, 2):
        save(tmp_path / "ckpt", model, step=step)
    (tmp_path / "ckpt" / "LATEST").unlink()
    assert saved_step(tmp_path / "ckpt") == 2


def test_the_layout_of_gptref_0_1_still_loads_and_is_replaced_by_the_next_save(tmp_path):
    """A checkpoint directory holding the files themselves (0.1's layout) loads; so do the
    two complete copies a kill between 0.1's two renames left beside a missing path."""
    model = GPTModel(CFG)
    snap = checkpoint.snapshot(save(tmp_path / "new", model, step=5))
    legacy = tmp_path / "ckpt"
    shutil.copytree(snap, legacy)
    assert saved_step(legacy) == 5
    save(legacy, model, step=6)
    assert saved_step(legacy) == 6 and not (legacy / "manifest.json").exists()
    stranded = tmp_path / "stranded"
    shutil.copytree(snap, tmp_path / "stranded.old-12-abcd1234")
    assert saved_step(stranded) == 5


def _remove(path: Path, name: str) -> None:
    (path / name).unlink()


def _truncate(path: Path, name: str) -> None:
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])


def _flip(path: Path, name: str) -> None:
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / name).write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "name", "match"),
    [
        (_remove, "manifest.json", "not a complete checkpoint: manifest.json is missing"),
        (_remove, "model.safetensors", "not a complete checkpoint: model.safetensors is missing"),
        (_remove, "state.pt", "not a complete checkpoint: state.pt is missing"),
        (_remove, "config.json", "not a complete checkpoint: config.json is missing"),
        (_truncate, "model.safetensors", r"model.safetensors is corrupted: \d+ bytes"),
        (_truncate, "state.pt", r"state.pt is corrupted: \d+ bytes"),
        (_flip, "model.safetensors", "model.safetensors is corrupted: SHA-256"),
        (_flip, "state.pt", "state.pt is corrupted: SHA-256"),
        (_flip, "config.json", "config.json is corrupted: SHA-256"),
        (_truncate, "manifest.json", "manifest.json is corrupted"),
    ],
)
def test_damaged_checkpoint_is_rejected_in_one_line_before_the_model_changes(
    tmp_path, damage, name, match
):
    """A missing, truncated or altered file is a one-line ValueError naming the path and the
    file, raised before the model is touched."""
    path = save(tmp_path / "ckpt", _trained_once(0)[0])
    damage(checkpoint.snapshot(path), name)
    model = GPTModel(CFG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match) as info:
        load_checkpoint(path, model)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_weights_of_another_config_are_rejected_before_anything_changes(tmp_path):
    """Loading into a model of another shape is a ValueError naming the first mismatch;
    neither model nor optimizer changes."""
    model, optimizer = _trained_once(0)
    path = save(tmp_path / "ckpt", model, optimizer)
    other_cfg = GPTConfig.from_dict({**CFG.to_dict(), "emb_dim": 8})
    other, other_opt = fresh(0, other_cfg)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"does not fit the model: .* has shape"):
        load_checkpoint(path, other, other_opt)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    assert not other_opt.state_dict()["state"]
    deeper = GPTModel({**CFG.to_dict(), "n_layers": 3})
    with pytest.raises(ValueError, match=r"missing \[trf_blocks\.2\."):
        load_checkpoint(path, deeper)


def test_optimizer_requested_from_a_checkpoint_without_one_is_an_error(tmp_path):
    """A checkpoint saved without an optimizer cannot fill one: ValueError saying so."""
    model, optimizer = _trained_once(0)
    path = save(tmp_path / "ckpt", model)
    with pytest.raises(ValueError, match="saved without optimizer state"):
        load_checkpoint(path, model, optimizer)


def test_save_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path):
    """save_checkpoint onto a non-empty directory that is no gptref checkpoint raises and
    leaves its contents alone; an empty directory is fine."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a gptref checkpoint; refusing to replace it"):
        save(tmp_path / "notes", GPTModel(CFG))
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    save(tmp_path / "empty", GPTModel(CFG))
    assert saved_step(tmp_path / "empty") == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(history={"lrs": [Path("x")]}), TypeError, r"history\['lrs'\]\[0\] is a PosixPath"),
        (dict(extra={"gen": torch.Generator()}), TypeError, r"extra\['gen'\] is a Generator"),
        (dict(history=[1.0]), TypeError, "history must be a dict, .* got list"),
        (dict(config={"f": lambda: 0}), TypeError, "config is not JSON-serializable"),
        (dict(step=-1), ValueError, "step must be >= 0, got -1"),
        (dict(batch_in_epoch=1.5), TypeError, "batch_in_epoch must be an int, got 1.5"),
    ],
)
def test_save_rejects_what_weights_only_loading_would_refuse(tmp_path, kwargs, error, match):
    """Values torch.load(weights_only=True) or JSON could not read back fail at save time,
    naming where they are, and write nothing."""
    with pytest.raises(error, match=match):
        save(tmp_path / "ckpt", GPTModel(CFG), **kwargs)
    assert list(tmp_path.iterdir()) == []


class Tied(nn.Module):
    """A model whose output layer shares the embedding's weight (as GPT-2 does)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.out = nn.Linear(4, 7, bias=False)
        self.out.weight = self.emb.weight
        self.register_buffer("mask", torch.triu(torch.ones(3, 3), diagonal=1))


def test_tied_weights_are_stored_once_and_load_into_both_names(tmp_path):
    """A shared tensor is stored once (safetensors refuses aliases) and restored under every
    name; the loaded model keeps its own tying."""
    torch.manual_seed(0)
    model = Tied()
    path = save(tmp_path / "ckpt", model, config={})
    stored = load_file(checkpoint.snapshot(path) / "model.safetensors")
    assert sorted(stored) == ["emb.weight", "mask"]
    other = Tied()
    load_checkpoint(path, other)
    assert_same_weights(model, other)
    assert other.out.weight is other.emb.weight


def test_book_pth_files_load_and_ours_load_in_the_books_code(tmp_path):
    """Both ways, both book formats: torch.save(model.state_dict()) and chapter 5's
    {"model_state_dict", "optimizer_state_dict"} load with load_state_dict; save_state_dict's
    files load with the book's load_state_dict(torch.load(path, weights_only=True))."""
    model, optimizer = _trained_once(0)
    # the book's code writes, we read
    torch.save(model.state_dict(), tmp_path / "model.pth")
    torch.save(
        {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()},
        tmp_path / "model_and_optimizer.pth",
    )
    ours, ours_opt = fresh(0)
    load_state_dict(tmp_path / "model.pth", ours)
    assert_same_weights(model, ours)
    ours, ours_opt = fresh(0)
    load_state_dict(tmp_path / "model_and_optimizer.pth", ours, ours_opt)
    assert_same_weights(model, ours)
    assert ours_opt.state_dict()["state"][0]["exp_avg"].equal(
        optimizer.state_dict()["state"][0]["exp_avg"]
    )
    # we write, the book's code reads
    save_state_dict(tmp_path / "ours.pth", model)
    book = GPTModel(CFG)
    book.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True))
    assert_same_weights(model, book)
    save_state_dict(tmp_path / "ours_opt.pth", model, optimizer)
    checkpoint_ = torch.load(tmp_path / "ours_opt.pth", weights_only=True)
    book, book_opt = fresh(0)
    book.load_state_dict(checkpoint_["model_state_dict"])
    book_opt.load_state_dict(checkpoint_["optimizer_state_dict"])
    assert_same_weights(model, book)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.pth", "model_and_optimizer.pth", "ours.pth", "ours_opt.pth"]
    )


def test_load_state_dict_errors_are_clear(tmp_path):
    """A missing file, a directory, or a .pth without optimizer state when one is asked
    for are one-line ValueErrors."""
    model, optimizer = _trained_once(0)
    with pytest.raises(ValueError, match="no file at"):
        load_state_dict(tmp_path / "absent.pth", model)
    with pytest.raises(ValueError, match="is a directory; for a gptref checkpoint"):
        load_state_dict(tmp_path, model)
    save_state_dict(tmp_path / "model.pth", model)
    with pytest.raises(ValueError, match="has no optimizer_state_dict"):
        load_state_dict(tmp_path / "model.pth", model, optimizer)
