"""Every user mistake on the command line (issue 16): exit status 2, exactly one line on
stderr, no traceback, the bad value named; argparse's usage errors too (one line ending with
"see `gptref <command> --help`", no usage block).

``CASES`` is the table: each row is an argv (``{name}`` fields are filled from the
``files`` fixture: a corpus, a trained run, a prepared corpus, damaged copies, a FIFO, a
UTF-16 file, ...) and the strings its error line must contain. Rows run in-process through
``gptref.cli.main`` (fast), except those that need a process of their own: reading
``/dev/zero`` or a FIFO, or running out of memory, which run under resource limits
(``tests.faultlib.limited``) so that a defect fails the test instead of the machine.

After the table: the mistakes that need more than one command (non-finite weights never
saved, a full disk, a symlinked checkpoint), and the positive halves of the promises the
table's rows refuse (``--no-verify``, ``import-hf`` of a model directory, ``export-hf`` of a
run).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.faultlib import REPO, cli, describe, error_problems, limited, words

TINY = ["--preset", "tiny", "--context", "16", "--batch-size", "4", "--eval-freq", "2",
        "--eval-iter", "1", "--no-progress"]  # fmt: skip


@dataclass(frozen=True)
class Case:
    argv: str  # split on spaces after filling {fields}; "''" is the empty argument
    named: tuple[str, ...] = ()  # substrings of the error line (after filling {fields})
    usage: bool = False  # an argparse usage error: the line ends with "see `gptref ... --help`"
    process: bool = False  # run in a limited subprocess (unbounded reads, memory)
    timeout: float = 120  # seconds, for a subprocess (a FIFO blocks: it gets 30)
    memory: int = 6 << 30  # bytes of address space, for a subprocess
    above_import: int | None = None  # instead: bytes of address space above `import torch`
    forbid: tuple[str, ...] = ()  # substrings the line must not hold (after filling {fields})


# what no CLI line may hold, for every row: library functions and fields instead of flags,
# bare errno texts (issue 21's "poor wording")
FORBIDDEN = ("[Errno", "lr_at", "create_dataloader", "parse_bytes", "plan_levers", "GPTConfig:",
             "RunConfig:", "num_threads", "warmup_steps", "batch_size", "emb_dim",
             "load_checkpoint:", "load_hf_safetensors:", "import_hf:", "export_hf:")  # fmt: skip


T = "train --text {corpus} " + " ".join(TINY) + " --max-steps 2 --out {fresh}"
G = "generate --checkpoint {run} --prompt the"
P = "prepare --text {corpus} --out {fresh}"

CASES: dict[str, Case] = {
    # ---- train: numbers
    "train --epochs abc": Case(T + " --epochs abc", ("abc", "--epochs"), usage=True),
    "train --lr abc": Case(T + " --lr abc", ("abc", "--lr"), usage=True),
    "train --batch-size 1.5": Case(T + " --batch-size 1.5", ("1.5", "--batch-size"), usage=True),
    "train --lr -1": Case(T + " --lr -1", ("--lr", "-1")),
    "train --lr 0": Case(T + " --lr 0", ("--lr", "0")),
    "train --lr nan": Case(T + " --lr nan", ("--lr", "nan")),
    "train --lr inf": Case(T + " --lr inf", ("--lr", "inf")),
    "train --lr 1e39 (inf inside Adam)": Case(T + " --lr 1e39", ("--lr",)),
    "train --weight-decay inf": Case(T + " --weight-decay inf", ("--weight-decay", "inf")),
    "train --weight-decay -0.1": Case(T + " --weight-decay -0.1", ("--weight-decay", "-0.1")),
    "train --weight-decay nan": Case(T + " --weight-decay nan", ("--weight-decay", "nan")),
    "train --batch-size 0": Case(T + " --batch-size 0", ("--batch-size", "0")),
    "train --batch-size -3": Case(T + " --batch-size -3", ("--batch-size", "-3")),
    "train --batch-size 100000 (no full batch)": Case(
        T + " --batch-size 100000", ("100000", "--batch-size")
    ),
    "train --warmup longer than the run": Case(T + " --warmup 5", ("--warmup", "5")),
    "train --context 0": Case(T + " --context 0", ("--context", "0")),
    "train --context 4096 (text too short)": Case(T + " --context 4096", ("--context", "4096")),
    "train --stride 0": Case(T + " --stride 0", ("--stride", "0")),
    "train --epochs 0": Case(T.replace(" --max-steps 2", "") + " --epochs 0", ("--epochs", "0")),
    "train --max-steps 0": Case(T + " --max-steps 0", ("--max-steps", "0")),
    "train --max-steps 2.5": Case(T + " --max-steps 2.5", ("--max-steps", "2.5"), usage=True),
    "train --eval-freq 0": Case(T + " --eval-freq 0", ("--eval-freq", "0")),
    "train --eval-iter -1": Case(T + " --eval-iter -1", ("--eval-iter", "-1")),
    "train --warmup -1": Case(T + " --warmup -1", ("--warmup", "-1")),
    "train --min-lr above --lr": Case(T + " --min-lr 1", ("--min-lr", "1")),
    "train --grad-clip -1": Case(T + " --grad-clip -1", ("--grad-clip", "-1")),
    "train --train-ratio 0": Case(T + " --train-ratio 0", ("--train-ratio", "0")),
    "train --train-ratio 1.5": Case(T + " --train-ratio 1.5", ("--train-ratio", "1.5")),
    "train --seed -1": Case(T + " --seed -1", ("--seed", "-1")),
    "train --seed 2**70": Case(T + f" --seed {2**70}", ("--seed", str(2**70))),
    "train --vocab-pad 0": Case(T + " --vocab-pad 0", ("--vocab-pad", "0")),
    "train --checkpoint-every 0": Case(T + " --checkpoint-every 0", ("--checkpoint-every", "0")),
    "train --checkpoint-every x": Case(
        T + " --checkpoint-every x", ("--checkpoint-every", "x"), usage=True
    ),  # fmt: skip
    # ---- train: choices and flags
    "train --preset huge": Case(T + " --preset huge", ("huge",), usage=True),
    "train --device tpu": Case(T + " --device tpu", ("tpu",), usage=True),
    "train --dtype float16": Case(T + " --dtype float16", ("float16",), usage=True),
    "train --attn flash": Case(T + " --attn flash", ("flash",), usage=True),
    "train --optimizer sgd": Case(T + " --optimizer sgd", ("sgd",), usage=True),
    "train --epochs with --max-steps": Case(
        T + " --epochs 1", ("--epochs", "--max-steps"), usage=True
    ),  # fmt: skip
    "train --no-such-flag": Case(T + " --no-such-flag", ("--no-such-flag",), usage=True),
    "train --prompt ''": Case(T + " --prompt ''", ("--prompt",)),
    # ---- train: files
    "train --text missing": Case("train --text {missing} --out {fresh}", ("{missing}",)),
    "train --text a directory": Case("train --text {emptydir} --out {fresh}", ("{emptydir}",)),
    "train --text latin-1": Case("train --text {latin1} --out {fresh}", ("{latin1}", "0xe9")),
    "train --text UTF-16 (suggests utf-16)": Case(
        "train --text {utf16} --out {fresh}", ("{utf16}", "utf-16")
    ),  # fmt: skip
    "train --text empty file": Case(
        "train --text {empty} --out {fresh}", ("{empty}", "empty"), forbid=("--context",)
    ),
    "train --text /dev/zero": Case(
        "train --text /dev/zero --out {fresh}", ("/dev/zero",), process=True
    ),  # fmt: skip
    "train --text a FIFO": Case(
        "train --text {fifo} --out {fresh}", ("{fifo}",), process=True, timeout=30
    ),
    "train --data missing": Case("train --data {missing} --out {fresh}", ("{missing}",)),
    "train --data not prepared": Case("train --data {emptydir} --out {fresh}", ("{emptydir}",)),
    "train --data with --text": Case(
        "train --data {prepared} --text {corpus} --out {fresh}", ("--data", "--text")
    ),  # fmt: skip
    "train --data with --train-ratio": Case(
        "train --data {prepared} --train-ratio 0.5 --out {fresh}", ("--train-ratio",)
    ),  # fmt: skip
    "train --data with a flipped train.bin": Case(
        "train --data {flipped} " + " ".join(TINY) + " --max-steps 1 --out {fresh}", ("train.bin",)
    ),  # fmt: skip
    "train --resume missing": Case("train --text {corpus} --resume {missing}", ("{missing}",)),
    "train --resume not a run": Case("train --text {corpus} --resume {emptydir}", ("{emptydir}",)),
    "train --resume with other data": Case("train --text {other} --resume {run}", ("{run}",)),
    "train --out an existing run": Case(
        T.replace("{fresh}", "{runcopy}"), ("{runcopy}", "--resume")
    ),  # fmt: skip
    "train --out a non-empty foreign directory": Case(
        T.replace("{fresh}", "{userdir2}"), ("{userdir2}",)
    ),  # fmt: skip
    "train --out a file": Case(T.replace("{fresh}", "{corpus}"), ("{corpus}",)),
    "train --out a dangling symbolic link": Case(
        T.replace("{fresh}", "{dangling}"), ("{dangling}",)
    ),
    "train --out under a file": Case(T.replace("{fresh}", "{corpus}/run"), ("{corpus}",)),
    "train --data flipped, bars off a terminal": Case(
        "train --data {flipped} --preset tiny --context 16 --batch-size 4 --max-steps 1 --out {fresh}",
        ("train.bin",),
        process=True,
    ),
    "train --book --text missing": Case(
        "train --book --text {missing} --out {fresh}", ("{missing}",)
    ),  # fmt: skip
    "train needing more memory than the machine has (124M, batch 64 x 1024)": Case(
        "train --preset 124M --context 1024 --batch-size 64 --max-steps 1 --no-progress --out {fresh}",
        ("--batch-size|memory",),
        process=True,
    ),
    # within the machine's memory (a 5.5 GiB peak predicted) but over an address-space limit
    # 2 GiB above what torch's import maps: the allocator fails in the step
    "train out of memory in a step (small, batch 64 x 128, 2 GiB above torch)": Case(
        "train --preset small --batch-size 64 --max-steps 1 --no-progress --out {fresh}",
        ("out of memory", "--batch-size"),
        process=True,
        above_import=2 << 30,
    ),  # fmt: skip
    # ---- eval
    "eval without --checkpoint": Case("eval", ("--checkpoint",), usage=True),
    "eval --checkpoint missing": Case("eval --checkpoint {missing}", ("{missing}",)),
    "eval --checkpoint an empty directory": Case("eval --checkpoint {emptydir}", ("{emptydir}",)),
    "eval --checkpoint a file": Case("eval --checkpoint {corpus}", ("{corpus}",)),
    "eval --text missing": Case("eval --checkpoint {run} --text {missing}", ("{missing}",)),
    "eval --text too short": Case("eval --checkpoint {run} --text {short}", ("16",)),
    "eval --device tpu": Case("eval --checkpoint {run} --device tpu", ("tpu",), usage=True),
    "eval of non-finite weights": Case("eval --checkpoint {nanrun} --text {corpus}", ()),
    # ---- generate
    "generate without --prompt": Case("generate --checkpoint {run}", ("--prompt",), usage=True),
    "generate --prompt ''": Case("generate --checkpoint {run} --prompt ''", ("--prompt",)),
    "generate --max-new-tokens -1": Case(G + " --max-new-tokens -1", ("--max-new-tokens", "-1")),
    "generate --max-new-tokens abc": Case(G + " --max-new-tokens abc", ("abc",), usage=True),
    "generate --temperature -1": Case(G + " --temperature -1", ("--temperature", "-1")),
    "generate --temperature nan": Case(G + " --temperature nan", ("--temperature", "nan")),
    "generate --temperature 1e-45": Case(G + " --temperature 1e-45", ("--temperature", "1e-45")),
    "generate --top-k 0": Case(G + " --temperature 1 --top-k 0", ("--top-k", "0")),
    "generate --top-k -5": Case(G + " --temperature 1 --top-k -5", ("--top-k", "-5")),
    "generate --top-k 10**12": Case(
        G + f" --temperature 1 --top-k {10**12}", ("--top-k", str(10**12))
    ),  # fmt: skip
    "generate --seed -1": Case(G + " --seed -1", ("--seed", "-1")),
    "generate --seed 2**70": Case(G + f" --seed {2**70}", ("--seed", str(2**70))),
    "generate of non-finite weights": Case(
        "generate --checkpoint {nanrun} --prompt the --temperature 1", ()
    ),  # fmt: skip
    "generate --checkpoint missing": Case(
        "generate --checkpoint {missing} --prompt x", ("{missing}",)
    ),  # fmt: skip
    # ---- prepare
    "prepare without --text": Case("prepare --out {fresh}", ("--text",), usage=True),
    "prepare without --out": Case("prepare --text {corpus}", ("--out",), usage=True),
    "prepare --text missing": Case("prepare --text {missing} --out {fresh}", ("{missing}",)),
    "prepare --text a directory": Case("prepare --text {emptydir} --out {fresh}", ("{emptydir}",)),
    "prepare --out a file": Case("prepare --text {corpus} --out {corpus}", ("{corpus}",)),
    "prepare --threads 0": Case(P + " --threads 0", ("--threads", "0")),
    "prepare --out a dangling symbolic link": Case(
        P.replace("{fresh}", "{dangling}"), ("{dangling}",)
    ),
    "prepare --out under a file": Case(P.replace("{fresh}", "{corpus}/data"), ("{corpus}",)),
    "prepare --threads x": Case(P + " --threads x", ("x",), usage=True),
    "prepare --train-ratio 2": Case(P + " --train-ratio 2", ("--train-ratio", "2")),
    "prepare --text latin-1": Case("prepare --text {latin1} --out {fresh}", ("{latin1}",)),
    "prepare --text UTF-16": Case("prepare --text {utf16} --out {fresh}", ("{utf16}", "utf-16")),
    "prepare --text /dev/zero": Case(
        "prepare --text /dev/zero --out {fresh}", ("/dev/zero",), process=True
    ),  # fmt: skip
    "prepare --text a FIFO": Case(
        "prepare --text {fifo} --out {fresh}", ("{fifo}",), process=True, timeout=30
    ),
    "train --text 17M characters without whitespace": Case(
        "train --text {longrun} --out {fresh} --no-progress",
        ("{longrun}",),
        process=True,
        timeout=90,
    ),
    # ---- bench
    "bench --batch-sizes 1,x": Case(
        "bench --preset tiny --batch-sizes 1,x", ("'x'", "--batch-sizes")
    ),  # fmt: skip
    "bench --batch-sizes 0": Case("bench --preset tiny --batch-sizes 0", ("0", "--batch-sizes")),
    "bench --dtype float16": Case("bench --preset tiny --dtype float16", ("float16",)),
    "bench --attn flash": Case("bench --preset tiny --attn flash", ("flash",)),
    "bench --steps 0": Case("bench --preset tiny --steps 0", ("--steps", "0")),
    "bench --context 0": Case("bench --preset tiny --context 0", ("--context", "0")),
    "bench --device tpu": Case("bench --device tpu", ("tpu",), usage=True),
    # ---- plan
    "plan without --memory": Case("plan", ("--memory",), usage=True),
    "plan --memory 24XB": Case("plan --memory 24XB", ("--memory", "24XB")),
    "plan --memory -1GiB": Case("plan --memory=-1GiB", ("--memory", "-1GiB")),
    "plan --memory 1KiB (nothing fits)": Case("plan --memory 1KiB", ("--memory", "1KiB")),
    "plan --target-batch 0": Case("plan --memory 24GiB --target-batch 0", ("--target-batch", "0")),
    # ---- weights
    "weights without an action": Case("weights", ("weights",), usage=True),
    "weights import-hf --safetensors missing": Case(
        "weights import-hf --safetensors {missing} --out {fresh}", ("{missing}",)
    ),  # fmt: skip
    "weights import-hf of a text file": Case(
        "weights import-hf --safetensors {corpus} --out {fresh}", ("{corpus}",)
    ),  # fmt: skip
    "weights import-hf of an empty directory": Case(
        "weights import-hf --safetensors {emptydir} --out {fresh}", ("{emptydir}",)
    ),  # fmt: skip
    "weights import-hf with a config.json lacking n_head": Case(
        "weights import-hf --safetensors {hf_no_head} --out {fresh}", ("n_head",)
    ),  # fmt: skip
    "weights import-hf with a config.json that is not JSON": Case(
        "weights import-hf --safetensors {hf_bad_json} --out {fresh}", ("config.json",)
    ),  # fmt: skip
    "weights import-hf --n-heads 0": Case(
        "weights import-hf --safetensors {hf}/model.safetensors --out {fresh} --n-heads 0",
        ("--n-heads", "0"),
    ),  # fmt: skip
    "weights import-hf --n-heads 5 (32 is not a multiple)": Case(
        "weights import-hf --safetensors {hf}/model.safetensors --out {fresh} --n-heads 5",
        ("--n-heads", "5"),
    ),  # fmt: skip
    "weights import-hf of a FIFO": Case(
        "weights import-hf --safetensors {fifo} --out {fresh}",
        ("{fifo}", "FIFO"),
        forbid=("no file",),
    ),  # fmt: skip
    "weights import-hf --out a foreign directory": Case(
        "weights import-hf --safetensors {hf}/model.safetensors --n-heads 4 --out {userdir}",
        ("{userdir}",),
    ),  # fmt: skip
    "weights export-hf --checkpoint missing": Case(
        "weights export-hf --checkpoint {missing} --out {fresh}", ("{missing}",)
    ),  # fmt: skip
    "weights export-hf --out a directory": Case(
        "weights export-hf --checkpoint {run} --out {emptydir}", ("{emptydir}",)
    ),
    "weights export-hf --out under a file": Case(
        "weights export-hf --checkpoint {run} --out {corpus}/model.safetensors", ("{corpus}",)
    ),
    "weights export-hf --out a dangling symbolic link": Case(
        "weights export-hf --checkpoint {run} --out {dangling}", ("{dangling}",)
    ),
    "eval of a run whose model.safetensors is a symbolic link": Case(
        "eval --checkpoint {symrun}",
        ("model.safetensors", "symbolic link"),
        forbid=("config.json",),
    ),
    "track report of a store with a corrupt run file": Case(
        "track report --store {badstore} --out {fresh}", ("{badstore_file}",)
    ),
    "weights export-hf without --out": Case(
        "weights export-hf --checkpoint {run}", ("--out",), usage=True
    ),  # fmt: skip
    # ---- conformance and the top level
    "conformance of a missing module": Case(
        "conformance no_such_module_xyz", ("no_such_module_xyz",), process=True
    ),  # fmt: skip
    "conformance without a module": Case("conformance", ("MODULE",), usage=True),
    "an unknown command": Case("nosuchcommand", ("nosuchcommand",), usage=True),
    "an unknown top-level flag": Case("--nope", ("--nope",), usage=True),
}


# ---------------------------------------------------------------- fixtures


def nan_weights(snapshot: Path) -> None:
    """Put a NaN into the checkpoint's weights and reseal its manifest (a verified file)."""
    import hashlib

    from safetensors import safe_open
    from safetensors.torch import save_file

    file = snapshot / "model.safetensors"
    with safe_open(str(file), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    file.unlink()
    save_file(tensors, str(file), metadata=metadata)
    manifest = json.loads((snapshot / "manifest.json").read_text())
    data = file.read_bytes()
    manifest["files"]["model.safetensors"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    (snapshot / "manifest.json").write_text(json.dumps(manifest))


def snapshot_of(run: Path) -> Path:
    ckpt = run / "checkpoint"
    latest = ckpt / "LATEST"
    return ckpt / latest.read_text().strip() if latest.is_file() else ckpt


def hf_model_dir(directory: Path, config: dict | None, *, config_text: str | None = None) -> Path:
    """A Hugging Face GPT-2 directory (model.safetensors + config.json) of a tiny model with
    emb_dim 32, 4 heads, 2 layers, context 16 -> the directory."""
    from safetensors.torch import save_file

    from gptref.model import GPT_CONFIG_TINY, GPTModel
    from gptref.weights.hf import gptref_to_hf

    torch.manual_seed(0)
    model = GPTModel({**GPT_CONFIG_TINY, "context_length": 16, "qkv_bias": True})
    directory.mkdir(parents=True)
    state = {"transformer." + k: v for k, v in gptref_to_hf(model.state_dict()).items()}
    save_file(state, str(directory / "model.safetensors"))
    if config_text is not None:
        (directory / "config.json").write_text(config_text)
    elif config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    return directory


HF_CONFIG = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 32,
             "n_head": 4, "n_layer": 2, "n_positions": 16, "n_ctx": 16, "vocab_size": 50257}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("cli-errors")
    corpus, other = base / "corpus.txt", base / "other.txt"
    corpus.write_text(words(400), encoding="utf-8")
    other.write_text(words(400, seed=1), encoding="utf-8")
    run = base / "run"
    result = cli(["train", "--text", str(corpus), *TINY, "--max-steps", "2", "--out", str(run)])
    assert result.rc == 0, describe(result)
    nanrun = base / "nanrun"
    shutil.copytree(run, nanrun)
    nan_weights(snapshot_of(nanrun))
    prepared, flipped = base / "prepared", base / "flipped"
    assert cli(["prepare", "--text", str(corpus), "--out", str(prepared), "--no-progress"]).rc == 0
    shutil.copytree(prepared, flipped)
    data = bytearray((flipped / "train.bin").read_bytes())
    data[len(data) // 2] ^= 0x01
    (flipped / "train.bin").write_bytes(bytes(data))
    shutil.copytree(run, base / "runcopy")
    emptydir, userdir, userdir2 = base / "emptydir", base / "userdir", base / "userdir2"
    emptydir.mkdir()
    for directory in (userdir, userdir2):
        directory.mkdir()
        (directory / "config.json").write_text('{"mine": true}')
    (base / "latin1.txt").write_bytes("caf\xe9 au lait ".encode("latin-1") * 50)
    (base / "utf16.txt").write_text(words(200), encoding="utf-16")
    (base / "empty.txt").write_text("")
    (base / "short.txt").write_text("the quick fox")
    (base / "longrun.txt").write_text("ab" * (17 << 19) + "\n")  # 17M characters, no whitespace
    os.mkfifo(base / "fifo")
    (base / "dangling").symlink_to(base / "nothing-here")
    symrun = base / "symrun"
    shutil.copytree(run, symrun)
    for weights in (symrun / "checkpoint").glob("save-*/model.safetensors"):
        moved = base / f"outside-{weights.parent.name}.safetensors"
        weights.rename(moved)
        weights.symlink_to(moved)
    sample = REPO / "benchmarks" / "results" / "prepare_cpu.json"
    assert cli(["track", "record", "--from-json", str(sample), "--store", str(base / "badstore")]).rc == 0  # fmt: skip
    badstore_file = next((base / "badstore").glob("*/0001_*.json"))
    badstore_file.write_text("[1, 2]")
    hf = hf_model_dir(base / "hf", HF_CONFIG)
    hf_model_dir(base / "hf_no_head", {k: v for k, v in HF_CONFIG.items() if k != "n_head"})
    hf_model_dir(base / "hf_bad_json", None, config_text="{not json")
    names = {"corpus": corpus, "other": other, "run": run, "nanrun": nanrun, "prepared": prepared,
             "flipped": flipped, "emptydir": emptydir, "userdir": userdir, "hf": hf,
             "userdir2": userdir2, "runcopy": base / "runcopy",
             "hf_no_head": base / "hf_no_head", "hf_bad_json": base / "hf_bad_json",
             "missing": base / "missing-thing", "fifo": base / "fifo",
             "dangling": base / "dangling", "symrun": symrun, "badstore": base / "badstore",
             "badstore_file": badstore_file}  # fmt: skip
    for name in ("latin1", "utf16", "empty", "short", "longrun"):
        names[name] = base / f"{name}.txt"
    return {k: str(v) for k, v in names.items()}


def argv_of(case: Case, files: dict[str, str], fresh: Path) -> list[str]:
    fields = {**files, "fresh": str(fresh)}
    return ["" if part == "''" else part.format(**fields) for part in case.argv.split()]


TRIED: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def cli_report(tmp_path_factory):
    yield TRIED
    directory = Path(os.environ.get("GPTREF_REPORT_DIR") or tmp_path_factory.getbasetemp())
    directory.mkdir(parents=True, exist_ok=True)
    failed = [t for t in TRIED if t["problems"]]
    tracebacks = [t for t in TRIED if any("traceback" in p for p in t["problems"])]
    path = directory / "cli_errors.json"
    path.write_text(json.dumps({"tried": len(TRIED), "failed": len(failed),
                                "tracebacks": len(tracebacks), "cases": TRIED}, indent=1))  # fmt: skip
    print(f"\nCLI bad inputs: {len(TRIED)} tried, {len(failed)} failed, {len(tracebacks)} tracebacks; {path}")  # fmt: skip


# rows in a process of their own take seconds each: marked slow (CI runs them all)
ROWS = [pytest.param(name, marks=[pytest.mark.slow] if case.process else []) for name, case in CASES.items()]  # fmt: skip


@pytest.mark.parametrize("name", ROWS)
def test_a_bad_input_is_one_line_exit_2_naming_the_value(name, files, tmp_path):
    """exit 2; one stderr line; no traceback; the value (and flag) named; for a usage
    error, the line ends pointing at the command's --help and no usage block is printed."""
    case = CASES[name]
    argv = argv_of(case, files, tmp_path / "fresh")
    named = tuple(n.format(**files) for n in case.named)
    if case.process:
        result = limited(argv, memory=case.memory, above_import=case.above_import, timeout=case.timeout)  # fmt: skip
    else:
        try:
            result = cli(argv)
        except BaseException as e:  # noqa: BLE001 - what escapes main() is a traceback
            TRIED.append({"case": name, "argv": argv, "problems": [f"traceback: {type(e).__name__}: {e}"[:300]]})  # fmt: skip
            raise
    problems = error_problems(result, named=named)
    line = result.err_lines[-1] if result.err_lines else ""
    for text in (*FORBIDDEN, *(f.format(**files) for f in case.forbid)):
        if text in line:
            problems.append(f"the line holds {text!r}")
    if case.usage:
        command = [a for a in argv if not a.startswith("-")][:1]
        if argv[0] == "weights" and len(argv) > 1 and not argv[1].startswith("-"):
            command = argv[:2]
        if not line.rstrip(" .").endswith("--help`") or "see `gptref" not in line:
            problems.append(f"a usage error should end with see `gptref {' '.join(command)} --help`")  # fmt: skip
        if "usage:" in result.err:
            problems.append("the usage block is printed")
    TRIED.append({"case": name, "argv": argv, "rc": result.rc, "line": line[:300],
                  "problems": [p.replace("a traceback", "traceback") for p in problems]})  # fmt: skip
    assert not problems, f"{name}: {problems}; {describe(result)}"


# ---------------------------------------------------------------- more than one command


def all_weights_finite(run: Path) -> list[str]:
    """Names of the snapshots under RUN/checkpoint holding a non-finite weight."""
    from safetensors.torch import load_file

    bad = []
    for file in sorted((run / "checkpoint").rglob("model.safetensors")) if (run / "checkpoint").exists() else []:  # fmt: skip
        tensors = load_file(str(file))
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in tensors.values()):
            bad.append(str(file.relative_to(run)))
    return bad


@pytest.mark.parametrize(
    "flags",
    [
        ["--lr", "1e4", "--max-steps", "3", "--eval-freq", "1"],
        ["--weight-decay", "1e30", "--max-steps", "1"],
    ],  # fmt: skip
    ids=["lr 1e4", "weight-decay 1e30"],
)
def test_a_diverging_run_exits_2_in_one_line_and_saves_no_nan_weights(flags, files, tmp_path):
    """Weights that go non-finite: exit 2, one line, and no checkpoint with NaN/inf weights
    anywhere under RUN/checkpoint."""
    out = tmp_path / "run"
    args = ["train", "--text", files["corpus"], *TINY, *flags, "--out", str(out)]
    try:
        result = cli(args)
    except BaseException as e:  # noqa: BLE001
        pytest.fail(f"traceback: {type(e).__name__}: {e}")
    assert error_problems(result) == [], describe(result)
    assert all_weights_finite(out) == [], "non-finite weights were saved"


def test_eval_json_of_non_finite_weights_is_valid_json_or_one_line(files):
    """`eval --json` on NaN weights: valid JSON without a bare NaN (exit 0), or exit 2 in one
    line."""

    def no_constants(token):
        raise ValueError(f"bare {token} in JSON")

    result = cli(["eval", "--checkpoint", files["nanrun"], "--text", files["corpus"], "--json"])
    if result.rc == 0:
        json.loads(result.out, parse_constant=no_constants)
    else:
        assert error_problems(result) == [], describe(result)


def extended(run: Path, target: Path, steps: int) -> Path:
    """A copy of the run directory whose config asks for ``steps`` steps (so --resume trains)."""
    shutil.copytree(run, target, symlinks=True)
    config = json.loads((target / "config.json").read_text())
    config["run"]["max_steps"] = steps
    (target / "config.json").write_text(json.dumps(config))
    return target


def state_of(run: Path) -> dict[str, torch.Tensor]:
    from gptref.run.rundir import load_model

    model, _ = load_model(run, torch.device("cpu"))
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_full_disk_during_a_save_is_one_line_and_the_previous_checkpoint_survives(files, tmp_path):  # fmt: skip
    """--resume with every file limited to 1 MB (RLIMIT_FSIZE: writes fail with EFBIG, as on
    a full disk): exit 2, one line; the step-2 checkpoint still loads, unchanged."""
    run = extended(Path(files["run"]), tmp_path / "run", 4)
    before = state_of(run)
    result = limited(["train", "--text", files["corpus"], "--resume", str(run), "--no-progress"], file_size=1 << 20)  # fmt: skip
    assert error_problems(result) == [], result.err[-500:]
    after = state_of(run)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_resume_into_a_symlinked_checkpoint_directory_saves_or_refuses_up_front(files, tmp_path):
    """RUN/checkpoint a symlink to a directory elsewhere: --resume either trains and saves
    (through the link) or refuses in one line before training a step."""
    run = extended(Path(files["run"]), tmp_path / "run", 4)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run / "checkpoint", elsewhere)
    (run / "checkpoint").symlink_to(elsewhere)
    result = cli(["train", "--text", files["corpus"], "--resume", str(run), "--no-progress"])
    if result.rc == 0:
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert records[-1]["step"] >= 2, records
        from gptref.model import GPTConfig, GPTModel
        from gptref.run.checkpoint import load_checkpoint, load_config

        model = GPTModel(GPTConfig.from_dict(load_config(run / "checkpoint")))
        assert load_checkpoint(run / "checkpoint", model)["step"] == 4
    else:
        assert error_problems(result) == [], describe(result)
        assert "Step 00000" not in result.out, "it trained before refusing"


def test_train_into_an_empty_directory_is_fine(files, tmp_path):
    """--out an existing empty directory: a normal run."""
    out = tmp_path / "empty"
    out.mkdir()
    result = cli(["train", "--text", files["corpus"], *TINY, "--max-steps", "1", "--out", str(out)])
    assert result.rc == 0, describe(result)
    assert (out / "config.json").is_file()


def test_a_finished_run_exits_0_and_does_not_say_stopped_early(files, tmp_path):
    """A run that reaches --max-steps exits 0 without "stopped early" (a stopped one exits
    128 + the signal: tests/run/test_faults.py)."""
    result = cli(["train", "--text", files["corpus"], *TINY, "--max-steps", "1", "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.rc == 0 and "stopped early" not in result.out, describe(result)


# ---------------------------------------------------------------- what the refusals leave possible


def test_no_verify_trains_on_a_prepared_corpus_without_checking_it(files, tmp_path):
    """--no-verify skips the SHA-256 check: even the flipped corpus trains (exit 0)."""
    result = cli(["train", "--data", files["flipped"], *TINY, "--max-steps", "1", "--no-verify", "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.rc == 0, describe(result)


def test_prepare_over_a_flipped_token_file_prepares_again(files, tmp_path):
    """The up-to-date check compares hashes: prepare over a same-size damaged train.bin
    rewrites it."""
    out = tmp_path / "data"
    shutil.copytree(files["flipped"], out)
    result = cli(["prepare", "--text", files["corpus"], "--out", str(out), "--no-progress"])
    assert result.rc == 0, describe(result)
    assert (out / "train.bin").read_bytes() == (Path(files["prepared"]) / "train.bin").read_bytes()


@pytest.mark.parametrize("given", ["directory", "file"])
def test_import_hf_reads_n_head_from_the_config_json_beside_the_weights(given, files, tmp_path):
    """A Hugging Face model directory (or its model.safetensors, config.json beside it) with
    n_embd 32 and n_head 4: imported without --n-heads, the model has 4 heads and the same
    weights."""
    hf = Path(files["hf"])
    source = hf if given == "directory" else hf / "model.safetensors"
    out = tmp_path / "imported"
    result = cli(["weights", "import-hf", "--safetensors", str(source), "--out", str(out)])
    assert result.rc == 0, describe(result)
    from gptref.run.checkpoint import load_config

    config = load_config(out)
    assert config["n_heads"] == 4 and config["emb_dim"] == 32 and config["n_layers"] == 2, config
    exported = tmp_path / "back.safetensors"
    assert cli(["weights", "export-hf", "--checkpoint", str(out), "--out", str(exported)]).rc == 0
    from safetensors.torch import load_file

    original = {k.removeprefix("transformer."): v for k, v in load_file(str(hf / "model.safetensors")).items()}  # fmt: skip
    back = {k.removeprefix("transformer."): v for k, v in load_file(str(exported)).items()}
    shared = sorted(set(original) & set(back))
    assert shared and all(torch.equal(original[k], back[k]) for k in shared), shared[:3]


@pytest.mark.parametrize("where", ["run", "checkpoint", "snapshot"])
def test_export_hf_works_on_a_run_its_checkpoint_directory_and_a_snapshot(where, files, tmp_path):
    """export-hf of RUN, RUN/checkpoint and the snapshot LATEST names: the same file."""
    run = Path(files["run"])
    source = {"run": run, "checkpoint": run / "checkpoint", "snapshot": snapshot_of(run)}[where]
    out = tmp_path / "model.safetensors"
    result = cli(["weights", "export-hf", "--checkpoint", str(source), "--out", str(out)])
    assert result.rc == 0, describe(result)
    from safetensors.torch import load_file

    tensors = load_file(str(out))
    state = state_of(run)
    assert torch.equal(tensors["transformer.wte.weight"], state["tok_emb.weight"])
    assert all(math.isfinite(float(t.float().abs().max())) for t in tensors.values())


@pytest.mark.parametrize(
    ("error", "is_oom"),
    [
        (RuntimeError("std::bad_alloc"), True),  # a CUDA build's import under an RLIMIT_AS
        (
            RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
            True,
        ),  # fmt: skip
        (torch.OutOfMemoryError("CUDA out of memory"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    ],
)
def test_out_of_memory_is_told_apart_from_other_runtime_errors(error, is_oom):
    """What the CLI turns into its one-line out-of-memory error, and what it leaves a bug."""
    from gptref.cli.main import _out_of_memory

    assert _out_of_memory(error) is is_oom


def test_an_error_raised_inside_torchs_own_import_is_told_apart():
    """A RuntimeError from torch/__init__.py (a CUDA build importing under a low address-space
    limit: std::bad_alloc, or a truncated "Unable to insta") is the CLI's one-line import
    error; the same error raised elsewhere is not."""
    from gptref.cli.main import _importing_torch

    fake_init = compile("raise RuntimeError('Unable to insta')", "/x/site-packages/torch/__init__.py", "exec")  # fmt: skip
    with pytest.raises(RuntimeError) as inside:
        exec(fake_init, {})
    with pytest.raises(RuntimeError) as outside:
        exec(compile("raise RuntimeError('Unable to insta')", "/x/gptref/step.py", "exec"), {})
    assert _importing_torch(inside.value) and not _importing_torch(outside.value)


@pytest.mark.parametrize(
    "error",
    [
        "SystemError('error return without exception set')",  # py313, a CUDA build, 3 GiB
        "RuntimeError('Unable to insta')",
        "RuntimeError('std::bad_alloc')",
        "ImportError('libtorch_cuda.so: failed to map segment from shared object')",
    ],
)
def test_any_error_raised_inside_torchs_own_import_is_one_line_exit_2(error, monkeypatch):
    """Whatever type torch's __init__ raises when it cannot load (seen: SystemError,
    RuntimeError, ImportError), the CLI says so in one line naming memory, exit 2."""
    import gptref.cli.plan as plan

    fake_init = compile(f"raise {error}", "/x/site-packages/torch/__init__.py", "exec")
    monkeypatch.setattr(plan, "main", lambda args: exec(fake_init, {}))
    result = cli(["plan", "--memory", "1GiB"])
    assert not error_problems(result, named=("torch failed to import", "memory")), describe(result)


def test_an_error_that_is_not_torchs_import_nor_memory_still_raises(monkeypatch):
    """A bug (here a SystemError raised in gptref's own code) is not swallowed into a line."""
    import gptref.cli.plan as plan

    bug = compile("raise SystemError('a bug')", "/x/gptref/planner.py", "exec")
    monkeypatch.setattr(plan, "main", lambda args: exec(bug, {}))
    with pytest.raises(SystemError, match="a bug"):
        cli(["plan", "--memory", "1GiB"])
