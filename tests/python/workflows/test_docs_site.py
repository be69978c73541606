"""The documentation site (docs/, mkdocs.yml): `make docs` builds it in strict mode, a broken
link, a missing anchor or a nav entry without its page fails the build, the CLI reference is
the installed `mediapulse` CLI's own `--help`, and every internal link of every page leads
somewhere in a real browser (tests/python/support/browser.py), served over HTTP on loopback
as a static host would serve it. And the README stays short: it names the two commands and points
into the site.

The site is built in a throwaway copy of what it is made of (the pages, the configuration, the
build script `make docs` runs: tools/docs_site.py), so the test writes nothing into the working
tree, and a pull request that changes none of them does not run it.
"""

from __future__ import annotations

import functools
import html as entities
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pathspec
import pytest

from ..conftest import REPO
from ..support.browser import open_page

# what the site is made of (tools/docs_site.py's SITE_INPUTS besides: code, reaching every test)
pytestmark = pytest.mark.reads("docs", "mkdocs.yml")

BUILD = Path("tools") / "docs_site.py"
MEDIAPULSE = Path(sys.executable).parent / "mediapulse"
README_MAX_LINES = 200


def _build(root: Path) -> subprocess.CompletedProcess[str]:
    """What `make docs` runs, in ``root``: the CLI reference, the nav check, a strict build."""
    return subprocess.run(
        [sys.executable, str(root / BUILD), "--mediapulse", str(MEDIAPULSE)],
        cwd=root, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _docs_only(tmp_path_factory.mktemp("docs"))
    result = _build(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "site" / "index.html").is_file(), "the site lands in site/"
    return root / "site"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """A static file server on loopback for ``directory`` (a directory URL serves its
    index.html, as on any static host); yields its base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


IDS = "() => Array.from(document.querySelectorAll('[id], a[name]')).map(e => e.id || e.name)"
HREFS = "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"


def test_every_internal_link_of_every_page_leads_somewhere(site: Path) -> None:
    """From the home page, follow every link to the site itself, breadth first: each page and
    file must answer 200, each `#anchor` must name an element of its page, every page the
    build wrote must be reached, and no page may fetch anything from another host."""
    with serve(site) as base, open_page(base + "/", width=1400) as page:
        statuses: dict[str, int] = {}
        foreign: set[str] = set()

        def seen_response(response) -> None:  # every page, style sheet, script and image
            if not response.url.startswith(base):
                foreign.add(response.url)
            elif response.status >= 400:
                statuses[response.url] = response.status

        page.page.on("response", seen_response)
        page.page.on("request", lambda r: None if r.url.startswith((base, "data:"))
                     else foreign.add(r.url))  # fmt: skip
        anchors: dict[str, set[str]] = {}  # page URL -> the ids on it
        links: list[tuple[str, str]] = []  # (the page it is on, the link)
        queue, queued = [base + "/"], {base + "/"}
        while queue:
            url = queue.pop(0)
            if urlparse(url).path.endswith(("/", ".html")):
                response = page.page.goto(url)
                assert response is not None, url
                statuses[url] = response.status
                if response.status != 200:
                    continue
                anchors[url] = set(page.page.evaluate(IDS))
                for href in page.page.evaluate(HREFS):
                    if not href.startswith(base):
                        continue  # another host: not ours to check
                    links.append((url, href))
                    target = urldefrag(href).url
                    if target not in queued:
                        queued.add(target)
                        queue.append(target)
            else:  # a file the site links to (an image, a download): it must be there
                statuses[url] = page.page.request.get(url).status
        broken = sorted(
            f"{source} -> {href} ({statuses[urldefrag(href).url]})"
            for source, href in links
            if statuses.get(urldefrag(href).url, 200) != 200
        )
        assert not broken, "links to nothing:\n" + "\n".join(broken)
        missing = sorted(
            f"{source} -> {href}"
            for source, href in links
            if (fragment := urldefrag(href).fragment)
            and unquote(fragment) not in anchors.get(urldefrag(href).url, set())
        )
        assert not missing, "links to an anchor the page lacks:\n" + "\n".join(missing)
        failed = sorted(f"{u} ({s})" for u, s in statuses.items() if s >= 400)
        assert not failed, "requests that failed:\n" + "\n".join(failed)
        assert not foreign, f"the site fetched from other hosts: {sorted(foreign)}"
        assert page.errors == [], page.errors
        page.page.goto(base + "/")
        page.screenshot("docs-site.png")

    built = {
        base + "/" + path.parent.relative_to(site).as_posix() + "/"
        for path in site.rglob("index.html")
    }
    built = {u.replace("/./", "/") for u in built}
    unreached = sorted(u.removeprefix(base) for u in built - set(anchors))
    assert not unreached, f"pages no link leads to: {unreached}"
    # the pages the README and the home page link to by name
    for page_path in ("getting-started/", "targets/postgresql/", "jobs/slim-ci/",
                      "jobs/releases/", "monitoring/alerts/", "reference/cli/",
                      "performance/", "decisions/"):  # fmt: skip
        assert base + "/" + page_path in anchors, page_path


def _generator():
    """tools/docs_site.py as a module (it is a script, outside the package)."""
    spec = importlib.util.spec_from_file_location("docs_site", REPO / BUILD)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _help(*command: str) -> str:
    result = subprocess.run(
        [str(MEDIAPULSE), *command, "--help"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _code(html: Path) -> str:
    """A page's code blocks as text: tags dropped, entities decoded."""
    blocks = re.findall(r"<code[^>]*>(.*?)</code>", html.read_text(), flags=re.DOTALL)
    return "\n".join(entities.unescape(re.sub(r"<[^>]+>", "", b)) for b in blocks)


def test_the_cli_reference_is_the_clis_own_help(site: Path) -> None:
    """Every command the CLI lists has its section, holding exactly what `--help` prints
    today: the page cannot drift from the CLI, since the build writes it from the CLI."""
    page = _code(site / "reference" / "cli" / "index.html")
    assert _help().strip() in page
    commands = _generator().commands(_help())
    assert {"build", "nightly", "slim-ci", "diff", "report", "alert", "lint-sql"} <= set(
        commands
    ), commands
    for command in commands:
        assert _help(command).strip() in page, f"mediapulse {command} --help"


ARGPARSE_HELP = """usage: mediapulse [-h] COMMAND ...

positional arguments:
  COMMAND
    deps                install the pinned dbt packages (hub, or mirror
                        offline)
    build               the main job: packages if needed, demo data if none,
                        dbt build
    drop-ci-schemas     drop this CI run's schemas on a PostgreSQL CI target

options:
  -h, --help            show this help message and exit
"""
CLICK_HELP = """Usage: mediapulse [OPTIONS] COMMAND [ARGS]...

  MediaPulse tooling.

Options:
  --project-dir PATH  the MediaPulse checkout
  --help              Show this message and exit.

Commands:
  build            the main job: packages if needed, demo data if none, dbt
                   build
  deps             install the pinned dbt packages
  drop-ci-schemas  drop this CI run's schemas
"""


@pytest.mark.parametrize("text", [ARGPARSE_HELP, CLICK_HELP], ids=["argparse", "click"])
def test_the_reference_finds_the_commands_in_argparse_and_click_help(text: str) -> None:
    """The generator reads the commands from `mediapulse --help` as argparse prints it today
    and as click would, so a change of CLI library keeps the reference whole."""
    assert sorted(_generator().commands(text)) == ["build", "deps", "drop-ci-schemas"]


def _docs_only(tmp_path: Path) -> Path:
    """What the build reads, and nothing else: quick to copy, and to break."""
    root = tmp_path / "docs-only"
    for name in ("mkdocs.yml", "docs", "tools"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            root.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    return root


def test_a_broken_link_or_anchor_fails_the_build(tmp_path: Path) -> None:
    root = _docs_only(tmp_path)
    index = root / "docs" / "index.md"
    index.write_text(
        index.read_text() + "\nSee [a page](no-such-page.md) and "
        "[an anchor](getting-started.md#no-such-section).\n"
    )
    result = _build(root)
    assert result.returncode != 0, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert "page does not exist" in said and "anchor does not exist" in said, said
    assert "index.md" in said and "no-such-page.md" in said and "no-such-section" in said


def test_a_nav_entry_without_its_page_fails_the_build(tmp_path: Path) -> None:
    root = _docs_only(tmp_path)
    (root / "docs" / "performance.md").unlink()
    result = _build(root)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "performance.md" in result.stdout + result.stderr


def test_a_page_missing_from_the_nav_fails_the_build(tmp_path: Path) -> None:
    root = _docs_only(tmp_path)
    (root / "docs" / "stray.md").write_text("# A page no menu leads to\n")
    result = _build(root)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "stray.md" in result.stdout + result.stderr


@pytest.mark.reads("Makefile", ".gitignore")
def test_make_docs_and_make_lint_run_the_strict_build() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^docs:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert recipe and str(BUILD) in recipe.group(1), "make docs runs tools/docs_site.py"
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert lint and "$(MAKE) docs" in lint.group(1), "make lint builds the docs"
    assert "--strict" in (REPO / BUILD).read_text()
    assert re.search(r"^site/$", (REPO / ".gitignore").read_text(), flags=re.MULTILINE)


@pytest.mark.reads("*")  # every file the README links to
def test_the_readme_is_short_names_the_two_commands_and_links_into_the_site() -> None:
    """.ci/run and CI run the test command the README names: `make test`."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "make build" in readme
    assert re.search(r"^make test\b", readme, flags=re.MULTILINE), "`make test` as a command"
    assert "make test" in (REPO / ".ci" / "run").read_text()
    targets = re.findall(r"\]\(((?!https?:|#)[^)#\s]+)(?:#[^)]*)?\)", readme)
    assert sum(t.startswith("docs/") for t in targets) >= 10, targets
    missing = [t for t in targets if not (REPO / t).exists()]
    assert not missing, f"README links to files the checkout lacks: {missing}"


# A path in a code span that starts at one of the repository's own folders, e.g.
# `scripts/mediapulse/dbt/runner.py` or `tests/python/dbt/test_privacy.py` (patterns with
# `<...>` or `*` are not paths).
REPOSITORY_PATH = re.compile(
    r"`((?:scripts|tests|macros|models|seeds|snapshots|profiles|bench|docs|tools|\.github|\.ci)"
    r"/[\w./-]*)`"
)


@pytest.mark.reads("*")  # every path the pages name
def test_every_repository_path_the_docs_name_exists() -> None:
    """When a module or test file moves, the pages that name it must follow."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    named = {
        (page.relative_to(REPO).as_posix(), path)
        for page in pages
        if page.is_file() and page.name != "cli.md"
        for path in REPOSITORY_PATH.findall(page.read_text())
    }
    assert len(named) > 20, named
    # build products (`bench/work/`) are named as places, not as files of the checkout
    ignored = pathspec.GitIgnoreSpec.from_lines((REPO / ".gitignore").read_text().splitlines())
    missing = sorted(
        f"{page}: {path}"
        for page, path in named
        if not (REPO / path).exists() and not ignored.match_file(path)
    )
    assert not missing, "the docs name paths the checkout lacks:\n" + "\n".join(missing)
