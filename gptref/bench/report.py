"""What a benchmark run leaves behind: markdown tables, the rows as JSON with the machine,
and the sweep's plot (tokens/s and peak memory against batch size)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gptref._io import atomic_write_text, writing
from gptref._owned import Exists, Kind, claim_dir, lstat, no_links, read_marker
from gptref.bench.measure import machine_info
from gptref.plan.memory import format_bytes
from gptref.run.plot import pyplot, save_figure


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A header and rows of cells -> a markdown table."""
    lines = [head, ["---"] * len(head), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


SWEEP_COLUMNS = [
    "device",
    "dtype",
    "attn",
    "batch",
    "accum",
    "tokens/s",
    "step median (s)",
    "step IQR (s)",
    "peak measured",
    "peak predicted",
    "predicted/measured",
    "RSS, glibc defaults",
    "MFU",
    "CPU share",
    "status",
]
COMPARISON_COLUMNS = [
    "variant",
    "dtype",
    "attn",
    "AdamW",
    "fused layers",
    "compile",
    "vocab pad",
    "model",
    "tokens/s",
    "step median (s)",
    "speed-up",
    "MFU",
    "CPU share",
]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of ``run_bench`` -> a markdown table, one line per row. "peak measured" is the
    estimate's quantity (see ``measure_config``); "RSS, glibc defaults" is what ``top`` shows;
    "CPU share" is the CPU time the timed steps got over wall time x threads: well below its
    usual value (~0.9 on an idle machine), other work slowed the row down."""
    return markdown_table(SWEEP_COLUMNS, [_sweep_cells(r) for r in rows])


def format_comparison(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of ``compare_paths`` -> a markdown table with the speed-up over the first row."""
    return markdown_table(COMPARISON_COLUMNS, [_comparison_cells(r) for r in rows])


def _sweep_cells(r: Mapping[str, Any]) -> list[str]:
    ok, measured = r["status"] == "ok", r.get("peak_bytes_measured")
    return [
        r["device"], r["dtype"], r["attn"], str(r["batch_size"]), str(r["accumulation_steps"]),
        f"{r['tokens_per_s']:,.0f}" if ok else "",
        f"{r['step_s_median']:.3f}" if ok else "",
        f"{r['step_s_q1']:.3f}-{r['step_s_q3']:.3f}" if ok else "",
        format_bytes(measured) if measured else "",
        format_bytes(r["peak_bytes_predicted"]),
        f"{r['peak_bytes_predicted'] / measured:.3f}" if measured else "",
        format_bytes(r["peak_rss_default_malloc"]) if r.get("peak_rss_default_malloc") else "",
        *_load_cells(r),
        r["status"] if ok else f"{r['status']}: {r.get('note', '')}",
    ]  # fmt: skip


def _comparison_cells(r: Mapping[str, Any]) -> list[str]:
    ok = r["status"] == "ok"
    return [
        r["variant"], r["dtype"], r["attn"], r["optimizer"],
        "yes" if r.get("fused_layers") else "no", "yes" if r["compile"] else "no",
        str(r["vocab_pad"]), r["model"],
        f"{r['tokens_per_s']:,.0f}" if ok else r["status"],
        f"{r['step_s_median']:.3f}" if ok else "",
        f"{r['speedup']:.2f}x" if ok and r.get("speedup") else "",
        *_load_cells(r),
    ]  # fmt: skip


def _load_cells(r: Mapping[str, Any]) -> list[str]:
    """MFU and CPU share: how busy the device was, and how much of the CPU the row got."""
    ok = r["status"] == "ok"
    return [
        f"{100 * r['mfu']:.1f} %" if ok and r.get("mfu") else "",
        f"{r['cpu_share']:.2f}" if ok and r["device"] == "cpu" else "",
    ]


RESULTS_FORMAT = "gptref.bench"  # the format of a results file (name.json), its marker


def _is_results_file(file: Path) -> bool:
    marker = read_marker(file)
    return marker is not None and (
        marker.get("format") == RESULTS_FORMAT or set(marker) == {"machine", "rows"}
    )


def is_results(folder: Path) -> bool:
    """Whether ``folder`` holds results ``write_results`` wrote (a NAME.json of them)."""
    return any(_is_results_file(f) for f in folder.glob("*.json"))


# what a results folder is, to the ownership rule (gptref._owned)
RESULTS = Kind("gptref benchmark results", is_results)


def claim_results(out: Path, name: str = "bench", *, overwrite: bool = False) -> None:
    """``out`` may take ``name``.md/.json/.png: a new or empty folder, or one of results;
    those files new, or results gptref wrote (their ``name``.json says so), replaced only
    with ``overwrite``. Anything else there is left alone; nothing is written through a link."""
    files = [f"{name}.{ext}" for ext in ("md", "json", "png")]
    if out.is_dir():
        no_links(out, files)
    claim_dir(out, RESULTS, overwrite=True)
    present = [f for f in files if lstat(out / f) is not None]
    if not present:
        return
    if not _is_results_file(out / f"{name}.json"):
        raise ValueError(
            f"{out / present[0]} exists and is not a result gptref wrote; gptref replaces only "
            "its own files: remove it yourself or choose another folder"
        )
    if not overwrite:
        raise Exists(out / f"{name}.json", f"results ({', '.join(present)})")


def write_results(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    name: str = "bench",
    *,
    overwrite: bool = False,
    head: str | None = None,
) -> dict[str, Path]:
    """-> paths of ``name``.md (``head``, when given, then the table: ``format_comparison``
    for ``compare_paths`` rows, else ``format_table``), ``name``.json (machine info + rows)
    and, for a sweep, ``name``.png (left out when matplotlib is not installed). Earlier
    results of ``name`` there are replaced only with ``overwrite`` (``claim_results``)."""
    out = Path(out_dir)
    claim_results(out, name, overwrite=overwrite)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{name}.md", "json": out / f"{name}.json"}
    comparison = bool(rows) and "variant" in rows[0]
    table = (format_comparison if comparison else format_table)(rows)
    atomic_write_text(paths["md"], (f"{head}\n\n" if head else "") + table + "\n")
    record = {"format": RESULTS_FORMAT, "machine": machine_info(), "rows": list(rows)}
    atomic_write_text(paths["json"], json.dumps(record, indent=1) + "\n")
    if comparison:
        return paths
    png = plot_bench(rows, out / f"{name}.png")
    if png is not None:
        paths["png"] = png
    return paths


def plot_bench(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """tokens/s (error bars: the interquartile range of the step times) and peak memory
    (measured solid, predicted dashed) against batch size, one line per device/dtype/attn,
    titled with the preset, context, torch and machine -> ``path``; None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4))
    keys = sorted({(r["device"], r["dtype"], r["attn"]) for r in rows})
    for key in keys:
        mine = sorted(
            (r for r in rows if (r["device"], r["dtype"], r["attn"]) == key),
            key=lambda r: r["batch_size"],
        )
        ok = [r for r in mine if r["status"] == "ok"]
        label = "/".join(key)
        tokens = [r["batch_size"] * r["context"] for r in ok]
        rate = [r["tokens_per_s"] for r in ok]
        low = [t / r["step_s_q3"] for t, r in zip(tokens, ok, strict=True)]
        high = [t / r["step_s_q1"] for t, r in zip(tokens, ok, strict=True)]
        bars = speed.errorbar(
            [r["batch_size"] for r in ok], rate, fmt="o-", capsize=3, label=label,
            yerr=[[m - lo for m, lo in zip(rate, low, strict=True)],
                  [hi - m for m, hi in zip(rate, high, strict=True)]],
        )  # fmt: skip
        line = bars.lines[0]
        memory.plot(
            [r["batch_size"] for r in ok],
            [r["peak_bytes_measured"] / 2**30 for r in ok],
            "o-",
            color=line.get_color(),
            label=f"{label} measured",
        )
        memory.plot(
            [r["batch_size"] for r in mine],
            [r["peak_bytes_predicted"] / 2**30 for r in mine],
            "x--",
            color=line.get_color(),
            label=f"{label} predicted",
        )
    for ax, ylabel in ((speed, "tokens / s"), (memory, "peak memory (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (rows)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    machine = machine_info()
    first = rows[0] if rows else {}
    fig.suptitle(
        f"gptref bench: {first.get('preset', '?')}, context {first.get('context', '?')}; torch "
        f"{machine['torch_version']}, {machine['cuda_device'] or machine['cpu_model']}, "
        f"{machine['torch_threads']} threads",
        fontsize=9,
    )
    return save_figure(fig, path)
