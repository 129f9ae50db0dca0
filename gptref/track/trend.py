"""The trend report: one static page over a store's history (``gptref track report``).

``write_report(store, out)`` writes ``out/index.html`` (one file: the figures are embedded,
so it opens offline, by double-click or from CI's artifacts), the same figures as PNG files
beside it (``trend.png``, all benchmarks on one sheet, is what the README shows) and
``trend.json`` (the flagged steps). Each benchmark's panel plots seconds per call (the
median round, the rounds' range as a bar) along the history, one line per torch version
and Python, commits in commit order; its instruction counts in a second panel. A step
from one point to the next on a line is flagged, in red, when it is a regression: timed,
a significant slow-down (Mann-Whitney U and the unpaired bootstrap interval of
``gptref.track.stats``, the two runs not interleaved; it takes >= 5 rounds in each run to
reach p < 0.01) beyond the threshold; counted, an increase beyond the threshold. The in-run ratios (the book's loop over ``chunk``,
fast / reference, predicted / measured memory from the pytest suites' JSON) are their
own series.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gptref._io import atomic_write, atomic_write_json, atomic_write_text, writing
from gptref._owned import Kind, claim_dir, no_links, read_marker
from gptref.run.plot import pyplot
from gptref.track.counts import REPEATABILITY
from gptref.track.stats import THRESHOLD, compare_samples
from gptref.track.store import Entry, entries, iter_series

REPORT_FORMAT = "gptref.track.report"
RATIO_KEY = re.compile(r"(ratio|_over_|speedup)")
COUNT_KEYS = ("instructions", "ops", "peak_bytes")


def line_key(entry: Entry) -> str:
    """The series an entry belongs to: its torch version and Python."""
    python = entry.record["machine_info"].get("python_version") or "?"
    return f"torch {entry.torch}, Python {python}"


def x_label(entry: Entry) -> str:
    info = entry.record.get("commit_info") or {}
    commit = (info.get("id") or "")[:7]
    return commit + ("+" if info.get("dirty") else "") if commit else entry.label


def _x_order(store_entries: Sequence[Entry]) -> list[str]:
    """The x positions: each commit (or label) once, by commit time, else record time."""
    keyed: dict[str, str] = {}
    for e in store_entries:
        when = (e.record.get("commit_info") or {}).get("time") or e.record.get("datetime", "")
        keyed.setdefault(x_label(e), when)
    return sorted(keyed, key=lambda k: (keyed[k], k))


def timed_names(store_entries: Sequence[Entry]) -> list[str]:
    names: list[str] = []
    for e in store_entries:
        for b in e.record["benchmarks"]:
            if b.get("stats") and b["name"] not in names and b.get("group") != "ratios":
                names.append(b["name"])
    return names


def ratio_series(store_entries: Sequence[Entry]) -> list[tuple[str, str]]:
    """(benchmark name, extra_info key) of every ratio recorded in the store."""
    found: list[tuple[str, str]] = []
    for e in store_entries:
        found += [(n, "ratio") for n in e.ratio_names() if (n, "ratio") not in found]
        for b in e.record["benchmarks"]:
            for key, value in (b.get("extra_info") or {}).items():
                pair = (b["name"], key)
                ratio = key == "ratio" or RATIO_KEY.search(key)
                if isinstance(value, (int, float)) and ratio and pair not in found:
                    found.append(pair)
    return found


def flag_steps(
    store_entries: Sequence[Entry], thresholds: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Every step between consecutive points of a line that is a regression (module doc)."""
    order = _x_order(store_entries)
    flags = []
    lines: dict[str, list[Entry]] = {}
    for e in sorted(store_entries, key=lambda e: order.index(x_label(e))):
        lines.setdefault(line_key(e), []).append(e)
    for line, mine in lines.items():
        for name in timed_names(store_entries):
            limit = (thresholds or {}).get(name, THRESHOLD)
            points = [(e, e.times(name), e.extra(name).get("instructions")) for e in mine]
            points = [p for p in points if p[1] or p[2]]
            for (e0, t0, c0), (e1, t1, c1) in zip(points, points[1:], strict=False):
                step = {"benchmark": name, "line": line, "from": x_label(e0), "to": x_label(e1)}
                if t0 and t1 and len(t0) >= 2 and len(t1) >= 2:
                    v = compare_samples(name, t0, t1, threshold=limit, paired=False)
                    if v.regression:
                        flags.append({**step, "kind": "time", "ratio": v.ratio,
                                      "low": v.low, "high": v.high, "p": v.p_value})  # fmt: skip
                if c0 and c1 and c1 / c0 > 1 + max(limit, REPEATABILITY):
                    flags.append({**step, "kind": "instructions", "ratio": c1 / c0})
    return flags


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _plot_benchmark(ax_time, ax_count, name, store_entries, order, flags) -> None:
    lines = sorted({line_key(e) for e in store_entries})
    for i, line in enumerate(lines):
        mine = [e for e in store_entries if line_key(e) == line]
        pts = sorted(((order.index(x_label(e)), e) for e in mine if e.times(name)),
                     key=lambda p: p[0])  # fmt: skip
        if pts:
            xs = [x for x, _ in pts]
            data = [e.times(name) for _, e in pts]
            med = [sorted(d)[len(d) // 2] * 1e3 for d in data]
            err = [[m - min(d) * 1e3 for m, d in zip(med, data, strict=True)],
                   [max(d) * 1e3 - m for m, d in zip(med, data, strict=True)]]  # fmt: skip
            ax_time.errorbar(xs, med, yerr=err, fmt="o-", ms=4, capsize=2, label=line,
                             color=f"C{i}")  # fmt: skip
        counts = sorted(((order.index(x_label(e)), v) for e, v in
                         iter_series(mine, name, "instructions")), key=lambda p: p[0])  # fmt: skip
        if counts and ax_count is not None:
            ax_count.plot([x for x, _ in counts], [v / 1e6 for _, v in counts], "s--", ms=4,
                          color=f"C{i}", label=line)  # fmt: skip
    for f in flags:
        if f["benchmark"] == name:
            ax = ax_time if f["kind"] == "time" else ax_count
            if ax is not None:
                ax.axvspan(order.index(f["from"]), order.index(f["to"]), color="red", alpha=0.12)
    ax_time.set_title(f"{name}: CPU time", fontsize=9)
    ax_time.set_ylabel("ms per call", fontsize=8)
    if ax_count is not None:
        ax_count.set_title(f"{name}: instructions (callgrind)", fontsize=9)
        ax_count.set_ylabel("M instructions per call", fontsize=8)
        ax_count.ticklabel_format(axis="y", useOffset=False, style="plain")
    for ax in (ax_time, ax_count):
        if ax is not None:
            ax.set_xticks(range(len(order)), order, rotation=60, fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(True, alpha=0.3)


def _plot_ratios(ax, store_entries, order, series) -> None:
    """One line per ratio and torch/Python line (marker per line, colour per ratio)."""
    lines = sorted({line_key(e) for e in store_entries})
    for i, (name, key) in enumerate(series):
        for j, line in enumerate(lines):
            mine = [e for e in store_entries if line_key(e) == line]
            pts = sorted(((order.index(x_label(e)), v) for e, v in
                          iter_series(mine, name, key)), key=lambda p: p[0])  # fmt: skip
            if pts:
                label = (name if key == "ratio" else f"{name}: {key}")[:60]
                label += f" ({line})" if len(lines) > 1 else ""
                ax.plot([x for x, _ in pts], [v for _, v in pts], "osd^v<>"[j % 7] + "-",
                        ms=4, color=f"C{i % 10}", alpha=1 - 0.35 * (j % 2), label=label)  # fmt: skip
    low, high = ax.get_ylim()
    if low > 0 and high / low > 20:  # book-loop / chunk (~1000x) beside ~1x ratios
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.set_title("ratios measured within a run (machine speed cancels)", fontsize=9)
    ax.set_xticks(range(len(order)), order, rotation=60, fontsize=7)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)


def claim_report(out: Path, *, overwrite: bool) -> None:
    """``out`` may take a report: new, empty, or an earlier report (with ``overwrite``);
    never another folder, never through a link."""
    if out.is_dir():
        no_links(out, REPORT_FILES)
    claim_dir(out, REPORT, overwrite=overwrite)


def write_report(
    store: str | Path, out: str | Path, thresholds: Mapping[str, float] | None = None,
    title: str = "gptref performance history", *, overwrite: bool = False,
) -> dict[str, Path]:  # fmt: skip
    """The report of ``store`` into ``out`` -> {"html", "png", "json"} paths (module doc).
    ``out`` is new or empty, or an earlier report, replaced with ``overwrite``."""
    plt = pyplot()
    if plt is None:
        raise ValueError("gptref track report needs matplotlib: pip install 'gptref[plot]'")
    found = entries(store)
    if not found:
        raise ValueError(f"{store}: the store holds no runs yet; gptref track record first")
    out = Path(out)
    claim_report(out, overwrite=overwrite)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    order, names, flags = _x_order(found), timed_names(found), flag_steps(found, thresholds)
    ratios = ratio_series(found)
    counted = [n for n in names if any(iter_series(found, n, "instructions"))]
    cols = 3
    rows = -(-len(names) // cols) * (2 if counted else 1) + (1 if ratios else 0)
    fig = plt.figure(figsize=(4.2 * cols, 2.9 * rows))
    grid = fig.add_gridspec(rows, cols)
    for k, name in enumerate(names):
        r, c = divmod(k, cols)
        r *= 2 if counted else 1
        ax_t = fig.add_subplot(grid[r, c])
        ax_c = fig.add_subplot(grid[r + 1, c]) if name in counted else None
        _plot_benchmark(ax_t, ax_c, name, found, order, flags)
        if k == 0:
            ax_t.legend(fontsize=6)
    if ratios:
        _plot_ratios(fig.add_subplot(grid[rows - 1, :]), found, order, ratios)
    fig.suptitle(f"{title}: {len(found)} runs; red: a flagged regression", fontsize=11)
    fig.tight_layout()
    png = _figure_png(fig)
    plt.close(fig)
    paths = {"png": out / "trend.png", "html": out / "index.html", "json": out / "trend.json"}
    atomic_write(paths["png"], lambda tmp: tmp.write_bytes(png))
    atomic_write_text(paths["html"], _html(title, found, order, names, flags, png))
    # the report's marker (gptref._owned): written last, so a report is whole when it is ours
    atomic_write_json(paths["json"], {"format": REPORT_FORMAT, "flags": flags})
    return paths


def is_report(folder: Path) -> bool:
    """Whether ``folder`` holds a report ``write_report`` wrote: its trend.json (a regular
    file) says so (one of gptref 0.2, without the format, holds the flags alone)."""
    marker = read_marker(folder / "trend.json")
    return marker is not None and (
        marker.get("format") == REPORT_FORMAT or set(marker) == {"flags"}
    )


# what a report folder is, to the ownership rule (gptref._owned)
REPORT = Kind("a gptref track report", is_report)
REPORT_FILES = ("index.html", "trend.png", "trend.json")


def _html(title, found, order, names, flags, png: bytes) -> str:
    esc = html.escape
    rows = []
    for e in found:
        times = {n: e.times(n) for n in names}
        cells = "".join(
            f"<td>{sorted(t)[len(t) // 2] * 1e3:.3f}</td>" if t else "<td></td>"
            for t in times.values()
        )  # fmt: skip
        rows.append(f"<tr><td>{esc(e.path.name)}</td><td>{esc(x_label(e))}</td>"
                    f"<td>{esc(line_key(e))}</td>{cells}</tr>")  # fmt: skip
    flag_rows = "".join(
        f"<tr><td>{esc(f['benchmark'])}</td><td>{esc(f['kind'])}</td><td>{esc(f['line'])}</td>"
        f"<td>{esc(f['from'])} &rarr; {esc(f['to'])}</td><td>{f['ratio']:.3f}x"
        + (f" [{f['low']:.3f}, {f['high']:.3f}] p={f['p']:.2g}" if "low" in f else "")
        + "</td></tr>"
        for f in flags
    )  # fmt: skip
    head = "".join(f"<th>{esc(n)} (ms)</th>" for n in names)
    image = base64.b64encode(png).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px}}img{{max-width:100%}}</style></head><body>
<h1>{esc(title)}</h1><p>{len(found)} runs, {len(order)} points of history.</p>
<h2>Flagged regressions ({len(flags)})</h2>
<table><tr><th>benchmark</th><th>kind</th><th>line</th><th>step</th><th>ratio</th></tr>
{flag_rows or '<tr><td colspan="5">none</td></tr>'}</table>
<h2>Trends</h2><img alt="trend plots" src="data:image/png;base64,{image}">
<h2>Runs (median round, ms per call)</h2>
<table><tr><th>file</th><th>commit</th><th>line</th>{head}</tr>{"".join(rows)}</table>
</body></html>
"""
