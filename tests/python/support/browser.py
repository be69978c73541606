"""A real headless Chromium (Debian's `chromium` package) driven by Playwright, for the pages
MediaPulse writes: the morning report and dbt's static docs site, opened from files as a user
opens a downloaded artifact.

Playwright only drives the system browser (it downloads none of its own). The browser starts
with the switches that keep it from calling home (background networking, component updates,
sync) on a fresh profile; every request a page makes is recorded, so a test can check that
nothing was fetched from anywhere but the page's own file.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
]
# Where the tests keep their screenshots (the docs' picture of the morning report is one).
SCREENSHOTS = Path(__file__).resolve().parents[3] / "target" / "screenshots"


def chromium_problem() -> str | None:
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        return (
            "Chromium not found: install Debian's `chromium` package "
            "(`make test` does: .ci/provision)"
        )
    return None


@dataclass
class Page:
    page: Any
    console: list[tuple[str, str]] = field(default_factory=list)  # (type, text)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # URLs of requests that failed

    @property
    def errors(self) -> list[str]:
        return [text for kind, text in self.console if kind in ("error", "pageerror")]

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextmanager
def open_page(url: str, width: int = 1200, height: int = 900) -> Iterator[Page]:
    """``url`` in a fresh headless Chromium; fails the test (never skips it) without one."""
    problem = chromium_problem()
    if problem:
        pytest.fail(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            seen = Page(page)
            page.on("console", lambda m: seen.console.append((m.type, m.text)))
            page.on("pageerror", lambda e: seen.console.append(("pageerror", str(e))))
            page.on("request", lambda r: seen.requests.append(r.url))
            page.on("requestfailed", lambda r: seen.failed.append(r.url))
            page.goto(url)
            yield seen
        finally:
            browser.close()
