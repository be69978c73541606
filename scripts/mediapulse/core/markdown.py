"""Rendering reports as Markdown, and writing them where CI shows them (pure, but for write)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # CommonMark's three line endings
_BACKTICKS = re.compile(r"`+")


def inert(value: object) -> str:
    """A value from the data as Markdown that GitHub shows as its text and nothing else: a code
    span, where no @mention notifies, no URL, #123 or HTML turns into anything, and no emphasis
    applies. Its fence is longer than any run of backticks inside, so none can close it; a line
    break shows as ⏎ (a table row is one line); `|` is escaped where it counts, in a table cell
    (markdown_table), since GFM splits cells before it reads code spans."""
    text = _LINE_BREAK.sub("⏎", str(value))
    fence = "`" * (1 + max((len(run) for run in _BACKTICKS.findall(text)), default=0))
    # one space each side is stripped from a code span that starts and ends with one: pad a
    # text that starts or ends with a backtick (or a space, to keep that space)
    if text.strip(" ") and (text[0] in "` " or text[-1] in "` "):
        text = f" {text} "
    return f"{fence}{text or ' '}{fence}"


def _cell(value: object) -> str:
    return _LINE_BREAK.sub(" ", str(value).replace("|", "\\|"))


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = [
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(markdown: str, path: Path | None) -> Path | None:
    """Write the report to ``path`` and append it to $GITHUB_STEP_SUMMARY when CI sets it, so
    the job page shows it; returns where it went first."""
    written = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown)
        written = path
    step_summary = os.environ.get(SUMMARY_ENV)
    if step_summary:
        with open(step_summary, "a") as handle:
            handle.write(markdown + "\n")
        written = written or Path(step_summary)
    return written
