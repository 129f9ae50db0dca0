"""gptref/track/{stats,store,counts,abtest,trend}.py and `gptref track`: the statistics, the
store and the report on made-up samples (deterministic; no timing is asserted), the
interleaving with a stand-in worker, and the suite's deterministic op counts."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gptref.track import store
from gptref.track.abtest import Side, interleave
from gptref.track.counts import compare_counts, count_key, parse_dumps
from gptref.track.stats import compare_samples, mann_whitney_p, paired_ratio, round_value
from gptref.track.trend import flag_steps, write_report


def noisy(center: float, n: int, seed: int, spread: float = 0.02) -> list[float]:
    """n samples around ``center`` with multiplicative noise of ``spread``."""
    rng = np.random.default_rng(seed)
    return list(center * np.exp(rng.normal(0, spread, n)))


def test_the_same_distribution_is_no_significant_change():
    """Two sets drawn around the same value: not significant, not a regression."""
    v = compare_samples("x", noisy(1.0, 12, 1), noisy(1.0, 12, 2))
    assert not v.significant and not v.regression and v.change == "no significant change", v
    assert v.low <= 1 <= v.high, v


def test_a_ten_percent_slowdown_with_two_percent_noise_is_a_regression():
    """B = 1.10 x A, 2 % noise, 12 rounds: significant, slower, beyond 5 %, ratio ~1.10."""
    v = compare_samples("x", noisy(1.0, 12, 1), noisy(1.1, 12, 2), threshold=0.05)
    assert v.significant and v.regression and v.change == "slower", v
    assert v.low < 1.10 < v.high and abs(v.ratio - 1.10) < 0.03, v


def test_a_significant_change_below_the_threshold_is_not_a_regression():
    """B = 1.03 x A with 0.5 % noise is a significant slow-down but under a 5 % threshold."""
    v = compare_samples("x", noisy(1.0, 12, 1, 0.005), noisy(1.03, 12, 2, 0.005), threshold=0.05)
    assert v.significant and v.change == "slower" and not v.regression, v


def test_a_speedup_is_faster_and_never_a_regression():
    """B = 0.8 x A: significant, "faster", no regression."""
    v = compare_samples("x", noisy(1.0, 10, 1), noisy(0.8, 10, 2))
    assert v.change == "faster" and not v.regression and v.ratio < 0.85, v


def test_verdicts_are_reproducible():
    """The bootstrap is seeded: the same samples give the same interval."""
    a, b = noisy(1.0, 10, 3), noisy(1.05, 10, 4)
    assert compare_samples("x", a, b) == compare_samples("x", a, b)


def test_paired_ratio_is_the_median_of_the_paired_ratios():
    """ratio = median(b[i] / a[i]); unpaired: median(b) / median(a)."""
    a, b = [1.0, 2.0, 4.0], [1.5, 2.2, 4.8]
    assert paired_ratio(a, b)[0] == pytest.approx(1.2)
    assert paired_ratio(a, b, paired=False)[0] == pytest.approx(2.2 / 2.0)


def test_mann_whitney_of_separated_sets_is_small_and_of_equal_sets_one():
    """Disjoint sets of 8: p = 2 / C(16, 8); all-equal samples: p = 1."""
    assert mann_whitney_p([1.0] * 5, [1.0] * 5) == 1.0
    assert mann_whitney_p(range(8), range(10, 18)) == pytest.approx(2 / 12870)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: paired_ratio([1.0, 2.0], [1.0]), "equal lengths"),
        (lambda: paired_ratio([1.0, 0.0], [1.0, 1.0]), "must be > 0"),
        (lambda: paired_ratio([1.0, 2.0], [1.0, 2.0], confidence=1.5), "confidence"),
        (lambda: compare_samples("x", [1.0, 2.0], [1.0, 2.0], threshold=-1), "threshold"),
        (lambda: round_value([]), "at least one"),
    ],
)
def test_bad_statistics_arguments_name_the_value(call, match):
    """Each bad argument is a ValueError saying which and why."""
    with pytest.raises(ValueError, match=match):
        call()


def test_describe_states_ratio_interval_and_verdict():
    """One line: name, ratio, interval, p, and REGRESSION with its threshold when it is one."""
    v = compare_samples("train_step", noisy(1.0, 12, 1), noisy(1.2, 12, 2), threshold=0.05)
    text = v.describe()
    assert text.startswith("train_step: 1.") and "slower (REGRESSION > +5 %)" in text, text


def _run(label: str, commit: str, times: dict, counts: dict | None = None, torch="2.13.0"):
    env = {"python_version": "3.11.7", "torch_version": torch, "suite_version": 1}
    info = {"id": commit, "dirty": False, "branch": "main", "time": f"2026-12-0{commit[-1]}"}
    return store.run_record(label, env, info, times, counts, {"book_loop_over_chunk": 1000.0})


def test_store_round_trips_runs_in_pytest_benchmark_layout(tmp_path):
    """record -> <store>/<machine id>/0001_<label>.json, numbered; entries() reads them back
    with the rounds as stats.data and counts in extra_info."""
    times = {"chunk": [1e-4, 1.1e-4, 1.2e-4]}
    first = store.record(tmp_path, _run("c1", "aaaa1", times, {"chunk": {"instructions": 5}}))
    second = store.record(tmp_path, _run("c2 new", "bbbb2", times))
    assert first.parent.name == store.machine_id("3.11.7"), first
    assert (first.name, second.name) == ("0001_c1.json", "0002_c2-new.json")
    got = store.entries(tmp_path)
    assert [e.label for e in got] == ["c1", "c2 new"]
    assert got[0].times("chunk") == times["chunk"] and got[0].extra("chunk") == {"instructions": 5}
    bench = got[0].record["benchmarks"][0]
    for key in ("min", "max", "mean", "stddev", "median", "iqr", "rounds", "ops", "data"):
        assert key in bench["stats"], key  # what pytest-benchmark's compare reads
    assert store.find(tmp_path, "bbbb2").label == "c2 new"


def test_store_takes_a_pytest_benchmark_json_file_and_refuses_another(tmp_path):
    """A --benchmark-json file is added as it is; a file of another shape is a ValueError."""
    good = tmp_path / "bench.json"
    good.write_text(json.dumps({
        "machine_info": {"python_version": "3.11.7"}, "commit_info": {}, "datetime": "x",
        "benchmarks": [{"name": "test_m", "stats": None,
                        "extra_info": {"predicted_over_measured": 0.99}}],
    }))  # fmt: skip
    path = store.record_pytest_json(tmp_path / "store", good, "memory")
    assert store.entries(tmp_path / "store")[0].extra("test_m")["predicted_over_measured"] == 0.99
    assert path.name == "0001_memory.json"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a pytest-benchmark JSON"):
        store.record_pytest_json(tmp_path / "store", bad, "bad")


def test_an_empty_or_missing_store_is_a_value_error(tmp_path):
    """No store: the error says to record first."""
    with pytest.raises(ValueError, match="record a run first"):
        store.entries(tmp_path / "nowhere")


CALLGRIND_DUMP = """\
version: 1
creator: callgrind-3.19.0
desc: Trigger: Client Request: {name}
events: Ir
fn=(1) main
0 {n}
totals: {n}
"""


def test_parse_dumps_reads_each_client_request_total(tmp_path):
    """One dump per DUMP_STATS_AT name -> {name: its totals line}."""
    for i, (name, n) in enumerate([("chunk", 2076924), ("collate", 838548)]):
        (tmp_path / f"callgrind.out.{i + 1}").write_text(CALLGRIND_DUMP.format(name=name, n=n))
    (tmp_path / "callgrind.out").write_text("events: Ir\ntotals: 99\n")  # the final dump
    assert parse_dumps(tmp_path.glob("callgrind.out*")) == {"chunk": 2076924, "collate": 838548}


def test_counts_change_beyond_the_bound_and_regress_beyond_the_threshold():
    """+0.05 %: no change; +1 %: a change; +20 %: a regression at a 5 % threshold."""
    rows = compare_counts({"a": 1e6, "b": 1e6, "c": 1e6}, {"a": 1.0005e6, "b": 1.01e6, "c": 1.2e6})
    got = {r["name"]: (r["changed"], r["regression"]) for r in rows}
    assert got == {"a": (False, False), "b": (True, False), "c": (True, True)}, rows


def test_a_count_of_zero_that_stays_zero_is_ok_and_one_that_grows_from_zero_regresses():
    """tokenize holds no torch memory (peak bytes 0): 0 -> 0 is no change, 0 -> 64 a
    regression; a negative baseline is refused."""
    rows = compare_counts({"same": 0, "grew": 0}, {"same": 0, "grew": 64})
    got = {r["name"]: (r["ratio"], r["changed"], r["regression"]) for r in rows}
    assert got == {"same": (1.0, False, False), "grew": (math.inf, True, True)}, rows
    with pytest.raises(ValueError, match="baseline count of 'x' must be >= 0, got -1"):
        compare_counts({"x": -1}, {"x": 1})


def test_count_key_separates_builds():
    """Counts are comparable only under the same suite, Python, torch and CPU kind."""
    env = {"suite_version": 1, "python_version": "3.11.7", "torch_version": "2.13.0",
           "machine": "x86_64"}  # fmt: skip
    assert count_key(env) != count_key({**env, "torch_version": "2.15.0"})


def test_report_flags_a_counted_and_a_timed_regression(tmp_path):
    """Three commits; the third doubles chunk's instructions and time: both flagged, the
    second step only; the page and its PNG are written."""
    base = [1e-4 * (1 + 0.001 * i) for i in range(6)]
    for i, scale in enumerate([1.0, 1.0, 2.0]):
        times = {"chunk": [t * scale for t in base]}
        counts = {"chunk": {"instructions": 1e6 * scale}}
        store.record(tmp_path / "s", _run(f"c{i + 1}", f"c0mm{i + 1}", times, counts))
    found = store.entries(tmp_path / "s")
    flags = flag_steps(found, {"chunk": 0.05})
    assert {(f["kind"], f["from"], f["to"]) for f in flags} == {
        ("time", "c0mm2", "c0mm3"), ("instructions", "c0mm2", "c0mm3")}, flags  # fmt: skip
    paths = write_report(tmp_path / "s", tmp_path / "report")
    page = paths["html"].read_text()
    assert "Flagged regressions (2)" in page and "data:image/png;base64," in page
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


FAKE_WORKER = textwrap.dedent(
    """
    import json, os, sys
    scale = float(os.environ.get("FAKE_SCALE", "1"))
    print(json.dumps({"ready": True, "env": {"gptref_path": os.environ["FAKE_PATH"]}}), flush=True)
    i = 0
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "setup":
            with open(os.environ["FAKE_LOG"], "a") as log:
                log.write(words[1] + "\\n")
            print(json.dumps({"setup": int(words[1])}), flush=True)
            continue
        i += 1
        t = scale * (1 + 0.001 * (i % 3))
        print(json.dumps({"results": {words[2]: {"samples": [t], "wall": [t]}}}), flush=True)
    """
)


def test_interleave_alternates_two_workers_and_tests_what_they_report(tmp_path):
    """A stand-in worker (no torch): B reports 1.2x A's times -> 8 rounds a side, in ABBA
    repetition order, and a regression verdict of ratio ~1.2; every round but a process's
    first sets the workloads up anew (8 rounds, fresh processes after 5: 4 + 2 set-ups)."""
    worker = tmp_path / "worker.py"
    worker.write_text(FAKE_WORKER)
    src = str(tmp_path)
    logs = {s: tmp_path / f"{s}.log" for s in "AB"}
    a = Side("A", src, sys.executable, {"FAKE_PATH": src, "FAKE_LOG": str(logs["A"])},
             str(worker))  # fmt: skip
    b = Side("B", src, sys.executable, {"FAKE_PATH": src, "FAKE_SCALE": "1.2",
                                        "FAKE_LOG": str(logs["B"])}, str(worker))  # fmt: skip
    rounds = interleave([a, b], ["x"], rounds=8, reps=3, per_process=5, cpu=None)
    assert [len(rounds.samples[s]["x"]) for s in "AB"] == [8, 8]
    seeds = {s: logs[s].read_text().split() for s in "AB"}
    assert [len(seeds[s]) for s in "AB"] == [6, 6] and len(set(seeds["A"])) == 6
    assert len(rounds.order) == 8 and {o for pair in rounds.order for o in pair} == {"A", "B"}
    (v,) = rounds.verdicts("A", "B", {"x": 0.05})
    assert v.regression and v.ratio == pytest.approx(1.2, rel=0.01), v


def test_interleave_refuses_one_label_for_both_sides():
    """Two sides called the same cannot be told apart."""
    with pytest.raises(ValueError, match="different labels"):
        interleave([Side("A"), Side("A")], ["chunk"])


def test_the_suites_op_counts_and_peak_bytes_are_the_same_twice():
    """run_ops on chunk and collate: aten ops dispatched and peak bytes, equal run to run."""
    from gptref.track import workloads

    first = workloads.run_ops(["chunk", "collate"], workloads.WORKLOADS)["results"]
    second = workloads.run_ops(["chunk", "collate"], workloads.WORKLOADS)["results"]
    assert first == second and first["collate"]["ops"] > 0, (first, second)


def test_synthetic_text_is_fixed():
    """The tokenize workload's text does not depend on the Python or the machine."""
    from gptref.track.workloads import synthetic_text

    text = synthetic_text(50)
    assert text == synthetic_text(50) and len(text.split(" ")) == 50


def test_track_check_counts_only_without_a_baseline_says_how_to_make_one(tmp_path, capsys):
    """--counts-only with a missing --baseline file: one line naming --update."""
    from gptref.cli.main import main

    if __import__("shutil").which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    pytest.importorskip("scipy")
    missing = tmp_path / "none.json"
    status = main(["track", "check", "--counts-only", "--bench", "chunk", "--baseline",
                   str(missing)])  # fmt: skip
    assert status == 2 and "--update" in capsys.readouterr().err


def test_track_compare_refuses_too_few_rounds_for_the_test(capsys):
    """--rounds 5: the signed-rank test cannot reach p < 0.01 in 5 pairs; the error says 8."""
    from gptref.cli.main import main

    assert main(["track", "compare", "--a", ".", "--rounds", "5"]) == 2
    assert "--rounds must be >= 8" in capsys.readouterr().err


@pytest.mark.parametrize(("growth", "status"), [(1.01, 0), (1.2, 1)])
def test_counts_gate_fails_on_an_instruction_blow_up_only(tmp_path, monkeypatch, growth, status):
    """check --counts-only against a baseline: +1 % instructions passes, +20 % fails (exit 1);
    the counts are made up here (valgrind itself is exercised in .ci/run)."""
    from gptref.cli import track
    from gptref.cli.main import main
    from gptref.track.abtest import Side

    env = {"suite_version": 1, "python_version": "3.11.7", "torch_version": "2.13.0",
           "machine": "x86_64"}  # fmt: skip
    base = {"chunk": {"instructions": 1e6, "ops": 4, "peak_bytes": 8}}
    baseline = tmp_path / "counts.json"
    baseline.write_text(json.dumps({"baselines": {count_key(env): base}}))
    now = {"chunk": {"instructions": 1e6 * growth, "ops": 4, "peak_bytes": 8}}
    monkeypatch.setattr(track, "_count_report", lambda side, names: now)
    monkeypatch.setattr(Side, "run", lambda self, mode, benches, *a: {"env": env})
    argv = ["track", "check", "--counts-only", "--bench", "chunk", "--baseline", str(baseline)]
    assert main(argv) == status
    other = {**env, "torch_version": "2.15.0"}
    monkeypatch.setattr(Side, "run", lambda self, mode, benches, *a: {"env": other})
    assert main(argv) == 0  # another build: SKIPPED, no verdict


BLOW_UP = """

_chunk = chunk


def chunk(*args, **kwargs):  # injected by the test: ~1M more instructions a call
    for _ in range(20_000):
        pass
    return _chunk(*args, **kwargs)
"""


@pytest.mark.slow
def test_counts_gate_fails_on_a_real_instruction_blow_up_of_chunk(tmp_path):
    """A copy of gptref whose ``chunk`` spins 20,000 loop turns first, counted under callgrind
    for real: ``track check --counts-only`` exits 1 with chunk's instructions FAIL and
    collate's ok, against the committed baseline of this build (or, for a build it lacks,
    one just written from the clean tree)."""
    import shutil
    import subprocess

    from gptref.cli.track import COUNTS_BASELINE
    from gptref.track.counts import valgrind_available

    if valgrind_available() is not None:
        pytest.skip(valgrind_available())
    root = Path(__file__).resolve().parents[2]
    tree = tmp_path / "tree"
    shutil.copytree(root / "gptref", tree / "gptref",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    baseline = root / COUNTS_BASELINE
    key = count_key(Side("clean", str(root)).run("env", [])["env"])
    if key not in json.loads(baseline.read_text())["baselines"]:
        baseline = tmp_path / "counts.json"
        update = ["--baseline", str(baseline), "--update"]
        gate = [sys.executable, "-m", "gptref", "track", "check", "--counts-only", "--bench",
                "chunk,collate"]  # fmt: skip
        subprocess.run([*gate, *update], cwd=root, check=True, capture_output=True)
    with (tree / "gptref" / "data.py").open("a") as f:
        f.write(BLOW_UP)
    proc = subprocess.run([sys.executable, "-m", "gptref", "track", "check", "--counts-only",
                           "--bench", "chunk,collate", "--baseline", str(baseline)],
                          cwd=tree, capture_output=True, text=True, check=False)  # fmt: skip
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert any(line.startswith("FAIL") and "chunk instructions" in line for line in lines)
    # collate passes the gate: "ok", or "changed" (its count moves by up to ~0.2 % with the
    # source path and the benchmarks run before it in the worker), never FAIL
    collate = [line for line in lines if "collate instructions" in line]
    assert len(collate) == 1 and collate[0].split()[0] in ("ok", "changed"), lines
