"""Issue 16's defects, one test each: a run directory is owned and locked, a finished run is
not extended, a diverged run saves nothing, signals save, damaged inputs are refused in one
line. (The kill suite, hostile files and the table of bad CLI inputs are their own files.)"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptref.cli.main import main
from gptref.model import GPT_CONFIG_TINY, GPTConfig, GPTModel
from gptref.run.checkpoint import load_checkpoint, save_checkpoint, saved_step, snapshot
from gptref.run.rundir import locked
from gptref.weights.hf import export_hf
from tests.helpers import TINY, make_text, run_error


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(make_text(3000), encoding="utf-8")
    return path


def train(corpus: Path, out: Path, *flags: str) -> int:
    return main(["train", "--text", str(corpus), *TINY, "--out", str(out), *flags])


def test_training_into_an_existing_run_is_refused_unless_overwrite(corpus, tmp_path, capsys):
    """A forgotten --resume must not clobber a run: refused, naming --resume and --overwrite;
    --overwrite starts it over; a foreign non-empty directory is refused either way."""
    run = tmp_path / "run"
    assert train(corpus, run, "--max-steps", "2") == 0
    record = (run / "config.json").read_text()
    line = run_error(capsys, ["train", "--text", str(corpus), *TINY, "--out", str(run), "--lr", "0.5"])  # fmt: skip
    assert f"--resume {run}" in line and "--overwrite" in line, line
    assert (run / "config.json").read_text() == record
    assert train(corpus, run, "--max-steps", "3", "--overwrite") == 0
    assert saved_step(run / "checkpoint") == 3
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")  # someone's file; no checkpoint
    (foreign / "notes.txt").write_text("keep")
    for flags in ([], ["--overwrite"]):
        capsys.readouterr()
        assert train(corpus, foreign, "--max-steps", "1", *flags) == 2
    assert (foreign / "notes.txt").read_text() == "keep"


def test_a_second_writer_of_a_run_is_refused(corpus, tmp_path, capsys):
    """While one process holds a run directory, --resume of it from another is one line."""
    run = tmp_path / "run"
    assert train(corpus, run, "--max-steps", "2") == 0
    capsys.readouterr()
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom gptref.run.rundir import locked\n"
        f"with locked(Path({str(run)!r})):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = run_error(capsys, ["train", "--text", str(corpus), "--resume", str(run), "--no-progress"])  # fmt: skip
        assert "is in use by gptref process" in line, line
    finally:
        holder.kill()
        holder.wait()
    with locked(run):  # the kernel dropped the dead holder's lock
        pass


def test_resuming_a_finished_run_does_nothing(corpus, tmp_path, capsys):
    """--resume of a run that reached its --max-steps says so and takes no step."""
    run = tmp_path / "run"
    assert train(corpus, run, "--max-steps", "3") == 0
    metrics = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", "--text", str(corpus), "--resume", str(run), "--no-progress"]) == 0
    assert f"{run} is complete (3 steps); nothing to do" in capsys.readouterr().out
    assert saved_step(run / "checkpoint") == 3 and (run / "metrics.jsonl").read_text() == metrics


@pytest.mark.parametrize("flags", [["--lr", "1e4", "--max-steps", "3", "--eval-freq", "1"],
                                   ["--weight-decay", "1e30", "--max-steps", "1"]])  # fmt: skip
def test_a_diverged_run_is_an_error_and_saves_no_checkpoint_of_it(corpus, tmp_path, capsys, flags):
    run = tmp_path / "run"
    line = run_error(capsys, ["train", "--text", str(corpus), *TINY, "--out", str(run), *flags])
    assert "diverged" in line or "not finite" in line, line
    with pytest.raises(ValueError):
        snapshot(run / "checkpoint")


def _nan_checkpoint(tmp_path: Path) -> Path:
    model = GPTModel(GPT_CONFIG_TINY)
    with torch.no_grad():
        model.out_head.weight[0, 0] = float("nan")
    return save_checkpoint(tmp_path / "nan", model, step=1, epoch=0, config=model.cfg, history={})


def test_eval_and_generate_refuse_non_finite_weights(corpus, tmp_path, capsys):
    """eval: exit 2 (or with --json, valid JSON with null and finite: false); generate: exit 2."""
    ckpt = _nan_checkpoint(tmp_path)
    line = run_error(capsys, ["eval", "--checkpoint", str(ckpt), "--text", str(corpus)])
    assert "not finite" in line, line
    assert main(["eval", "--checkpoint", str(ckpt), "--text", str(corpus), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out).values()  # strict JSON: no bare NaN
    assert result["finite"] is False and result["loss_token_weighted"] is None
    line = run_error(capsys, ["generate", "--checkpoint", str(ckpt), "--prompt", "the"])
    assert "not finite" in line, line


def test_a_checkpoint_claiming_huge_dimensions_is_refused_before_allocating(tmp_path, capsys):
    """A config.json whose model would not fit in this machine's memory: one line, no
    allocation (GPT-2 XL's width at 4,000 layers is ~300 GB of weights)."""
    model = GPTModel(GPT_CONFIG_TINY)
    huge = GPTConfig.from_dict({**GPT_CONFIG_TINY, "emb_dim": 1600, "n_heads": 25, "n_layers": 4000})  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "huge", model, step=0, epoch=0, config=huge, history={})
    line = run_error(capsys, ["generate", "--checkpoint", str(ckpt), "--prompt", "x"])
    assert "parameters) needs" in line and "more than the" in line, line


def test_a_flipped_byte_in_a_prepared_corpus_is_found(corpus, tmp_path, capsys):
    """Same size, one bit changed: train --data refuses it (naming the file), --no-verify
    skips the check, and prepare does not call the directory up to date."""
    data = tmp_path / "data"
    assert main(["prepare", "--text", str(corpus), "--out", str(data), "--no-progress"]) == 0
    blob = bytearray((data / "train.bin").read_bytes())
    blob[10] ^= 1
    (data / "train.bin").write_bytes(bytes(blob))
    line = run_error(capsys, ["train", "--data", str(data), *TINY, "--max-steps", "1",
                              "--out", str(tmp_path / "r")])  # fmt: skip
    assert "train.bin has SHA-256" in line, line
    assert main(["train", "--data", str(data), *TINY, "--max-steps", "1", "--no-verify",
                 "--out", str(tmp_path / "r2")]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["prepare", "--text", str(corpus), "--out", str(data), "--no-progress"]) == 0
    assert "up to date" not in capsys.readouterr().out
    assert (data / "train.bin").read_bytes() != bytes(blob)


def test_import_hf_reads_the_config_json_beside_the_weights(tmp_path, capsys):
    """A save_pretrained directory of a GPT-2 of width 32: its config.json gives n_head."""
    model = GPTModel(GPT_CONFIG_TINY)
    ckpt = save_checkpoint(tmp_path / "c", model, step=0, epoch=0, config=model.cfg, history={})
    hf_dir = tmp_path / "hf"
    export_hf(ckpt, hf_dir / "model.safetensors")
    cfg = {"model_type": "gpt2", "n_head": 4, "n_embd": 32, "n_layer": 2, "n_positions": 64,
           "vocab_size": 50257}  # fmt: skip
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    assert main(["weights", "import-hf", "--safetensors", str(hf_dir), "--out", str(tmp_path / "i")]) == 0  # fmt: skip
    assert "n_head 4" in capsys.readouterr().out
    back = GPTModel({**GPT_CONFIG_TINY, "qkv_bias": True})
    load_checkpoint(tmp_path / "i", back)
    assert torch.equal(back.out_head.weight, model.out_head.weight)
    (hf_dir / "config.json").write_text(json.dumps({**cfg, "n_layer": 3}))
    line = run_error(capsys, ["weights", "import-hf", "--safetensors", str(hf_dir), "--out", str(tmp_path / "j")])  # fmt: skip
    assert "says n_layer 3, the weights have 2" in line, line


def test_a_usage_mistake_is_one_line_naming_the_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--epochs", "abc"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gptref train: error: argument --epochs: expected an integer, got 'abc'; see `gptref train --help`"]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["train", "--prompt", ""], "--prompt must not be empty"),
        (["train", "--text", "/dev/zero"], "/dev/zero: not a regular file"),
        (["train", "--weight-decay", "inf"], "--weight-decay must be a finite number >= 0, got inf"),
        (["train", "--lr", "1e39"], "--lr must be <= 3.403e+38 (float32), got 1e+39"),
        (["train", "--checkpoint-every", "0"], "--checkpoint-every must be >= 1, got 0"),
        (["generate", "--checkpoint", "x", "--prompt", "a", "--seed", "-1"], "--seed must be in [0, 2**63), got -1"),
        (["generate", "--checkpoint", "x", "--prompt", "a", "--seed", str(2**70)], "--seed must be in [0, 2**63)"),
        (["generate", "--checkpoint", "x", "--prompt", ""], "--prompt must not be empty"),
    ],
)  # fmt: skip
def test_misc_bad_values_are_one_line_errors(capsys, argv, pattern):
    assert pattern in run_error(capsys, argv)


def test_utf16_text_is_told_to_convert_from_utf16(tmp_path, capsys):
    path = tmp_path / "u16.txt"
    path.write_bytes("hello there".encode("utf-16"))
    line = run_error(capsys, ["train", "--text", str(path)])
    assert "iconv -f utf-16 -t utf-8" in line, line


def test_generate_refuses_a_too_large_top_k_and_a_tiny_temperature(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(corpus, run, "--max-steps", "1") == 0
    base = ["generate", "--checkpoint", str(run), "--prompt", "the"]
    assert "exceeds the model's vocabulary" in run_error(capsys, [*base, "--top-k", str(10**12)])
    line = run_error(capsys, [*base, "--temperature", "1e-45"])
    assert "temperature 1e-45 is too small" in line, line


def test_checkpoint_every_saves_every_n_steps(corpus, tmp_path):
    """--checkpoint-every 2 over 5 steps: saves after steps 2 and 4 and at the end (5); the
    last two are kept."""
    run = tmp_path / "run"
    assert train(corpus, run, "--max-steps", "5", "--checkpoint-every", "2") == 0
    names = sorted(p.name for p in (run / "checkpoint").glob("save-*"))
    assert names == ["save-00000004-0002", "save-00000005-0003"], names


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_a_checkpoint_and_exit_128_plus_the_signal(corpus, tmp_path, sig):
    """A scheduler's preemption or a closed terminal: the step finishes, a checkpoint is
    saved, the exit status says the run was stopped, and --resume continues it."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gptref", "train", "--text", str(corpus), *TINY,
           "--max-steps", "100000", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + getattr(signal, sig), stderr
    assert f"stopped early ({sig})" in stdout
    step = saved_step(out / "checkpoint")
    assert step >= 1 and math.isfinite(step)
