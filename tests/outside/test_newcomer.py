"""A newcomer's first commands, typed as people type them: mistyped subcommands and flags,
``--help`` read literally, and the book's settings on a text that is not the book's."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow  # the console script of a wheel installed into a fresh venv


@pytest.mark.parametrize(
    ("argv", "suggested", "help_of"),
    [
        (["trian"], "'train'", "gptref"),
        (["train", "--batchsize", "4"], "'--batch-size'", "gptref train"),
        (["train", "--device", "cpuu"], "'cpu'", "gptref train"),
        (["track", "chek"], "'check'", "gptref track"),
        (["track", "check", "--basline", "main"], "'--baseline'", "gptref track check"),
    ],
    ids=["subcommand", "flag", "choice", "action", "action-flag"],
)
def test_a_typo_is_one_line_that_suggests_the_word_and_the_help_to_read(
    installed, outside, argv, suggested, help_of
):
    """A mistyped subcommand, flag or choice: exit 2, one line on stderr with "did you mean"
    and the closest word, pointing to the --help of the (sub)command the typo was made in."""
    result = installed.gptref(*argv, cwd=outside)
    assert result.status == 2, result.log
    assert result.stderr.count("\n") == 1 and result.stdout == "", result.log
    assert re.search(rf"(did you mean|maybe you meant) {re.escape(suggested)}", result.stderr)
    assert result.stderr.rstrip().endswith(f"see `{help_of} --help`"), result.log


def test_conformance_help_says_what_the_command_does(installed, outside):
    """``gptref conformance --help``: PYTEST_ARGS optional in the usage, --require offered,
    --allow-missing described as what it is (a function MODULE lacks is 'not provided'
    anyway), and no adapter demanded of a module with the book's names."""
    result = installed.gptref("conformance", "--help", cwd=outside)
    assert result.status == 0, result.log
    usage = " ".join(result.stdout.split("\n\n")[0].split())
    assert usage.endswith("MODULE [PYTEST_ARGS ...]"), usage
    assert "[--require LEVELS]" in usage and "[--allow-missing]" in usage, usage
    text = " ".join(result.stdout.split())
    assert "no adapter needed" in text and "adapter exposing" not in text, text
    assert "--allow-missing accepted for compatibility" in text, text
    assert "skip, not fail" not in text, text


def test_book_mode_on_a_text_that_is_not_the_books_warns(installed, outside):
    """``gptref train --book --text FILE`` where FILE is not the book's the-verdict.txt (by
    SHA-256): a warning line naming the file and where the book's copy is, before the run
    (here it then stops: the text is too short for the book's context)."""
    (outside / "the-verdict.txt").write_text("A short story, but not the book's.\n")
    result = installed.gptref("train", "--book", "--text", "the-verdict.txt", cwd=outside)
    assert result.status == 2, result.log
    warning, error = result.stderr.splitlines()
    assert warning.startswith("gptref train: warning: the-verdict.txt has SHA-256 "), warning
    assert "not be the book's" in warning and "rasbt/LLMs-from-scratch" in warning, warning
    assert error.startswith("gptref train: error: ") and "--context 256" in error, error
    assert sorted(p.name for p in outside.iterdir()) == ["the-verdict.txt"], result.log
