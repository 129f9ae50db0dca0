"""gptref/bench.py: the sweep behind `gptref bench`, its outputs, and `gptref plan`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from gptref.bench import flops_per_token, format_table, run_bench, write_results
from gptref.model import GPT_CONFIG_124M, GPT_CONFIG_TINY
from gptref.plan.memory import estimate_training_memory
from gptref.plan.planner import format_plan, parse_bytes, plan

# GPT_CONFIG_TINY's shape with a 128-word vocabulary and 16 tokens: a step takes milliseconds
MICRO = {**GPT_CONFIG_TINY, "vocab_size": 128, "context_length": 16}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24GiB", 24 * 2**30),
        ("24 GiB", 24 * 2**30),
        ("24G", 24 * 2**30),
        ("24gib", 24 * 2**30),
        ("24GB", 24 * 10**9),
        ("512MB", 512 * 10**6),
        ("512MiB", 512 * 2**20),
        ("1.5KiB", 1536),
        ("2T", 2 * 2**40),
        ("100", 100),
        ("100B", 100),
        (4096, 4096),
    ],
)
def test_parse_bytes_reads_binary_and_decimal_units(text, expected):
    """KiB/K/MiB/M/GiB/G/TiB/T are powers of 1024, KB/MB/GB/TB powers of 1000, bare numbers bytes."""
    assert parse_bytes(text) == expected, (text, parse_bytes(text), expected)


@pytest.mark.parametrize("text", ["", "GiB", "24XB", "-1", "1 2", "24 GiBs", "lots", "iB"])
def test_parse_bytes_rejects_what_is_not_a_size(text):
    """Anything but <number><unit> is a ValueError that quotes the text."""
    with pytest.raises(ValueError, match="expected a size like '24GiB'"):
        parse_bytes(text)


def test_flops_per_token_is_nanogpts_count_for_gpt2_small():
    """6N + 12*L*E*T with N = parameters minus tok_emb and pos_emb: for GPT-124M at T=1024
    that is nanoGPT's count (its N keeps wte, which is also its lm_head, and drops wpe)."""
    n = 163_009_536 - 50257 * 768 - 1024 * 768  # GPTModel(GPT_CONFIG_124M) has 163,009,536
    expected = 6 * n + 12 * 12 * 768 * 1024
    assert flops_per_token(GPT_CONFIG_124M) == expected, (
        flops_per_token(GPT_CONFIG_124M),
        expected,
    )
    assert round(expected / 1e6) == 855, expected


def test_memory_guard_records_oom_rows_and_the_sweep_goes_on():
    """A prediction over memory_limit becomes an OOM row, without building the model."""
    rows = run_bench(
        "124M", 256, batch_sizes=[1, 2], memory_limit="1MiB", isolate=False, progress=False
    )
    assert [r["status"] for r in rows] == ["OOM", "OOM"], rows
    assert all("memory limit 1.00 MiB" in r["note"] for r in rows), rows
    table = format_table(rows)
    assert table.count("| OOM: predicted") == 2, table


def test_sweep_rows_table_json_and_plot(tmp_path):
    """Every (dtype, attn, batch) gets an ok row with consistent timing and memory fields, and
    write_results writes a table of one line per row, the same rows as JSON, and a plot."""
    rows = run_bench(
        MICRO,
        batch_sizes=[1, 3],
        dtypes=["float32", "bfloat16"],
        attns=["sdpa"],
        steps=3,
        isolate=False,
        progress=False,
    )
    assert len(rows) == 4, rows
    for r in rows:
        assert r["status"] == "ok", r
        assert r["step_s_min"] <= r["step_s_q1"] <= r["step_s_median"] <= r["step_s_q3"], r
        assert r["step_s_q3"] <= r["step_s_max"], r
        assert r["tokens_per_s"] == pytest.approx(r["batch_size"] * 16 / r["step_s_median"]), r
        assert r["peak_bytes_measured"] > 0 and r["mfu"] > 0, r
        autocast = "bfloat16" if r["dtype"] == "bfloat16" else None
        cfg = {**MICRO, "attn_impl": r["attn"]}
        expected = estimate_training_memory(cfg, r["batch_size"], autocast=autocast).total
        assert r["peak_bytes_predicted"] == expected, (r, expected)
    paths = write_results(rows, tmp_path)
    lines = paths["md"].read_text().splitlines()
    assert len(lines) == 2 + len(rows), lines
    assert len({line.count("|") for line in lines}) == 1, lines
    saved = json.loads(paths["json"].read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)), saved["rows"]
    assert {"cpu_model", "torch_version"} <= set(saved["machine"]), saved["machine"]
    pytest.importorskip("matplotlib")
    assert paths["png"].stat().st_size > 0, paths


def test_batches_smaller_than_accumulation_are_skipped():
    """accumulation_steps = 2: batch 1 cannot be split (a 'skipped' row), batch 4 runs as 2 x 2."""
    rows = run_bench(
        MICRO, batch_sizes=[1, 4], steps=1, accumulation_steps=2, isolate=False, progress=False
    )
    assert [r["status"] for r in rows] == ["skipped", "ok"], rows
    micro = estimate_training_memory(MICRO, 2, accumulation_steps=2).total
    assert rows[1]["peak_bytes_predicted"] == micro, (rows[1], micro)


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/clear_refs").exists(),
    reason="peak RSS needs Linux /proc",
)
def test_isolated_tiny_preset_peak_is_within_10_percent_of_the_prediction():
    """isolate=True (timing in one child process, memory in another with glibc's mmap threshold
    fixed): GPT_CONFIG_TINY at batch 4, float32, predicted / measured peak in [0.9, 1.1]."""
    (row,) = run_bench(GPT_CONFIG_TINY, batch_sizes=[4], steps=1, progress=False)
    assert row["status"] == "ok", row
    assert row["memory_mode"] == "rss, MALLOC_MMAP_THRESHOLD_=65536", row
    assert row["peak_rss_default_malloc"] > 0, row
    ratio = row["peak_bytes_predicted"] / row["peak_bytes_measured"]
    assert 0.9 <= ratio <= 1.1, row


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be >= 1, got 0"),
        ({"warmup": 0}, "warmup must be >= 1"),
        ({"dtypes": ["float16"]}, "dtype must be one of"),
        ({"devices": ["tpu"]}, "device must be 'cpu' or 'cuda'"),
        ({"batch_sizes": [0]}, "batch sizes must be ints >= 1"),
        ({"preset": "huge"}, "unknown preset 'huge'"),
    ],
)
def test_run_bench_rejects_bad_arguments(kwargs, message):
    """User errors are ValueErrors naming the value, raised before anything runs."""
    args = {"preset": MICRO, "batch_sizes": [1], "isolate": False, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        run_bench(**args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_value_error():
    """--device cuda on a machine without CUDA fails with advice, not a traceback."""
    with pytest.raises(ValueError, match="no CUDA device"):
        run_bench(MICRO, devices=["cuda"], progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_sweep_measures_allocated_memory():
    """On CUDA the peak is max_memory_allocated, and the prediction is within 10 %."""
    rows = run_bench(MICRO, batch_sizes=[1, 4], devices=["cuda"], isolate=False, progress=False)
    for r in rows:
        assert r["status"] == "ok" and r["memory_mode"] == "cuda-max-memory-allocated", r
        assert 0.9 <= r["peak_bytes_predicted"] / r["peak_bytes_measured"] <= 1.1, r


def test_plan_reaches_the_target_and_format_plan_prints_it():
    """plan(): micro * accumulation >= target within the budget; format_plan says so in words."""
    result = plan("124M", "24GiB", 1024, context=1024)
    assert result.effective_batch >= 1024 and result.predicted_peak <= 24 * 2**30, result
    text = format_plan("124M", "24GiB", 1024, context=1024)
    expected = f"micro-batch {result.micro_batch} x {result.accumulation_steps} accumulation steps"
    assert expected in text and "budget 24.00 GiB" in text, text


def test_plan_rejects_an_unknown_dtype():
    """--dtype takes float32 or bfloat16, as gptref train's."""
    with pytest.raises(ValueError, match="dtype must be one of"):
        plan("tiny", "1GiB", 8, dtype="int8")


def test_compare_levers_rows_carry_the_levers_and_their_ratio_to_the_reference():
    """compare_levers: one ok row per lever combination and batch size, the levers recorded
    (loss, loss_chunk, recompute), the prediction made with them, the reference's ratio 1."""
    from gptref.bench.levers import LEVERS, compare_levers, format_levers

    rows = compare_levers(MICRO, None, [2], steps=1, progress=False, isolate=False)
    assert [r["variant"] for r in rows] == list(LEVERS), rows
    assert all(r["status"] == "ok" for r in rows), rows
    by = {r["variant"]: r for r in rows}
    assert by["reference"]["tokens_per_s_ratio"] == 1.0
    both = by["chunked loss + recompute"]
    assert (both["loss"], both["loss_chunk"], both["recompute"]) == ("chunked", 1024, 1), both
    expected = estimate_training_memory(
        {**MICRO, "recompute": 1}, 2, loss_chunk=1024
    ).total  # the row's prediction has the levers
    assert both["peak_bytes_predicted"] == expected, both
    table = format_levers(rows)
    assert len(table.splitlines()) == 2 + len(rows) and "chunked loss + recompute" in table


def test_format_accuracy_summarises_each_lever_combination():
    """format_accuracy: the overall min/median/max of predicted/measured and one line per
    (loss, recompute) combination."""
    from gptref.bench.levers import format_accuracy

    rows = [
        {"preset": "tiny", "context": 64, "dtype": "float32", "attn": "reference",
         "loss_chunk": chunk, "recompute": k, "batch_size": 1, "predicted_bytes": 110,
         "measured_bytes": 100, "peak_phase": "x", "ratio": 1.1 if chunk else 0.95}
        for chunk in (None, 1024) for k in (0, 1)
    ]  # fmt: skip
    text = format_accuracy(rows)
    assert "over all 4 rows: min 0.950, median 1.025, max 1.100" in text, text
    assert "- chunked loss (1024 rows), --recompute 1: 1 rows" in text, text


def test_interleaved_paths_rotate_the_start_and_relate_every_row_to_the_first_and_the_ceiling():
    """interleaved_paths: round r runs the variants from the (r mod n)-th on; a row's speed-up
    is the median of its per-round ratios to the first variant (exactly 1 for the first), its
    ceiling share tokens/s x FLOPs/token over the median ceiling; the table has a line per row."""
    import statistics

    from gptref.bench.inprocess import format_paths, interleaved_paths
    from gptref.bench.measure import machine_info
    from gptref.fast import REFERENCE

    variants = {"ref": REFERENCE, "sdpa": REFERENCE.replace(attn="sdpa"),
                "chunked": REFERENCE.replace(loss="chunked")}  # fmt: skip
    got = interleaved_paths(variants, MICRO, None, 2, rounds=3, steps=1, ceiling_size=64,
                            progress=False)  # fmt: skip
    orders = [list(r["variants"]) for r in got["rounds"]]
    assert orders == [["ref", "sdpa", "chunked"], ["sdpa", "chunked", "ref"],
                      ["chunked", "ref", "sdpa"]], orders  # fmt: skip
    rows = {r["variant"]: r for r in got["rows"]}
    assert rows["ref"]["speedup"] == rows["ref"]["speedup_cpu"] == 1.0
    ratios = [r["variants"]["sdpa"]["tokens_per_s"] / r["variants"]["ref"]["tokens_per_s"]
              for r in got["rounds"]]  # fmt: skip
    assert rows["sdpa"]["speedup"] == statistics.median(ratios)
    ceiling = statistics.median(r["ceiling"]["wall"] for r in got["rounds"])
    share = rows["chunked"]["tokens_per_s"] * flops_per_token(MICRO) / ceiling
    assert rows["chunked"]["ceiling_share"] == pytest.approx(share, rel=1e-12)
    assert got["flops_per_token"] == flops_per_token(MICRO)
    table = format_paths({**got, "machine": machine_info(), "auto": "sdpa"})
    assert table.splitlines()[0].startswith("CPU ") and "capability" in table.splitlines()[0]
    assert sum(line.startswith("| ") for line in table.splitlines()) == 2 + len(variants)


@pytest.mark.slow
def test_compile_cost_states_the_compile_time_apart_and_when_it_pays():
    """compile_cost on a micro model: the eager and compiled rates and their ratio, the
    compile time (> 0: the first compiled step compiles) and the break-even run length
    consistent with them (compile_s x eager step / (eager step - compiled step))."""
    from gptref.bench.inprocess import compile_cost
    from gptref.fast import REFERENCE

    row = compile_cost(REFERENCE, MICRO, None, 2, rounds=2)
    assert row["compile_s"] > 0 and row["compile_cpu_s"] > 0, row
    tokens = 2 * MICRO["context_length"]
    eager, compiled = tokens / row["eager_tokens_per_s"], tokens / row["compiled_tokens_per_s"]
    assert row["speedup"] == pytest.approx(eager / compiled)
    if compiled < eager:
        expected = row["compile_s"] * eager / (eager - compiled)
        assert row["break_even_s"] == pytest.approx(expected), row
    else:
        assert row["break_even_s"] is None, row
