"""The trainer's journey: ``gptref train`` with its output going to a file, what a run leaves
behind (finished, stopped, or failed before it could start), and the trained model found again
from whichever folder of the run the user holds: by ``gptref eval``, ``gptref generate`` and
``gptref.load_model``.

Runs use the tiny preset on the built-in corpus (no file to fetch), a few steps each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

TINY = ("--preset", "tiny", "--batch-size", "2", "--eval-iter", "1", "--no-sample")
pytestmark = pytest.mark.slow  # gptref train runs, in subprocesses


def _leftover_locks(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".lock"))


@pytest.fixture(scope="session")
def finished(installed, once) -> Path:
    """A finished run: 4 steps of the tiny preset, a checkpoint every 2 steps (2 snapshots);
    trained once, then only read."""

    def train(home: Path) -> None:
        result = installed.gptref("train", *TINY, "--max-steps", "4", "--eval-freq", "2",
                                  "--checkpoint-every", "2", "--out", "run", cwd=home)  # fmt: skip
        assert result.status == 0, result.log

    return once("finished-run", train) / "run"


def test_a_finished_run_leaves_its_files_and_no_lock(finished):
    """After ``gptref train`` ends, the run folder holds what the README lists, and no
    ``.lock`` file anywhere in it (the run's and its checkpoint folder's are released and
    removed)."""
    names = {p.name for p in finished.iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.json", "checkpoint"} <= names, names
    assert _leftover_locks(finished) == []


@pytest.mark.parametrize(
    ("problem", "named"),
    [(("--text", "missing.txt"), "missing.txt"), (("--text", "short.txt"), "--context")],
    ids=["missing-text", "text-too-short"],
)
def test_a_run_that_cannot_start_leaves_no_run_folder(installed, outside, problem, named):
    """``gptref train`` refused at the start (a --text that does not exist, a text too short
    for one window of the tiny preset's context): one line naming the problem, exit 2, and
    the folder it ran in is as it was: no runs/<timestamp>/ (not even one holding a lock)."""
    (outside / "short.txt").write_text("Far too short to train on.\n")
    before = sorted(p.name for p in outside.iterdir())
    result = installed.gptref("train", *TINY, *problem, cwd=outside)
    assert result.status == 2, result.log
    assert result.stderr.count("\n") == 1 and named in result.stderr, result.log
    assert sorted(p.name for p in outside.iterdir()) == before, result.log


def test_a_run_logs_to_a_file_while_it_runs_and_a_stopped_run_leaves_no_lock(installed, outside):
    """``gptref train ... > train.log``: the evaluation lines are in the file while the run is
    still going (read before it ends), not only when it exits; stopped with Ctrl-C (SIGINT)
    it saves, exits 130 and leaves no lock file."""
    log = outside / "train.log"
    argv = [str(installed.bin / "gptref"), "train", *TINY, "--max-steps", "100000",
            "--eval-freq", "5", "--out", "run"]  # fmt: skip
    with log.open("w") as out, (outside / "train.err").open("w") as err:
        proc = subprocess.Popen(argv, cwd=outside, env=installed.env(), stdout=out, stderr=err)
    try:
        deadline, lines = time.monotonic() + 240, []
        while time.monotonic() < deadline and len(lines) < 2 and proc.poll() is None:
            time.sleep(0.5)
            lines = [line for line in log.read_text().splitlines() if line.startswith("Ep 1 (")]
        running = proc.poll() is None  # a 100,000-step run is far from its end
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    printed = log.read_text() + (outside / "train.err").read_text()
    assert running and len(lines) >= 2, printed  # seen in the file while it ran
    assert lines[0].startswith("Ep 1 (Step 000000): Train loss"), printed
    assert status == 130, printed
    assert (outside / "run" / "checkpoint" / "LATEST").is_file(), printed
    assert _leftover_locks(outside / "run") == [], printed


def _latest(run: Path) -> Path:
    """The run's newest snapshot: the folder with model.safetensors that LATEST names."""
    return run / "checkpoint" / (run / "checkpoint" / "LATEST").read_text().strip()


def test_eval_finds_the_run_from_any_of_its_folders(installed, finished):
    """``gptref eval --checkpoint X`` for the run folder, its checkpoint/ and its newest
    snapshot (the folder with model.safetensors, the one a user finds first): each finds the
    run and evaluates on the run's own training and validation splits, the same numbers."""
    printed = {}
    for target in (finished, finished / "checkpoint", _latest(finished)):
        result = installed.gptref("eval", "--checkpoint", str(target), "--max-batches", "2",
                                  "--device", "cpu", cwd=finished.parent)  # fmt: skip
        assert result.status == 0, result.log
        printed[target.name] = result.stdout.splitlines()
        assert [line.split(":")[0] for line in printed[target.name]] == ["train", "val"], printed
    assert len({tuple(lines) for lines in printed.values()}) == 1, printed


def test_generate_finds_the_model_in_a_snapshot_folder(installed, finished):
    """``gptref generate --checkpoint RUN/checkpoint/save-*``: the prompt, continued."""
    result = installed.gptref("generate", "--checkpoint", str(_latest(finished)), "--prompt",
                              "Every effort moves you", "--max-new-tokens", "5",
                              "--device", "cpu", cwd=finished.parent)  # fmt: skip
    assert result.status == 0, result.log
    assert result.stdout.startswith("Every effort moves you"), result.log
    assert len(result.stdout.strip()) > len("Every effort moves you"), result.log


LOAD = """
import sys, torch, gptref, gptref.run.rundir
from pathlib import Path
run = Path(sys.argv[1])
latest = run / "checkpoint" / (run / "checkpoint" / "LATEST").read_text().strip()
for path in (run, run / "checkpoint", latest, str(latest)):
    model = gptref.load_model(path)
    total = sum(float(p.double().sum()) for p in model.parameters())
    print(type(model).__name__, model.training, next(model.parameters()).device, repr(total))
model, record = gptref.run.rundir.load_model(latest, torch.device("cpu"))
print(type(model).__name__, record.run.preset)
"""


def test_load_model_takes_any_folder_of_a_run(installed, finished):
    """``gptref.load_model(path)`` -- one call, from an installed gptref -- gives the same
    ``GPTModel`` in eval mode on the CPU for the run folder, its checkpoint/ and its newest
    snapshot (a Path or a str); ``gptref.run.rundir.load_model`` still returns (model, record)."""
    result = installed.run([str(installed.python), "-c", LOAD, str(finished)],
                           cwd=finished.parent)  # fmt: skip
    assert result.status == 0, result.log
    *loaded, last = result.stdout.splitlines()
    assert len(loaded) == 4 and len(set(loaded)) == 1, result.log
    assert loaded[0].startswith("GPTModel False cpu "), result.log
    assert last == "GPTModel tiny", result.log
