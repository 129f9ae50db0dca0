"""Fault injection (issue 16): ``gptref train`` and ``gptref prepare`` killed at any moment
lose nothing.

A real ``python -m gptref train`` (tiny model, 8 steps over 1.6 epochs, ``--checkpoint-every
1``) is SIGKILLed at chosen kill points: before a numbered file-system operation under its run
directory (``tests/faultlib.py`` counts them in the child: every instant between two
operations of a save can be chosen), or at a random delay into a save or into the run. After
each kill:

- the run's ``checkpoint/`` is a complete checkpoint of the last save that finished (or of
  the one in progress, if its commit happened), or there is none if no save finished;
- ``gptref train --resume RUN``, repeated until it exits 0, ends with the final weights and
  the ``metrics.jsonl`` of the run never interrupted, bitwise, and no temporary files of the
  killed save remain.

SIGINT, SIGTERM and SIGHUP: the step finishes, a checkpoint is saved, the exit status is
128 + the signal, "stopped early" is printed, and ``--resume`` gives the same bitwise result.

The short form (plain ``pytest``, a few kill points) stays near a minute on 2 cores; the
thorough form (``GPTREF_THOROUGH=1`` or ``HYPOTHESIS_PROFILE=thorough``, tests marked
``thorough``) kills at every operation of a whole save and more. Every kill point tried is
recorded with its outcome in ``kill_points.json`` (``$GPTREF_REPORT_DIR``, else pytest's
base temporary directory); the module prints the tally at its end (visible with ``-s``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.faultlib import (
    ENV_KILL,
    ENV_KILL_SAVE,
    ENV_LOG,
    ENV_ROOT,
    cli,
    describe,
    final_state,
    gptref,
    last_line,
    leftovers,
    read_ops,
    spawn,
    tensor_differences,
    words,
)

pytestmark = pytest.mark.slow  # every test here runs gptref in subprocesses

THOROUGH = os.environ.get("GPTREF_THOROUGH", "") not in ("", "0") or (
    os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
)
SEED = int(os.environ.get("GPTREF_FAULT_SEED", "0"))  # the random kill points; recorded


def thorough(test):
    """The long form: skipped unless GPTREF_THOROUGH=1 or HYPOTHESIS_PROFILE=thorough."""
    test = pytest.mark.thorough(test)
    reason = "the thorough fault-injection form: set GPTREF_THOROUGH=1 or HYPOTHESIS_PROFILE=thorough"  # fmt: skip
    return pytest.mark.skipif(not THOROUGH, reason=reason)(test)


STEPS = 8  # 5 batches per epoch: the run crosses an epoch boundary (and its sample)
TINY = ["--preset", "tiny", "--context", "16", "--batch-size", "4", "--eval-freq", "2",
        "--eval-iter", "1", "--no-progress"]  # fmt: skip
SIGKILLED = -signal.SIGKILL


def train_args(corpus: Path, run: Path) -> list[str]:
    return ["train", "--text", str(corpus), *TINY, "--max-steps", str(STEPS),
            "--checkpoint-every", "1", "--out", str(run)]  # fmt: skip


def resume_args(corpus: Path, run: Path, *, every: bool = False) -> list[str]:
    """--resume RUN; ``every``: with --checkpoint-every 1 again (a resume killed inside its
    own saves needs them, whether or not the run's saved settings keep the flag)."""
    args = ["train", "--text", str(corpus), "--resume", str(run), "--no-progress"]
    return [*args, "--checkpoint-every", "1"] if every else args


# ---------------------------------------------------------------- the record of kill points

REPORT: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def kill_report(tmp_path_factory):
    """Write every kill point tried, with its outcome, to kill_points.json; print the tally."""
    yield REPORT
    directory = Path(os.environ.get("GPTREF_REPORT_DIR") or tmp_path_factory.getbasetemp())
    directory.mkdir(parents=True, exist_ok=True)
    landed = [r for r in REPORT if r.get("landed", True)]
    survived = [r for r in landed if r["survived"]]
    path = directory / "kill_points.json"
    summary = {"seed": SEED, "thorough": THOROUGH, "tried": len(landed),
               "survived": len(survived), "points": REPORT}  # fmt: skip
    path.write_text(json.dumps(summary, indent=1))
    print(f"\nkill points: {len(survived)}/{len(landed)} survived (seed {SEED}); {path}")


# ---------------------------------------------------------------- the uninterrupted run


@dataclass
class Save:
    """One save_checkpoint call of the reference run: its step and operation indices."""

    step: int
    ops: list[dict[str, Any]] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.ops[0]["i"]

    @property
    def last(self) -> int:
        return self.ops[-1]["i"]

    @property
    def seconds(self) -> float:
        return self.ops[-1]["t"] - self.ops[0]["t"]


def saves_of(ops: list[dict[str, Any]]) -> list[Save]:
    """The operations of each save, in order (consecutive operations of one save call)."""
    saves: list[Save] = []
    previous = None
    for op in ops:
        step = op["save_step"]
        if step is None:
            previous = None
            continue
        if previous is None or step != previous:
            saves.append(Save(step))
        saves[-1].ops.append(op)
        previous = step
    return saves


@dataclass
class Reference:
    run: Path
    ops: list[dict[str, Any]]
    saves: list[Save]
    weights: dict[str, Any]
    metrics: str
    train_seconds: float  # from the first metrics.jsonl to the exit

    def save(self, step: int) -> Save:
        matches = [s for s in self.saves if s.step == step]
        assert matches, f"the reference run made no save at step {step}: {self.steps}"
        return matches[0]

    @property
    def steps(self) -> list[int]:
        return [s.step for s in self.saves]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults-corpus") / "corpus.txt"
    path.write_text(words(400), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Reference:
    """The run never interrupted, its file-system operations logged (the kill points)."""
    root = tmp_path_factory.mktemp("faults-reference")
    run, log = root / "run", root.parent / f"{root.name}-ops.jsonl"
    proc = spawn(train_args(corpus, run), faults={ENV_ROOT: str(root), ENV_LOG: str(log)})
    first = None
    while proc.poll() is None:
        if first is None and (run / "metrics.jsonl").exists():
            first = time.monotonic()
        time.sleep(0.01)
    out, err = proc.communicate()
    assert proc.returncode == 0, f"the uninterrupted run failed: rc {proc.returncode}: {last_line(err)}"  # fmt: skip
    ops = read_ops(log)
    weights, metrics = final_state(run)
    seconds = time.monotonic() - first if first else 1.0
    return Reference(run, ops, saves_of(ops), weights, metrics, seconds)


def test_checkpoint_every_1_saves_after_every_step(reference):
    """--checkpoint-every 1 over 8 steps: a save after each of steps 1..8 (and no other)."""
    assert sorted(set(reference.steps)) == list(range(1, STEPS + 1)), reference.steps


def test_checkpoint_directory_keeps_two_step_directories_and_a_latest_pointer(reference):
    """After 8 saves RUN/checkpoint holds save-SSSSSSSS-NNNN/ step directories (the last 2,
    each complete) and LATEST naming the newest; no temporary leftovers."""
    ckpt = reference.run / "checkpoint"
    latest = ckpt / "LATEST"
    assert latest.is_file(), f"no LATEST pointer in {ckpt}: {sorted(os.listdir(ckpt))}"
    steps = sorted(p.name for p in ckpt.iterdir() if p.is_dir())
    assert len(steps) == 2 and all(name.startswith("save-") for name in steps), steps
    name = latest.read_text().strip()
    assert name == steps[-1], f"LATEST says {name!r}, the step directories are {steps}"
    for step in steps:
        files = {p.name for p in (ckpt / step).iterdir()}
        assert {"model.safetensors", "state.pt", "config.json", "manifest.json"} <= files, files
    assert leftovers(reference.run) == []


# ---------------------------------------------------------------- checks after a kill


def loaded_step(run: Path) -> tuple[int | None, str | None]:
    """-> (the step of the checkpoint that loads from RUN/checkpoint, or None when none
    loads, a problem or None). A refusal must be a one-line ValueError/TypeError."""
    from gptref.model import GPTConfig, GPTModel
    from gptref.run.checkpoint import load_checkpoint, load_config

    ckpt = run / "checkpoint"
    try:
        model = GPTModel(GPTConfig.from_dict(load_config(ckpt)))
        return int(load_checkpoint(ckpt, model)["step"]), None
    except (ValueError, TypeError) as e:
        if "\n" in str(e):
            return None, f"a refusal of {len(str(e).splitlines())} lines: {str(e)[:200]!r}"
        return None, None
    except Exception as e:  # noqa: BLE001 - any other error is a traceback for a user
        return None, f"loading raised {type(e).__name__}: {str(e)[:200]}"


def allowed_steps(reference: Reference, i: int) -> set[int | None]:
    """What may load after a kill before operation ``i`` of the reference run: the last
    finished save (None before the first), or the save in progress if it had begun."""
    done = [s.step for s in reference.saves if s.last < i]
    allowed: set[int | None] = {done[-1] if done else None}
    allowed |= {s.step for s in reference.saves if s.first < i <= s.last}
    return allowed


def resume_until_complete(corpus: Path, run: Path, attempts: int = 3) -> list[str]:
    """--resume RUN in this process until it exits 0 -> the problems (none: it completed)."""
    result = None
    for _ in range(attempts):
        try:
            result = cli(resume_args(corpus, run))
        except Exception as e:  # noqa: BLE001
            return [f"--resume raised {type(e).__name__}: {str(e)[:200]}"]
        if result.rc == 0:
            return []
    return [f"--resume did not complete: {describe(result)}"]


def same_as_reference(reference: Reference, run: Path) -> list[str]:
    """The finished run's weights and metrics.jsonl against the uninterrupted run's, bitwise;
    no leftovers of killed saves -> the problems."""
    try:
        weights, metrics = final_state(run)
    except Exception as e:  # noqa: BLE001
        return [f"the finished run does not load: {type(e).__name__}: {str(e)[:200]}"]
    problems = []
    differ = tensor_differences(reference.weights, weights)
    if differ:
        problems.append(f"final weights differ from the uninterrupted run's: {differ[:4]}")
    if metrics != reference.metrics:
        problems.append("metrics.jsonl differs from the uninterrupted run's")
    stale = [p for p in leftovers(run) if "checkpoint" in p]
    if stale:
        problems.append(f"leftovers of killed saves after the next save: {stale}")
    ckpt = run / "checkpoint"
    kept = sorted(p.name for p in ckpt.iterdir() if p.is_dir()) if ckpt.is_dir() else []
    if len(kept) > 2:
        problems.append(f"more than the last 2 step directories kept: {kept}")
    return problems


def after_kill(
    reference: Reference, corpus: Path, run: Path, allowed: set[int | None] | None, record: dict
) -> dict:
    """Check what loads after the kill (when ``allowed`` is known), resume to the end, compare
    with the reference; fill ``record`` (one kill point of the report) and return it."""
    problems = record.setdefault("problems", [])
    step, problem = loaded_step(run)
    record["loaded_step"] = step
    if problem:
        problems.append(problem)
    if allowed is not None and step not in allowed:
        problems.append(f"after the kill the checkpoint at step {step} loads; expected one of "
                        f"{sorted(allowed, key=str)}")  # fmt: skip
    problems += resume_until_complete(corpus, run)
    if not any(p.startswith("--resume") for p in problems):
        problems += same_as_reference(reference, run)
    record["survived"] = not problems
    REPORT.append(record)
    return record


def kill_at_op(reference: Reference, corpus: Path, root: Path, i: int) -> dict:
    """Run the reference's command, SIGKILLed before its operation ``i``; check; resume."""
    run = root / "run"
    op = reference.ops[i]
    record: dict[str, Any] = {"kind": "sigkill before operation", "i": i, "op": op["op"],
                              "path": op["path"], "save_step": op["save_step"]}  # fmt: skip
    result = gptref(train_args(corpus, run), faults={ENV_ROOT: str(root), ENV_KILL: str(i)})
    record["rc"] = result.rc
    if result.rc != SIGKILLED:
        record.update(landed=False, survived=False,
                      problems=[f"operation {i} was never reached: {describe(result)}"])  # fmt: skip
        REPORT.append(record)
        return record
    return after_kill(reference, corpus, run, allowed_steps(reference, i), record)


def assert_survived(record: dict) -> None:
    assert record["survived"], f"kill point {record}"


def commit_op(save: Save) -> dict[str, Any]:
    """The save's last rename (its commit: LATEST, or the directory, put in place)."""
    renames = [op for op in save.ops if op["op"] in ("replace", "rename")]
    assert renames, f"the save at step {save.step} renames nothing: {save.ops}"
    return renames[-1]


# ---------------------------------------------------------------- the short form


def test_sigkill_in_the_first_save_then_resume_starts_over_bitwise(reference, corpus, tmp_path):
    """Killed halfway through the first save (no checkpoint complete yet): nothing or a
    complete checkpoint loads, and --resume still ends bitwise equal to the uninterrupted run."""
    first = reference.save(1)
    assert_survived(kill_at_op(reference, corpus, tmp_path, first.ops[len(first.ops) // 2]["i"]))


def test_sigkill_at_a_commit_and_in_the_resume_then_resume_is_bitwise(reference, corpus, tmp_path):
    """Killed just before the save at step 3 commits (the step-2 or step-3 checkpoint
    loads), then the --resume killed inside its own save at step 6: a last --resume ends
    bitwise equal to the uninterrupted run."""
    run = tmp_path / "run"
    i, j = commit_op(reference.save(3))["i"], len(reference.save(6).ops) // 2
    record: dict[str, Any] = {"kind": "sigkill at the step-3 commit, then in the --resume's step-6 save",
                              "i": i, "j": j}  # fmt: skip
    first = gptref(train_args(corpus, run), faults={ENV_ROOT: str(tmp_path), ENV_KILL: str(i)})
    assert first.rc == SIGKILLED, f"operation {i} was never reached: {describe(first)}"
    step, problem = loaded_step(run)
    record["loaded_step_after_the_first_kill"] = step
    record["problems"] = [problem] if problem else []
    if step not in allowed_steps(reference, i):
        record["problems"].append(f"after the first kill step {step} loads; expected {allowed_steps(reference, i)}")  # fmt: skip
    resumed = gptref(resume_args(corpus, run, every=True), faults={ENV_ROOT: str(tmp_path), ENV_KILL_SAVE: f"6:{j}"})  # fmt: skip
    record["rc"] = resumed.rc
    if resumed.rc != SIGKILLED:
        record["problems"].append(f"the resume was not killed in its step-6 save: {describe(resumed)}")  # fmt: skip
        record.update(survived=False)
        REPORT.append(record)
        assert_survived(record)
    assert_survived(after_kill(reference, corpus, run, {5, 6}, record))


def test_sigterm_at_a_random_step_saves_exits_143_and_resumes_bitwise(reference, corpus, tmp_path):
    """SIGTERM (a closed session, a scheduler's preemption) at a random step: the step
    finishes, a checkpoint is saved, exit status 143, "stopped early"; --resume is bitwise."""
    step = random.Random(SEED).randint(2, STEPS - 3)
    assert_survived(stop_with(signal.SIGTERM, step, reference, corpus, tmp_path))


SCRATCH = {"loss.png", ".lock"}  # redrawn; the writer's lock file (its content is no record)


def test_resume_of_a_finished_run_says_complete_and_changes_nothing(reference, corpus, tmp_path):
    """--resume of a run that reached --max-steps: it says so, exits 0, trains no step and
    leaves metrics.jsonl and the checkpoint as they were."""
    run = tmp_path / "run"
    shutil.copytree(reference.run, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name not in SCRATCH}  # fmt: skip
    result = cli(resume_args(corpus, run))
    assert result.rc == 0, describe(result)
    assert "complete" in (result.out + result.err).lower(), result.out
    assert "Step 0000" not in result.out, f"it trained again: {result.out}"
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name not in SCRATCH}  # fmt: skip
    changed = sorted(str(k) for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert changed == [], f"a resume of a finished run changed {changed}"


# ---------------------------------------------------------------- signals


def wait_for_save(proc, log: Path, step: int, timeout: float = 300) -> bool:
    """Poll the child's operation log until its save at ``step`` has begun -> whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(op["save_step"] == step for op in read_ops(log)):
            return True
        time.sleep(0.005)
    return False


def stop_with(sig: int, step: int, reference: Reference, corpus: Path, root: Path) -> dict:
    """Send ``sig`` while the run saves its step-``step`` checkpoint; check the exit, the
    checkpoint, and that --resume ends bitwise equal -> the report record."""
    run, log = root / "run", root.parent / f"{root.name}-signal-ops.jsonl"
    log.unlink(missing_ok=True)
    proc = spawn(train_args(corpus, run), faults={ENV_ROOT: str(root), ENV_LOG: str(log)})
    record: dict[str, Any] = {"kind": f"{signal.Signals(sig).name} during a save", "save_step": step}  # fmt: skip
    reached = wait_for_save(proc, log, step)
    if reached:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    record["rc"] = proc.returncode
    problems = record.setdefault("problems", [])
    if not reached:
        record.update(landed=False, survived=False)
        problems.append(f"the run never began its step-{step} save: rc {proc.returncode}: {last_line(err)}")  # fmt: skip
        REPORT.append(record)
        return record
    if proc.returncode != 128 + sig:
        problems.append(f"exit status {proc.returncode}, expected {128 + sig}: {last_line(err)}")
    if "stopped early" not in out + err:
        problems.append(f"no 'stopped early' in the output: {last_line(out)!r}")
    if "Traceback" in err:
        problems.append(f"a traceback: {last_line(err)}")
    # the step in progress when the signal came finishes and is saved: step or step + 1
    return after_kill(reference, corpus, run, {step, step + 1}, record)


# ---------------------------------------------------------------- prepare


@dataclass
class Prepared:
    """Reference outputs of prepare: ``old`` from texts A, ``new`` from texts B."""

    texts_a: list[Path]
    texts_b: list[Path]
    old: Path
    new: Path
    ops: list[dict[str, Any]]  # of `prepare B` over a copy of ``old``


def outputs(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in ("train.bin", "val.bin", "manifest.json")}  # fmt: skip


def prepare_args(texts: list[Path], out: Path) -> list[str]:
    """prepare TEXTS into OUT, replacing a corpus of other texts there (--overwrite)."""
    return ["prepare", "--text", *map(str, texts), "--out", str(out), "--threads", "1", "--no-progress", "--overwrite"]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Prepared:
    base = tmp_path_factory.mktemp("faults-prepare")
    texts_a, texts_b = [], []
    for k in range(3):
        for texts, name, seed in ((texts_a, "a", k), (texts_b, "b", 100 + k)):
            path = base / f"{name}{k}.txt"
            path.write_text(words(4000, seed=seed), encoding="utf-8")
            texts.append(path)
    old, new = base / "old", base / "new"
    for texts, out in ((texts_a, old), (texts_b, new)):
        result = cli(prepare_args(texts, out))
        assert result.rc == 0, describe(result)
    probe, log = base / "probe", base / "probe-ops.jsonl"
    shutil.copytree(old, probe / "out")
    result = gptref(prepare_args(texts_b, probe / "out"), faults={ENV_ROOT: str(probe), ENV_LOG: str(log)})  # fmt: skip
    assert result.rc == 0, describe(result)
    assert outputs(probe / "out") == outputs(new)
    return Prepared(texts_a, texts_b, old, new, read_ops(log))


def prepared_state(directory: Path, prepared: Prepared) -> tuple[str, str | None]:
    """-> ("old" | "new" | "none" | "other", a problem): what a reader finds in ``directory``."""
    from gptref.corpus.tokens import PreparedCorpus

    try:
        PreparedCorpus.open(directory)
    except (ValueError, TypeError) as e:
        return "none", (f"a refusal of several lines: {e}" if "\n" in str(e) else None)
    except Exception as e:  # noqa: BLE001
        return "other", f"opening raised {type(e).__name__}: {str(e)[:200]}"
    found = outputs(directory)
    for name, ref in (("old", prepared.old), ("new", prepared.new)):
        if found == outputs(ref):
            return name, None
    return "other", "it opens, but holds neither the old output nor the new one"


def kill_prepare_at(prepared: Prepared, root: Path, i: int) -> dict:
    out = root / "out"
    shutil.copytree(prepared.old, out)
    op = prepared.ops[i]
    record: dict[str, Any] = {"kind": "sigkill in prepare", "i": i, "op": op["op"], "path": op["path"]}  # fmt: skip
    result = gptref(prepare_args(prepared.texts_b, out), faults={ENV_ROOT: str(root), ENV_KILL: str(i)})  # fmt: skip
    record["rc"] = result.rc
    problems = record.setdefault("problems", [])
    if result.rc != SIGKILLED:
        record.update(landed=False, survived=False)
        problems.append(f"operation {i} was never reached: {describe(result)}")
        REPORT.append(record)
        return record
    found, problem = prepared_state(out, prepared)
    record["found"] = found
    if problem:
        problems.append(problem)
    again = cli(prepare_args(prepared.texts_b, out))
    if again.rc != 0:
        problems.append(f"prepare again after the kill failed: {describe(again)}")
    elif outputs(out) != outputs(prepared.new):
        problems.append("prepare again after the kill did not give the reference output")
    if leftovers(out):
        problems.append(f"leftovers after prepare again: {leftovers(out)}")
    record["survived"] = not problems
    REPORT.append(record)
    return record


def test_sigkill_between_the_token_file_renames_of_prepare(prepared, tmp_path):
    """prepare over an older output, killed after train.bin is renamed into place and before
    val.bin is: a reader finds the old output, the new one or none (never a mix), and prepare
    again gives exactly the new output."""
    renames = [op for op in prepared.ops if op["op"] in ("replace", "rename")]
    assert renames, f"prepare renamed nothing: {prepared.ops}"
    assert_survived(kill_prepare_at(prepared, tmp_path, renames[len(renames) // 2]["i"]))


# ---------------------------------------------------------------- the thorough form


@thorough
def test_sigkill_before_every_operation_of_a_save(reference, corpus, tmp_path):
    """Every kill point of the save at step 3 (all its file-system operations, cleanup of the
    older step directories included), and every other one of the first save."""
    points = [op["i"] for op in reference.save(3).ops] + [op["i"] for op in reference.save(1).ops[::2]]  # fmt: skip
    points.append(reference.save(3).last + 1)  # just after the save returned
    records = [kill_at_op(reference, corpus, tmp_path / f"k{i}", i) for i in points]
    failed = [r for r in records if not r["survived"]]
    assert len(points) >= 20, f"only {len(points)} kill points in a save: {reference.save(3).ops}"
    assert not failed, f"{len(failed)}/{len(records)} kill points failed: {failed}"


@thorough
def test_sigkill_at_random_instants_of_saves(reference, corpus, tmp_path):
    """10 kills at random instants inside saves (inside the writes of safetensors and
    torch.save too), and 6 at random instants of the whole run."""
    rng = random.Random(SEED + 1)
    records = []
    for k in range(16):
        root = tmp_path / f"r{k}"
        run, log = root / "run", tmp_path / f"r{k}-ops.jsonl"
        in_save = k < 10
        step = rng.randint(2, STEPS - 1)
        delay = rng.uniform(0, reference.save(step).seconds * 1.2) if in_save else rng.uniform(0, reference.train_seconds)  # fmt: skip
        proc = spawn(train_args(corpus, run), faults={ENV_ROOT: str(root), ENV_LOG: str(log)})
        if in_save:
            started = wait_for_save(proc, log, step)
        else:
            while proc.poll() is None and not (run / "metrics.jsonl").exists():
                time.sleep(0.005)
            started = proc.poll() is None
        time.sleep(delay)
        if started:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=300)
        record: dict[str, Any] = {"kind": "sigkill at a random instant " + (f"of the step-{step} save" if in_save else "of the run"),
                                  "delay_s": round(delay, 4), "rc": proc.returncode}  # fmt: skip
        if proc.returncode != SIGKILLED:  # it finished first: not a kill point
            record.update(landed=False, survived=proc.returncode == 0, problems=[])
            REPORT.append(record)
            continue
        allowed = {step - 1, step} if in_save else None
        records.append(after_kill(reference, corpus, run, allowed, record))
    failed = [r for r in records if not r["survived"]]
    assert len(records) >= 10, f"only {len(records)} random kills landed"
    assert not failed, f"{len(failed)}/{len(records)} random kill points failed: {failed}"


@thorough
def test_sigkill_in_a_resume_before_and_during_its_saves(reference, corpus, tmp_path):
    """A --resume killed at its first operations (its run record, before any save) and at
    three instants of its own saves; resumed again, bitwise equal."""
    records = []
    n6, n7 = len(reference.save(6).ops), len(reference.save(7).ops)
    kills = [{ENV_KILL: "0"}, {ENV_KILL: "1"}, {ENV_KILL_SAVE: "5:0"},
             {ENV_KILL_SAVE: f"6:{n6 // 2}"}, {ENV_KILL_SAVE: f"7:{n7 - 1}"}]  # fmt: skip
    for k, kill in enumerate(kills):
        root = tmp_path / f"r{k}"
        run = root / "run"
        first = gptref(train_args(corpus, run), faults={ENV_ROOT: str(root), ENV_KILL: str(commit_op(reference.save(4))["i"])})  # fmt: skip
        assert first.rc == SIGKILLED, describe(first)
        resumed = gptref(resume_args(corpus, run, every=True), faults={ENV_ROOT: str(root), **kill})
        record: dict[str, Any] = {"kind": "sigkill in a --resume", "kill": kill, "rc": resumed.rc}
        if resumed.rc != SIGKILLED:
            record.update(landed=False, survived=False, problems=[f"not killed: {describe(resumed)}"])  # fmt: skip
            REPORT.append(record)
            records.append(record)
            continue
        records.append(after_kill(reference, corpus, run, None, record))
    failed = [r for r in records if not r["survived"]]
    assert not failed, f"{len(failed)}/{len(records)} kill points in a resume failed: {failed}"


@thorough
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name
)
def test_each_stop_signal_at_random_steps_resumes_bitwise(sig, reference, corpus, tmp_path):
    """SIGINT, SIGTERM, SIGHUP, each at two random steps: exit 128 + signal, a checkpoint,
    --resume bitwise equal."""
    rng = random.Random(SEED + int(sig))
    records = [stop_with(sig, rng.randint(1, STEPS - 2), reference, corpus, tmp_path / f"s{k}") for k in range(2)]  # fmt: skip
    failed = [r for r in records if not r["survived"]]
    assert not failed, f"{signal.Signals(sig).name}: {failed}"


@thorough
def test_sigkill_before_every_operation_of_prepare(prepared, tmp_path):
    """prepare over an older output, killed before each of its file-system operations."""
    records = [kill_prepare_at(prepared, tmp_path / f"p{op['i']}", op["i"]) for op in prepared.ops]
    failed = [r for r in records if not r["survived"]]
    assert not failed, f"{len(failed)}/{len(records)} prepare kill points failed: {failed}"


# ---------------------------------------------------------------- concurrent writers


def test_a_second_writer_of_a_run_directory_is_refused_in_one_line(reference, corpus, tmp_path):
    """While `gptref train` writes RUN, `gptref train --resume RUN` from another process is
    refused: exit 2, one line naming RUN; the first run then completes undisturbed."""
    run, log = tmp_path / "run", tmp_path.parent / f"{tmp_path.name}-lock-ops.jsonl"
    proc = spawn(train_args(corpus, run), faults={ENV_ROOT: str(tmp_path), ENV_LOG: str(log)})
    try:
        assert wait_for_save(proc, log, 2), "the first writer never reached its step-2 save"
        second = cli(resume_args(corpus, run))
    finally:
        out, err = proc.communicate(timeout=300)
    assert second.rc == 2 and len(second.err_lines) == 1, describe(second)
    assert str(run) in second.err_lines[0], second.err_lines
    assert proc.returncode == 0, last_line(err)
    assert same_as_reference(reference, run) == []


def test_two_simultaneous_prepares_into_one_directory_leave_one_complete_output(prepared, tmp_path):
    """Two `gptref prepare --out SAME` at once (texts A and B): each exits 0 or is refused in
    one line, and the directory then holds exactly one complete output, A's or B's."""
    out = tmp_path / "out"
    procs = [spawn(prepare_args(texts, out)) for texts in (prepared.texts_a, prepared.texts_b)]
    results = [(p, *p.communicate(timeout=300)) for p in procs]
    for p, _, err in results:
        assert p.returncode == 0 or (p.returncode == 2 and len(err.strip().splitlines()) == 1), (p.returncode, err)  # fmt: skip
    found, problem = prepared_state(out, prepared)
    assert problem is None and found in ("old", "new"), (found, problem)
