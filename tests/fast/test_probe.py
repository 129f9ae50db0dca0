"""``--fast`` chooses by measurement (``gptref.fast.probe``, ``gptref.fast.choice``): bf16 where
this CPU's bf16 matmul is fast, float32 where it is slow, explicit flags over both, and a cache
that is never trusted blindly.

The decision is tested with the probe's matmul timer replaced by stated rates (the issue's
AVX2 numbers: bf16 1.3 vs float32 119 GFLOP/s), and against the real kernels in processes
where oneDNN's bf16 kernels are forbidden (``ONEDNN_MAX_CPU_ISA=AVX2``: the generic fallback
an AVX2-only CPU runs) or, on a CPU with bf16 units, allowed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gptref.bench.compare import left_out, standard_variants
from gptref.cli.train import Args
from gptref.fast import CPU_BUNDLE, FAST_BF16, FAST_FP32, choose_fast
from gptref.fast import probe as fast_probe
from gptref.fast.probe import BF16_MIN_SPEEDUP, Probe, bf16_pays, cpu_description

AVX2_RATES = {"float32": 119e9, "bfloat16": 1.3e9}  # the AVX2 EPYC
NATIVE_RATES = {"float32": 100e9, "bfloat16": 205e9}  # AVX512-BF16, one core


class FakeTimer:
    """The probe's matmul timer replaced: ``rates[dtype]`` FLOP/s; each call recorded."""

    def __init__(self) -> None:
        self.rates: dict[str, float] = {}
        self.calls: list[str] = []

    def update(self, rates: dict[str, float]) -> None:
        self.rates.update(rates)

    def __call__(self, dtype: str, *args, **kwargs) -> float:
        self.calls.append(dtype)
        return self.rates[dtype]


@pytest.fixture
def rates(monkeypatch, tmp_path) -> FakeTimer:
    """A FakeTimer in place of the probe's matmul timer; the cache in a fresh folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    timer = FakeTimer()
    monkeypatch.setattr(fast_probe, "matmul_flops", timer)
    return timer


def test_the_probe_picks_fp32_where_bf16_matmuls_are_slow(rates):
    """bf16 at 1.3 GFLOP/s against float32's 119: the float32 bundle, with the numbers said."""
    rates.update(AVX2_RATES)
    choice = choose_fast("cpu", cache=False)
    assert choice.paths == FAST_FP32.replace(**CPU_BUNDLE), choice
    line = choice.line()
    assert line.startswith("fast paths: sdpa, fused layers, fused AdamW, chunked loss; fp32 ("), (
        line
    )
    assert "no native bf16 matmul: 1.3 vs 119 GFLOP/s" in line, line


def test_the_probe_picks_bf16_where_bf16_matmuls_are_fast(rates):
    rates.update(NATIVE_RATES)
    choice = choose_fast("cpu", cache=False)
    assert choice.paths == FAST_BF16.replace(**CPU_BUNDLE), choice
    assert "; bf16 (this CPU multiplies bf16 2.0x faster: 205 vs 100 GFLOP/s" in choice.line()


@given(fp32=st.floats(1e8, 1e13), ratio=st.floats(0.001, 10))
def test_bf16_is_chosen_exactly_when_its_matmul_gains_the_threshold(fp32, ratio):
    """bf16_pays(probe) <=> bf16 FLOP/s >= BF16_MIN_SPEEDUP x float32's, for any rates."""
    probe = Probe(fp32, fp32 * ratio)
    assert bf16_pays(probe) == (probe.bf16_flops / probe.fp32_flops >= BF16_MIN_SPEEDUP)


def test_explicit_flags_win_over_the_chosen_bundle(rates):
    """--fast --dtype bfloat16 --loss full on a slow-bf16 CPU: bf16 and the full loss, the
    rest of the bundle kept, and the printed line says the dtype was chosen explicitly."""
    rates.update(AVX2_RATES)
    args = Args.from_flags({"use_fast": True, "device": "cpu", "dtype": "bfloat16",
                            "loss": "full"})  # fmt: skip
    assert args.run.fast == FAST_BF16, args.run.fast
    assert "bf16 (chosen explicitly; this CPU has no native bf16 matmul" in args.fast_line
    fast_only = Args.from_flags({"use_fast": True, "device": "cpu"})
    assert fast_only.run.fast == FAST_FP32.replace(**CPU_BUNDLE)


def test_without_fast_no_probe_runs(rates):
    args = Args.from_flags({"device": "cpu"})
    assert args.fast_line is None and rates.calls == []
    assert args.run.fast.dtype == "float32" and args.run.fast.loss == "full"


def test_the_cache_answers_the_second_time_without_measuring(rates):
    rates.update(NATIVE_RATES)
    first = fast_probe.probe_cpu()
    second = fast_probe.probe_cpu()
    assert rates.calls == ["float32", "bfloat16"], rates.calls
    assert (first.cached, second.cached) == (False, True)
    assert (second.fp32_flops, second.bf16_flops) == (100e9, 205e9)
    assert ", cached)" in choose_fast("cpu").line()


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xffnot json",
        b'{"format": "something else", "entries": []}',
        b"[1, 2, 3]",
        b'{"format": "gptref fast-path probe, version 1", "entries": "x"}',
    ],
    ids=["garbage", "foreign-format", "a-list", "entries-not-a-list"],
)
def test_a_damaged_or_foreign_cache_file_is_measured_over_and_replaced(rates, content):
    rates.update(AVX2_RATES)
    path = fast_probe.cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    probe = fast_probe.probe_cpu()
    assert not probe.cached and rates.calls == ["float32", "bfloat16"]
    entries = json.loads(path.read_text())["entries"]
    assert [e["bf16_flops"] for e in entries] == [1.3e9]


@pytest.mark.parametrize(
    "values",
    [{"fp32_flops": 1e11, "bf16_flops": -5.0}, {"fp32_flops": 1e11, "bf16_flops": "fast"},
     {"fp32_flops": float("inf"), "bf16_flops": 1e12}, {"fp32_flops": 1e11}],
    ids=["negative", "a-string", "infinite", "missing"],
)  # fmt: skip
def test_an_entry_with_impossible_values_is_not_trusted(rates, values):
    """This machine's key with values no measurement gives: measured again, and the slow
    bf16 of this (stated) CPU is what decides, not the entry."""
    rates.update(AVX2_RATES)
    path = fast_probe.cache_path()
    path.parent.mkdir(parents=True)
    entry = {"key": cpu_description(), **values}
    data = {"format": fast_probe.CACHE_FORMAT, "entries": [entry]}
    path.write_text(json.dumps(data))  # json writes inf as Infinity, which json reads back
    assert choose_fast("cpu").paths.dtype == "float32"
    assert rates.calls == ["float32", "bfloat16"]


def test_another_machines_entry_is_ignored_and_kept(rates):
    """An entry saying bf16 is fast, under another CPU's key (or torch, threads, kernel
    environment): ignored here; both entries stay in the file."""
    rates.update(AVX2_RATES)
    path = fast_probe.cache_path()
    path.parent.mkdir(parents=True)
    for change in ({"cpu_model": "Other CPU"}, {"torch_version": "0.0"}, {"threads": 999},
                   {"env": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}}):  # fmt: skip
        other = {**cpu_description(), **change}
        data = {"format": fast_probe.CACHE_FORMAT,
                "entries": [{"key": other, "fp32_flops": 1e11, "bf16_flops": 4e11}]}  # fmt: skip
        path.write_text(json.dumps(data))
        assert choose_fast("cpu").paths.dtype == "float32", change
        keys = [e["key"] for e in json.loads(path.read_text())["entries"]]
        assert keys == [other, cpu_description()], change


def test_the_kernel_environment_is_part_of_the_key(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    plain = cpu_description()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_description() != plain
    assert cpu_description()["env"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_an_unwritable_cache_costs_only_a_new_measurement(rates, tmp_path, monkeypatch):
    """$XDG_CACHE_HOME is a file: the probe measures, answers, and raises nothing."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    rates.update(NATIVE_RATES)
    assert choose_fast("cpu").paths.dtype == "bfloat16"
    assert choose_fast("cpu").paths.dtype == "bfloat16"
    assert rates.calls == ["float32", "bfloat16"] * 2


def test_compare_leaves_a_very_slow_bf16_bundle_out_and_says_why(rates):
    rates.update(AVX2_RATES)
    choice = choose_fast("cpu", cache=False)
    variants = standard_variants("cpu", choice=choice)
    assert [p.dtype for p in variants.values()] == ["float32", "float32"], variants
    assert "bf16 left out: this CPU multiplies bf16 92x slower than fp32" in left_out(choice)
    rates.update(NATIVE_RATES)
    choice = choose_fast("cpu", cache=False)
    variants = standard_variants("cpu", choice=choice, compile=True)
    assert list(variants) == ["fp32 reference", "--fast (bf16)", "fast in fp32",
                              "--fast (bf16) + compile"]  # fmt: skip
    assert left_out(choice) is None


def _choice_in_a_process(**env: str) -> dict:
    code = ("import json; from gptref.fast import choose_fast; c = choose_fast('cpu', "
            "cache=False); print(json.dumps({'dtype': c.paths.dtype, 'line': c.line()}))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120, check=True)  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


x86_only = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="ONEDNN_MAX_CPU_ISA names x86 ISAs"
)


@x86_only
def test_the_real_probe_picks_fp32_where_onednn_may_not_use_bf16_units():
    """With oneDNN held to AVX2 (the kernels an AVX2-only CPU gets), PyTorch's bf16 matmul is
    its generic fallback: the real probe measures it slow and chooses float32."""
    got = _choice_in_a_process(ONEDNN_MAX_CPU_ISA="AVX2")
    assert got["dtype"] == "float32", got
    assert "no native bf16 matmul" in got["line"], got


@x86_only
@pytest.mark.skipif(
    not {"avx512_bf16", "amx_bf16"} & set(cpu_description()["cpu_flags"])
    or not torch.backends.mkldnn.is_available(),
    reason="this CPU has no bf16 units (AVX512-BF16 or AMX)",
)
def test_the_real_probe_picks_bf16_on_a_cpu_with_bf16_units():
    got = _choice_in_a_process()
    assert got["dtype"] == "bfloat16", got
