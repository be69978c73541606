"""Posting to chat webhooks: `mediapulse notify`'s failure message (the webhook in a secret,
skipped when it is unset, never echoed) and the posting `mediapulse alert` shares."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from mediapulse.core.errors import MediaPulseError
from mediapulse.monitoring.notify import DeliveryError, notify, post_json

ENV = "MEDIAPULSE_WEBHOOK_URL"


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    status = 200

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Receiver.received.append(json.loads(self.rfile.read(length)))
        self.send_response(_Receiver.status)
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received, _Receiver.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token-123"
    server.shutdown()


def test_unset_secret_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert notify(ENV, "Nightly", "failure", None) == f"{ENV} is not set: no notification sent"


def test_posts_title_status_summary_and_run_link(
    receiver: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV, receiver)
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.example")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/mediapulse")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    summary = tmp_path / "nightly.md"
    summary.write_text("## Nightly: FAILED\n- FAIL not_null on source streaming.watch_events")
    message = notify(ENV, "Nightly full refresh", "failure", summary)
    assert "secret-token-123" not in message
    (payload,) = _Receiver.received
    assert payload["status"] == "failure" and payload["title"] == "Nightly full refresh"
    assert payload["run_url"] == "https://github.example/acme/mediapulse/actions/runs/42"
    assert "not_null on source streaming.watch_events" in payload["text"]


def test_a_refusing_webhook_is_an_error_that_does_not_leak_the_url(
    receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _Receiver.status = 403
    monkeypatch.setenv(ENV, receiver)
    with pytest.raises(MediaPulseError) as err:
        notify(ENV, "Deploy", "failure", None)
    assert "HTTP 403" in str(err.value) and "secret-token-123" not in str(err.value)
    monkeypatch.setenv(ENV, "http://127.0.0.1:9/hooks/secret-token-123")
    with pytest.raises(MediaPulseError) as err:
        notify(ENV, "Deploy", "failure", None)
    assert "could not reach" in str(err.value) and "secret-token-123" not in str(err.value)


def test_post_json_names_the_answer_or_the_silence_never_the_url(receiver: str) -> None:
    """What `mediapulse alert` reports when its webhook fails (module alerts)."""
    _Receiver.status = 500
    with pytest.raises(DeliveryError) as err:
        post_json(receiver, {"text": "hi"}, 2.0, "the page webhook")
    assert str(err.value) == "the page webhook answered HTTP 500"
    silent = socket.socket()  # the kernel accepts the connection; nothing ever answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        with pytest.raises(DeliveryError) as err:
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/hooks/secret-token-123"
            post_json(url, {"text": "hi"}, 0.3, "the page webhook")
    finally:
        silent.close()
    assert str(err.value) == "the page webhook did not answer within 0.3 s"
