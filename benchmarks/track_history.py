"""A real history for the trend report: the tracked suite on several commits of gptref and two
torch versions, recorded into ``benchmarks/results/track/store`` with ``gptref track record``.

``python benchmarks/track_history.py --python .venv/bin/python .venv-torch-new/bin/python``
runs ``gptref track record --src COMMIT --python PY --counts`` for each commit in
``COMMITS`` (oldest first; each exported with ``git archive``, measured through gptref's
stable public API, which all of them have) and each Python, then ``gptref track report``.
Timings on this shared machine are a few rounds each, in CPU time; the instruction counts
are the exact series.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITS = ["f57b2ba", "5fc7dae", "a184daf", "eb2fe4d"]  # model landed .. after the redesign
STORE = ROOT / "benchmarks" / "results" / "track" / "store"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", nargs="+", default=[sys.executable])
    parser.add_argument("--commits", nargs="+", default=COMMITS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bench", default="chunk,collate,tokenize,forward,loss,train_step")
    args = parser.parse_args()
    for python in args.python:
        for commit in args.commits:
            cmd = [sys.executable, "-m", "gptref", "track", "record", "--src", commit,
                   "--python", python, "--rounds", str(args.rounds), "--counts",
                   "--bench", args.bench, "--store", str(STORE)]  # fmt: skip
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "gptref", "track", "report", "--store", str(STORE),
                    "--out", str(STORE.parent / "report")], check=True, cwd=ROOT)  # fmt: skip


if __name__ == "__main__":
    main()
