"""The documentation's runnable examples, run as a reader runs them: in a fresh folder, with
the installed wheel, and what they print compared with what the page shows.

The convention (README.md and docs/*.md), an HTML comment on the line right above a fence:

- ``<!-- readme-test: run -->`` above a ```` ```bash ```` block: the block runs in bash
  (``set -e``), in the document's folder (one folder per document, shared by its blocks in
  page order, so a later block sees the runs an earlier one wrote). ``runs/NAME`` in it
  stands for the newest run there. ``run, small settings: gptref train --max-steps 3;
  gptref eval --max-batches 2`` appends those flags to every line of the block that calls
  that subcommand, so a 2-minute example runs in seconds.
- ``<!-- readme-test: run -->`` above a ```` ```python ```` block: the block runs as a
  script; each ``print(...)`` line ends in a comment with what it prints (``# 9 1``), and
  the printed lines must be those, in order.
- ``<!-- readme-test: output -->`` above a plain fence: what the run block before it prints
  on stdout. Compared line by line after every number is replaced by ``#`` (small settings
  change the counts and losses, not what is said); a line ``...`` stands for any lines, and
  ``...`` inside a line for any text (a sampled sentence).

A block that reads ``the-verdict.txt`` gets the book's copy in its folder (checked against
its SHA-256), or is skipped with the reason when that copy is not on this machine.
An unmarked block is not run. A marker this module does not know fails the test.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the Quickstart's training run, in a subprocess

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)*")
VERDICT = REPO.parent / "shared" / "data" / "the-verdict.txt"  # the book's copy, never ours
VERDICT_SHA256 = "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"


@dataclass
class Block:
    """A marked fenced block: where it is, its language and text, and what it must print."""

    line: int  # of the opening fence, 1-based
    language: str
    text: str
    small: dict[str, list[str]] = field(default_factory=dict)  # "gptref train" -> flags
    output: str | None = None  # the output block that follows it, if any

    @property
    def where(self) -> str:
        return f"line {self.line}"


def marked_blocks(page: str) -> list[Block]:
    """The run blocks of a page, each with its output block; ValueError on a marker this
    convention does not have, or an output block with no run block before it."""
    lines, blocks, i = page.splitlines(), [], 0
    while i < len(lines):
        match = MARKER.fullmatch(lines[i].strip())
        i += 1
        if match is None:
            continue
        if i >= len(lines) or not lines[i].startswith("```"):
            raise ValueError(f"line {i}: a readme-test marker must sit right above a fence")
        language, start = lines[i][3:].strip(), i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        text, i = "\n".join(lines[start:end]) + "\n", end + 1
        kind, _, rest = match.group(1).partition(",")
        if kind == "output" and not rest:
            if not blocks or blocks[-1].output is not None:
                raise ValueError(f"line {start}: an output block with no run block before it")
            blocks[-1].output = text
        elif kind == "run" and language in ("bash", "python"):
            blocks.append(Block(start, language, text, _small_settings(rest, start)))
        else:
            raise ValueError(f"line {start}: unknown readme-test marker {match.group(0)!r} "
                             f"above a {language or 'plain'} block")  # fmt: skip
    return blocks


def _small_settings(text: str, line: int) -> dict[str, list[str]]:
    """``small settings: gptref train --max-steps 3; gptref eval --max-batches 2`` -> flags
    per subcommand."""
    text = text.strip()
    if not text:
        return {}
    if not text.startswith("small settings:"):
        raise ValueError(f"line {line}: after 'run,' only 'small settings: ...' is known")
    small = {}
    for item in filter(None, (s.strip() for s in text[len("small settings:") :].split(";"))):
        words = item.split()
        if len(words) < 3 or words[0] != "gptref":
            raise ValueError(f"line {line}: {item!r} is not 'gptref SUBCOMMAND FLAGS'")
        small[" ".join(words[:2])] = words[2:]
    return small


def _code(line: str) -> tuple[str, str]:
    """A shell line -> (its command, its comment), split at the first ``#`` outside quotes
    that starts a word."""
    quote = None
    for k, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip(), line[k:]
    return line.rstrip(), ""


def shell_script(block: Block, folder: Path) -> str:
    """The block as it runs: ``runs/NAME`` resolved, the small settings appended."""
    text = block.text.replace("\\\n", " ")
    if "runs/NAME" in text:
        runs = sorted((folder / "runs").glob("*")) if (folder / "runs").is_dir() else []
        assert runs, f"{block.where}: it names runs/NAME, but no block before it wrote a run"
        text = text.replace("runs/NAME", f"runs/{runs[-1].name}")
    lines = []
    for line in text.splitlines():
        command, _ = _code(line)
        for prefix, flags in block.small.items():
            if command.split()[:2] == prefix.split():
                command += " " + " ".join(flags)
        lines.append(command)
    return "set -e\n" + "\n".join(lines) + "\n"


def expected_prints(block: Block) -> list[str]:
    """A Python block's ``print(...)  # what it prints`` comments, in order."""
    found = []
    for line in block.text.splitlines():
        if line.lstrip().startswith("print("):
            code, _, comment = line.partition("  #")
            assert comment, f"{block.where}: {code.strip()!r} has no '# output' comment"
            found.append(comment.strip())
    return found


def _normal(line: str) -> str:
    return NUMBER.sub("#", line.rstrip())


def output_pattern(shown: str) -> re.Pattern[str]:
    """An output block -> the regular expression the printed text must match (whole)."""
    parts = []
    for line in shown.splitlines():
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            pieces = (re.escape(piece) for piece in _normal(line).split("..."))
            parts.append("[^\n]*".join(pieces) + "\n")
    return re.compile("".join(parts))


def test_the_convention_finds_runs_outputs_and_settings():
    """The parser on a page of every kind of block: the marked ones, in order, with their
    output and small settings; unmarked blocks are left alone; a typo in a marker is an error."""
    page = (
        "text\n<!-- readme-test: run, small settings: gptref train --max-steps 3 -->\n"
        "```bash\ngptref train   # a comment\n```\n<!-- readme-test: output -->\n```\n"
        "model: small (13.7M parameters)\n...\n```\n```bash\ngptref unmarked\n```\n"
        "<!-- readme-test: run -->\n```python\nprint(1 + 1)  # 2\n```\n"
    )
    first, second = marked_blocks(page)
    assert (first.line, first.language, first.small) == (3, "bash", {"gptref train": ["--max-steps", "3"]})  # fmt: skip
    assert first.output == "model: small (13.7M parameters)\n...\n"
    assert shell_script(first, Path(".")) == "set -e\ngptref train --max-steps 3\n"
    assert (second.language, expected_prints(second), second.output) == ("python", ["2"], None)
    with pytest.raises(ValueError, match="unknown readme-test marker"):
        marked_blocks("<!-- readme-test: rnu -->\n```bash\ngptref train\n```\n")


def test_an_output_block_matches_what_was_printed_up_to_numbers():
    """Numbers may differ, ``...`` lines stand for any lines, ``...`` in a line for any text;
    a line printed differently, or missing, does not match."""
    shown = (
        "model: small (13.7M parameters)\nEp 1 (Step 000000): loss 10.5\n...\nsample: 'Every...'\n"
    )
    pattern = output_pattern(shown)
    printed = "model: small (3.2M parameters)\nEp 1 (Step 000000): loss 9.1\nEp 1 (Step 000004): loss 8.0\nsample: 'Every effort'\n"  # fmt: skip
    assert pattern.fullmatch("\n".join(_normal(x) for x in printed.splitlines()) + "\n")
    for wrong in (
        printed.replace("small", "tiny"),
        printed.replace("sample: 'Every effort'\n", ""),
    ):
        assert not pattern.fullmatch("\n".join(_normal(x) for x in wrong.splitlines()) + "\n")


def test_the_readme_has_runnable_blocks_with_their_output():
    """The README marks its Quickstart (a bash block with its output) and a Python example,
    so the test below cannot pass by running nothing."""
    blocks = marked_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert any(b.language == "bash" and b.output for b in blocks), blocks
    assert any(b.language == "python" and expected_prints(b) for b in blocks), blocks


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_marked_block_runs_and_prints_what_the_page_shows(installed, outside, document):
    """Each marked block of the page, in page order, in one folder outside the repository
    with the installed gptref: exit 0, and its printed lines as the page shows them."""
    blocks = marked_blocks(document.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip(f"{document.name} marks no runnable block")
    skipped = []
    for block in blocks:
        if "the-verdict.txt" in block.text and not (outside / "the-verdict.txt").exists():
            if not VERDICT.is_file():
                skipped.append(block.where)
                continue
            assert hashlib.sha256(VERDICT.read_bytes()).hexdigest() == VERDICT_SHA256
            shutil.copy(VERDICT, outside / "the-verdict.txt")
        if block.language == "python":
            (outside / "example.py").write_text(block.text, encoding="utf-8")
            result = installed.run([str(installed.python), "example.py"], cwd=outside)
            assert result.status == 0, f"{document.name} {block.where}:\n{result.log}"
            assert result.stdout.splitlines() == expected_prints(block), result.log
            continue
        script = shell_script(block, outside)
        result = installed.run(["bash", "-c", script], cwd=outside, timeout=600)
        assert result.status == 0, f"{document.name} {block.where}:\n{script}\n{result.log}"
        if block.output is not None:
            printed = "\n".join(_normal(x) for x in result.stdout.splitlines()) + "\n"
            assert output_pattern(block.output).fullmatch(printed), (
                f"{document.name} {block.where}: printed\n{result.stdout}\nthe page shows\n"
                f"{block.output}"
            )  # fmt: skip
    if skipped:  # the others ran and passed
        pytest.skip(f"{document.name}: the blocks at {', '.join(skipped)} read the-verdict.txt, "
                    f"and the book's copy is not at {VERDICT}")  # fmt: skip
