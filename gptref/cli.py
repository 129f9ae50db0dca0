"""The ``gptref`` command line: argparse only; the work lives in ``gptref.run`` and friends.

Every user error ends as one line on stderr and exit status 2 (``--debug`` shows the
traceback instead).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gptref import __version__

EPILOG = """\
examples:
  gptref prepare --text a.txt b.txt --out data/ab  # tokenize once, streamed: corpora larger than memory
  gptref train --data data/ab                   # train on it, memory-mapped
  gptref train                                  # a small GPT on the built-in corpus, ~2-3 min on CPU
  gptref train --book --text the-verdict.txt    # the book's chapter-5 run (GPT-124M, 10 epochs)
  gptref eval --checkpoint runs/NAME            # loss and perplexity of a trained run
  gptref generate --checkpoint runs/NAME --prompt "Every effort moves you" --temperature 1.4 --top-k 25
  gptref train --fast                           # bf16 autocast + sdpa + fused AdamW (tested equal)
  torchrun --standalone --nproc_per_node=2 -m gptref train --batch-size 4   # DDP, 2 processes
  gptref bench --preset small --batch-sizes 1,2,4,8 --dtype float32,bfloat16
  gptref plan --memory 24GiB --target-batch 1024 --preset 124M --context 1024
  gptref conformance examples.book_style        # check another implementation against gptref's spec
"""


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptref",
        description=(
            "gptref: the reference GPT pretraining data path and training step of "
            "'Build a Large Language Model (From Scratch)' (chapters 2 and 5, appendix D)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gptref {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    pr = sub.add_parser(
        "prepare",
        help="tokenize text files once into DIR/train.bin, val.bin for `train --data DIR`",
        description=(
            "Tokenize UTF-8 text files (each one document) with GPT-2 BPE, in parallel and "
            "streamed in bounded pieces, into --out DIR: train.bin and val.bin (uint16 "
            "little-endian ids, documents separated by <|endoftext|>) and manifest.json. "
            "Each document's first --train-ratio of characters goes to train.bin, the rest to "
            "val.bin. Skips when DIR is already up to date."
        ),
    )
    pr.add_argument("--text", nargs="+", required=True, metavar="FILE", help="UTF-8 text files, one document each")  # fmt: skip
    pr.add_argument("--out", required=True, metavar="DIR", help="where train.bin, val.bin and manifest.json go")  # fmt: skip
    pr.add_argument("--train-ratio", type=_number, default=0.9, metavar="X", help="share of each document's characters for training (default 0.9)")  # fmt: skip
    pr.add_argument("--threads", type=_positive_int, metavar="N", help="tokenizer threads (default: every CPU)")  # fmt: skip
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")

    t = sub.add_parser(
        "train",
        help="train a GPT and evaluate it (default: a small model on the built-in corpus)",
        description=(
            "Train a GPT on text files, or with no --text on the built-in corpus (Python's "
            "documentation topics, ~0.5 MB, shipped with every CPython). Writes --out DIR: "
            "metrics.jsonl, loss.png, config.json and checkpoint/. Ctrl-C saves a checkpoint; "
            "--resume DIR continues it exactly."
        ),
    )
    t.add_argument("--text", nargs="+", metavar="FILE", help="UTF-8 text files (several are joined by <|endoftext|>)")  # fmt: skip
    t.add_argument("--data", metavar="DIR", help="train on a corpus `gptref prepare` wrote to DIR, memory-mapped (instead of --text)")  # fmt: skip
    t.add_argument("--book", action="store_true", help="the book's chapter-5 settings: GPT-124M, context 256, batch 2, AdamW 4e-4/0.1, 10 epochs, eval 5/5, seed 123, book-mode loaders")  # fmt: skip
    t.add_argument("--preset", choices=["tiny", "small", "124M"], help="model size (default: small, ~14M parameters)")  # fmt: skip
    t.add_argument("--context", type=_positive_int, metavar="N", help="context length (default: the preset's)")  # fmt: skip
    t.add_argument("--stride", type=_positive_int, metavar="N", help="window stride (default: the context)")  # fmt: skip
    t.add_argument("--batch-size", type=_positive_int, metavar="N", help="sequences per step (default 8)")  # fmt: skip
    steps = t.add_mutually_exclusive_group()
    steps.add_argument("--epochs", type=_positive_int, metavar="N", help="passes over the training split (default 1)")  # fmt: skip
    steps.add_argument("--max-steps", type=_positive_int, metavar="N", help="stop after N optimizer steps (default: one epoch)")  # fmt: skip
    t.add_argument("--lr", type=_number, metavar="X", help="(peak) learning rate (default 1e-3)")
    t.add_argument("--weight-decay", type=_number, metavar="X", help="AdamW weight decay (default 0.1)")  # fmt: skip
    t.add_argument("--warmup", type=_positive_int, metavar="N", help="linear warmup steps, then cosine decay")  # fmt: skip
    t.add_argument("--min-lr", type=_number, metavar="X", help="cosine decay ends exactly at X on the last step")  # fmt: skip
    t.add_argument("--grad-clip", type=_number, metavar="X", help="clip the gradient norm to X")
    t.add_argument("--eval-freq", type=_positive_int, metavar="N", help="evaluate every N steps (default 10)")  # fmt: skip
    t.add_argument("--eval-iter", type=_positive_int, metavar="N", help="batches per evaluation (default 5)")  # fmt: skip
    t.add_argument("--train-ratio", type=_number, metavar="X", help="share of characters for training (default 0.9)")  # fmt: skip
    t.add_argument("--seed", type=_positive_int, metavar="N", help="seed for weights, batches and dropout (default 123)")  # fmt: skip
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda when available")  # fmt: skip
    t.add_argument("--dtype", choices=["float32", "bfloat16"], help="bfloat16: autocast (about 2-4x faster on recent CPUs)")  # fmt: skip
    t.add_argument("--attn", choices=["reference", "sdpa"], help="attention implementation (default reference: the book's ops)")  # fmt: skip
    t.add_argument("--optimizer", choices=["default", "for-loop", "foreach", "fused"], help="AdamW implementation (default: PyTorch's choice); all compute the same update")  # fmt: skip
    t.add_argument("--compile", action="store_true", help="torch.compile the model (slower start, faster steps)")  # fmt: skip
    t.add_argument("--tf32", action="store_true", help="CUDA: float32 matmuls on TF32 tensor cores")  # fmt: skip
    t.add_argument("--vocab-pad", type=_positive_int, metavar="N", help="round out_head's rows up to a multiple of N (64 suits GPUs); logits unchanged")  # fmt: skip
    t.add_argument("--fused-layers", action="store_true", help="LayerNorm and GELU as one kernel each (F.layer_norm, F.gelu): same functions")  # fmt: skip
    t.add_argument("--fast", action="store_true", help="the tested fast paths: --attn sdpa --dtype bfloat16 --optimizer fused --fused-layers (explicit flags win)")  # fmt: skip
    t.add_argument("--out", metavar="DIR", help="run directory (default runs/<timestamp>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly (its settings win)")  # fmt: skip
    t.add_argument("--prompt", default="Every effort moves you", help="start context for samples")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="loss and perplexity of a checkpoint", description="Loss (batch- and token-weighted) and perplexity of a checkpoint, on --text files or on its run's own splits.")  # fmt: skip
    e.add_argument("--checkpoint", required=True, metavar="DIR", help="a run directory or its checkpoint/")  # fmt: skip
    e.add_argument("--text", nargs="+", metavar="FILE", help="evaluate on these files instead")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--json", action="store_true", help="print JSON")

    g = sub.add_parser("generate", help="continue a prompt with a checkpoint's model", description="Continue --prompt: greedy by default; --temperature > 0 samples (with --top-k), seeded by --seed.")  # fmt: skip
    g.add_argument("--checkpoint", required=True, metavar="DIR", help="a run directory or its checkpoint/")  # fmt: skip
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=_positive_int, default=50, metavar="N")
    g.add_argument("--temperature", type=_number, default=0.0, metavar="X")
    g.add_argument("--top-k", type=_positive_int, metavar="N")
    g.add_argument("--seed", type=_positive_int, default=123, metavar="N")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    w = sub.add_parser("weights", help="import/export Hugging Face GPT-2 weights", description="Convert between a Hugging Face GPT-2 model.safetensors and a gptref checkpoint, offline.")  # fmt: skip
    wsub = w.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    wi = wsub.add_parser("import-hf", help="HF model.safetensors -> gptref checkpoint directory")
    wi.add_argument("--safetensors", required=True, metavar="PATH")
    wi.add_argument("--out", required=True, metavar="DIR")
    wx = wsub.add_parser("export-hf", help="gptref checkpoint -> HF model.safetensors")
    wx.add_argument("--checkpoint", required=True, metavar="DIR")
    wx.add_argument("--out", required=True, metavar="PATH")
    b = sub.add_parser("bench", help="time train_step over batch sizes: tokens/s, memory, MFU", description="For each device/dtype/attention/batch size: warm up, time train_step, record tokens/s, step time (median, spread), peak memory measured and predicted, and MFU. Out of memory is an OOM row; the sweep goes on. Writes bench.md, bench.json and bench.png to --out.")  # fmt: skip
    b.add_argument("--preset", default="small", choices=["tiny", "small", "124M"])
    b.add_argument("--context", type=_positive_int, metavar="N", help="default: the preset's")
    b.add_argument("--batch-sizes", default="1,2,4,8", metavar="LIST", help="comma-separated (default 1,2,4,8)")  # fmt: skip
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"])
    b.add_argument("--dtype", default="float32", metavar="LIST", help="float32,bfloat16 (comma-separated)")  # fmt: skip
    b.add_argument("--attn", default="reference", metavar="LIST", help="reference,sdpa (comma-separated)")  # fmt: skip
    b.add_argument("--steps", type=_positive_int, default=3, metavar="N", help="timed steps per configuration")  # fmt: skip
    b.add_argument("--optimizer", default="default", choices=["default", "for-loop", "foreach", "fused"], help="AdamW implementation")  # fmt: skip
    b.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up steps include the compilation)")  # fmt: skip
    b.add_argument("--tf32", action="store_true", help="CUDA: TF32 float32 matmuls")
    b.add_argument("--vocab-pad", type=_positive_int, default=1, metavar="N", help="round out_head's rows up to a multiple of N")  # fmt: skip
    b.add_argument("--fused-layers", action="store_true", help="LayerNorm and GELU as one kernel each")  # fmt: skip
    b.add_argument("--compare", action="store_true", help="instead of a sweep: the fp32 reference and the fast paths side by side at the first batch size and device, with speed-ups (writes compare.md/json)")  # fmt: skip
    b.add_argument("--out", default="bench", metavar="DIR", help="where bench.md/json/png go (default ./bench)")  # fmt: skip
    b.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("plan", help="largest micro-batch for a memory budget and the accumulation to reach a target batch", description="Predict (with gptref.memory's model, checked against measurement) the largest micro-batch that fits --memory and the accumulation steps that reach --target-batch sequences.")  # fmt: skip
    p.add_argument("--memory", required=True, metavar="SIZE", help="e.g. 24GiB, 80GB, 512MiB")
    p.add_argument("--target-batch", type=_positive_int, default=1024, metavar="N")
    p.add_argument("--preset", default="124M", choices=["tiny", "small", "124M"])
    p.add_argument("--context", type=_positive_int, metavar="N", help="default: the preset's")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    c = sub.add_parser("conformance", help="run gptref's conformance suite against another implementation", description="Run gptref's specification (pytest --pyargs gptref.conformance) against MODULE, an adapter exposing split, chunk, ..., generate; exits with pytest's status. Equivalent to: GPTREF_IMPL=MODULE python -m pytest --pyargs gptref.conformance [PYTEST_ARGS].")  # fmt: skip
    c.add_argument("impl", metavar="MODULE", help="package.module importable from here, or path/to/adapter.py")  # fmt: skip
    c.add_argument("--allow-missing", action="store_true", help="skip, not fail, the tests of functions MODULE lacks")  # fmt: skip
    c.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="PYTEST_ARGS", help="passed on to pytest, e.g. -x -k chunk")  # fmt: skip
    return parser


def _conformance(args: argparse.Namespace) -> int:
    from gptref.conformance import run_suite

    extra = (["--allow-missing"] if args.allow_missing else []) + args.pytest_args
    return run_suite(args.impl, extra)


def _split_list(flag: str, text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ValueError(f"{flag}: expected a comma-separated list, got {text!r}")
    for item in items:
        if allowed is not None and item not in allowed:
            raise ValueError(f"{flag}: {item!r} is not one of {', '.join(allowed)}")
    return items


def _bench(args: argparse.Namespace) -> int:
    import torch

    from gptref.bench import format_table, run_bench

    sizes = []
    for item in _split_list("--batch-sizes", args.batch_sizes):
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"--batch-sizes: each size must be an integer >= 1, got {item!r}")
        sizes.append(int(item))
    if args.device == "all":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    elif args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this torch build or machine has no CUDA; use --device cpu")
    else:
        devices = [args.device]
    if args.compare:
        return _compare(args, sizes[0], devices[0])
    rows = run_bench(
        args.preset, args.context, sizes, devices,
        _split_list("--dtype", args.dtype, ("float32", "bfloat16")),
        _split_list("--attn", args.attn, ("reference", "sdpa")),
        args.steps, args.out, progress=not args.no_progress, optimizer=args.optimizer,
        compile=args.compile, tf32=args.tf32, vocab_pad=args.vocab_pad,
        fused_layers=args.fused_layers,
    )  # fmt: skip
    print(format_table(rows))
    print(f"wrote {args.out}/: bench.md, bench.json, bench.png")
    return 0


def _compare(args: argparse.Namespace, batch_size: int, device: str) -> int:
    from gptref.bench import compare_paths, format_comparison, write_results

    fast = {"attn": "sdpa", "optimizer": "fused", "fused_layers": True, "vocab_pad": args.vocab_pad}
    variants = {
        "fp32 reference": {},
        "fp32 fast (sdpa, fused AdamW and layers)": fast,
        "bf16 fast": {**fast, "dtype": "bfloat16"},
    }
    if device == "cuda":
        variants["tf32 fast"] = {**fast, "tf32": True}
    if args.compile:
        variants["bf16 fast + compile"] = {**fast, "dtype": "bfloat16", "compile": True}
    rows = compare_paths(
        variants, args.preset, args.context, batch_size, device, steps=args.steps,
        progress=not args.no_progress,
    )  # fmt: skip
    write_results(rows, args.out, "compare")
    print(format_comparison(rows))
    print(f"wrote {args.out}/: compare.md, compare.json")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from gptref.bench import format_plan

    print(
        format_plan(
            args.preset,
            args.memory,
            args.target_batch,
            context=args.context,
            dtype=args.dtype,
            device=args.device,
        )  # fmt: skip
    )
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from gptref.prepare import prepare

    result = prepare(
        args.text, args.out, train_ratio=args.train_ratio, num_threads=args.threads,
        progress=not args.no_progress,
    )  # fmt: skip
    if not result.skipped:
        m, s = result.manifest, result.seconds
        tokens = m["train"]["tokens"] + m["val"]["tokens"]
        print(
            f"wrote {args.out}/: train.bin ({m['train']['tokens']:,} tokens), val.bin "
            f"({m['val']['tokens']:,} tokens), manifest.json; {m['documents']} document"
            f"{'s' if m['documents'] != 1 else ''} in {s:.1f} s ({tokens / s:,.0f} tokens/s)"
        )
    return 0


def _train(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from gptref.run import BOOK, RunConfig, train_run

    base = BOOK if args.book else RunConfig()
    flags = {
        "preset": args.preset, "context": args.context, "stride": args.stride,
        "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "warmup": args.warmup, "min_lr": args.min_lr, "grad_clip": args.grad_clip,
        "eval_freq": args.eval_freq, "eval_iter": args.eval_iter, "train_ratio": args.train_ratio,
        "seed": args.seed, "dtype": args.dtype, "attn": args.attn,
        "optimizer": args.optimizer, "vocab_pad": args.vocab_pad,
        "compile": args.compile or None, "tf32": args.tf32 or None,
        "fused_layers": args.fused_layers or None,
    }  # fmt: skip
    if args.fast:
        base = dataclasses.replace(
            base, attn="sdpa", dtype="bfloat16", optimizer="fused", fused_layers=True
        )
    changes = {k: v for k, v in flags.items() if v is not None}
    if args.epochs is not None:
        changes.update(epochs=args.epochs, max_steps=None)
    if args.max_steps is not None:
        changes.update(max_steps=args.max_steps, epochs=10**6)
    run = dataclasses.replace(base, **changes)
    if args.data is not None and args.train_ratio is not None:
        raise ValueError(
            f"--train-ratio: --data {args.data} was split when it was prepared; run "
            "`gptref prepare --train-ratio X` again to change the split"
        )
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    summary = train_run(
        run, texts=args.text, data=args.data, out=out, device=args.device, prompt=args.prompt,
        resume=args.resume, progress=not args.no_progress,
    )  # fmt: skip
    s = summary
    if s["rank"] != 0:  # under torchrun, rank 0 reports for all
        return 0
    print(
        f"\n{'stopped early (Ctrl-C): ' if s['interrupted'] else ''}"
        f"{s['steps']} step{'s' if s['steps'] != 1 else ''}, {s['tokens_seen']:,} tokens seen in {s['wall_seconds']:.0f} s "
        f"({s['tokens_per_second']:,.0f} tokens/s)\n"
        f"final train loss {s['train_loss']:.3f}, val loss {s['val_loss']:.3f} "
        f"(val perplexity {s['val_perplexity']:,.1f})\n"
        f"sample: {s['sample']!r}\n"
        f"wrote {s['run_dir']}/: metrics.jsonl, {'loss.png, ' if s['plot'] else ''}config.json, checkpoint/"
    )
    if not s["plot"]:
        print("(no loss.png: install matplotlib, e.g. pip install 'gptref[plot]')")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from gptref.run import eval_run

    results = eval_run(args.checkpoint, texts=args.text, device=args.device)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for name, r in results.items():
        print(
            f"{name}: loss {r['loss_token_weighted']:.4f} (token-weighted), "
            f"{r['loss_batch_weighted']:.4f} (batch-weighted, the book's), "
            f"perplexity {r['perplexity']:,.2f}, {r['batches']} batches"
        )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from gptref.run import generate_run

    print(
        generate_run(
            args.checkpoint,
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
            device=args.device,
        )  # fmt: skip
    )
    return 0


def _weights(args: argparse.Namespace) -> int:
    from gptref import weights

    if args.weights_command == "import-hf":
        path = weights.import_hf(args.safetensors, args.out)
        print(f"wrote gptref checkpoint {path}")
    else:
        path = weights.export_hf(args.checkpoint, args.out)
        print(f"wrote Hugging Face safetensors {path}")
    return 0


COMMANDS = {
    "prepare": _prepare,
    "train": _train,
    "eval": _eval,
    "generate": _generate,
    "weights": _weights,
    "bench": _bench,
    "plan": _plan,
    "conformance": _conformance,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, OSError, FloatingPointError) as e:
        if args.debug:
            raise
        print(f"gptref {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gptref {args.command}: aborted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
