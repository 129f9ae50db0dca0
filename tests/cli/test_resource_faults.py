"""Resource faults are one line naming the path and the fix (issue 21): a full disk anywhere
(torch.save and safetensors inside a checkpoint, metrics, plots, the summary, a prepared
corpus, an export), a read-only folder, a path through a file. Never a traceback, never a
bare ``[Errno N]`` text, and a full disk never costs the checkpoint saved before it.

The full disk is a real one: a small tmpfs mounted for the test (``mount -t tmpfs -o
size=...``), which needs root or CAP_SYS_ADMIN; where the test cannot mount, it is skipped
with that reason (``tests/test_cli_errors.py`` emulates a full disk everywhere with
RLIMIT_FSIZE). A read-only folder is a tmpfs mounted read-only (root writes anywhere else),
or, without mounting, a folder without write permission for a user who is not root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.faultlib import (
    REPO,
    TINY_RUN,
    cli,
    describe,
    error_problems,
    tiny_corpus,
    two_snapshot_run,
    words,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="tmpfs and modes are POSIX")


@contextlib.contextmanager
def mounted(path: Path, options: str):
    """A tmpfs at ``path`` for the block (skips the test where it cannot be mounted)."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: the full disk needs a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()[:200]}")  # fmt: skip
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def outcome(argv: list[str]):
    """-> the CLI's Result, or the exception that escaped it (a traceback for a user)."""
    try:
        return cli(argv)
    except BaseException as e:  # noqa: BLE001 - an exception out of main() is a traceback
        return e


def one_line_naming(result, *named: str) -> list[str]:
    """Problems with ``result`` as the answer to a resource fault: exit 2, one line naming
    ``named``, no bare errno text."""
    if isinstance(result, BaseException):
        return [f"a traceback: {type(result).__name__}: {str(result)[:300]}"]
    problems = error_problems(result, named=named)
    if "[Errno" in result.err:
        problems.append("a bare [Errno N] text")
    return problems


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tiny_corpus(tmp_path_factory.mktemp("faults-corpus"))


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    return two_snapshot_run(corpus, tmp_path_factory.mktemp("faults-run") / "run")


@pytest.fixture(scope="module")
def hf_file(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults-hf") / "model.safetensors"
    assert cli(["weights", "export-hf", "--checkpoint", str(run), "--out", str(out)]).rc == 0
    return out


# a tiny run writes config.json, metrics.jsonl (KBs), then per save model.safetensors (13 MB)
# and state.pt (26 MB), then loss.png and summary.json: these sizes run out in each of them
DISK_SIZES = ["64k", "1m", "14m", "30m", "45m", "60m", "80m", "85m"]


@pytest.mark.slow
@pytest.mark.parametrize("size", DISK_SIZES)
def test_train_on_a_full_disk_is_one_line_and_keeps_the_checkpoint_saved_before(size, corpus, tmp_path):  # fmt: skip
    """train --out on a tmpfs of ``size``: exit 0, or exit 2 with one line naming the run's
    folder and the full disk (the landed code raised torch.save's RuntimeError "[enforce fail
    at inline_container.cc]" as a traceback); a snapshot saved before the fault still loads."""
    with mounted(tmp_path / "disk", f"size={size}") as disk:
        out = disk / "run"
        args = ["train", "--text", str(corpus), *TINY_RUN, "--max-steps", "2", "--checkpoint-every", "1", "--out", str(out)]  # fmt: skip
        result = outcome(args)
        if isinstance(result, BaseException) or result.rc != 0:
            assert one_line_naming(result, str(out), "disk is full") == [], describe(result) if not isinstance(result, BaseException) else result  # fmt: skip
        saved = sorted(p.name for p in (out / "checkpoint").glob("save-*")) if (out / "checkpoint").is_dir() else []  # fmt: skip
        if saved:
            loaded = cli(["generate", "--checkpoint", str(out), "--prompt", "the", "--max-new-tokens", "2"])  # fmt: skip
            assert loaded.rc == 0, f"the snapshot saved before the full disk does not load: {describe(loaded)}"  # fmt: skip


def test_prepare_on_a_full_disk_names_the_folder_and_leaves_no_token_files(tmp_path):
    """prepare --out on a 1 MB tmpfs, 3 MB of text: one line naming the folder and the full
    disk (the landed line was a bare "[Errno 28] No space left on device"), no temporary
    files left (the lock file goes with the lock)."""
    text = tmp_path / "big.txt"
    text.write_text(words(600_000, seed=5), encoding="utf-8")
    with mounted(tmp_path / "disk", "size=1m") as disk:
        result = outcome(["prepare", "--text", str(text), "--out", str(disk / "data"), "--no-progress"])  # fmt: skip
        assert one_line_naming(result, str(disk / "data"), "disk is full") == [], describe(result)
        assert os.listdir(disk / "data") == []


def test_export_hf_on_a_full_disk_is_one_line(run, tmp_path):
    """export-hf --out on a 5 MB tmpfs (the weights are 13 MB): one line naming the file (the
    landed code raised SafetensorError "No space left on device" as a traceback); no file or
    temporary left."""
    with mounted(tmp_path / "disk", "size=5m") as disk:
        out = disk / "model.safetensors"
        result = outcome(["weights", "export-hf", "--checkpoint", str(run), "--out", str(out)])
        assert one_line_naming(result, str(out), "disk is full") == [], result
        assert os.listdir(disk) == []


def test_import_hf_on_a_full_disk_is_one_line(hf_file, tmp_path):
    """import-hf --out on a 5 MB tmpfs: one line naming the checkpoint folder."""
    with mounted(tmp_path / "disk", "size=5m") as disk:
        out = disk / "imported"
        result = outcome(["weights", "import-hf", "--safetensors", str(hf_file), "--n-heads", "2", "--out", str(out)])  # fmt: skip
        assert one_line_naming(result, str(out), "disk is full") == [], result


def test_track_record_and_report_on_a_full_disk_are_one_line(tmp_path):
    """track report --out on a 16 KB tmpfs (the page embeds its figure): one line naming it;
    track record on a full store: one line naming it."""
    sample = REPO / "benchmarks" / "results" / "prepare_cpu.json"
    store = tmp_path / "store"
    assert cli(["track", "record", "--from-json", str(sample), "--store", str(store)]).rc == 0
    with mounted(tmp_path / "disk", "size=16k") as disk:
        result = outcome(["track", "report", "--store", str(store), "--out", str(disk / "report")])
        assert one_line_naming(result, str(disk / "report"), "disk is full") == [], result
    with mounted(tmp_path / "disk2", "size=4k") as disk:
        (disk / "filler").write_bytes(b"x" * 4096)
        result = outcome(["track", "record", "--from-json", str(sample), "--store", str(disk / "s")])  # fmt: skip
        assert one_line_naming(result, str(disk / "s"), "disk is full") == [], result


# ---------------------------------------------------------------- read-only, a file in the way


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody here may write into."""
    folder = tmp_path / "ro"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    with mounted(folder, "size=1m,ro"):
        yield folder


def writers(corpus: Path, run: Path, hf_file: Path, target: Path) -> dict[str, list[str]]:
    sample = REPO / "benchmarks" / "results" / "prepare_cpu.json"
    return {
        "train --out": [
            "train",
            "--text",
            str(corpus),
            *TINY_RUN,
            "--max-steps",
            "1",
            "--out",
            str(target),
        ],  # fmt: skip
        "prepare --out": ["prepare", "--text", str(corpus), "--out", str(target), "--no-progress"],
        "weights export-hf --out": [
            "weights",
            "export-hf",
            "--checkpoint",
            str(run),
            "--out",
            str(target),
        ],  # fmt: skip
        "weights import-hf --out": [
            "weights",
            "import-hf",
            "--safetensors",
            str(hf_file),
            "--n-heads",
            "2",
            "--out",
            str(target),
        ],  # fmt: skip
        "track record --store": [
            "track",
            "record",
            "--from-json",
            str(sample),
            "--store",
            str(target),
        ],  # fmt: skip
        "bench --out": [
            "bench",
            "--preset",
            "tiny",
            "--batch-sizes",
            "1",
            "--steps",
            "1",
            "--out",
            str(target),
        ],  # fmt: skip
    }


WRITERS = ["train --out", "prepare --out", "weights export-hf --out", "weights import-hf --out",
           "track record --store", "bench --out"]  # fmt: skip


@pytest.mark.parametrize("writer", WRITERS)
def test_a_read_only_folder_is_one_line_naming_it(writer, corpus, run, hf_file, read_only):
    """Each writer into a read-only folder: exit 2, one line naming the path and saying
    read-only (the landed line was "[Errno 30] Read-only file system: ...")."""
    target = read_only / "out"
    result = outcome(writers(corpus, run, hf_file, target)[writer])
    fix = "read-only" if os.geteuid() == 0 else "permission"
    assert one_line_naming(result, str(read_only), fix) == [], result


@pytest.mark.parametrize("writer", WRITERS)
def test_a_path_through_a_file_is_one_line_naming_it(writer, corpus, run, hf_file, tmp_path):
    """Each writer given FILE/out, FILE a regular file: exit 2, one line naming the path and
    saying a file is in the way (the landed lines were "[Errno 20] Not a directory" or
    "[Errno 17] File exists"); the file is unchanged."""
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    result = outcome(writers(corpus, run, hf_file, blocker / "out")[writer])
    assert one_line_naming(result, str(blocker)) == [], result
    line = result.err_lines[0]
    assert "not a folder" in line or "in the way" in line, line
    assert blocker.read_text() == "mine"
