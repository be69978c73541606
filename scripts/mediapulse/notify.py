"""`mediapulse notify`: tell a chat webhook that a job failed (or passed), with its report.

The webhook URL is a secret: it comes from an environment variable, is never printed, and
when the variable is unset the command says so and does nothing (forks, local rehearsals).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from mediapulse.errors import MediaPulseError

TIMEOUT_S = 10.0
MAX_SUMMARY_CHARS = 3000


def run_url() -> str | None:
    """The GitHub Actions run this is, when running there."""
    server, repo, run = (
        os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


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
    url = os.environ.get(webhook_env, "").strip()
    if not url:
        return f"{webhook_env} is not set: no notification sent"
    if not url.startswith(("https://", "http://")):
        raise MediaPulseError(f"{webhook_env} is not an http(s) URL: fix the secret")
    summary = None
    if summary_path is not None and summary_path.exists():
        summary = summary_path.read_text()
    payload = json.dumps(build_payload(title, status, summary, run_url())).encode()
    request = urllib.request.Request(
        url, data=payload, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            code = response.status
    except urllib.error.HTTPError as exc:
        raise MediaPulseError(
            f"the webhook in {webhook_env} answered HTTP {exc.code}: check the secret"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MediaPulseError(
            f"could not reach the webhook in {webhook_env} ({type(reason).__name__}) within "
            f"{TIMEOUT_S:.0f} s"
        ) from None
    if not 200 <= code < 300:
        raise MediaPulseError(f"the webhook in {webhook_env} answered HTTP {code}")
    return f"notified the webhook in {webhook_env}: {title} {status}"
