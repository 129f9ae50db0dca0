"""A damaged newest snapshot (issue 21, defect 1): ``train --resume``, ``eval``, ``generate``
and ``weights export-hf`` go back to the newest snapshot that verifies by its hashes, with one
line naming the snapshot skipped and the file at fault; when none verifies they refuse in one
line naming each damaged file. Never a silent start from scratch, never "no manifest.json"
when the manifest is there, never another model than the run's.

The run: a real tiny ``gptref train`` of 2 steps saved after each, so checkpoint/ holds
save-00000001-0001 (step 1) and save-00000002-0002 (step 2, named by LATEST). What the older
snapshot gives (its greedy continuation, losses, exported tensors) is read from that snapshot
directory itself; the resumed run is compared with a run of 3 steps never interrupted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.faultlib import (
    TINY_RUN,
    changes,
    cli,
    describe,
    error_problems,
    final_state,
    flip_one_byte,
    linked_copy,
    tensor_differences,
    tiny_corpus,
    tree_state,
    truncate_to_half,
    two_snapshot_run,
)

NEWEST, OLDER = "save-00000002-0002", "save-00000001-0001"
DAMAGES = {"truncated": truncate_to_half, "one byte flipped (same size)": flip_one_byte}
FILES = ["model.safetensors", "state.pt"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tiny_corpus(tmp_path_factory.mktemp("damaged-corpus"))


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    return two_snapshot_run(corpus, tmp_path_factory.mktemp("damaged-run") / "run")


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> Path:
    """The same run carried to 3 steps without a stop: what a resume must end with."""
    out = tmp_path_factory.mktemp("damaged-reference") / "run"
    args = ["train", "--text", str(corpus), *TINY_RUN, "--max-steps", "3", "--out", str(out)]
    assert cli(args).rc == 0
    return out


def generate_args(path: Path) -> list[str]:
    return ["generate", "--checkpoint", str(path), "--prompt", "the quick", "--max-new-tokens", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def older(run, tmp_path_factory) -> dict:
    """What the older snapshot gives, read from its own directory."""
    snapshot = run / "checkpoint" / OLDER
    sample = cli(generate_args(snapshot))
    export = tmp_path_factory.mktemp("damaged-older") / "older.safetensors"
    assert (
        cli(["weights", "export-hf", "--checkpoint", str(snapshot), "--out", str(export)]).rc == 0
    )
    assert sample.rc == 0, describe(sample)
    return {"sample": sample.out, "export": export}


def damaged_copy(run: Path, tmp: Path, damage, name: str, snapshots=(NEWEST,)) -> Path:
    copy = linked_copy(run, tmp / "run")
    for snapshot in snapshots:
        damage(copy / "checkpoint" / snapshot / name)
    return copy


def skip_lines(err: str, name: str) -> list[str]:
    """stderr lines that name the skipped snapshot's damaged file."""
    return [line for line in err.splitlines() if f"{NEWEST}/{name}" in line and "skipped" in line]


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_resume_of_a_run_whose_newest_snapshot_is_damaged_continues_from_the_older_one(
    damage, name, run, corpus, uninterrupted, tmp_path
):
    """--resume: one line names the damaged file and the snapshot skipped, the run goes on
    from step 1 (not from 0: "starting the run over" is the landed defect) and ends with the
    weights and metrics of the run never interrupted, bitwise."""
    copy = damaged_copy(run, tmp_path, DAMAGES[damage], name)
    config = json.loads((copy / "config.json").read_text())
    config["run"]["max_steps"] = 3
    (copy / "config.json").unlink()
    (copy / "config.json").write_text(json.dumps(config))
    result = cli(["train", "--text", str(corpus), "--resume", str(copy), "--no-progress"])
    assert result.rc == 0, describe(result)
    said = result.out + result.err
    assert "starting the run over" not in said, said[-600:]
    assert len(skip_lines(result.err, name)) == 1, result.err[-600:]
    want, got = final_state(uninterrupted), final_state(copy)
    assert tensor_differences(want[0], got[0]) == [], (
        "resumed weights differ from the uninterrupted run's"
    )
    assert got[1] == want[1], f"metrics differ:\n{got[1]}\nvs\n{want[1]}"


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_generate_and_export_of_a_damaged_newest_snapshot_use_the_older_one(
    damage, name, run, older, tmp_path
):
    """generate and export-hf: exit 0 with exactly what the older snapshot gives, and one line
    on stderr naming the skipped snapshot's damaged file."""
    copy = damaged_copy(run, tmp_path, DAMAGES[damage], name)
    sample = cli(generate_args(copy))
    assert sample.rc == 0, describe(sample)
    assert sample.out == older["sample"], (sample.out, older["sample"])
    assert len(skip_lines(sample.err, name)) == 1 and len(sample.err_lines) == 1, sample.err
    out = tmp_path / "export.safetensors"
    exported = cli(["weights", "export-hf", "--checkpoint", str(copy), "--out", str(out)])
    assert exported.rc == 0, describe(exported)
    assert tensor_differences(load_file(out), load_file(older["export"])) == [], "not the older snapshot"  # fmt: skip
    assert len(skip_lines(exported.err, name)) == 1, exported.err


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_eval_of_a_damaged_newest_snapshot_evaluates_the_older_one(damage, run, tmp_path):
    """eval: the losses of the run with its newest snapshot removed (the older one current),
    and one line naming the damaged file (the landed code said "no manifest.json")."""
    copy = damaged_copy(run, tmp_path, DAMAGES[damage], "model.safetensors")
    reference = linked_copy(run, tmp_path / "reference")
    (reference / "checkpoint" / "LATEST").unlink()
    for f in (reference / "checkpoint" / NEWEST).iterdir():
        f.unlink()
    (reference / "checkpoint" / NEWEST).rmdir()
    want = cli(["eval", "--checkpoint", str(reference), "--json"])
    got = cli(["eval", "--checkpoint", str(copy), "--json"])
    assert want.rc == 0, describe(want)
    assert got.rc == 0, describe(got)
    assert json.loads(got.out) == json.loads(want.out)
    assert len(skip_lines(got.err, "model.safetensors")) == 1, got.err
    assert "no manifest.json" not in got.err


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_when_no_snapshot_verifies_every_command_refuses_in_one_line_naming_each_file(
    damage, run, corpus, tmp_path
):
    """Both snapshots damaged: eval, generate, export-hf and --resume exit 2 with one line
    naming both damaged files; --resume trains nothing and changes nothing (the landed code
    started the run over from step 0, exit 0)."""
    copy = damaged_copy(run, tmp_path, DAMAGES[damage], "model.safetensors", (NEWEST, OLDER))
    named = (f"{NEWEST}/model.safetensors", f"{OLDER}/model.safetensors")
    before = tree_state(copy)
    for argv in (
        ["eval", "--checkpoint", str(copy)],
        generate_args(copy),
        [
            "weights",
            "export-hf",
            "--checkpoint",
            str(copy),
            "--out",
            str(tmp_path / "x.safetensors"),
        ],
        ["train", "--text", str(corpus), "--resume", str(copy), "--no-progress"],
    ):
        result = cli(argv)
        assert error_problems(result, named=named) == [], f"{argv[0]}: {describe(result)}"
        assert "no manifest.json" not in result.err and "starting the run over" not in result.out
    moved = changes(before, tree_state(copy))
    assert not moved["removed"] and not moved["changed"], moved
    assert moved["added"] in ([], [".lock"]), moved
    assert not (tmp_path / "x.safetensors").exists()


@pytest.fixture(scope="module")
def other_model(corpus, tmp_path_factory) -> Path:
    """A run of another seed: a model that is not the run's."""
    out = tmp_path_factory.mktemp("damaged-other") / "run"
    args = ["train", "--text", str(corpus), *TINY_RUN, "--max-steps", "1", "--seed", "7", "--out", str(out)]  # fmt: skip
    assert cli(args).rc == 0
    return out


def test_a_snapshot_that_is_a_symbolic_link_is_never_read(run, older, other_model, tmp_path):
    """The snapshot LATEST names replaced by a link to another model's snapshot (defect 7):
    generate reads the run's own older snapshot (one line names the link), never the model
    the link points to."""
    copy = linked_copy(run, tmp_path / "run")
    newest = copy / "checkpoint" / NEWEST
    for f in newest.iterdir():
        f.unlink()
    newest.rmdir()
    foreign = next((other_model / "checkpoint").glob("save-*"))
    os.symlink(foreign, newest)
    foreign_sample = cli(generate_args(foreign)).out
    assert foreign_sample != older["sample"], "the two models should continue differently"
    result = cli(generate_args(copy))
    assert result.rc == 0, describe(result)
    assert result.out == older["sample"], f"read through the link: {result.out!r}"
    assert any(NEWEST in line and "symbolic link" in line for line in result.err_lines), result.err


def test_the_error_names_the_file_at_fault_not_the_config(run, tmp_path):
    """model.safetensors of every snapshot a symbolic link: the refusal names model.safetensors
    and is not reported as a bad config.json (the landed wording)."""
    copy = linked_copy(run, tmp_path / "run")
    for snapshot in (NEWEST, OLDER):
        weights = copy / "checkpoint" / snapshot / "model.safetensors"
        target = tmp_path / f"{snapshot}.safetensors"
        target.write_bytes(weights.read_bytes())
        weights.unlink()
        weights.symlink_to(target)
    result = cli(generate_args(copy))
    assert error_problems(result, named=("model.safetensors", "symbolic link")) == [], describe(
        result
    )
    assert "config.json" not in result.err_lines[0], result.err_lines[0]


def test_a_damaged_snapshot_is_told_by_its_hash_not_its_size(run, tmp_path):
    """The library's snapshot choice: a same-size flip in the newest snapshot's weights makes
    load_model take the older snapshot (the landed choice compared sizes and took the newest,
    then failed) and warn naming the file."""
    from gptref.model import GPTConfig, GPTModel
    from gptref.run.checkpoint import load_checkpoint, load_config
    from gptref.run.rundir import load_model

    copy = damaged_copy(run, tmp_path, flip_one_byte, "model.safetensors")
    snapshot = copy / "checkpoint" / OLDER
    expected = GPTModel(GPTConfig.from_dict(load_config(snapshot)))
    load_checkpoint(snapshot, expected)
    with pytest.warns(UserWarning, match=f"{NEWEST}/model.safetensors is corrupted: SHA-256"):
        model, _ = load_model(copy, torch.device("cpu"))
    assert tensor_differences(expected.state_dict(), model.state_dict()) == []
