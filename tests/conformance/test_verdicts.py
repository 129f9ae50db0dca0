"""What the suite says about code from the wild (issue 23, defects 3 to 7): the book's own
conventions declarable and checked both ways, checks that <|endoftext|> cannot hide, messages
that name the cause first (the function at fault, counts as counts, reproduce lines that run
as pasted, one failure per bug, nothing that points into the suite), the mode and grad state
of every forward call, and --fast-fail. Each case runs the suite in a subprocess on a variant
of examples/book_style.py (or book_scripts.py) with one deliberate difference."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT, failures, module, shown, suite, variant

SAMPLE_LINES = {  # the per-epoch sample of each loop in book_style.py, with what precedes it
    "simple": ('print(f"Ep {epoch + 1} (Step {global_step:06d}): {train_loss:.3f} {val_loss:.3f}")\n'
               "        generate_and_print_sample(model, tokenizer, device, start_context)\n"),
    "appendix_d": ('print(f"Ep {epoch + 1} (Iter {global_step:06d}): {train_loss:.3f} {val_loss:.3f}")\n'
                   "        generate_and_print_sample(model, tokenizer, device, start_context)\n"),
}  # fmt: skip
SAMPLE = "generate_and_print_sample(model, tokenizer, device, start_context)"


def sample_at(where: str) -> list[tuple[str, str]]:
    """Edits that move both loops' sample: "eval" (after each evaluation) or "none"."""
    edits = []
    for text in SAMPLE_LINES.values():
        head = text.split("\n")[0]
        if where == "eval":
            edits.append((text, f"{head}\n                {SAMPLE}\n"))
        else:
            edits.append((text, f"{head}\n"))
    return edits


# ---------------------------------------------------------------- conventions (defect 3)


@pytest.mark.slow
def test_the_chapter5_scripts_pass_the_book_level_once_text_to_token_ids_is_declared(tmp_path):
    """examples/book_scripts.py (the chapter-5 scripts: tokenizer.encode(text), no
    <|endoftext|>) passes every book-level test it provides when it declares
    TEXT_TO_TOKEN_IDS="encode"; without the declaration it fails exactly the test of the
    book's default, naming text_to_token_ids."""
    done = suite("examples.book_scripts", "-q", "-rf", cwd=tmp_path)
    assert done.returncode == 0, shown(done)
    assert re.search(r"^book\s+passed\s+39 passed", done.stdout, re.M), shown(done)
    undeclared = variant(tmp_path, "scripts_undeclared", [('TEXT_TO_TOKEN_IDS = "encode"\n', "")], example="book_scripts")  # fmt: skip
    done = suite(undeclared, "-q", "-rf", "-k", "text_to_token_ids", cwd=tmp_path)
    assert done.returncode == 1, shown(done)
    assert list(failures(done.stdout)) == ["test_text_to_token_ids_allows_endoftext"], shown(done)


def test_declaring_encode_where_endoftext_is_allowed_fails_the_refusal_test(tmp_path):
    path = variant(tmp_path, "style_encode", append='\nTEXT_TO_TOKEN_IDS = "encode"\n')
    done = suite(path, "-q", "-rf", "-k", "text_to_token_ids", cwd=tmp_path)
    assert done.returncode == 1, shown(done)
    assert list(failures(done.stdout)) == ["test_text_to_token_ids_refuses_endoftext_as_tokenizer_encode_does"], shown(done)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("where", ["eval", "none"])
def test_a_sample_at_each_evaluation_or_none_passes_when_declared_and_is_named_when_not(tmp_path, where):  # fmt: skip
    """Both loops with the sample after every evaluation, or with none: declared as
    EPOCH_SAMPLE, both loop tests pass; undeclared, the first difference is named at the
    sample (the book's: after epoch 1) or where the sample appears."""
    declared = variant(tmp_path, f"sample_{where}", sample_at(where), append=f'\nEPOCH_SAMPLE = "{where}"\n')  # fmt: skip
    done = suite(declared, "-q", "-k", "train_model", cwd=tmp_path)
    assert done.returncode == 0 and "2 passed" in done.stdout, shown(done)
    undeclared = variant(tmp_path, f"sample_{where}_undeclared", sample_at(where))
    done = suite(undeclared, "-q", "-rf", "-k", "train_model", cwd=tmp_path)
    assert done.returncode == 1, shown(done)
    messages = failures(done.stdout)
    said = "in the sample after epoch" if where == "none" else "this loop calls the model in eval mode without grad"  # fmt: skip
    assert len(messages) == 2 and all(said in m for m in messages.values()), shown(done)


def test_a_sample_with_a_hard_coded_top_k_is_a_named_difference_not_a_crash(tmp_path):
    """A per-epoch sample drawn with a hard-coded top_k=50 at temperature 1, as readers write
    it: the loop's failure names the sample's token that differs from greedy decoding (the
    probe's vocabulary of 64 leaves room for 50, where 13 made torch.topk raise)."""
    top_k_50 = """token_ids = encoded
    for _ in range(50):
        with torch.no_grad():
            logits = model(token_ids[:, -context_size:])[:, -1, :]
        kth = torch.topk(logits, 50).values[:, -1:]  # no min(top_k, vocab): as readers write it
        probs = torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)
        token_ids = torch.cat((token_ids, torch.multinomial(probs, 1)), dim=1)"""
    path = variant(tmp_path, "sample_top_k", [("token_ids = generate_text_simple(model, encoded, 50, context_size)", top_k_50)])  # fmt: skip
    done = suite(path, "-q", "-rf", "-x", "-k", "train_model_simple", cwd=tmp_path)
    assert done.returncode == 1 and "out of range" not in done.stdout, shown(done)
    [message] = [m for name, m in failures(done.stdout).items() if "train_model_simple" in name]
    assert "in the sample after epoch" in message and "greedy token" in message, message


def test_a_loader_that_refuses_endoftext_still_gets_its_defaults_checked(tmp_path):
    """A GPTDatasetV1 that encodes without allowing <|endoftext|>, and changed defaults
    (batch_size=16, stride=1): the <|endoftext|> test fails, and so does the defaults test,
    with the batch count; the other loader tests pass."""
    path = variant(tmp_path, "refuses_endoftext", [
        ('token_ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})', "token_ids = tokenizer.encode(txt)"),
        ("txt, batch_size=4, max_length=256, stride=128, shuffle=True", "txt, batch_size=16, max_length=256, stride=1, shuffle=True"),
    ])  # fmt: skip
    done = suite(path, "-q", "-rf", "-k", "gpt_dataset_v1 or create_dataloader_v1", cwd=tmp_path)
    found = failures(done.stdout)
    assert sorted(found) == ["test_create_dataloader_v1_defaults_are_the_books", "test_gpt_dataset_v1_tokenizes_with_endoftext_allowed"], shown(done)  # fmt: skip
    assert "create_dataloader_v1: the number of batches" in found["test_create_dataloader_v1_defaults_are_the_books"], shown(done)  # fmt: skip


def test_a_dataset_that_refuses_a_text_with_no_window_fails_nothing(tmp_path):
    """GPTDatasetV1 raising a ValueError for a text too short for one window (as gptref's
    loader refuses one): every test of it passes; the main ones draw at least one window
    (defect 5)."""
    refusal = (
        "\n\nclass GPTDatasetV1(GPTDatasetV1):  # noqa: F811\n"
        "    def __init__(self, txt, tokenizer, max_length, stride):\n"
        "        super().__init__(txt, tokenizer, max_length, stride)\n"
        "        if len(self) == 0:\n"
        "            raise ValueError(f'the text has no window of max_length={max_length}')\n"
    )  # fmt: skip
    path = variant(tmp_path, "refuses_short_texts", append=refusal)
    done = suite(path, "-q", "-rf", "-k", "gpt_dataset_v1", cwd=tmp_path)
    assert done.returncode == 0 and "3 passed" in done.stdout, shown(done)


# ---------------------------------------------------------------- messages (defect 4)

# the ci profile without shrinking (the mutant benchmark's): a failing test reports its first
# example at once; the message is what is checked
UNSHRUNK = {"HYPOTHESIS_PROFILE": "detect"}
LR_NOT_SET = [('                param_group["lr"] = lr\n', "                pass\n")]
CLIPS_AS_PRINTED = [("if global_step >= warmup_steps:", "if global_step > warmup_steps:")]


@pytest.mark.parametrize(
    ("edits", "said"),
    [(LR_NOT_SET, "the lr of each param group the step applies"),
     (CLIPS_AS_PRINTED, "the gradient norm the step applies (after any clipping)")],
    ids=["lr-never-set", "clips-as-printed"],
)  # fmt: skip
def test_appendix_d_lr_and_clipping_bugs_are_named_before_the_losses(tmp_path, edits, said):
    path = variant(tmp_path, "loop_bug", edits)
    done = suite(path, "-q", "-rf", "-x", "-k", "train_model", cwd=tmp_path, env=UNSHRUNK)
    message = failures(done.stdout).get("test_train_model_runs_appendix_ds_loop_with_its_lrs_and_clipping", "")  # fmt: skip
    assert message.startswith("AssertionError: train_model: optimizer.step()") and said in message, shown(done)  # fmt: skip


@pytest.mark.parametrize(
    ("edits", "test", "name"),
    [([("    return total / n\n", "    return total / len(data_loader)\n")], "test_loss.py", "calc_loss_loader"),
     ([("    model.eval()\n    with torch.no_grad():", "    with torch.no_grad():")], "test_book_parts.py", "evaluate_model")],
    ids=["calc_loss_loader", "evaluate_model"],
)  # fmt: skip
def test_a_bug_in_what_the_loops_call_fails_first_in_that_functions_own_test(tmp_path, edits, test, name):  # fmt: skip
    """Run with -x over the function's own tests and the loops (which call it): the first
    failure is in the function's test and names it (the suite runs causes first)."""
    path = variant(tmp_path, f"{name}_bug", edits)
    done = suite(path, "-q", "-rf", "-x", "-k", f"{test[:-3]} or train_model", cwd=tmp_path, env=UNSHRUNK)  # fmt: skip
    first = re.search(r"^FAILED (?:\S*/)?(test_\w+\.py)::\S+ - (.*)$", done.stdout, re.M)
    assert first is not None and first.group(1) == test, shown(done)
    assert first.group(2).startswith(f"AssertionError: {name}: "), shown(done)


def test_a_window_count_error_reads_as_a_count(tmp_path):
    path = variant(tmp_path, "one_window_too_few", [(
        "return range(0, n_tokens - max_length, stride)",
        "return range(0, n_tokens - max_length - 1, stride)",
    )])  # fmt: skip
    done = suite(path, "-q", "-rf", "-k", "gpt_dataset_v1_windows", cwd=tmp_path)
    message = failures(done.stdout)["test_gpt_dataset_v1_windows_equal_the_books_loop"]
    assert message.startswith("AssertionError: GPTDatasetV1: len(dataset): the number of windows"), message  # fmt: skip


def test_one_bug_is_one_failure_with_nothing_that_points_into_the_suite(tmp_path):
    """A split that raises IndexError on one item and cuts longer data one too far: shrunk
    fully, its test fails once (where Hypothesis found "2 distinct failures" and reported an
    ExceptionGroup), without Hypothesis's Explanation lines or its @reproduce_failure blob
    (they name lines of the suite)."""
    bugs = ("\n\ndef split(data, train_ratio=0.9):  # noqa: F811\n"
            "    if len(data) == 1:\n        raise IndexError('one item')\n"
            "    k = int(train_ratio * len(data)) + (len(data) > 1)\n"
            "    return data[:k], data[k:]\n")  # fmt: skip
    path = variant(tmp_path, "split_two_ways_wrong", append=bugs)
    done = suite(path, "-q", "-rf", "-k", "split_parts", cwd=tmp_path, env={"CI": "true"})
    assert done.returncode == 1 and "1 failed" in done.stdout, shown(done)
    for pointer in ("ExceptionGroup", "distinct failures", "Explanation:", "reproduce_failure", "gptref/conformance/repro.py:"):  # fmt: skip
        assert pointer not in done.stdout, f"{pointer!r} in\n{shown(done)}"


MANY_BUGS = [  # one bug in each of a dozen functions
    ("return range(0, n_tokens - max_length, stride)", "return range(0, n_tokens - max_length - 1, stride)"),
    ("txt, batch_size=4, max_length=256, stride=128, shuffle=True", "txt, batch_size=4, max_length=256, stride=256, shuffle=True"),
    ("return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())", "return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten(), reduction='sum')"),
    ("    return total / n\n", "    return total / len(data_loader)\n"),
    ("return initial_lr + step * lr_increment", "return initial_lr + (step + 1) * lr_increment"),
    (".values[:, -1]", ".values[:, 0]"),
    ("Step(total, grad_norm, input_batch.numel(),", "Step(total, grad_norm, input_batch.shape[0],"),
    ("return torch.tensor(encoded).unsqueeze(0)", "return torch.tensor(encoded)"),
    ("torch.tensor(x + [pad_token_id] * missing)", "torch.tensor([pad_token_id] * missing + x)"),
    ("if len(batch) < batch_size and drop_last:", "if len(batch) < batch_size:"),
    ("    model.eval()\n    with torch.no_grad():", "    with torch.no_grad():"),
    *LR_NOT_SET,
]  # fmt: skip
RUN_LISTINGS = """
import json, sys, traceback
results = []
for listing in json.load(sys.stdin):
    try:
        exec(compile(listing, "<reproduce>", "exec"), {})
        results.append("ok")
    except BaseException as e:
        results.append(type(e).__name__ + ": " + str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
print(json.dumps(results))
"""


def listings(out: str) -> list[str]:
    """Every reproduce block of a --tb=short report, as the code it shows."""
    blocks, current = [], None
    for raw in out.splitlines():
        line = re.sub(r"^E ?", "", raw) if raw.startswith("E") else raw
        if "reproduce: " in line:
            current = [line.split("reproduce: ", 1)[1]]
            blocks.append(current)
        elif current is not None and re.match(r"^\s{13,}\S", line) and not line.strip().startswith(("expected:", "got:")):  # fmt: skip
            current.append(line.strip())
        else:
            current = None
    return ["\n".join(b) for b in blocks]


@pytest.mark.slow
def test_every_reproduce_line_runs_as_pasted(tmp_path):
    """A variant with a bug in a dozen functions, run whole with unshrunk examples (the
    longest listings): every reproduce block of the report runs in a fresh
    interpreter as pasted (its own failure may show; no NameError, SyntaxError, ImportError
    or missing file), and its last line calls the implementation."""
    path = variant(tmp_path, "many_bugs", MANY_BUGS)
    done = suite(path, "-q", "--tb=short", cwd=tmp_path, env=UNSHRUNK)
    assert done.returncode == 1, shown(done)
    blocks = listings(done.stdout)
    assert len(blocks) >= 12, shown(done)
    assert all(b.splitlines()[-1].lstrip().startswith("impl.") or "impl." in b.splitlines()[-1] for b in blocks), blocks  # fmt: skip
    ran = subprocess.run([sys.executable, "-c", RUN_LISTINGS], input=json.dumps(blocks), cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(ROOT), **_environ()})  # fmt: skip
    results = json.loads(ran.stdout.splitlines()[-1])  # after what the reproduced loops print
    broken = [(r, b) for r, b in zip(results, blocks, strict=True) if r.split(":")[0] in ("NameError", "SyntaxError", "ImportError", "ModuleNotFoundError", "FileNotFoundError")]  # fmt: skip
    assert not broken, broken


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


# ---------------------------------------------------------------- modes (defect 7)


@pytest.mark.parametrize(
    ("edits", "test", "said"),
    [([("    optimizer.zero_grad()\n    counted", "    model.eval()\n    optimizer.zero_grad()\n    counted")],
      "test_train_step_runs_its_forward_calls_in_train_mode_with_grad", "train_step: (model.training, grad enabled) of each forward call"),
     ([("        with torch.no_grad():\n            last = model(idx[:, -context_size:])[:, -1, :]", "        if True:\n            last = model(idx[:, -context_size:])[:, -1, :].detach()")],
      "test_generate_runs_every_forward_call_without_grad_in_the_models_mode[True]", "generate: (model.training, grad enabled, input shape) of each forward call")],
    ids=["train_step-in-eval-mode", "generate-with-grad"],
)  # fmt: skip
def test_the_mode_and_grad_of_every_forward_call_are_checked(tmp_path, edits, test, said):
    path = variant(tmp_path, "mode_bug", edits)
    done = suite(path, "-q", "-rf", "-k", "train_step or generate_runs", cwd=tmp_path)
    found = failures(done.stdout)
    assert test in found and said in found[test], shown(done)


# ---------------------------------------------------------------- --fast-fail (defect 6)

COUNTING_SPLIT = """from examples.book_style import *  # noqa: F403
import os


def split(data, train_ratio=0.9):
    k = int(train_ratio * len(data))
    if len(data) >= 3:  # wrong from three items on; every wrong call is logged
        with open(os.environ["SPLIT_LOG"], "a") as log:
            log.write("wrong\\n")
        k += 1
    return data[:k], data[k:]
"""


@pytest.mark.slow
def test_fast_fail_reports_the_first_counterexample_without_shrinking_and_is_the_clis_default(tmp_path):  # fmt: skip
    """A wrong split: with --shrink Hypothesis calls it again and again to shrink the example;
    with --fast-fail, and under `gptref conformance` by default, it is called wrong twice
    (found, then replayed for the report)."""
    path = module(tmp_path, "counting_split", COUNTING_SPLIT)
    calls = {}
    for mode in ("--fast-fail", "--shrink", "cli"):
        log = tmp_path / f"{mode.strip('-')}.log"
        env = {"SPLIT_LOG": str(log), "CI": "true"}
        if mode == "cli":
            command = [sys.executable, "-m", "gptref", "conformance", str(path), "-q", "-p", "no:cacheprovider", "-k", "split_parts"]  # fmt: skip
            done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**_environ(), "PYTHONPATH": str(ROOT), **env})  # fmt: skip
        else:
            done = suite(path, "-q", mode, "-k", "split_parts", cwd=tmp_path, env=env)
        assert done.returncode == 1, shown(done)
        calls[mode] = len(log.read_text().splitlines())
    assert calls["--fast-fail"] == calls["cli"] == 2 < calls["--shrink"], calls
