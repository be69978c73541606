"""Rendering reports as Markdown, and writing them where CI shows them (pure, but for write)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


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
