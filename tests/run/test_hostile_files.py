"""Hostile and damaged files (issue 16): every file of a real checkpoint, of a run directory
and of a prepared corpus, mutated, either loads exactly what was saved or is refused in one
line; never a traceback, never a loaded-but-different model or corpus.

Mutations (Hypothesis draws them): truncation, flipped bytes, a splice of another file's
bytes, inserted or appended garbage, an emptied or deleted file, and for JSON files a value
replaced by a hostile one (null, huge or negative numbers, NaN, paths out of the directory,
wrong types), a key deleted or an unknown key added. Consumers, each checked on every mutant:

- checkpoints and run directories: the library (``gptref.run.rundir.load_model``: a ValueError or
  TypeError of one line, or exactly the saved tensors) and the CLI (``gptref generate``:
  exit 2 with one line on stderr, or exit 0 with the original's greedy continuation);
- prepared corpora: ``gptref train --data`` (exit 2 with one line, or exit 0 with the
  metrics of the unmutated corpus, bitwise), then ``gptref prepare`` over the mutant (it
  must leave the original token files).

"Exactly what was saved": the newest checkpoint, or the older complete one kept beside it (a
``LATEST`` pointer that no longer names a snapshot may fall back to it). The named cases
below pin the defects the issue lists; the tally of every mutant tried (outcomes, tracebacks)
goes to ``hostile_mutants.json`` in ``$GPTREF_REPORT_DIR`` (else pytest's base temporary
directory).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.faultlib import cli, error_problems, limited, words
from tests.faultlib import set_at as _set

TINY = ["--preset", "tiny", "--context", "16", "--batch-size", "4", "--eval-freq", "1",
        "--eval-iter", "1", "--no-progress"]  # fmt: skip
# Each mutant builds and loads a model (0.2-1 s), so the dev and ci profiles' 30-50 examples
# per test become 20 here (the thorough profile keeps its 1000), and there is no shrink phase:
# shrinking a mutant of a 13 MB file runs for Hypothesis's whole 5-minute limit, and the
# drawn mutation is already printed in words (file, kind, offsets).
# GPTREF_HOSTILE_EXAMPLES overrides both (a longer tally without the profile's 1000).
_PROFILE = settings().max_examples
EXAMPLES = int(os.environ.get("GPTREF_HOSTILE_EXAMPLES") or (_PROFILE if _PROFILE > 100 else min(_PROFILE, 20)))  # fmt: skip
mutant_settings = settings(
    max_examples=EXAMPLES, deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip

# ---------------------------------------------------------------- the tally

TALLY: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def mutant_report(tmp_path_factory):
    yield TALLY
    directory = Path(os.environ.get("GPTREF_REPORT_DIR") or tmp_path_factory.getbasetemp())
    directory.mkdir(parents=True, exist_ok=True)
    outcomes = Counter(r["outcome"] for r in TALLY)
    bad = [r for r in TALLY if r["outcome"] not in ("same", "refused")]
    path = directory / "hostile_mutants.json"
    path.write_text(json.dumps({"tried": len(TALLY), "outcomes": outcomes,
                                "tracebacks": outcomes["traceback"], "bad": bad, "all": TALLY}, indent=1))  # fmt: skip
    print(f"\nhostile mutants: {len(TALLY)} tried, {dict(outcomes)}; {path}")


# ---------------------------------------------------------------- mutations

HOSTILE_STRINGS = ["", "x", "huge", "nope", "../../../../etc/passwd", "/dev/zero", "save-99999999-9999",
                   "\u00e9\u0000", "NaN", "1e999", "model.safetensors"]  # fmt: skip
HOSTILE_NUMBERS = [0, -1, 1, 2, 3, 7, 2**31, 2**63, 2**64 + 1, 10**30, -(2**63), 0.5, -0.0, 1e308,
                   float("nan"), float("inf"), float("-inf")]  # fmt: skip


def json_values() -> st.SearchStrategy:
    leaves = st.one_of(
        st.none(), st.booleans(), st.sampled_from(HOSTILE_NUMBERS), st.integers(-(2**70), 2**70),
        st.sampled_from(HOSTILE_STRINGS), st.text(max_size=8),
    )  # fmt: skip
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(HOSTILE_STRINGS + ["files", "step", "sha256", "bytes"]), inner, max_size=3), max_leaves=4)  # fmt: skip


def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            paths += json_paths(item, (*prefix, i))
    return paths


@st.composite
def json_mutation(draw, text: str) -> tuple[str, bytes]:
    """A JSON document with one value replaced, a key deleted or an unknown key added."""
    data = json.loads(text)
    path = draw(st.sampled_from(json_paths(data)))
    kind = draw(st.sampled_from(["replace", "delete", "add"]))
    value = draw(json_values())
    if not path:
        data = value if kind == "replace" else data
        if kind == "add" and isinstance(data, dict):
            data["unknown_key"] = value
    else:
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if kind == "replace":
            parent[last] = value
        elif kind == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last]["unknown_key"] = value
        else:
            parent[last] = value
    return f"json {kind} at {list(path)} -> {value!r}"[:200], json.dumps(data, indent=2).encode()


@st.composite
def byte_mutation(draw, data: bytes, donor: bytes) -> tuple[str, bytes | None]:
    """Bytes truncated, flipped, spliced from ``donor``, inserted, appended; or emptied or
    deleted (None)."""
    n = len(data)
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "insert", "append", "empty", "delete"]))  # fmt: skip
    position = st.one_of(st.integers(0, max(0, min(n, 4096) - 1)), st.integers(0, max(0, n - 1)))
    if kind == "truncate" and n:
        cut = draw(position)
        return f"truncate to {cut} of {n} bytes", data[:cut]
    if kind == "flip" and n:
        out = bytearray(data)
        flips = draw(st.lists(st.tuples(position, st.integers(1, 255)), min_size=1, max_size=3))
        for at, mask in flips:
            out[at] ^= mask
        return f"flip {flips}", bytes(out)
    if kind == "splice" and n and donor:
        at, length = draw(position), draw(st.integers(1, 256))
        src = draw(st.integers(0, max(0, len(donor) - length)))
        return f"splice {length} donor bytes from {src} at {at}", data[:at] + donor[src : src + length] + data[at + length :]  # fmt: skip
    if kind == "insert" and n:
        at, junk = draw(position), draw(st.binary(min_size=1, max_size=64))
        return f"insert {junk!r} at {at}", data[:at] + junk + data[at:]
    if kind == "append":
        junk = draw(st.binary(min_size=1, max_size=64))
        return f"append {junk!r}", data + junk
    if kind == "delete":
        return "delete the file", None
    return "empty the file", b""


@st.composite
def mutant(draw, files: dict[str, bytes]) -> tuple[str, str, bytes | None]:
    """-> (which file, what was done, its new bytes or None for deleted)."""
    name = draw(st.sampled_from(sorted(files)))
    data = files[name]
    donor = files[draw(st.sampled_from(sorted(files)))]
    if name.endswith(".json") and draw(st.booleans()):
        what, new = draw(json_mutation(data.decode("utf-8")))
    elif name.endswith("LATEST") and draw(st.booleans()):
        snapshots = sorted({p.split("/")[1] for p in files if p.startswith("checkpoint/save-")})
        new_name = draw(
            st.sampled_from(HOSTILE_STRINGS + snapshots + [f"../{s}" for s in snapshots])
        )
        what, new = f"LATEST -> {new_name!r}", new_name.encode()
    else:
        what, new = draw(byte_mutation(data, donor))
    return name, what, new


def apply(src: Path, dst: Path, name: str, new: bytes | None, *, link: bool = True) -> None:
    """Copy the directory ``src`` to ``dst`` (unchanged files hard-linked), then write the
    mutant of ``name`` (relative to ``src``) as a new file."""
    shutil.copytree(src, dst, symlinks=True, copy_function=os.link if link else shutil.copy2)
    target = dst / name
    target.unlink()
    if new is not None:
        target.write_bytes(new)


def regular_files(directory: Path, *, under: str = "") -> dict[str, bytes]:
    base = directory / under if under else directory
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != ".lock"
    }


# ---------------------------------------------------------------- outcomes


def classify(call: Callable[[], Any]) -> tuple[str, Any]:
    """-> ("ok", value) | ("refused", message) | ("traceback", what) for a library call."""
    try:
        return "ok", call()
    except (ValueError, TypeError) as e:
        message = str(e)
        if not message.strip() or "\n" in message.strip():
            return "traceback", f"a {type(e).__name__} of {len(message.splitlines())} lines: {message[:300]!r}"  # fmt: skip
        return "refused", message
    except Exception as e:  # noqa: BLE001 - anything else reaches a user as a traceback
        return "traceback", f"{type(e).__name__}: {str(e)[:300]}"


def cli_outcome(argv: list[str]) -> tuple[str, Any]:
    """-> ("ok", Result) | ("refused", line) | ("traceback", what) for a CLI call."""
    try:
        result = cli(argv)
    except BaseException as e:  # noqa: BLE001 - an exception out of main() is a traceback
        return "traceback", f"{type(e).__name__} escaped gptref.cli.main: {str(e)[:300]}"
    if result.rc == 0:
        return "ok", result
    problems = error_problems(result)
    if problems:
        return "traceback", f"{problems}: {result.err.strip()[-300:]!r}"
    return "refused", result.err_lines[0]


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    from gptref.run.rundir import load_model

    model, _ = load_model(path, torch.device("cpu"))
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def record(kind: str, name: str, what: str, outcome: str, detail: Any = None) -> dict:
    entry = {"kind": kind, "file": name, "mutation": what, "outcome": outcome,
             "detail": None if detail is None else str(detail)[:300]}  # fmt: skip
    TALLY.append(entry)
    return entry


def verdict(entry: dict) -> None:
    assert entry["outcome"] in ("same", "refused"), f"mutant {entry}"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile-corpus") / "corpus.txt"
    path.write_text(words(400, seed=3), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(corpus_file, tmp_path_factory) -> Path:
    """A real run directory of 4 steps with two saves (2 steps, then resumed to 4), so its
    checkpoint/ keeps two snapshots."""
    out = tmp_path_factory.mktemp("hostile-run") / "run"
    first = cli(["train", "--text", str(corpus_file), *TINY, "--max-steps", "2", "--out", str(out)])
    assert first.rc == 0, first.err
    config = json.loads((out / "config.json").read_text())
    config["run"]["max_steps"] = 4
    (out / "config.json").write_text(json.dumps(config))
    resumed = cli(["train", "--text", str(corpus_file), "--resume", str(out), "--no-progress"])
    assert resumed.rc == 0, resumed.err
    return out


@pytest.fixture(scope="module")
def legacy_run(run, tmp_path_factory) -> Path:
    """The same run in gptref 0.1's layout: the newest snapshot's files directly in checkpoint/."""
    out = tmp_path_factory.mktemp("hostile-legacy") / "run"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("checkpoint"))
    from gptref.run.rundir import find_checkpoint

    newest = find_checkpoint(run)
    snapshot = newest
    if (newest / "LATEST").is_file():
        snapshot = newest / (newest / "LATEST").read_text().strip()
    shutil.copytree(snapshot, out / "checkpoint")
    return out


def test_a_checkpoint_in_the_0_1_layout_still_loads_the_same_tensors(run, legacy_run):
    """The newest snapshot's files directly in RUN/checkpoint (gptref 0.1's layout) load
    exactly the tensors of the run they came from."""
    assert same_tensors(state_dict_of(legacy_run), state_dict_of(run))


def acceptable_states(run: Path) -> list[dict[str, torch.Tensor]]:
    """The tensors a mutant may load: the run's checkpoint, or any complete snapshot in it."""
    states = [state_dict_of(run)]
    for snapshot in snapshot_dirs(run):
        from gptref.model import GPTConfig, GPTModel
        from gptref.run.checkpoint import load_checkpoint, load_config

        model = GPTModel(GPTConfig.from_dict(load_config(snapshot)))
        load_checkpoint(snapshot, model)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


def generate_args(path: Path) -> list[str]:
    return ["generate", "--checkpoint", str(path), "--prompt", "the quick", "--max-new-tokens", "3"]  # fmt: skip


def snapshot_dirs(run: Path) -> list[Path]:
    return sorted((run / "checkpoint").glob("save-*"))


@pytest.fixture(scope="module")
def run_expectations(run, legacy_run):
    """layout -> (run dir, the tensors a mutant may load, the greedy continuations `generate`
    may print: the run's, or one of its complete snapshots')."""
    expectations = {}
    for layout, path in (("current", run), ("legacy", legacy_run)):
        samples = {cli(generate_args(p)).out for p in [path, *snapshot_dirs(path)]}
        expectations[layout] = (path, acceptable_states(path), samples)
    return expectations


def check_run_mutant(kind: str, run: Path, states, samples: set[str], name: str, what: str, new, tmp: Path) -> dict:  # fmt: skip
    """Apply the mutant to a copy of ``run``; load it with the library and with the CLI."""
    mutated = tmp / "run"
    apply(run, mutated, name, new)
    outcome, value = classify(lambda: state_dict_of(mutated))
    if outcome == "ok":
        if not any(same_tensors(value, s) for s in states):
            return record(kind, name, what, "loaded-but-different", "load_model")
        outcome = "same"
    if outcome == "traceback":
        return record(kind, name, what, "traceback", f"load_model: {value}")
    library = outcome
    outcome, value = cli_outcome(generate_args(mutated))
    if outcome == "ok":
        if value.out not in samples:
            return record(kind, name, what, "loaded-but-different", f"generate printed {value.out!r}")  # fmt: skip
        outcome = "same"
    if outcome == "traceback":
        return record(kind, name, what, "traceback", f"generate: {value}")
    detail = f"library {library}; generate {outcome}: {value if outcome == 'refused' else ''}"
    return record(
        kind, name, what, "refused" if "refused" in (library, outcome) else "same", detail
    )


# ---------------------------------------------------------------- the properties


@pytest.mark.parametrize("layout", ["current", "legacy"])
@mutant_settings
@given(data=st.data())
def test_a_mutated_checkpoint_file_loads_the_same_tensors_or_is_refused_in_one_line(
    layout, data, run_expectations
):
    """Any one file of RUN/checkpoint mutated: load_model and `gptref generate` either give
    the saved model exactly or refuse in one line (ValueError/TypeError; exit 2)."""
    run, states, samples = run_expectations[layout]
    files = regular_files(run, under="checkpoint")
    name, what, new = data.draw(mutant(files), label="mutant")
    with tempfile.TemporaryDirectory(dir=run.parent.parent) as tmp:
        verdict(check_run_mutant(f"checkpoint ({layout} layout)", run, states, samples, name, what, new, Path(tmp)))  # fmt: skip


@mutant_settings
@given(data=st.data())
def test_a_mutated_run_file_loads_the_same_tensors_or_is_refused_in_one_line(data, run_expectations):  # fmt: skip
    """RUN/config.json, metrics.jsonl or loss.png mutated: the same promise."""
    run, states, samples = run_expectations["current"]
    files = {k: v for k, v in regular_files(run).items() if not k.startswith("checkpoint")}
    name, what, new = data.draw(mutant(files), label="mutant")
    with tempfile.TemporaryDirectory(dir=run.parent.parent) as tmp:
        verdict(check_run_mutant("run directory", run, states, samples, name, what, new, Path(tmp)))


@pytest.fixture(scope="module")
def prepared(corpus_file, tmp_path_factory):
    """A prepared corpus and the metrics of one training step on it."""
    base = tmp_path_factory.mktemp("hostile-prepared")
    texts = []
    for k in range(2):
        path = base / f"doc{k}.txt"
        path.write_text(words(300, seed=10 + k), encoding="utf-8")
        texts.append(path)
    data = base / "data"
    assert cli(["prepare", "--text", *map(str, texts), "--out", str(data), "--no-progress"]).rc == 0
    result = cli(train_data_args(data, base / "run"))
    assert result.rc == 0, result.err
    return data, texts, (base / "run" / "metrics.jsonl").read_text()


def train_data_args(data: Path, out: Path) -> list[str]:
    return ["train", "--data", str(data), *TINY, "--max-steps", "1", "--out", str(out)]


@mutant_settings
@given(data=st.data())
def test_a_mutated_prepared_corpus_trains_the_same_or_is_refused_and_prepare_repairs_it(
    data, prepared
):
    """manifest.json, train.bin or val.bin mutated: `gptref train --data` refuses in one line
    (exit 2) or trains exactly as on the original; `gptref prepare` over it then restores the
    original token files (where the mutant is a whole corpus of other settings, which is not
    replaced unasked, prepare first refuses in one line naming --overwrite, and restores them
    with it). Where the mutated manifest no longer says the folder is a prepared corpus,
    nothing proves gptref wrote its token files (issue 21's rule): prepare refuses in one line,
    --overwrite or not, and every file stays as it was."""
    directory, texts, metrics = prepared
    files = regular_files(directory)
    name, what, new = data.draw(mutant(files), label="mutant")
    with tempfile.TemporaryDirectory(dir=directory.parent) as tmp:
        mutated = Path(tmp) / "data"
        apply(directory, mutated, name, new, link=False)
        outcome, value = cli_outcome(train_data_args(mutated, Path(tmp) / "run"))
        if outcome == "ok":
            trained = (Path(tmp) / "run" / "metrics.jsonl").read_text()
            outcome = "same" if trained == metrics else "loaded-but-different"
        entry = record("prepared corpus", name, what, outcome, value if outcome != "same" else None)  # fmt: skip
        verdict(entry)
        prepare_args = ["prepare", "--text", *map(str, texts), "--out", str(mutated), "--no-progress"]  # fmt: skip
        if not proves_a_prepared_corpus(mutated / "manifest.json"):
            before = regular_files(mutated)
            for argv in (prepare_args, [*prepare_args, "--overwrite"]):
                refused = cli(argv)
                assert error_problems(refused, named=(str(mutated),)) == [], f"{name}: {what}: {refused.err!r}"  # fmt: skip
                assert regular_files(mutated) == before, f"{name}: {what}: files changed"
            return
        again = cli(prepare_args)
        if again.rc == 2 and len(again.err_lines) == 1 and "--overwrite" in again.err_lines[0]:
            again = cli(["prepare", "--text", *map(str, texts), "--out", str(mutated), "--no-progress", "--overwrite"])  # fmt: skip
        repaired = all((mutated / f).read_bytes() == files[f] for f in ("train.bin", "val.bin") if (mutated / f).exists())  # fmt: skip
        assert again.rc == 0 and repaired and (mutated / "train.bin").exists(), (
            f"prepare over the mutant ({name}: {what}) left rc {again.rc}, token files "
            f"{'restored' if repaired else 'still different'}: {again.err[-300:]!r} {again.out[-200:]!r}"
        )


def proves_a_prepared_corpus(manifest: Path) -> bool:
    """A manifest.json that is a JSON object of gptref's token format: gptref's own marker."""
    try:
        value = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and value.get("format") == "gptref-tokens"


# ---------------------------------------------------------------- named hostile files


def rewrite_json(file: Path, change: Callable[[Any], Any]) -> None:
    data = json.loads(file.read_text())
    new = change(data)
    file.unlink()
    file.write_text(json.dumps(data if new is None else new))


def reseal(snapshot: Path) -> None:
    """Recompute the manifest's digests after a deliberate change: a checkpoint that verifies."""
    import hashlib

    manifest_file = snapshot / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    for name in manifest["files"]:
        data = (snapshot / name).read_bytes()
        manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest_file.unlink()
    manifest_file.write_text(json.dumps(manifest))


def newest_snapshot(run: Path) -> Path:
    ckpt = run / "checkpoint"
    if (ckpt / "LATEST").is_file():
        return ckpt / (ckpt / "LATEST").read_text().strip()
    return ckpt


def _state_without(keys):
    def change(snapshot: Path) -> None:
        state = torch.load(snapshot / "state.pt", weights_only=True)
        for key in keys:
            state.pop(key, None)
        (snapshot / "state.pt").unlink()
        torch.save(state, snapshot / "state.pt")
        reseal(snapshot)

    return change


def _checkpoint_config(change):
    def apply_change(snapshot: Path) -> None:
        rewrite_json(snapshot / "config.json", change)
        reseal(snapshot)

    return apply_change


def _manifest(change):
    def apply_change(snapshot: Path) -> None:
        rewrite_json(snapshot / "manifest.json", change)

    return apply_change


def _symlink_out(name: str, same: bool):
    def apply_change(snapshot: Path) -> None:
        outside = snapshot.parents[2] / f"outside-{name}"
        source = snapshot / name if same else snapshot / "config.json"
        shutil.copyfile(source, outside)
        (snapshot / name).unlink()
        (snapshot / name).symlink_to(outside)

    return apply_change


NAMED_SNAPSHOT_MUTANTS = {
    "state.pt without its keys (issue: KeyError 'step')": _state_without(
        ["step", "epoch", "batch_in_epoch", "history"]
    ),  # fmt: skip
    "state.pt without 'rng'": _state_without(["rng"]),
    "state.pt without 'optimizer'": _state_without(["optimizer"]),
    "state.pt of the wrong format string": lambda s: (_state_wrong_format(s), reseal(s)),
    "manifest 'files' is a string (issue: 'string indices must be integers')": _manifest(
        _set(["files"], "model.safetensors")
    ),  # fmt: skip
    "manifest 'files' is a list": _manifest(_set(["files"], ["model.safetensors"])),
    "manifest lists a file outside the directory": _manifest(
        lambda m: m["files"].update({"../../config.json": {"bytes": 1, "sha256": "0" * 64}})
    ),  # fmt: skip
    "manifest 'bytes' is a string": _manifest(lambda m: m["files"]["state.pt"].update(bytes="big")),
    "manifest 'sha256' is null": _manifest(lambda m: m["files"]["state.pt"].update(sha256=None)),
    "manifest is a JSON list": _manifest(lambda m: [m]),
    "manifest version 99": _manifest(_set(["version"], 99)),
    "checkpoint config.json is {}": _checkpoint_config(lambda c: {}),
    "checkpoint config.json emb_dim not a multiple of n_heads": _checkpoint_config(
        lambda c: c.update(emb_dim=33) if "emb_dim" in c else c["model"].update(emb_dim=33)
    ),  # fmt: skip
    "checkpoint config.json with an unknown key": _checkpoint_config(lambda c: c.update(wat=1)),
    "checkpoint config.json drop_rate NaN": _checkpoint_config(
        lambda c: (
            c.update(drop_rate=float("nan"))
            if "drop_rate" in c
            else c["model"].update(drop_rate=float("nan"))
        )
    ),  # fmt: skip
    "state.pt a symlink out of the directory (same bytes)": _symlink_out("state.pt", same=True),
    "model.safetensors a symlink out of the directory (other bytes)": _symlink_out(
        "model.safetensors", same=False
    ),  # fmt: skip
}


def _state_wrong_format(snapshot: Path) -> None:
    state = torch.load(snapshot / "state.pt", weights_only=True)
    state["format"] = "something.else"
    (snapshot / "state.pt").unlink()
    torch.save(state, snapshot / "state.pt")


@pytest.mark.parametrize("case", sorted(NAMED_SNAPSHOT_MUTANTS))
def test_named_hostile_checkpoint_files_are_refused_in_one_line_or_load_the_same(case, run_expectations, corpus_file, tmp_path):  # fmt: skip
    """The issue's hostile checkpoints (resealed so the digests match where the change is to
    a digested file): the library and `gptref generate` load the same model or refuse in one
    line; `gptref train --resume` refuses in one line or resumes."""
    run, states, samples = run_expectations["current"]
    mutated = tmp_path / "run"
    shutil.copytree(run, mutated, symlinks=True)
    NAMED_SNAPSHOT_MUTANTS[case](newest_snapshot(mutated))
    entry = _check_in_place("named checkpoint", mutated, states, samples, case)
    verdict(entry)
    resume = ["train", "--text", str(corpus_file), "--resume", str(mutated), "--no-progress"]
    outcome, value = cli_outcome(resume)
    assert outcome != "traceback", f"--resume on {case}: {value}"


def _check_in_place(kind: str, mutated: Path, states, samples: set[str], case: str) -> dict:
    outcome, value = classify(lambda: state_dict_of(mutated))
    if outcome == "ok":
        if not any(same_tensors(value, s) for s in states):
            return record(kind, case, case, "loaded-but-different", "load_model")
        outcome = "same"
    if outcome == "traceback":
        return record(kind, case, case, "traceback", f"load_model: {value}")
    outcome2, value2 = cli_outcome(generate_args(mutated))
    if outcome2 == "traceback":
        return record(kind, case, case, "traceback", f"generate: {value2}")
    if outcome2 == "ok" and value2.out not in samples:
        return record(kind, case, case, "loaded-but-different", f"generate printed {value2.out!r}")
    final = "refused" if "refused" in (outcome, outcome2) else "same"
    return record(kind, case, case, final, value2 if outcome2 == "refused" else value)


def _run_config(change):
    def apply_change(run: Path) -> None:
        rewrite_json(run / "config.json", change)

    return apply_change


NAMED_RUN_MUTANTS = {
    "run config.json is {} (issue: KeyError 'data')": _run_config(lambda c: {}),
    "run config.json with an unknown preset (issue: KeyError 'huge')": _run_config(
        _set(["run", "preset"], "huge")
    ),  # fmt: skip
    "run config.json with an unknown run key (issue: unexpected keyword argument)": _run_config(
        lambda c: c["run"].update(wat=1)
    ),  # fmt: skip
    "run config.json 'run' is a list": _run_config(_set(["run"], [1, 2])),
    "run config.json 'data' is null": _run_config(_set(["data"], None)),
    "run config.json without data.sha256": _run_config(lambda c: c["data"].pop("sha256")),
    "run config.json world_size 'two'": _run_config(_set(["world_size"], "two")),
    "run config.json world_size 0": _run_config(_set(["world_size"], 0)),
    "run config.json batch_size -1": _run_config(_set(["run", "batch_size"], -1)),
    "run config.json seed 2**70": _run_config(_set(["run", "seed"], 2**70)),
    "run config.json lr NaN": _run_config(_set(["run", "lr"], float("nan"))),
    "run config.json is not JSON": lambda run: (run / "config.json").write_text("{not json"),
    "run config.json is a directory": lambda run: (
        (run / "config.json").unlink(),
        (run / "config.json").mkdir(),
    ),  # fmt: skip
    "checkpoint/ is a symlink to the real one elsewhere": lambda run: _symlink_checkpoint(run),
}


def _symlink_checkpoint(run: Path) -> None:
    elsewhere = run.parent / "elsewhere-checkpoint"
    shutil.move(run / "checkpoint", elsewhere)
    (run / "checkpoint").symlink_to(elsewhere)


@pytest.mark.parametrize("case", sorted(NAMED_RUN_MUTANTS))
def test_named_hostile_run_files_are_refused_in_one_line_or_load_the_same(case, run_expectations, corpus_file, tmp_path):  # fmt: skip
    """The issue's hostile run directories: load_model, `generate`, `eval` and
    `train --resume` each load the same model (or resume) or refuse in one line."""
    run, states, samples = run_expectations["current"]
    mutated = tmp_path / "run"
    shutil.copytree(run, mutated, symlinks=True)
    NAMED_RUN_MUTANTS[case](mutated)
    verdict(_check_in_place("named run directory", mutated, states, samples, case))
    outcome, value = cli_outcome(["eval", "--checkpoint", str(mutated), "--json"])
    assert outcome != "traceback", f"eval on {case}: {value}"
    if outcome == "ok":
        parsed = json.loads(value.out)  # valid JSON, no bare NaN
        assert all(math.isfinite(r["loss_token_weighted"]) for r in parsed.values()), parsed
    outcome, value = cli_outcome(["train", "--text", str(corpus_file), "--resume", str(mutated), "--no-progress"])  # fmt: skip
    assert outcome != "traceback", f"--resume on {case}: {value}"


def test_a_run_record_whose_texts_are_dev_zero_is_refused(run, tmp_path):
    """A run config.json naming /dev/zero as its text: `gptref eval` on its splits refuses in
    one line rather than reading without end (run in a process limited to 120 s and to 2 GiB
    of address space above what importing torch maps: 0.6 GiB for a CPU build, 3.1 GiB for
    torch 2.14.1+cu130)."""
    mutated = tmp_path / "run"
    shutil.copytree(run, mutated, symlinks=True)
    rewrite_json(mutated / "config.json", _set(["data", "texts"], ["/dev/zero"]))
    result = limited(["eval", "--checkpoint", str(mutated)], above_import=2 << 30)
    assert error_problems(result, named=("/dev/zero",)) == [], result.err[-500:]


def test_a_checkpoint_claiming_huge_dimensions_is_refused_before_allocating(run, tmp_path):
    """A verified checkpoint whose config claims emb_dim 2**20 and 96 layers (terabytes): a
    one-line refusal, in a process limited to 8 GiB of address space (so an attempt to
    allocate fails instead of swapping the machine)."""
    mutated = tmp_path / "run"
    shutil.copytree(run, mutated, symlinks=True)
    snapshot = newest_snapshot(mutated)

    def huge(c):
        model = c if "emb_dim" in c else c["model"]
        model.update(emb_dim=2**20, n_heads=2**10, n_layers=96)

    rewrite_json(snapshot / "config.json", huge)
    reseal(snapshot)
    result = limited(generate_args(mutated), memory=8 << 30)
    assert error_problems(result) == [], result.err[-500:]
    line = result.err_lines[0]
    assert "1048576" in line or "parameters" in line or "memory" in line, line
