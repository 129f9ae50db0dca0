"""The suite's verdict holds whatever the implementation does to the process: an exit at import
or inside a call, a hang, megabytes of output, a tokenizer fetched at import (issue 23,
defects 1 and 2). Each case runs the suite in a subprocess on a small module that does it, and
checks the exit status and what the user reads; a verdict appears only when the suite reached
its end."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT, failures, module, shown, suite, variant

BOOK = "from examples.book_style import *  # noqa: F403\n"
LEVELS = "gptref conformance: levels"


@pytest.mark.parametrize(
    "exit_code",
    ["import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n", "raise SystemExit(0)\n"],
    ids=["os._exit", "sys.exit", "SystemExit"],
)
def test_an_exit_at_import_is_one_line_naming_the_module_and_a_failing_status(tmp_path, exit_code):
    """A module that ends the process while it is imported: the run stops with a non-zero
    status and one line naming the module and the exit, no verdict, no traceback."""
    path = module(tmp_path, "exits_at_import", exit_code)
    done = suite(path, "-q", "-k", "split_parts", cwd=tmp_path)
    assert done.returncode not in (0, 1), shown(done)
    lines = [line for line in done.stderr.splitlines() if "exits_at_import" in line]
    assert len(lines) == 1 and "importing" in lines[0] and "exit" in lines[0].lower(), shown(done)
    assert LEVELS not in done.stdout and "Traceback" not in done.stderr, shown(done)


@pytest.mark.parametrize(
    "how", ["os._exit(0)", pytest.param("sys.exit(0)", marks=pytest.mark.slow)]
)
def test_an_exit_inside_a_call_fails_that_test_naming_the_call_and_the_run_reaches_its_verdict(
    tmp_path, how
):
    """split calls os._exit(0) / sys.exit(0): its test fails naming split and its arguments,
    the other tests still run, and the run ends with the level verdicts and status 1."""
    code = f"{BOOK}import os, sys\n\ndef split(data, train_ratio=0.9):\n    {how}\n"
    path = module(tmp_path, "exits_in_split", code)
    done = suite(path, "-q", "-rf", "-k", "split_parts or num_chunks_is_the", cwd=tmp_path)
    assert done.returncode == 1, shown(done)
    assert f"split: called {how}" in done.stdout, shown(done)
    assert re.search(r"impl\.split\(.*, 0\.\d+", done.stdout), shown(done)
    assert list(failures(done.stdout)) == ["test_split_parts_are_the_data_cut_at_int_of_ratio_times_length"], shown(done)  # fmt: skip
    assert re.search(r"^book\s+failed\s+1 passed, 1 failed$", done.stdout, re.M), shown(done)


def test_a_hang_inside_a_call_fails_naming_the_function_and_its_arguments(tmp_path):
    """split loops forever: with --call-timeout 1 its test fails after about a second,
    naming split and the arguments of the call, and the run reaches its verdict."""
    code = f"{BOOK}\ndef split(data, train_ratio=0.9):\n    while True:\n        pass\n"
    path = module(tmp_path, "hangs_in_split", code)
    done = suite(path, "-q", "-rf", "--call-timeout", "1", "-k", "split_parts or num_chunks_is_the", cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 1, shown(done)
    assert "split: did not return within 1 s (the time limit of one call, --call-timeout)" in done.stdout, shown(done)  # fmt: skip
    assert re.search(r"impl\.split\(.*, 0\.\d+", done.stdout), shown(done)
    assert re.search(r"^book\s+failed\s+1 passed, 1 failed$", done.stdout, re.M), shown(done)


def test_a_hang_in_what_a_call_returned_fails_naming_that_call(tmp_path):
    """GPTDatasetV1's __getitem__ loops forever: the test fails naming GPTDatasetV1 and the
    call that built the dataset (the suite hangs while it reads the items)."""
    path = variant(tmp_path, "hangs_in_getitem", [(
        "    def __getitem__(self, idx):\n        return self.input_ids[idx], self.target_ids[idx]",
        "    def __getitem__(self, idx):\n        while True:\n            pass",
    )])  # fmt: skip
    done = suite(path, "-q", "-k", "gpt_dataset_v1_windows", cwd=tmp_path, env={"GPTREF_CALL_TIMEOUT": "1"}, timeout=120)  # fmt: skip
    assert done.returncode == 1, shown(done)
    assert "GPTDatasetV1: what it returned did not finish within 1 s" in done.stdout, shown(done)
    assert "impl.GPTDatasetV1('any text', tokenizer.IdsTokenizer(" in done.stdout, shown(done)


def test_a_hang_at_import_is_one_line_naming_the_module(tmp_path):
    path = module(tmp_path, "hangs_at_import", "import time\nwhile True:\n    time.sleep(0.05)\n")
    done = suite(path, "-q", cwd=tmp_path, env={"GPTREF_CALL_TIMEOUT": "1"}, timeout=120)
    assert done.returncode not in (0, 1), shown(done)
    assert "importing hangs_at_import.py: did not finish within 1 s" in done.stderr, shown(done)
    assert LEVELS not in done.stdout, shown(done)


@pytest.mark.slow
def test_a_hang_the_signal_cannot_interrupt_ends_the_run_with_one_line_and_no_verdict(tmp_path):
    """split blocks SIGALRM and waits in C (pause): the watchdog ends the run 10 s past the
    limit with one line naming the call, exit status 3, and no verdict."""
    code = (f"{BOOK}import ctypes, signal\n\ndef split(data, train_ratio=0.9):\n"
            "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
            "    ctypes.CDLL(None).pause()\n")  # fmt: skip
    path = module(tmp_path, "blocks_in_split", code)
    done = suite(path, "-q", "-k", "split_parts", cwd=tmp_path, env={"GPTREF_CALL_TIMEOUT": "1"}, timeout=120)  # fmt: skip
    assert done.returncode == 3, shown(done)
    out = done.stdout + done.stderr
    assert "gptref conformance: split: did not return within 1 s" in out, shown(done)
    assert "without a verdict (exit status 3)" in out and LEVELS not in out, shown(done)


@pytest.mark.slow
def test_megabytes_of_output_are_cut_and_the_verdict_stays(tmp_path):
    """A module that prints 2 MB when imported and 2 MB in every call of a wrong split: the
    report shows each failure's output cut to a few thousand characters, and the verdict."""
    code = (f"{BOOK}print('x' * 2_000_000)\n\ndef split(data, train_ratio=0.9):\n"
            "    print('y' * 2_000_000)\n    return data, data\n")  # fmt: skip
    path = module(tmp_path, "prints_megabytes", code)
    done = suite(path, "-q", "-rf", "-k", "split", cwd=tmp_path)
    assert done.returncode == 1, shown(done)
    assert len(done.stdout) < 100_000, f"{len(done.stdout)} characters of report"
    assert "characters of output cut" in done.stdout and LEVELS in done.stdout, shown(done)


def test_a_module_that_fetches_the_gpt2_encoding_at_import_runs_offline(tmp_path):
    """tiktoken.get_encoding("gpt2") at module level, with no network and no tiktoken cache:
    the suite's offline encoding is in place before the import, so the module loads."""
    code = f"import tiktoken\nTOKENIZER = tiktoken.get_encoding('gpt2')\n{BOOK}"
    path = module(tmp_path, "encoding_at_import", code)
    offline = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"), "HTTPS_PROXY": "http://127.0.0.1:9",
               "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}  # fmt: skip
    done = suite(path, "-q", "-k", "split_parts", cwd=tmp_path, env=offline)
    assert done.returncode == 0 and "1 passed" in done.stdout, shown(done)


def test_an_import_that_raises_is_one_line_naming_the_module_and_the_exception(tmp_path):
    code = "x = 1\nraise ConnectionError('HTTPSConnectionPool(host=...): Max retries exceeded\\nat once')\n"  # fmt: skip
    path = module(tmp_path, "raises_at_import", code)
    done = suite(path, "-q", cwd=tmp_path)
    assert done.returncode not in (0, 1), shown(done)
    line = "importing raises_at_import.py raised ConnectionError: HTTPSConnectionPool(host=...): Max retries exceeded at once at raises_at_import.py:2"  # fmt: skip
    assert [x for x in done.stderr.splitlines() if x.strip()] == [f"ERROR: gptref conformance: GPTREF_IMPL={path}: {line}"], shown(done)  # fmt: skip


def test_the_cli_reports_an_exit_at_import_in_one_line_and_fails(tmp_path):
    """`gptref conformance module.py` where the module calls os._exit(0) when imported."""
    path = module(tmp_path, "exits_at_import", "import os\nos._exit(0)\n")
    done = subprocess.run([sys.executable, "-m", "gptref", "conformance", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), **_env()})  # fmt: skip
    assert done.returncode != 0, shown(done)
    assert "exits_at_import.py: called os._exit(0)" in done.stderr, shown(done)
    assert "Traceback" not in done.stderr, shown(done)


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_uninstalling_the_guard_ends_its_watchdog_thread_before_it_returns():
    """The watchdog ends when the guard is uninstalled, not at the interpreter's exit: a
    daemon thread still alive then, dropping its last look at a call's tensors, is killed in
    torch's C++ destructor and aborts a process whose run passed (1 in ~5 runs before).
    (In a process of its own: this one may run the suite under its own guard.)"""
    code = """if True:
        import threading
        from gptref.conformance.guard import Guard
        guard = Guard(60.0).install()
        (watchdog,) = [t for t in threading.enumerate() if t.name == "gptref-guard"]
        alive = watchdog.is_alive()
        guard.uninstall()
        print(alive, watchdog.is_alive())
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"], done.stdout
