"""Posting to chat webhooks: `mediapulse notify` (a job's outcome and its report) and the
delivery of `mediapulse alert` (module alerts) share it.

A webhook URL is a secret: it comes from an environment variable, is never printed (no message
here holds it), and when the variable is unset the caller says so and sends nothing (forks,
local rehearsals).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError

TIMEOUT_S = 10.0
MAX_SUMMARY_CHARS = 3000
MAX_BODY_CHARS = 100  # of a refusing webhook's answer, in the reason (Slack's: `invalid_blocks`)


class DeliveryError(MediaPulseError):
    """A webhook did not take the message: why, without its URL."""


def run_url() -> str | None:
    """The GitHub Actions run this is, when running there."""
    server, repo, run = (
        os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


def webhook_url(env: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The URL in ``env``, or None when it is unset or empty."""
    url = (os.environ if environ is None else environ).get(env, "").strip()
    if not url:
        return None
    if not url.startswith(("https://", "http://")):
        raise DeliveryError(f"{env} is not an http(s) URL: fix the secret")
    return url


def post_json(url: str, payload: dict[str, Any], timeout_s: float, where: str) -> None:
    """POST ``payload`` as JSON to ``url``; DeliveryError naming ``where`` (never the URL) when
    the webhook cannot be reached, does not answer within ``timeout_s`` or answers non-2xx."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            code = response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{where} answered HTTP {exc.code}{_answer(exc, url)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)  # URLError wraps what stopped the connection
        if isinstance(reason, TimeoutError):
            raise DeliveryError(f"{where} did not answer within {timeout_s:g} s") from None
        raise DeliveryError(f"could not reach {where} ({type(reason).__name__})") from None
    if not 200 <= code < 300:
        raise DeliveryError(f"{where} answered HTTP {code}")


def _answer(exc: urllib.error.HTTPError, url: str) -> str:
    """The start of a refusing webhook's answer (Slack says what it rejected), URL removed."""
    try:
        body = exc.read(MAX_BODY_CHARS).decode(errors="replace")
    except (OSError, ValueError):
        return ""
    body = " ".join(body.replace(url, "<webhook>").split())
    return f": {body}" if body else ""


def build_payload(title: str, status: str, summary: str | None, link: str | None) -> dict:
    """A Slack-compatible message (`text`) with the details as fields for other receivers."""
    text = f"MediaPulse {title}: {status}"
    if link:
        text += f" ({link})"
    body = (summary or "").strip()
    if len(body) > MAX_SUMMARY_CHARS:
        body = body[:MAX_SUMMARY_CHARS] + "\n... (truncated, see the run)"
    return {"text": text + ("\n\n" + body if body else ""), "title": title, "status": status,
            "run_url": link}  # fmt: skip


def notify(webhook_env: str, title: str, status: str, summary_path: Path | None) -> str:
    url = webhook_url(webhook_env)
    if url is None:
        return f"{webhook_env} is not set: no notification sent"
    summary = None
    if summary_path is not None and summary_path.exists():
        summary = summary_path.read_text()
    payload = build_payload(title, status, summary, run_url())
    post_json(url, payload, TIMEOUT_S, f"the webhook in {webhook_env}")
    return f"notified the webhook in {webhook_env}: {title} {status}"
