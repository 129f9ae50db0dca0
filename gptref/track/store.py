"""The history store: every recorded run, with what it ran on, as pytest-benchmark files.

A store is a folder (``gptref track``'s default: the measured checkout's
``benchmarks/results/track/store``);
each run is one JSON file in pytest-benchmark's own storage layout and schema,
``<store>/<machine id>/<NNNN>_<label>.json`` with ``machine_info``, ``commit_info``,
``benchmarks`` (name, stats with the raw ``data``, ``extra_info``) and ``datetime``, so
pytest-benchmark reads it as it reads its own (``pytest-benchmark --storage
file://<store> list`` / ``compare``), and a ``--benchmark-json`` file of the pytest suites
can be added as it is (``record_pytest_json``). gptref adds, in fields pytest-benchmark
ignores: ``machine_info`` torch version, CPU/GPU model, threads, load average;
``extra_info`` per benchmark the deterministic counts (``instructions``, ``ops``,
``peak_bytes``) and the in-run ratios; and a top-level ``gptref_track`` (label, suite
version, mode, the round values each benchmark's significance test uses).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import platform
import re
import stat
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptref._io import atomic_create, writing
from gptref._owned import lstat, no_links

_NAME = re.compile(r"^(\d{4})_(.*)\.json$")


def machine_id(python_version: str | None = None) -> str:
    """pytest-benchmark's folder name: ``Linux-CPython-3.11-64bit``."""
    version = python_version or platform.python_version()
    bits = platform.architecture()[0]
    major_minor = ".".join(version.split(".")[:2])
    return f"{platform.system()}-{platform.python_implementation()}-{major_minor}-{bits}"


def _stats(data: Sequence[float]) -> dict[str, Any]:
    """Seconds per call, one per round -> pytest-benchmark's stats block (``data`` kept)."""
    xs = sorted(data)
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else xs * 3
    iqr = q3 - q1
    mean = statistics.fmean(xs)
    return {
        "min": xs[0], "max": xs[-1], "mean": mean,
        "stddev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "rounds": len(xs), "median": statistics.median(xs), "iqr": iqr, "q1": q1, "q3": q3,
        "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0",
        "ld15iqr": xs[0], "hd15iqr": xs[-1], "ops": 1 / mean, "total": sum(xs),
        "iterations": 1, "data": list(data),
    }  # fmt: skip


def run_record(
    label: str,
    env: Mapping[str, Any],
    commit: Mapping[str, Any],
    times: Mapping[str, Sequence[float]] | None = None,
    counts: Mapping[str, Mapping[str, Any]] | None = None,
    ratios: Mapping[str, float | None] | None = None,
    machine: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One run in pytest-benchmark's schema: ``times`` per-round seconds per call by
    benchmark, ``counts`` the deterministic counts by benchmark (in the timed benchmark's
    ``extra_info``), ``ratios`` in-run ratios. pytest-benchmark wants stats in every
    benchmark, so ratios and the counts of untimed benchmarks live in ``gptref_track``."""
    benchmarks = []
    for name in sorted(times or {}):
        extra = {k: v for k, v in (counts or {}).get(name, {}).items() if k != "calls"}
        benchmarks.append({
            "group": "gptref track", "name": name, "fullname": f"gptref.track::{name}",
            "params": None, "param": None, "extra_info": extra, "options": {},
            "stats": _stats(times[name]),
        })  # fmt: skip
    untimed = {n: dict(c) for n, c in (counts or {}).items() if n not in (times or {})}
    kept = {n: v for n, v in (ratios or {}).items() if v is not None}
    return {
        "machine_info": {
            "node": platform.node(),
            "processor": platform.processor(),
            "machine": platform.machine(),
            "system": platform.system(),
            "release": platform.release(),
            "python_implementation": env.get("python_implementation", "CPython"),
            "python_version": env.get("python_version"),
            **(machine or {}),
            **{k: env.get(k) for k in ("torch_version", "torch_threads", "load_avg")},
        },  # fmt: skip
        "commit_info": dict(commit),
        "benchmarks": benchmarks,
        "datetime": dt.datetime.now(dt.timezone.utc).isoformat(),
        "version": "4.0.0",
        "gptref_track": {
            "label": label,
            "suite_version": env.get("suite_version"),
            "ratios": kept,
            "counts": untimed,
        },  # fmt: skip
    }


@dataclass(frozen=True)
class Entry:
    path: Path
    record: dict[str, Any]

    @property
    def label(self) -> str:
        return (self.record.get("gptref_track") or {}).get("label") or self.path.stem

    @property
    def torch(self) -> str:
        return str(self.record["machine_info"].get("torch_version"))

    @property
    def commit(self) -> str:
        return str((self.record.get("commit_info") or {}).get("id") or "")[:10]

    def times(self, name: str) -> list[float] | None:
        """The per-round values of benchmark ``name`` (None where it was not timed)."""
        for bench in self.record["benchmarks"]:
            if bench["name"] == name and bench.get("stats"):
                return list(bench["stats"]["data"])
        return None

    def extra(self, name: str) -> dict[str, Any]:
        """``extra_info`` of benchmark ``name``; for an in-run ratio ``{"ratio": value}``."""
        for bench in self.record["benchmarks"]:
            if bench["name"] == name:
                return dict(bench.get("extra_info") or {})
        track = self.record.get("gptref_track") or {}
        if name in (track.get("ratios") or {}):
            return {"ratio": track["ratios"][name]}
        return dict((track.get("counts") or {}).get(name, {}))

    def ratio_names(self) -> list[str]:
        return list((self.record.get("gptref_track") or {}).get("ratios") or {})


def record(store: str | Path, run: Mapping[str, Any]) -> Path:
    """Add ``run`` to ``store`` -> its new file (numbered after the last one there). Nothing
    in the store is replaced, and nothing is written through a link."""
    root = Path(store)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file, not a store folder; give a folder (--store DIR)")
    folder = root / machine_id(run["machine_info"].get("python_version"))
    if root.is_dir():
        no_links(root, [folder.name])
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    label = (run.get("gptref_track") or {}).get("label") or "run"
    safe = re.sub(r"[^A-Za-z0-9.+-]+", "-", label).strip("-") or "run"
    text = json.dumps(run, indent=1) + "\n"
    while True:  # another recorder may take a number first: never replace its file
        numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name))]
        path = folder / f"{max(numbers, default=0) + 1:04d}_{safe}.json"
        with contextlib.suppress(FileExistsError):
            return atomic_create(path, text)


def record_pytest_json(store: str | Path, json_file: str | Path, label: str) -> Path:
    """A pytest-benchmark ``--benchmark-json`` file -> a run of ``store`` (as it is, with
    ``label``; its ``extra_info`` ratios become series of the report)."""
    try:
        run = _load(Path(json_file))
    except ValueError as e:
        raise ValueError(f"{json_file}: not a pytest-benchmark JSON file ({e}); write one with "
                         "python -m pytest benchmarks --benchmark-json FILE") from None  # fmt: skip
    run["gptref_track"] = {**(run.get("gptref_track") or {}), "label": label}
    return record(store, run)


def entries(store: str | Path) -> list[Entry]:
    """Every run in ``store``, oldest first (by file number within a machine, then time)."""
    root = Path(store)
    if not root.is_dir():
        raise ValueError(f"{root}: no such store; record a run first (gptref track record "
                         f"--store {root})")  # fmt: skip
    found = []
    for path in sorted(root.glob("*/*.json")):
        if _NAME.match(path.name):
            try:
                found.append(Entry(path, _load(path)))
            except ValueError as e:
                raise ValueError(f"{path}: not a run of a gptref track store ({e}); move it out "
                                 f"of {root}") from None  # fmt: skip
    return sorted(found, key=lambda e: (e.record.get("datetime") or "", e.path.name))


def _load(path: Path) -> dict[str, Any]:
    """A run's file -> its record, its structure checked (what the report reads of it);
    ValueError saying what is wrong. A link, a FIFO or a huge file is not read."""
    st = lstat(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file" if st else "no such file")
    if st.st_size > 256 << 20:
        raise ValueError(f"{st.st_size:,} bytes, larger than any run")
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"not readable JSON: {' '.join(str(e).split())[:120]}") from None
    _check_run(run)
    return run


def _check_run(run: Any) -> None:
    """The fields the store's readers use, of the types they use them as."""

    def expect(value: Any, kinds: tuple, where: str) -> None:
        if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise ValueError(f"{where} is a {type(value).__name__}, expected {names}")

    expect(run, (dict,), "the file")
    expect(run.get("machine_info"), (dict,), "'machine_info'")
    expect(run.get("benchmarks"), (list,), "'benchmarks'")
    expect(run.get("commit_info"), (dict, type(None)), "'commit_info'")
    expect(run.get("datetime"), (str, type(None)), "'datetime'")
    for key in ("time", "id"):
        expect((run.get("commit_info") or {}).get(key), (str, type(None)), f"commit_info[{key!r}]")
    for i, bench in enumerate(run["benchmarks"]):
        expect(bench, (dict,), f"benchmarks[{i}]")
        expect(bench.get("name"), (str,), f"benchmarks[{i}]['name']")
        expect(bench.get("extra_info"), (dict, type(None)), f"benchmarks[{i}]['extra_info']")
        expect(bench.get("stats"), (dict, type(None)), f"benchmarks[{i}]['stats']")
        if bench.get("stats"):
            data = bench["stats"].get("data")
            expect(data, (list,), f"benchmarks[{i}]['stats']['data']")
            for x in data:
                expect(x, (int, float), f"a value of benchmarks[{i}]['stats']['data']")
    track = run.get("gptref_track")
    expect(track, (dict, type(None)), "'gptref_track'")
    for key in ("ratios", "counts"):
        expect((track or {}).get(key), (dict, type(None)), f"gptref_track[{key!r}]")
    for name, counts in ((track or {}).get("counts") or {}).items():
        expect(counts, (dict,), f"gptref_track['counts'][{name!r}]")


def find(store: str | Path, spec: str) -> Entry:
    """The newest run whose label, file name or commit id starts with ``spec``."""
    matches = [e for e in entries(store)
               if e.label == spec or e.path.name.startswith(spec) or e.path.stem.endswith(spec)
               or (e.commit and spec and e.commit.startswith(spec[:10]))]  # fmt: skip
    if not matches:
        raise ValueError(f"no run {spec!r} in {store}; list them with gptref track report")
    return matches[-1]


def iter_series(store_entries: Sequence[Entry], name: str, key: str | None = None
                ) -> Iterator[tuple[Entry, float]]:  # fmt: skip
    """(entry, value) for each entry that has benchmark ``name``: its median round when
    ``key`` is None, else ``extra_info[key]``."""
    for entry in store_entries:
        if key is None:
            data = entry.times(name)
            if data:
                yield entry, statistics.median(data)
        else:
            value = entry.extra(name).get(key)
            if isinstance(value, (int, float)):
                yield entry, float(value)
