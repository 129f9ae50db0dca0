"""gptref/run/config.py and gptref/fast/paths.py: RunConfig and FastPaths, validated once, named by field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gptref._check import FieldError
from gptref.fast.paths import FAST_BF16, FAST_FP32, REFERENCE, FastPaths
from gptref.run.config import RunConfig, book, book_text_mismatch


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"batch_size": 0}, "batch_size", "must be >= 1, got 0"),
        ({"lr": -1.0}, "lr", "must be > 0, got -1.0; the book uses 4e-4"),
        ({"train_ratio": 1.5}, "train_ratio", "must be in (0, 1), got 1.5; e.g. 0.9"),
        ({"grad_clip": 0.0}, "grad_clip", "must be > 0, got 0.0"),
        ({"min_lr": 0.5}, "min_lr", "must be in [0, 0.001], got 0.5"),
        ({"seed": 2**32}, "seed", "must be in [0, 2**32), got 4294967296"),
        ({"max_steps": 0}, "max_steps", "must be >= 1, got 0"),
        ({"preset": "huge"}, "preset", "must be one of 'tiny', 'small', '124M', got 'huge'"),
    ],
)
def test_run_config_names_the_field_and_the_value(changes, field, problem):
    """A bad setting is a FieldError (a ValueError) that names the field, never a flag."""
    with pytest.raises(FieldError) as error:
        RunConfig(**changes)
    assert (error.value.where, error.value.name, error.value.problem) == (
        "RunConfig",
        field,
        problem,
    )
    assert str(error.value) == f"RunConfig: {field} {problem}"
    assert "--" not in str(error.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"attn": "flash"}, "attn"), ({"dtype": "float16"}, "dtype"), ({"vocab_pad": 0}, "vocab_pad")],
)
def test_fast_paths_name_the_field(changes, field):
    with pytest.raises(FieldError) as error:
        FastPaths(**changes)
    assert error.value.name == field and error.value.where == "FastPaths", str(error.value)


def test_to_dict_is_flat_and_from_dict_inverts_it():
    """One key per setting (the fast paths' beside the others), JSON-able, and back."""
    run = book().replace(dtype="bfloat16", optimizer="fused", max_steps=7)
    flat = run.to_dict()
    assert flat["dtype"] == "bfloat16" and flat["optimizer"] == "fused" and "fast" not in flat
    assert RunConfig.from_dict(json.loads(json.dumps(flat))) == run


def test_a_saved_run_of_the_old_layout_loads():
    """config.json["run"] as gptref 0.1 wrote it (no pin_memory, --max-steps as epochs=10**6)."""
    old = {"preset": "tiny", "context": 16, "stride": None, "batch_size": 4, "epochs": 10**6,
           "max_steps": 6, "lr": 0.001, "weight_decay": 0.1, "warmup": 0, "min_lr": None,
           "grad_clip": None, "eval_freq": 2, "eval_iter": 1, "train_ratio": 0.9, "seed": 123,
           "dtype": "float32", "attn": "reference", "book_mode_loaders": False,
           "optimizer": "default", "compile": False, "tf32": False, "vocab_pad": 1,
           "fused_layers": False}  # fmt: skip
    run = RunConfig.from_dict(old)
    assert run.total_steps(steps_per_epoch=3) == 6 and run.fast == REFERENCE


def test_unknown_saved_settings_are_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown settings \['bogus'\]"):
        RunConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize(
    ("epochs", "max_steps", "per_epoch", "total"),
    [(None, None, 5, 5), (3, None, 5, 15), (None, 12, 5, 12), (2, 12, 5, 10), (3, 2, 5, 2)],
)
def test_total_steps_is_epochs_times_batches_capped_by_max_steps(
    epochs, max_steps, per_epoch, total
):
    """No epochs and no max_steps: one epoch; max_steps alone: as many epochs as it needs."""
    run = RunConfig(epochs=epochs, max_steps=max_steps)
    assert run.total_steps(per_epoch) == total
    assert run.num_epochs == (epochs if epochs else (None if max_steps else 1))


def test_model_config_applies_the_model_side_fast_paths():
    run = RunConfig(preset="tiny", context=16, fast=FAST_BF16.replace(vocab_pad=64))
    cfg = run.model_config()
    assert (cfg.context_length, cfg.attn_impl, cfg.fused_layers) == (16, "sdpa", True)
    assert cfg.vocab_pad_multiple == 64 and cfg.emb_dim == 32


def test_the_fixed_bundles_are_the_ones_the_readme_names():
    """FAST_BF16 (what FAST first meant): sdpa + bf16 autocast + fused AdamW + fused
    LayerNorm/GELU, nothing else; FAST_FP32: the same in float32."""
    changed = {f.name for f in dataclasses.fields(FastPaths) if getattr(FAST_BF16, f.name) != getattr(REFERENCE, f.name)}  # fmt: skip
    assert changed == {"attn", "dtype", "optimizer", "fused_layers"}
    assert (FAST_BF16.attn, FAST_BF16.dtype, FAST_BF16.optimizer) == ("sdpa", "bfloat16", "fused")
    assert FAST_FP32 == FAST_BF16.replace(dtype="float32")


def test_fast_is_the_choice_for_the_device_auto_picks():
    """gptref.FAST (public API): choose_fast("auto")'s bundle, made on first use."""
    import gptref
    from gptref.fast.choice import choose_fast

    assert gptref.FAST == choose_fast("auto").paths
    assert gptref.FAST.dtype in ("float32", "bfloat16") and gptref.FAST.attn == "sdpa"


def test_book_text_mismatch_accepts_the_books_copy_only(tmp_path, verdict_text):
    """--book's check of its --text: the book's the-verdict.txt (read from ../shared/data,
    byte for byte) passes; one character changed, two files or none are each named."""
    book_copy, edited = tmp_path / "the-verdict.txt", tmp_path / "edited.txt"
    book_copy.write_bytes(verdict_text.encode("utf-8"))
    edited.write_bytes(verdict_text.replace("Jack", "Jock", 1).encode("utf-8"))
    assert book_text_mismatch([str(book_copy)]) is None
    assert book_text_mismatch([edited]).startswith(f"{edited} has SHA-256 ")
    assert "2 --text files" in book_text_mismatch([book_copy, book_copy])
    assert "the built-in corpus" in book_text_mismatch(None)
    assert book_text_mismatch([tmp_path / "missing.txt"]) is None  # the run says it, not this
