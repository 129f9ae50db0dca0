"""The long tally of issue 21: crafted folders given to every writer and reader of gptref,
counting writes outside the folder given, files lost that gptref did not write, and
tracebacks. All three must stay 0.

Each example (Hypothesis draws it) builds a sandbox: ``given/`` is the folder handed to the
command, made from a real gptref output (a run of two snapshots, a prepared corpus, an
imported checkpoint), an empty or missing folder, a user's folder or a file; then up to four
hostile changes: an entry replaced by a symbolic link to ``outside/`` (a user's file, a
user's folder, another model's snapshot, nothing), a user's file with a name gptref uses
(config.json, manifest.json, train.bin, LATEST, .lock, ...) at the top, in checkpoint/ or in
a snapshot, or a snapshot file truncated or flipped. The command: train --out (with and
without --overwrite), train --resume, eval, generate, weights export-hf (from the folder, or
into it), weights import-hf, prepare, track report, track record, each with and without
--overwrite where it has one. Every entry of the sandbox is compared before and after
(links not followed):

- a write outside: anything added, removed or changed outside the place the command was
  given to write (the folder, or export-hf's --out file; nothing for eval and generate);
- a file lost: a file or link the crafting put there (gptref did not write it), removed or
  changed, inside the folder or outside (a file put at a name that the folder's own kind
  writes, in a folder of that kind, is that output's, as a damaged one: ``OWN``);
- a traceback: an exception out of ``gptref.cli.main``, or an error of more than one line.

GPTREF_BOUNDARY_EXAMPLES sets the number of examples (default 25; the note of issue 21
records a long run). The tally goes to ``boundary_tally.json`` in ``$GPTREF_REPORT_DIR`` (else
pytest's base temporary directory).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.faultlib import (
    REPO,
    TINY_RUN,
    changes,
    cli,
    error_problems,
    flip_one_byte,
    linked_copy,
    tiny_corpus,
    tree_state,
    truncate_to_half,
    two_snapshot_run,
)

pytestmark = pytest.mark.slow  # each example may train a tiny model (seconds)

EXAMPLES = int(os.environ.get("GPTREF_BOUNDARY_EXAMPLES") or 25)
SAMPLE = REPO / "benchmarks" / "results" / "prepare_cpu.json"
SNAPSHOTS = ("checkpoint/save-00000002-0002", "checkpoint/save-00000001-0001")

KINDS = ["missing", "empty", "run", "prepared", "import", "user folder", "a file"]
COMMANDS = ["train --out", "train --out --overwrite", "train --resume", "eval", "generate",
            "export-hf from it", "export-hf into it", "export-hf into it --overwrite",
            "import-hf", "import-hf --overwrite", "prepare", "prepare --overwrite",
            "track report", "track report --overwrite", "track record"]  # fmt: skip
PLACES = ["", "checkpoint", *SNAPSHOTS, "tensorboard"]
NAMES = [".lock", "config.json", "metrics.jsonl", "loss.png", "summary.json", "checkpoint",
         "LATEST", "manifest.json", "model.safetensors", "state.pt", "train.bin", "val.bin",
         "index.html", "trend.json", "tensorboard", "save-00000002-0002", "save-00000003-0003",
         "model.safetensors.tmp-1-abcd", "tmp-1-abcd", "Linux-CPython-3.11-64bit"]  # fmt: skip
LINK_TARGETS = ["outside/victim.txt", "outside/victim_dir", "outside/snapshot", "outside/nothing"]
CONTENTS = ['{"mine": true}', "mine", "save-00000009-0009\n", "gptref process 1\n", "[1, 2]"]

TALLY: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def tally_report(tmp_path_factory):
    yield TALLY
    directory = Path(os.environ.get("GPTREF_REPORT_DIR") or tmp_path_factory.getbasetemp())
    directory.mkdir(parents=True, exist_ok=True)
    totals = {key: sum(len(r[key]) for r in TALLY) for key in ("writes_outside", "lost", "tracebacks")}  # fmt: skip
    outcomes = Counter(r["outcome"] for r in TALLY)
    path = directory / "boundary_tally.json"
    path.write_text(json.dumps({"cases": len(TALLY), **totals, "outcomes": outcomes,
                                "by_command": Counter(r["command"] for r in TALLY), "all": TALLY}, indent=1))  # fmt: skip
    print(f"\nboundary tally: {len(TALLY)} cases, {dict(outcomes)}, {totals}; {path}")


@pytest.fixture(scope="module")
def material(tmp_path_factory) -> dict[str, Path]:
    """Real outputs of gptref to craft from, and the inputs the commands read."""
    base = tmp_path_factory.mktemp("tally")
    corpus = tiny_corpus(base)
    run = two_snapshot_run(corpus, base / "run")
    config = json.loads((run / "config.json").read_text())
    config["run"]["max_steps"] = 3  # so that --resume trains and saves
    (run / "config.json").write_text(json.dumps(config))
    prepared = base / "prepared"
    assert cli(["prepare", "--text", str(corpus), "--out", str(prepared), "--no-progress"]).rc == 0
    hf = base / "hf.safetensors"
    assert cli(["weights", "export-hf", "--checkpoint", str(run), "--out", str(hf)]).rc == 0
    imported = base / "imported"
    assert cli(["weights", "import-hf", "--safetensors", str(hf), "--n-heads", "2", "--out", str(imported)]).rc == 0  # fmt: skip
    other = base / "other"
    args = ["train", "--text", str(corpus), *TINY_RUN, "--max-steps", "1", "--seed", "7", "--out", str(other)]  # fmt: skip
    assert cli(args).rc == 0
    store = base / "store"
    assert cli(["track", "record", "--from-json", str(SAMPLE), "--store", str(store)]).rc == 0
    source = base / "source-run"  # export-hf into the folder reads this one
    shutil.copytree(run, source)
    return {"corpus": corpus, "run": run, "prepared": prepared, "hf": hf, "import": imported,
            "snapshot": next((other / "checkpoint").glob("save-*")), "store": store,
            "source": source}  # fmt: skip


change = st.one_of(
    st.tuples(
        st.just("link"),
        st.sampled_from(PLACES),
        st.sampled_from(NAMES),
        st.sampled_from(LINK_TARGETS),
    ),  # fmt: skip
    st.tuples(
        st.just("file"), st.sampled_from(PLACES), st.sampled_from(NAMES), st.sampled_from(CONTENTS)
    ),  # fmt: skip
    st.tuples(
        st.just("damage"),
        st.sampled_from(SNAPSHOTS),
        st.sampled_from(["model.safetensors", "state.pt"]),
        st.sampled_from(["truncate", "flip"]),
    ),  # fmt: skip
)


def craft(sandbox: Path, kind: str, edits: list[tuple], material: dict[str, Path]) -> set[str]:
    """Build ``sandbox/given`` and ``sandbox/outside`` -> the entries the crafting put there
    that gptref did not write (relative to ``sandbox``)."""
    outside = sandbox / "outside"
    (outside / "victim_dir").mkdir(parents=True)
    (outside / "victim.txt").write_text("precious")
    for name in ("manifest.json", "config.json", "train.bin", "state.pt"):
        (outside / "victim_dir" / name).write_text(f"my {name}")
    shutil.copytree(material["snapshot"], outside / "snapshot")
    given = sandbox / "given"
    if kind in ("run", "prepared", "import"):
        linked_copy(material[kind], given)
    elif kind == "empty":
        given.mkdir()
    elif kind == "user folder":
        given.mkdir()
        (given / "notes.txt").write_text("mine")
    elif kind == "a file":
        given.write_text("mine")
    foreign = {str(p.relative_to(sandbox)) for p in outside.rglob("*")} | {"outside"}
    if kind in ("user folder", "a file"):
        foreign |= {"given", "given/notes.txt"} if kind == "user folder" else {"given"}
    for op, place, name, arg in edits:
        if not given.is_dir() or given.is_symlink():
            break
        folder = given / place
        on_the_way = [given / Path(*Path(place).parts[:i]) for i in range(1, len(Path(place).parts) + 1)]  # fmt: skip
        if any(p.is_symlink() or (p.exists() and not p.is_dir()) for p in on_the_way):
            continue  # an earlier edit put a link or a file there: this one would go through it
        if op == "damage":
            file = folder / name
            if file.is_file() and not file.is_symlink():
                (truncate_to_half if arg == "truncate" else flip_one_byte)(file)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        entry = folder / name
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
        elif entry.is_dir():
            shutil.rmtree(entry)
        if op == "link":
            entry.symlink_to(sandbox / arg)
        else:
            entry.write_text(arg)
        rel = str(entry.relative_to(sandbox))
        if not (op == "file" and rel.removeprefix("given/") in OWN.get(kind, ())):
            foreign.add(
                rel
            )  # (a file at a name the folder's kind writes is that output's, damaged)
    return foreign


# in a folder of each kind, the names that kind writes: gptref may replace what is there
_SNAPSHOT_OWN = [f"{s}/{n}" for s in SNAPSHOTS for n in ("model.safetensors", "state.pt", "config.json", "manifest.json")]  # fmt: skip
OWN = {
    "run": ["config.json", "metrics.jsonl", "loss.png", "summary.json", ".lock", "checkpoint/LATEST",
            "checkpoint/.lock", *_SNAPSHOT_OWN],
    "prepared": ["manifest.json", "train.bin", "val.bin", ".lock"],
    "import": ["LATEST", ".lock", *(n.removeprefix("checkpoint/") for n in _SNAPSHOT_OWN)],
}  # fmt: skip


def argv_of(
    command: str, sandbox: Path, material: dict[str, Path]
) -> tuple[list[str], Path | None]:
    """-> (the command line, where it may write: None for a reader)."""
    g, m = sandbox / "given", material
    over = ["--overwrite"] if command.endswith("--overwrite") else []
    name = command.removesuffix(" --overwrite")
    if name == "train --out":
        return ["train", "--text", str(m["corpus"]), *TINY_RUN, "--max-steps", "1", *over, "--out", str(g)], g  # fmt: skip
    if name == "train --resume":
        return ["train", "--text", str(m["corpus"]), "--resume", str(g), "--no-progress"], g
    if name in ("eval", "generate"):
        extra = ["--prompt", "the", "--max-new-tokens", "2"] if name == "generate" else []
        return [name, "--checkpoint", str(g), *extra], None
    if name == "export-hf from it":
        out = sandbox / "exports" / "model.safetensors"
        return ["weights", "export-hf", "--checkpoint", str(g), "--out", str(out)], out
    if name == "export-hf into it":
        out = g / "model.safetensors"
        return ["weights", "export-hf", "--checkpoint", str(m["source"]), "--out", str(out), *over], out  # fmt: skip
    if name == "import-hf":
        return ["weights", "import-hf", "--safetensors", str(m["hf"]), "--n-heads", "2", "--out", str(g), *over], g  # fmt: skip
    if name == "prepare":
        return ["prepare", "--text", str(m["corpus"]), "--out", str(g), "--no-progress", *over], g
    if name == "track report":
        return ["track", "report", "--store", str(m["store"]), "--out", str(g), *over], g
    return ["track", "record", "--from-json", str(SAMPLE), "--store", str(g)], g


def inside(rel: str, allowed: str | None) -> bool:
    """Whether ``rel`` is the place the command was given (or in it, or an atomic write's
    temporary beside it)."""
    if allowed is None:
        return False
    return rel == allowed or rel.startswith((allowed + "/", allowed + ".tmp-"))


@settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(kind=st.sampled_from(KINDS), edits=st.lists(change, max_size=4), command=st.sampled_from(COMMANDS))  # fmt: skip
def test_crafted_folders_never_lose_a_users_file_nor_get_written_outside(kind, edits, command, material):  # fmt: skip
    """Whatever the folder holds, the command writes only where it was told to, loses no
    file it did not write, and answers in one line or succeeds."""
    with tempfile.TemporaryDirectory(dir=material["run"].parent) as tmp:
        sandbox = Path(tmp)
        foreign = craft(sandbox, kind, edits, material)
        argv, target = argv_of(command, sandbox, material)
        allowed = None if target is None else str(target.relative_to(sandbox))
        before = tree_state(sandbox)
        try:
            result = cli(argv)
            problems = error_problems(result) if result.rc != 0 else []
            tracebacks = [p for p in problems if "traceback" in p or "lines on stderr" in p]
            outcome = "ok" if result.rc == 0 else "refused" if not tracebacks else "traceback"
            line = result.err_lines[-1][:300] if result.err_lines else ""
        except BaseException as e:  # noqa: BLE001 - what escapes main() is a traceback
            tracebacks, outcome, line = [f"{type(e).__name__}: {str(e)[:300]}"], "traceback", ""
        moved = changes(before, tree_state(sandbox))
        # a folder made on the way to the target: only ever added, never an existing entry
        touched = [r for r in moved["added"] if not (allowed or "").startswith(r + "/")]
        touched += moved["removed"] + moved["changed"]
        entry = {
            "kind": kind, "edits": [list(e) for e in edits], "command": command, "outcome": outcome,
            "line": line, "tracebacks": tracebacks,
            "writes_outside": [r for r in touched if not inside(r, allowed)],
            "lost": [r for r in moved["removed"] + moved["changed"] if r in foreign],
        }  # fmt: skip
        TALLY.append(entry)
        assert not entry["writes_outside"] and not entry["lost"] and not tracebacks, entry
