"""Nothing outside a run is touched (issue 21, defects 2-6): gptref deletes or replaces only
files it can prove it wrote, never follows a symbolic link when it writes, locks or deletes,
and an existing output of its own is replaced only with ``--overwrite``.

Each case builds a real folder (a run, a prepared corpus, a user's folder with look-alike
names, links pointing outside), runs the CLI on it, and compares every entry of the folder
and of what its links point to, before and after (``tests.faultlib.tree_state``): a refusal
is exit 2 with one line naming the path, and leaves every entry as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faultlib import (
    REPO,
    TINY_RUN,
    changes,
    cli,
    describe,
    error_problems,
    linked_copy,
    tiny_corpus,
    tree_state,
    two_snapshot_run,
    words,
)

NEWEST = "save-00000002-0002"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ownership")


@pytest.fixture(scope="module")
def corpus(base) -> Path:
    return tiny_corpus(base)


@pytest.fixture(scope="module")
def other_corpus(base) -> Path:
    path = base / "other.txt"
    path.write_text(words(400, seed=4), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(corpus, base) -> Path:
    return two_snapshot_run(corpus, base / "run")


@pytest.fixture(scope="module")
def prepared(corpus, base) -> Path:
    out = base / "prepared"
    assert cli(["prepare", "--text", str(corpus), "--out", str(out), "--no-progress"]).rc == 0
    return out


@pytest.fixture(scope="module")
def hf_file(run, base) -> Path:
    """A Hugging Face safetensors file (the run's weights exported)."""
    out = base / "hf" / "model.safetensors"
    assert cli(["weights", "export-hf", "--checkpoint", str(run), "--out", str(out)]).rc == 0
    return out


def import_args(hf_file: Path, out: Path, *more: str) -> list[str]:
    return ["weights", "import-hf", "--safetensors", str(hf_file), "--n-heads", "2", "--out", str(out), *more]  # fmt: skip


def generate(path: Path) -> str:
    result = cli(["generate", "--checkpoint", str(path), "--prompt", "the", "--max-new-tokens", "3"])  # fmt: skip
    assert result.rc == 0, describe(result)
    return result.out


def refused_unchanged(argv: list[str], *roots: Path, named: tuple[str, ...] = ()) -> str:
    """Run ``argv``: exit 2, one line naming ``named``, every entry under ``roots`` as it was
    (a lock file gptref created in an empty folder excepted) -> the line."""
    before = [tree_state(r) for r in roots]
    result = cli(argv)
    for root, state in zip(roots, before, strict=True):  # what was lost first, then the words
        moved = changes(state, tree_state(root))
        assert not moved["removed"] and not moved["changed"], f"{root}: {moved}; {describe(result)}"
        assert all(Path(a).name == ".lock" for a in moved["added"]), f"{root}: {moved}"
    assert error_problems(result, named=named) == [], describe(result)
    return result.err_lines[0]


def user_folder(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


# ---------------------------------------------------------------- defect 2: import-hf


def test_import_hf_into_a_prepared_corpus_is_refused_and_deletes_nothing(prepared, hf_file, tmp_path):  # fmt: skip
    """import-hf --out a prepared corpus (it holds a manifest.json): refused in one line, the
    corpus untouched (the landed code deleted its manifest.json), with --overwrite too."""
    corpus = linked_copy(prepared, tmp_path / "prepared")
    refused_unchanged(import_args(hf_file, corpus), corpus, named=(str(corpus),))
    refused_unchanged(import_args(hf_file, corpus, "--overwrite"), corpus, named=(str(corpus),))
    assert cli(["train", "--data", str(corpus), *TINY_RUN, "--max-steps", "1", "--out", str(tmp_path / "r")]).rc == 0  # fmt: skip


def test_import_hf_into_a_users_folder_with_checkpoint_names_deletes_nothing(hf_file, tmp_path):
    """A user's folder holding manifest.json, config.json and state.pt of their own: refused,
    all three kept (the landed code deleted them after writing its snapshot)."""
    folder = user_folder(tmp_path / "mine", {"manifest.json": '{"files": {}}', "config.json": '{"mine": 1}', "state.pt": "my state"})  # fmt: skip
    refused_unchanged(import_args(hf_file, folder), folder, named=(str(folder),))


def test_import_hf_into_a_runs_checkpoint_is_refused(run, hf_file, tmp_path):
    """--out RUN/checkpoint: the run's own checkpoint is never replaced by an import, with
    --overwrite neither (the landed code made the import the run's newest snapshot)."""
    copy = linked_copy(run, tmp_path / "run")
    refused_unchanged(import_args(hf_file, copy / "checkpoint"), copy, named=("checkpoint",))
    refused_unchanged(import_args(hf_file, copy / "checkpoint", "--overwrite"), copy, named=("checkpoint",))  # fmt: skip


def test_import_hf_replaces_an_earlier_import_only_with_overwrite(hf_file, tmp_path):
    """An earlier import in --out: refused naming --overwrite; with it, replaced (one
    snapshot left, the new one)."""
    out = tmp_path / "imported"
    assert cli(import_args(hf_file, out)).rc == 0
    line = refused_unchanged(import_args(hf_file, out), out, named=(str(out), "--overwrite"))
    assert "holds a gptref checkpoint" in line, line
    result = cli(import_args(hf_file, out, "--overwrite"))
    assert result.rc == 0, describe(result)
    assert [p.name for p in out.glob("save-*")] == ["save-00000000-0002"]


# ---------------------------------------------------------------- defect 3: export-hf


def test_export_hf_never_replaces_a_file_it_did_not_write(run, tmp_path):
    """--out a user's text file: refused, the file kept, with --overwrite too (the landed
    code replaced it without a word)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    argv = ["weights", "export-hf", "--checkpoint", str(run), "--out", str(notes)]
    refused_unchanged(argv, tmp_path, named=(str(notes),))
    refused_unchanged([*argv, "--overwrite"], tmp_path, named=(str(notes),))


@pytest.mark.parametrize(
    "target", [f"checkpoint/{NEWEST}/model.safetensors", "config.json", "metrics.jsonl", "checkpoint/LATEST"]
)  # fmt: skip
def test_export_hf_onto_a_runs_own_files_is_refused_even_with_overwrite(target, run, tmp_path):
    """--out one of the run's own files: refused with --overwrite too; the run loads and
    continues as before (the landed code replaced its model.safetensors: the run no longer
    loaded)."""
    copy = linked_copy(run, tmp_path / "run")
    sample = generate(copy)
    argv = ["weights", "export-hf", "--checkpoint", str(copy), "--out", str(copy / target)]
    refused_unchanged(argv, copy, named=(target.split("/")[-1],))
    refused_unchanged([*argv, "--overwrite"], copy, named=(target.split("/")[-1],))
    assert generate(copy) == sample


def test_export_hf_replaces_an_earlier_export_only_with_overwrite(run, tmp_path):
    """A second export to the same file: refused naming --overwrite, the first kept; with
    --overwrite, replaced."""
    out = tmp_path / "model.safetensors"
    argv = ["weights", "export-hf", "--checkpoint", str(run), "--out", str(out)]
    assert cli(argv).rc == 0
    refused_unchanged(argv, tmp_path, named=(str(out), "--overwrite"))
    before = out.stat().st_ino
    assert cli([*argv, "--overwrite"]).rc == 0
    assert out.stat().st_ino != before, "--overwrite did not write a new file"


def test_export_hf_to_a_dangling_link_is_refused_and_the_link_kept(run, tmp_path):
    """--out a symbolic link to nothing: refused in one line (the landed code replaced the
    link), the link kept, nothing created where it points."""
    link = tmp_path / "model.safetensors"
    link.symlink_to(tmp_path / "elsewhere" / "x.safetensors")
    argv = ["weights", "export-hf", "--checkpoint", str(run), "--out", str(link)]
    refused_unchanged(argv, tmp_path, named=(str(link), "symbolic link"))


# ---------------------------------------------------------------- defect 4: prepare


def test_prepare_into_a_folder_that_is_no_prepared_corpus_is_refused(corpus, tmp_path):
    """A user's folder holding their own train.bin: refused, the file kept (the landed code
    replaced it), with --overwrite too."""
    folder = user_folder(tmp_path / "mine", {"train.bin": "my binary", "notes.txt": "mine"})
    argv = ["prepare", "--text", str(corpus), "--out", str(folder), "--no-progress"]
    refused_unchanged(argv, folder, named=(str(folder),))
    refused_unchanged([*argv, "--overwrite"], folder, named=(str(folder),))


def test_prepare_of_other_texts_replaces_a_prepared_corpus_only_with_overwrite(prepared, other_corpus, tmp_path):  # fmt: skip
    """A prepared corpus of other texts in --out: refused naming --overwrite (the landed code
    replaced it); with --overwrite, prepared again."""
    corpus = linked_copy(prepared, tmp_path / "prepared")
    argv = ["prepare", "--text", str(other_corpus), "--out", str(corpus), "--no-progress"]
    refused_unchanged(argv, corpus, named=(str(corpus), "--overwrite"))
    assert cli([*argv, "--overwrite"]).rc == 0
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert [Path(s["path"]).name for s in manifest["sources"]] == ["other.txt"]


# ---------------------------------------------------------------- defect 5: lock files


def extended(run: Path, target: Path, steps: int = 3) -> Path:
    """A copy of ``run`` whose record asks for more steps (so --resume trains and saves)."""
    copy = linked_copy(run, target)
    config = json.loads((copy / "config.json").read_text())
    config["run"]["max_steps"] = steps
    (copy / "config.json").unlink()
    (copy / "config.json").write_text(json.dumps(config))
    return copy


LOCKS = {
    "RUN/.lock, train --out RUN (refused: a run is there)": (".lock", []),
    "RUN/.lock, train --out RUN --overwrite": (".lock", ["--overwrite"]),
    "RUN/.lock, train --resume RUN": (".lock", None),
    "RUN/checkpoint/.lock, train --resume RUN": ("checkpoint/.lock", None),
}


@pytest.mark.parametrize("case", sorted(LOCKS))
def test_a_lock_that_is_a_symbolic_link_is_never_followed(case, run, corpus, tmp_path):
    """A .lock that links to a user's file: refused in one line naming the link, the file's
    content kept (the landed code truncated it and wrote "gptref process PID" into it, even
    when the run then failed)."""
    where, flags = LOCKS[case]
    copy = extended(run, tmp_path / "run")
    victim = tmp_path / "outside" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    (copy / where).unlink(missing_ok=True)
    (copy / where).symlink_to(victim)
    if flags is None:
        argv = ["train", "--text", str(corpus), "--resume", str(copy), "--no-progress"]
    else:
        argv = ["train", "--text", str(corpus), *TINY_RUN, "--max-steps", "1", *flags, "--out", str(copy)]  # fmt: skip
    refused_unchanged(argv, copy, victim.parent, named=(where.split("/")[-1],))
    assert victim.read_text() == "precious"


def test_prepares_lock_that_is_a_symbolic_link_is_never_followed(prepared, corpus, tmp_path):
    """prepare's DIR/.lock linking to a user's file: refused, the file kept."""
    folder = linked_copy(prepared, tmp_path / "prepared")
    victim = tmp_path / "outside" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    (folder / ".lock").unlink(missing_ok=True)
    (folder / ".lock").symlink_to(victim)
    argv = ["prepare", "--text", str(corpus), "--out", str(folder), "--no-progress"]
    refused_unchanged(argv, folder, victim.parent, named=(".lock",))
    assert victim.read_text() == "precious"


# ---------------------------------------------------------------- defect 6: a linked checkpoint/


@pytest.mark.parametrize("flags", [["--overwrite"], None], ids=["--out --overwrite", "--resume"])
def test_a_checkpoint_folder_that_is_a_symbolic_link_is_refused(flags, run, corpus, tmp_path):
    """RUN/checkpoint a link to another folder (holding its own manifest.json and
    config.json): refused in one line naming the link; that folder untouched (the landed
    code deleted both files and wrote snapshots there, exit 0)."""
    copy = extended(run, tmp_path / "run")
    other = user_folder(tmp_path / "other", {"manifest.json": '{"theirs": 1}', "config.json": '{"theirs": 2}'})  # fmt: skip
    for f in (copy / "checkpoint").rglob("*"):
        if f.is_file():
            f.unlink()
    for d in sorted((copy / "checkpoint").rglob("*"), reverse=True):
        d.rmdir()
    (copy / "checkpoint").rmdir()
    (copy / "checkpoint").symlink_to(other)
    if flags is None:
        argv = ["train", "--text", str(corpus), "--resume", str(copy), "--no-progress"]
    else:
        argv = ["train", "--text", str(corpus), *TINY_RUN, "--max-steps", "1", *flags, "--out", str(copy)]  # fmt: skip
    refused_unchanged(argv, copy, other, named=("checkpoint", "symbolic link"))


# ---------------------------------------------------------------- look-alike folders

LOOK_ALIKES = {
    "a config.json and checkpoint/manifest.json of a user's": {
        "config.json": '{"mine": true}', "checkpoint/manifest.json": '{"mine": true}'},
    "a checkpoint/LATEST naming a snapshot, of a user's": {
        "checkpoint/LATEST": "save-00000001-0001\n", "checkpoint/save-00000001-0001/notes.txt": "x"},
    "a Hugging Face model folder": {"config.json": '{"model_type": "gpt2"}', "model.safetensors": "x"},
    "a run record's names with other content": {
        "config.json": '{"run": {}, "model": {}, "data": {}}', "metrics.jsonl": "mine"},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(LOOK_ALIKES))
def test_a_folder_with_look_alike_names_is_not_taken_for_a_run(case, corpus, tmp_path):
    """train --out DIR --overwrite on a user's folder whose names look like a run's:
    refused in one line, every file kept (the landed code took a folder with
    checkpoint/manifest.json or checkpoint/LATEST for a run and deleted it)."""
    folder = user_folder(tmp_path / "mine", LOOK_ALIKES[case])
    argv = ["train", "--text", str(corpus), *TINY_RUN, "--max-steps", "1", "--overwrite", "--out", str(folder)]  # fmt: skip
    refused_unchanged(argv, folder, named=(str(folder),))


def test_bench_and_track_report_refuse_a_folder_of_look_alike_files(tmp_path):
    """bench --out and track report --out a user's folder holding a bench.md / index.html of
    their own: refused before any work, the files kept."""
    folder = user_folder(tmp_path / "mine", {"bench.md": "my table", "index.html": "my page"})
    refused_unchanged(["bench", "--preset", "tiny", "--batch-sizes", "1", "--steps", "1", "--out", str(folder)], folder, named=(str(folder),))  # fmt: skip
    store = tmp_path / "store"
    sample = REPO / "benchmarks" / "results" / "prepare_cpu.json"
    assert cli(["track", "record", "--from-json", str(sample), "--store", str(store)]).rc == 0
    refused_unchanged(["track", "report", "--store", str(store), "--out", str(folder)], folder, named=(str(folder),))  # fmt: skip


def test_track_report_replaces_an_earlier_report_only_with_overwrite(tmp_path):
    """An earlier report in --out: refused naming --overwrite; with it, written again."""
    store, out = tmp_path / "store", tmp_path / "report"
    sample = REPO / "benchmarks" / "results" / "prepare_cpu.json"
    assert cli(["track", "record", "--from-json", str(sample), "--store", str(store)]).rc == 0
    argv = ["track", "report", "--store", str(store), "--out", str(out)]
    assert cli(argv).rc == 0
    refused_unchanged(argv, out, named=(str(out), "--overwrite"))
    assert cli([*argv, "--overwrite"]).rc == 0


def test_a_run_folder_holding_a_users_files_keeps_them_through_overwrite(run, corpus, tmp_path):
    """train --overwrite of a real run that also holds a user's notes.txt: the run's own
    files go, the user's stay; a user's file inside the run's checkpoint/ makes --overwrite a
    refusal naming it (it could not be removed with the snapshot), everything kept."""
    copy = linked_copy(run, tmp_path / "run")
    (copy / "notes.txt").write_text("mine")
    (copy / "checkpoint" / NEWEST / "notes.txt").write_text("mine too")
    argv = ["train", "--text", str(corpus), *TINY_RUN, "--max-steps", "1", "--overwrite", "--out", str(copy)]  # fmt: skip
    refused_unchanged(argv, copy, named=(f"{NEWEST}/notes.txt",))
    (copy / "checkpoint" / NEWEST / "notes.txt").unlink()
    result = cli(argv)
    assert result.rc == 0, describe(result)
    assert (copy / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (copy / "checkpoint").glob("save-*")) == ["save-00000001-0001"]


def test_a_file_with_a_checkpoints_name_in_a_runs_checkpoint_is_a_users(run, corpus, tmp_path):
    """A model.safetensors of a user's directly in RUN/checkpoint (beside the snapshots, so
    not gptref 0.1's layout): --overwrite is refused naming it, before anything is trained
    or removed (kept, it would have made the new run's first save fail)."""
    copy = linked_copy(run, tmp_path / "run")
    (copy / "checkpoint" / "model.safetensors").write_text("mine")
    argv = ["train", "--text", str(corpus), *TINY_RUN, "--max-steps", "1", "--overwrite", "--out", str(copy)]  # fmt: skip
    refused_unchanged(argv, copy, named=("model.safetensors",))
