"""The window of `mediapulse build --sample`, checked before any work.

dbt's own parser decides what is a window (`dbt.cli.option_types.SampleType`: a relative
"3 days" through `SampleWindow.from_relative_string`, or a YAML/JSON mapping of `start` and
`end` through `SampleWindow.from_dict`, both read as UTC), so exactly what `dbt build --sample`
accepts is accepted here. On top of it, a window must hold some time: dbt takes "0 days", a
negative count or an end before the start and builds empty tables, on which every test passes
and proves nothing. dbt's messages span lines and name its own option; ours is one line.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytz
from dbt.clients.yaml_helper import load_yaml_text
from dbt.event_time.sample_window import SampleWindow
from dbt_common.exceptions import DbtValidationError

from mediapulse.core.errors import MediaPulseError

FORMS = (
    "give a relative window '<whole number above 0> <hour|day|month|year>[s]' ending now, "
    "like '3 days' or '12 hours', or an absolute one in UTC, like "
    '\'{"start": "2026-11-01", "end": "2026-11-04"}\' (end excluded)'
)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines()]
    lines = [line for line in lines if line and line != "Runtime Error" and "---" not in line]
    return re.sub(r"\s+", " ", " ".join(lines)).strip().rstrip(".")


def _parse_mapping(text: str) -> SampleWindow:
    """As SampleType does it, without its log line on stdout for invalid YAML."""
    try:
        value = load_yaml_text(text)
    except DbtValidationError:
        raise ValueError("not valid JSON or YAML") from None
    if not isinstance(value, dict):
        raise ValueError("not a mapping of start and end")
    window = SampleWindow.from_dict(value)
    window.start = window.start.replace(tzinfo=pytz.UTC)
    window.end = window.end.replace(tzinfo=pytz.UTC)
    return window


def parse_window(text: str) -> SampleWindow:
    """The window dbt would sample ``text`` as (start included, end excluded, UTC), or a
    one-line MediaPulseError naming --sample, the value and the accepted forms."""
    try:
        if text.lstrip().startswith("{"):
            window = _parse_mapping(text)
        else:
            window = SampleWindow.from_relative_string(text)
    except Exception as exc:  # dbt's runtime errors, mashumaro's field errors, ValueError
        reason = _one_line(str(exc)) or type(exc).__name__
        if "datetime.date(" in reason:
            reason += " (quote it: YAML reads an unquoted date as a day, dbt wants a timestamp)"
        if not text.lstrip().startswith("{") and len(text.split(" ")) != 2:
            reason = "not of the form '<number> <grain>' (one space between)"
        raise MediaPulseError(f"--sample {text!r}: {reason}; {FORMS}") from None
    if window.end < window.start:
        if text.lstrip().startswith("{"):
            reason = f"its end {_at(window.end)} is before its start {_at(window.start)}"
        else:
            reason = "an empty window (the count must be above zero)"
        raise MediaPulseError(f"--sample {text!r}: {reason}; {FORMS}")
    if window.end == window.start:
        raise MediaPulseError(
            f"--sample {text!r}: an empty window (start and end are the same); {FORMS}"
        )
    return window


def _at(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M}"


def describe(window: SampleWindow) -> str:
    return f"{_at(window.start)} to {_at(window.end)} UTC"
