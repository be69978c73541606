"""`mediapulse summarize`: one Markdown report from the reports the CI steps wrote.

The PR comment is this report; its first line is a marker so the comment can be found and
updated instead of posted again. A report a failed step never wrote is named, not skipped.
"""

from __future__ import annotations

from pathlib import Path

MARKER = "<!-- mediapulse-ci-report -->"
# GitHub refuses a comment body over 65,536 characters; the action that posts it adds its own
# marker line, so the report keeps a margin
COMMENT_LIMIT = 65_536 - 500


def combine(title: str, inputs: list[Path]) -> str:
    parts = [MARKER, f"# {title}", ""]
    for path in inputs:
        if path.exists() and path.read_text().strip():
            parts += [path.read_text().strip(), ""]
        else:
            parts += [f"_{path.name}: not produced (the step did not run or failed early)_", ""]
    text = "\n".join(parts).rstrip() + "\n"
    if len(text) <= COMMENT_LIMIT:
        return text
    cut = (
        f"\n\n_Cut here at GitHub's comment limit ({COMMENT_LIMIT} characters here, "
        f"{len(text)} written): the full reports are in the job summary._\n"
    )
    return text[: COMMENT_LIMIT - len(cut)].rsplit("\n", 1)[0] + cut


def write_combined(title: str, inputs: list[Path], out: Path) -> Path:
    """The combined report at ``out`` (the PR comment's body). Not added to the job summary:
    each step put its own report there already."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(combine(title, inputs))
    return out
