"""Hostile track stores (issue 21): a run file of the wrong shape, a file that is no JSON, a
link, a FIFO or a folder where a run file should be, a machine folder that is a link. ``gptref
track report`` refuses in one line naming the file (the landed code raised AttributeError or
TypeError as tracebacks, and named no file for bad JSON); ``track record`` never writes
through a link; ``track check --counts-only`` reads its baseline before it measures anything
(a corrupt one cost the landed code 300 s of counting before a one-line error without the
file's name)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.faultlib import REPO, changes, cli, describe, error_problems, limited, set_at, tree_state

SAMPLE = REPO / "benchmarks" / "results" / "prepare_cpu.json"
MACHINE = "Linux-CPython-3.11-64bit"


def good_run() -> dict:
    return json.loads(SAMPLE.read_text())


def with_(change):
    def make() -> str:
        run = good_run()
        change(run)
        return json.dumps(run)

    return make


HOSTILE_RUN_FILES = {
    "a JSON list": lambda: json.dumps([good_run()]),
    "a JSON string": lambda: json.dumps("run"),
    "not JSON": lambda: "{not json",
    "empty": lambda: "",
    "'benchmarks' a string": with_(set_at(["benchmarks"], "fast")),
    "'benchmarks' holds a number": with_(set_at(["benchmarks"], [7])),
    "'machine_info' a list": with_(set_at(["machine_info"], ["x"])),
    "'machine_info' missing": with_(lambda r: r.pop("machine_info")),
    "a benchmark without a name": with_(lambda r: r["benchmarks"][0].pop("name")),
    "stats data of strings": with_(lambda r: r["benchmarks"][0]["stats"].update(data=["a", "b"])),
    "stats a list": with_(lambda r: r["benchmarks"][0].update(stats=[1, 2])),
    "extra_info a list": with_(lambda r: r["benchmarks"][0].update(extra_info=[1])),
    "'datetime' a number": with_(set_at(["datetime"], 20261201)),
    "commit_info 'time' a number": with_(lambda r: r.setdefault("commit_info", {}).update(time=5)),
    "gptref_track a list": with_(set_at(["gptref_track"], [1])),
}  # fmt: skip


def store_with(tmp_path: Path, text: str | None = None) -> tuple[Path, Path]:
    """A store with one good run and, when ``text`` is given, a second run file holding it
    -> (the store, the second file's path)."""
    store = tmp_path / "store"
    assert cli(["track", "record", "--from-json", str(SAMPLE), "--store", str(store)]).rc == 0
    bad = store / MACHINE / "0002_bad.json"
    if text is not None:
        bad.write_text(text)
    return store, bad


@pytest.mark.parametrize("case", sorted(HOSTILE_RUN_FILES))
def test_a_store_holding_a_hostile_run_file_is_refused_in_one_line_naming_it(case, tmp_path):
    """track report over a store with one run file of the wrong shape: exit 2, one line
    naming that file; nothing written to --out."""
    store, bad = store_with(tmp_path, HOSTILE_RUN_FILES[case]())
    out = tmp_path / "report"
    try:
        result = cli(["track", "report", "--store", str(store), "--out", str(out)])
    except BaseException as e:  # noqa: BLE001 - what escapes main() is a traceback
        pytest.fail(f"{case}: a traceback: {type(e).__name__}: {e}")
    assert error_problems(result, named=(str(bad),)) == [], describe(result)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["a link to a file outside", "a folder", "a FIFO"])
def test_a_run_file_that_is_no_regular_file_is_refused_not_read(kind, tmp_path):
    """Where a run file should be, a link (to a file outside the store), a folder or a FIFO:
    one line naming it; the FIFO is not opened (the report would wait forever), so the check
    runs in a process of its own with a time limit."""
    store, bad = store_with(tmp_path)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(good_run()))
    if kind.startswith("a link"):
        bad.symlink_to(outside)
    elif kind == "a folder":
        bad.mkdir()
    else:
        os.mkfifo(bad)
    result = limited(["track", "report", "--store", str(store), "--out", str(tmp_path / "r")], timeout=60)  # fmt: skip
    assert error_problems(result, named=(str(bad),)) == [], describe(result)


def test_track_record_never_writes_through_a_linked_machine_folder(tmp_path):
    """STORE/<machine> a link to a folder elsewhere: record refuses in one line naming the
    link, nothing is written where it points (the landed code wrote the run there)."""
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    (store / MACHINE).symlink_to(elsewhere)
    before = tree_state(elsewhere)
    result = cli(["track", "record", "--from-json", str(SAMPLE), "--store", str(store)])
    assert changes(before, tree_state(elsewhere)) == {"added": [], "removed": [], "changed": []}
    assert error_problems(result, named=(MACHINE, "symbolic link")) == [], describe(result)


def test_a_corrupt_counts_baseline_is_refused_before_anything_is_measured(tmp_path, monkeypatch):
    """track check --counts-only --baseline CORRUPT: one line naming the file, and no worker
    started to count (here a worker would fail the test loudly)."""
    from gptref.track import abtest

    def measured(*args, **kwargs):
        raise ValueError("measured before the baseline was read")

    monkeypatch.setattr(abtest.Side, "run", measured)
    for text in ("{not json", "[]", json.dumps({"baselines": {"k": {"chunk": {"instructions": "many"}}}})):  # fmt: skip
        baseline = tmp_path / "counts.json"
        baseline.write_text(text)
        result = cli(["track", "check", "--counts-only", "--bench", "chunk", "--baseline", str(baseline)])  # fmt: skip
        assert error_problems(result, named=(str(baseline),)) == [], f"{text!r}: {describe(result)}"
        assert "measured before" not in result.err


def test_track_compare_json_never_replaces_a_users_file(tmp_path, monkeypatch):
    """track compare --json FILE, FILE a user's: refused before any round is timed, the
    file kept."""
    from gptref.track import abtest

    def timed(*args, **kwargs):
        raise ValueError("timed before the output was checked")

    monkeypatch.setattr(abtest, "interleave", timed)
    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": true}')
    repo = REPO
    result = cli(["track", "compare", "--a", str(repo), "--b", str(repo), "--bench", "chunk", "--json", str(mine)])  # fmt: skip
    assert error_problems(result, named=(str(mine),)) == [], describe(result)
    assert mine.read_text() == '{"mine": true}'
