"""The gptref command line: the main job end to end on a tiny model, and every user
error as one line on stderr with exit status 2 (no traceback)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptref import __version__
from gptref.bench.levers import LEVERS
from gptref.cli.main import main
from gptref.run.checkpoint import snapshot
from tests.helpers import TINY, make_text, run_error


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(make_text(3000), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_run(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--text", str(corpus), *TINY, "--max-steps", "6", "--out", str(out)]) == 0
    return out


def test_version_prints_the_package_version(capsys):
    """gptref --version names the installed version."""
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"gptref {__version__}"


def test_python_dash_m_gptref_runs_the_cli():
    """`python -m gptref --help` works and lists the subcommands."""
    proc = subprocess.run([sys.executable, "-m", "gptref", "--help"], capture_output=True, text=True, check=True)  # fmt: skip
    for command in ("train", "eval", "generate", "weights"):
        assert command in proc.stdout


def test_train_writes_metrics_plot_config_and_a_checkpoint(trained_run):
    """A finished run leaves metrics.jsonl (one record per evaluation, the last step's
    included), loss.png, config.json, summary.json and a complete checkpoint."""
    records = [
        json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()
    ]
    # every eval_freq-th step, and the last step's final weights (issue 17: the end is recorded)
    assert [r["step"] for r in records] == [0, 2, 4, 5]
    assert set(records[0]) == {"step", "epoch", "epochs_seen", "tokens_seen", "train_loss", "val_loss", "lr"}  # fmt: skip
    assert records[-2]["tokens_seen"] == 5 * 4 * 16 and records[-1]["tokens_seen"] == 6 * 4 * 16
    assert (trained_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["context_length"] == 16 and config["run"]["max_steps"] == 6
    assert (snapshot(trained_run / "checkpoint") / "manifest.json").is_file()
    assert json.loads((trained_run / "summary.json").read_text())["steps"] == 6


def test_eval_and_generate_work_on_the_trained_checkpoint(trained_run, capsys):
    """eval prints both weightings and perplexity; generate continues the prompt."""
    assert main(["eval", "--checkpoint", str(trained_run), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"train", "val"}
    for r in results.values():
        assert r["perplexity"] == pytest.approx(torch.tensor(r["loss_token_weighted"]).exp().item(), rel=1e-6)  # fmt: skip
    assert main(["generate", "--checkpoint", str(trained_run), "--prompt", "the quick", "--max-new-tokens", "5", "--temperature", "1.0", "--top-k", "3"]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("the quick")


def test_resume_continues_a_run_exactly(corpus, tmp_path):
    """6 steps straight == 3 steps, then --resume to 6: the same metrics, bitwise."""
    straight, split_run = tmp_path / "straight", tmp_path / "split"
    assert (
        main(["train", "--text", str(corpus), *TINY, "--max-steps", "6", "--out", str(straight)])
        == 0
    )
    assert (
        main(["train", "--text", str(corpus), *TINY, "--max-steps", "3", "--out", str(split_run)])
        == 0
    )
    config = json.loads((split_run / "config.json").read_text())
    config["run"]["max_steps"] = 6  # extend the stopped run to the straight run's length
    (split_run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--text", str(corpus), "--resume", str(split_run), "--no-progress"]) == 0
    assert (split_run / "metrics.jsonl").read_text() == (straight / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(corpus, tmp_path):
    """SIGINT during training: the step finishes, a checkpoint is saved, exit status 130."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptref", "train", "--text", str(corpus), *TINY, "--max-steps", "100000", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr  # saved and resumable, but not finished: 128 + SIGINT
    assert "stopped early (SIGINT)" in stdout
    assert (snapshot(out / "checkpoint") / "manifest.json").is_file()


# ---------------------------------------------------------------- errors


def test_missing_text_file_is_one_line(capsys, tmp_path):
    """A missing --text file: exit 2, the path and 'no such file'."""
    line = run_error(capsys, ["train", "--text", str(tmp_path / "nope.txt")])
    assert "nope.txt: no such file" in line


def test_non_utf8_text_names_the_file_and_byte_offset(capsys, tmp_path):
    """A Latin-1 file: the file name, the bad byte and its offset."""
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait".encode("latin-1"))
    line = run_error(capsys, ["train", "--text", str(path)])
    assert "latin1.txt: not UTF-8 text (byte 0xe9 at offset 3)" in line


def test_text_too_short_for_one_window_says_tokens_and_suggests_context(capsys, tmp_path):
    """Too little text: how many tokens it has and needs, and the --context flag."""
    path = tmp_path / "short.txt"
    path.write_text(make_text(40))
    line = run_error(capsys, ["train", "--text", str(path), "--preset", "tiny", "--context", "64"])
    assert "the training split has" in line and "needs at least 65" in line and "--context" in line


def test_validation_split_too_small_is_reported(capsys, tmp_path):
    """A validation split shorter than one window: named, with --train-ratio as a fix."""
    path = tmp_path / "text.txt"
    path.write_text(make_text(300))
    line = run_error(capsys, ["train", "--text", str(path), "--preset", "tiny", "--context", "32", "--train-ratio", "0.97"])  # fmt: skip
    assert "the validation split has" in line and "--train-ratio" in line


@pytest.mark.parametrize(
    ("flags", "pattern"),
    [
        (["--lr", "-1"], "--lr must be > 0, got -1.0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--train-ratio", "1.5"], r"--train-ratio must be in (0, 1), got 1.5"),
        (["--grad-clip", "0"], "--grad-clip must be > 0, got 0.0"),
        (["--vocab-pad", "0"], "--vocab-pad must be >= 1, got 0; e.g. 64"),
    ],
)
def test_invalid_numbers_are_one_line_errors(capsys, corpus, flags, pattern):
    """Negative lr, batch size 0, a ratio outside (0, 1), clip 0: named with the value."""
    line = run_error(capsys, ["train", "--text", str(corpus), *flags])
    assert pattern in line


def test_non_numeric_flag_is_a_usage_error(capsys):
    """argparse rejects `--lr abc` with exit status 2."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--lr", "abc"])
    assert exit_.value.code == 2
    assert "expected a number, got 'abc'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_an_error(capsys, corpus):
    """--device cuda on a machine without CUDA: a one-line error suggesting --device cpu."""
    line = run_error(capsys, ["train", "--text", str(corpus), "--device", "cuda"])
    assert "no CUDA; use --device cpu" in line


def test_missing_checkpoint_directory(capsys, tmp_path):
    """eval --checkpoint on a path that does not exist."""
    line = run_error(capsys, ["eval", "--checkpoint", str(tmp_path / "none")])
    assert "no such directory" in line


def test_partial_checkpoint_is_refused(capsys, trained_run, tmp_path):
    """A checkpoint without its manifest (an interrupted save) is not loaded."""
    partial = tmp_path / "partial"
    shutil.copytree(trained_run / "checkpoint", partial)
    (snapshot(partial) / "manifest.json").unlink()
    line = run_error(capsys, ["generate", "--checkpoint", str(partial), "--prompt", "x"])
    assert "no complete checkpoint" in line


def test_checkpoint_from_an_incompatible_config_is_refused(capsys, tmp_path):
    """Weights that do not fit the config beside them: a one-line error naming the path."""
    from gptref.model import GPT_CONFIG_TINY, GPTConfig, GPTModel
    from gptref.run.checkpoint import save_checkpoint

    bad = tmp_path / "bad"
    other = GPTConfig.from_dict({**GPT_CONFIG_TINY, "emb_dim": 64})
    save_checkpoint(bad, GPTModel(GPT_CONFIG_TINY), step=0, epoch=0, config={"model": other.to_dict()}, history={})  # fmt: skip
    line = run_error(capsys, ["eval", "--checkpoint", str(bad), "--text", __file__])
    assert str(bad) in line


def test_resume_with_different_data_is_refused(capsys, trained_run, tmp_path):
    """--resume with other --text files than the run trained on."""
    other = tmp_path / "other.txt"
    other.write_text(make_text(3000, seed=1))
    line = run_error(capsys, ["train", "--text", str(other), "--resume", str(trained_run)])
    assert "trained on different data" in line


def test_debug_shows_the_traceback(tmp_path):
    """--debug re-raises the error instead of printing one line."""
    with pytest.raises(ValueError, match="no such file"):
        main(["--debug", "train", "--text", str(tmp_path / "nope.txt")])


def test_builtin_corpus_is_announced_first(capsys, monkeypatch):
    """With no --text, the first line of output says the built-in corpus is used."""
    import gptref.run.loaders as common

    def stop(*args, **kwargs):
        raise ValueError("stopped for the test")

    monkeypatch.setattr(common, "run_loaders", stop)
    assert main(["train", "--no-progress"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0].startswith("gptref: training on the built-in corpus: Python")
        and "pydoc_data.topics" in out[0]
    )


def test_environment_has_no_network_dependency():
    """The tokenizer builds from local files: no TIKTOKEN download is attempted."""
    env = dict(os.environ, HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    code = "from gptref.tokenizer import gpt2_tokenizer; print(gpt2_tokenizer().encode('Every effort moves you'))"  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)  # fmt: skip
    assert proc.stdout.strip() == "[6109, 3626, 6100, 345]"


def test_plan_prints_micro_batch_accumulation_and_peak(capsys):
    """gptref plan: a micro-batch, accumulation steps reaching the target, a predicted peak."""
    assert main(["plan", "--memory", "24GiB", "--target-batch", "1024", "--preset", "124M", "--context", "1024"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "accumulation steps" in out and "predicted peak" in out and "(target 1024)" in out


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["plan", "--memory", "24XB"], "expected a size like '24GiB'"),
        (
            ["bench", "--batch-sizes", "1,x"],
            "--batch-sizes: each size must be an integer >= 1, got 'x'",
        ),
        (["bench", "--dtype", "float16"], "--dtype: 'float16' is not one of float32, bfloat16"),
    ],
)
def test_bench_and_plan_reject_bad_values_in_one_line(capsys, argv, pattern):
    """Bad sizes, batch lists and dtypes: one line naming the value."""
    assert pattern in run_error(capsys, argv)


def test_fast_flag_trains_with_the_chosen_paths_prints_them_and_records_them(
    corpus, tmp_path, capsys
):
    """--fast = the bundle choose_fast picks for the device, printed in one line and written
    to config.json; an explicit flag wins over it."""
    from gptref.fast import choose_fast

    chosen = choose_fast("cpu").paths
    out = tmp_path / "run"
    argv = ["train", "--text", str(corpus), *TINY, "--max-steps", "2", "--fast", "--device",
            "cpu", "--attn", "reference", "--vocab-pad", "64", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((out / "config.json").read_text())
    run, model = saved["run"], saved["model"]
    assert (run["dtype"], run["optimizer"], run["loss"]) == (chosen.dtype, "fused", "chunked")
    assert run["attn"] == model["attn_impl"] == "reference"
    assert model["vocab_pad_multiple"] == 64 and model["fused_layers"] is True
    printed = capsys.readouterr().out
    assert printed.startswith("fast paths: fused layers, fused AdamW, chunked loss, vocab pad 64; ")
    assert "final train loss" in printed


@pytest.mark.slow
def test_bench_compare_prints_speedups_over_the_reference(tmp_path, capsys):
    """gptref bench --compare: the reference and the fast paths side by side, as ratios."""
    argv = ["bench", "--compare", "--preset", "tiny", "--context", "16", "--batch-sizes", "2",
            "--steps", "1", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    table = (tmp_path / "compare.md").read_text()
    device = table.splitlines()[0]
    assert device.startswith("CPU ") and "capability" in device and "fast paths:" in device
    assert "| fp32 reference | float32 |" in table and "| --fast (" in table
    assert "1.00x" in table
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert len(rows) >= 2 and all(r["status"] == "ok" for r in rows)
    assert rows[0]["speedup"] == 1.0 and all(r["speedup"] > 0 for r in rows)


@pytest.mark.slow
def test_bench_levers_prints_the_four_lever_combinations(tmp_path, capsys):
    """gptref bench --levers: reference, chunked loss, recompute, both, each with its
    tokens/s ratio to the reference's and a peak memory measured beside the prediction."""
    argv = ["bench", "--levers", "--preset", "tiny", "--context", "16", "--batch-sizes", "2",
            "--steps", "1", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    table = (tmp_path / "levers.md").read_text()
    for variant in LEVERS:
        assert f"| {variant} |" in table, table
    rows = json.loads((tmp_path / "levers.json").read_text())["rows"]
    assert [(r["status"], r["loss"], r["recompute"]) for r in rows] == [
        ("ok", "full", 0), ("ok", "chunked", 0), ("ok", "full", 1), ("ok", "chunked", 1),
    ]  # fmt: skip
    assert rows[0]["tokens_per_s_ratio"] == 1.0 and all(r["peak_bytes_measured"] for r in rows)


def test_bench_levers_and_compare_together_is_one_line(capsys):
    line = run_error(capsys, ["bench", "--levers", "--compare", "--preset", "tiny"])
    assert "--levers and --compare are two different runs" in line, line


def test_resume_names_the_flags_that_differ_from_the_saved_run(corpus, tmp_path, capsys):
    """--resume with --lr 0.5: the run continues with its saved lr, and one line says so."""
    out = tmp_path / "run"
    assert main(["train", "--text", str(corpus), *TINY, "--max-steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    argv = ["train", "--text", str(corpus), "--resume", str(out), "--lr", "0.5", "--no-progress"]
    assert main(argv) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "saved settings win" in line]
    assert said == [f"--resume {out}: the saved settings win; ignoring --lr 0.5 (saved: 0.001)"]
    assert json.loads((out / "config.json").read_text())["run"]["lr"] == 0.001


def test_max_steps_alone_trains_past_the_first_epoch(corpus, tmp_path):
    """--max-steps N without --epochs runs N steps even when an epoch has fewer batches."""
    out = tmp_path / "run"
    argv = ["train", "--text", str(corpus), *TINY, "--context", "64", "--batch-size", "8",
            "--max-steps", "20", "--eval-freq", "5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 5, 10, 15, 19]  # 19: the final weights
    assert records[-1]["epoch"] > 1, records
    state = torch.load(snapshot(out / "checkpoint") / "state.pt", weights_only=True)
    assert state["step"] == 20


def test_export_hf_reads_a_run_directory_and_round_trips_through_import_hf(trained_run, tmp_path):
    """weights export-hf on a `gptref train` run directory, then import-hf: every weight of the
    run's checkpoint comes back bitwise (the book's model has no q/k/v bias: zeros come back)."""
    from safetensors.torch import load_file

    from gptref.model import GPTConfig, GPTModel
    from gptref.run.checkpoint import load_checkpoint, load_config

    hf, back = tmp_path / "model.safetensors", tmp_path / "imported"
    assert main(["weights", "export-hf", "--checkpoint", str(trained_run), "--out", str(hf)]) == 0
    argv = ["weights", "import-hf", "--safetensors", str(hf), "--out", str(back), "--n-heads", "4"]
    assert main(argv) == 0
    trained = GPTModel(GPTConfig.from_dict(load_config(trained_run / "checkpoint")))
    load_checkpoint(trained_run / "checkpoint", trained)
    imported = GPTModel(GPTConfig.from_dict(load_config(back)))
    load_checkpoint(back, imported)
    ours, theirs = trained.state_dict(), imported.state_dict()
    for name, value in ours.items():
        assert torch.equal(theirs[name], value), name
    extra = set(theirs) - set(ours)
    assert extra and all(
        name.endswith(("W_query.bias", "W_key.bias", "W_value.bias")) for name in extra
    )
    assert all(not theirs[name].any() for name in extra)
    again = tmp_path / "again.safetensors"
    assert main(["weights", "export-hf", "--checkpoint", str(back), "--out", str(again)]) == 0
    first, second = load_file(str(hf)), load_file(str(again))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_checkpoint_written_before_the_config_split_still_loads(trained_run, tmp_path, capsys):
    """gptref 0.1 stored the whole run record in checkpoint/config.json; eval, generate and
    export-hf read such a checkpoint (its "model" part builds the model)."""
    from gptref.model import GPTConfig, GPTModel
    from gptref.run.checkpoint import load_checkpoint, load_config, save_checkpoint

    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    ckpt = old / "checkpoint"
    model = GPTModel(GPTConfig.from_dict(load_config(ckpt)))
    state = load_checkpoint(ckpt, model)
    record = json.loads((old / "config.json").read_text())  # {"run", "model", "data", ...}
    save_checkpoint(ckpt, model, step=state["step"], epoch=state["epoch"], config=record,
                    history=state["history"], extra=state["extra"])  # fmt: skip
    assert json.loads((snapshot(ckpt) / "config.json").read_text()).keys() == record.keys()
    assert load_config(ckpt) == record["model"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(old), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"train", "val"}
    assert main(["generate", "--checkpoint", str(ckpt), "--prompt", "the", "--max-new-tokens", "3"]) == 0  # fmt: skip
    assert main(["weights", "export-hf", "--checkpoint", str(old), "--out", str(tmp_path / "m.st")]) == 0  # fmt: skip


def test_eval_gives_the_numbers_training_logged_for_the_same_weights_and_batches(corpus, tmp_path, capsys):  # fmt: skip
    """3 steps, evaluated at step 2 (the last): eval with the run's batch size and
    --max-batches = --eval-iter gives its train and val losses to the bit (one pass, both
    weightings); without --max-batches it averages every batch and says how many."""
    out = tmp_path / "run"
    argv = ["train", "--text", str(corpus), *TINY, "--max-steps", "3", "--out", str(out)]
    assert main(argv) == 0
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--max-batches", "1", "--json", "--no-progress"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    assert got["train"]["loss_batch_weighted"] == last["train_loss"]
    assert got["val"]["loss_batch_weighted"] == last["val_loss"]
    assert got["val"]["batches"] == 1 and got["val"]["batch_size"] == 4
    assert main(["eval", "--checkpoint", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "the mean of" in text and "target tokens" in text, text


def test_a_run_records_its_end_in_metrics_and_summary_json(corpus, tmp_path, capsys):
    """6 steps evaluated every 4: metrics.jsonl ends with step 5 (the final weights);
    summary.json holds the final losses, tokens and training-only throughput; --json prints
    the same summary on stdout."""
    out = tmp_path / "run"
    argv = ["train", "--text", str(corpus), *TINY, "--eval-freq", "4", "--max-steps", "6",
            "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 4, 5]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["tokens_seen"] == 6 * 4 * 16
    assert 0 < summary["train_seconds"] <= summary["wall_seconds"]
    assert summary["val_loss"] == printed["val_loss"] and summary["eval_batches"] == 1


def test_plan_json_and_the_train_command_it_prints(capsys):
    assert main(["plan", "--memory", "24GiB", "--preset", "124M", "--context", "1024", "--json"]) == 0  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    assert plan["micro_batch"] * plan["accumulation_steps"] == plan["effective_batch"] >= 1024
    levers = (" --loss chunked" if plan["loss_chunk"] else "") + (
        f" --recompute {plan['recompute']}" if plan["recompute"] else ""
    )
    assert plan["train_command"] == (
        f"gptref train --preset 124M --context 1024 --batch-size {plan['effective_batch']} "
        f"--accumulation-steps {plan['accumulation_steps']}{levers}"
    )


def test_accumulation_steps_train_and_are_recorded(corpus, tmp_path, capsys):
    """--accumulation-steps 2: the run's record says so, the tokens are the batch's; more
    steps than rows is refused naming both."""
    out = tmp_path / "run"
    argv = ["train", "--text", str(corpus), *TINY, "--max-steps", "2", "--accumulation-steps",
            "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["run"]["accumulation_steps"] == 2
    line = run_error(capsys, ["train", "--text", str(corpus), *TINY, "--accumulation-steps", "5"])
    assert "--accumulation-steps must be <= batch_size (4), got 5" in line


def test_memory_levers_train_like_the_reference_and_are_recorded(corpus, tmp_path):
    """--loss chunked --loss-chunk 24 --recompute 1: the run's record holds the levers, and
    its evaluated train and val losses (after updates with dropout on, evaluated with the
    chunked loss too) are the reference run's to 1e-5."""
    runs = {}
    for name, flags in (("ref", []), ("levers", ["--loss", "chunked", "--loss-chunk", "24",
                                                  "--recompute", "1"])):  # fmt: skip
        out = tmp_path / name
        argv = ["train", "--text", str(corpus), *TINY, "--max-steps", "3", "--no-sample",
                "--out", str(out), *flags]  # fmt: skip
        assert main(argv) == 0
        runs[name] = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        record = json.loads((out / "config.json").read_text())
    assert (record["run"]["loss"], record["run"]["loss_chunk"], record["run"]["recompute"]) == (
        "chunked", 24, 1,
    )  # fmt: skip
    assert record["model"]["recompute"] == 1
    for ref, got in zip(runs["ref"], runs["levers"], strict=True):
        for key in ("train_loss", "val_loss"):
            if key in ref and ref[key] is not None:
                assert got[key] == pytest.approx(ref[key], rel=1e-5), (key, ref, got)


def test_a_bad_lever_is_one_line_naming_the_flag(corpus, capsys):
    line = run_error(capsys, ["train", "--text", str(corpus), *TINY, "--loss-chunk", "0"])
    assert "--loss-chunk must be >= 1, got 0" in line, line


@pytest.mark.parametrize(("flags", "shown"), [([], True), (["--no-sample"], False)])
def test_samples_are_labelled_and_can_be_turned_off(corpus, tmp_path, capsys, flags, shown):
    argv = ["train", "--text", str(corpus), *TINY, "--context", "64", "--batch-size", "8",
            "--epochs", "1", "--eval-freq", "50", "--out", str(tmp_path / "r"), *flags]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert ("sample after epoch 1: 'Every effort moves you" in out) is shown, out


def test_every_option_explains_itself_and_shows_its_default():
    """Each flag of each subcommand has help text; a flag whose field has a default says
    it (the field's default, or the help's own words about it)."""
    import argparse

    from gptref.cli.commands import COMMANDS
    from gptref.cli.main import build_parser, flag_fields

    defaults = {}
    for command in COMMANDS:
        actions = getattr(command, "ACTIONS", None)
        for cls in [cls for _, cls, _ in actions.values()] if actions else [command.Args]:
            defaults |= {f.name: f.default for f, _ in flag_fields(cls)}

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)
            elif action.dest not in ("help", "debug", "version"):
                yield action

    checked = 0
    for action in walk(build_parser()):
        assert action.help and len(action.help) > 10, action.dest
        default = defaults.get(action.dest)
        if default not in (None, False, ()) and not action.required:
            assert "default" in action.help, (action.dest, action.help)
            checked += 1
    assert checked > 30


def test_redirected_output_has_no_progress_bar_redraws(corpus, tmp_path):
    """stderr not a terminal: one line per evaluation, no carriage-return redraws."""
    cmd = [sys.executable, "-m", "gptref", "train", "--text", str(corpus), "--preset", "tiny",
           "--context", "16", "--batch-size", "4", "--eval-freq", "2", "--eval-iter", "1",
           "--max-steps", "4", "--out", str(tmp_path / "r")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    assert proc.stdout.count("Ep 1 (Step") == 2


def test_a_reader_that_closes_the_pipe_stops_the_command_quietly(corpus, tmp_path):
    """``gptref train ... | head -n 1``: once the reader has gone, the next line ends the
    command with 141 (128 + SIGPIPE, as a shell tool) and nothing on stderr, no [Errno 32]."""
    cmd = [sys.executable, "-m", "gptref", "train", "--text", str(corpus), "--preset", "tiny",
           "--context", "16", "--batch-size", "4", "--eval-freq", "1", "--eval-iter", "1",
           "--no-sample", "--max-steps", "100000", "--out", str(tmp_path / "r")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read()
        status = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first.strip(), stderr
    assert status == 141, stderr
    assert stderr == "", stderr


def test_tensorboard_gets_the_scalars_of_metrics_jsonl(corpus, tmp_path):
    """--tensorboard: the same train/val losses and lr at the same steps as metrics.jsonl."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    argv = ["train", "--text", str(corpus), *TINY, "--max-steps", "5", "--out", str(out),
            "--tensorboard"]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for name in ("train_loss", "val_loss", "lr"):
        got = [(e.step, e.value) for e in events.Scalars(name)]
        assert got == [(r["step"], pytest.approx(r[name], rel=1e-6)) for r in records], name
