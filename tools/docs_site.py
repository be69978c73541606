"""Build the documentation site (docs/, mkdocs.yml) the way `make docs` does.

1. Check the nav: every page it names exists, and every page under docs/ is in it (Zensical
   drops a nav entry without its page silently, and a page outside the nav is hard to find).
2. Write the CLI reference, docs/reference/cli.md, from the installed `mediapulse` itself:
   `mediapulse --help`, then `mediapulse <command> --help` for every command it lists, each a
   subprocess. Whatever library parses the command line (click today), the page is what
   the CLI prints, written at every build and never committed (.gitignore), so it cannot go
   stale.
3. Build with Zensical in strict mode into site/: a link to a missing page or anchor is a
   warning there, and strict mode turns every warning into a failed build.

With `--changed-from COMMIT` (a pull request's lint, `make lint-pr`), nothing is built when
no file the site is made of changed since that commit: its pages, this configuration, this
script, and the CLI whose help the reference prints. When git cannot tell, it builds.

Usage: python tools/docs_site.py [--mediapulse PATH] [--config mkdocs.yml] [--changed-from C]
Exit code 0 when the site was built, 1 when a check or the build failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REFERENCE = Path("reference") / "cli.md"
# the width and colours of the help text: the same page on every machine
HELP_ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
# Sections of a top-level help that list subcommands: argparse's positional arguments (its
# subparsers, e.g. "    build    the main job ..."), click's "Commands:".
COMMAND_SECTIONS = re.compile(r"^(positional arguments|commands|subcommands)\s*:\s*$", re.I)
COMMAND_LINE = re.compile(r"^( +)([a-z][a-z0-9_-]*)(?: {2,}\S|\s*$)")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# what the site is made of, besides docs_dir and the configuration (--changed-from)
SITE_INPUTS = ("tools/docs_site.py", "scripts/mediapulse/cli/", "pyproject.toml",
               "requirements.lock")  # fmt: skip

INTRO = """\
# CLI reference

Every `mediapulse` command, as the installed CLI describes itself: this page is written at
each build of the site by `tools/docs_site.py`, from `mediapulse --help` and
`mediapulse <command> --help` run as commands, so it says what the code says. The commands
at a glance, with the pages that explain them, are on the [home page](../index.md#commands).

Exit codes, for every command: **0** on success; **1** when a job ran and found problems
(failed tests, a failed check); **2** for bad usage or an error that stopped it (one line
naming the thing and the fix).
"""


class SiteError(Exception):
    """A check before the build failed; the message says what to fix."""


def commands(help_text: str) -> list[str]:
    """The subcommands a top-level `--help` lists, as argparse or click print them: the
    names at the shallowest indent of the commands section (deeper lines continue a
    description)."""
    found: list[tuple[int, str]] = []
    inside = False
    for line in help_text.splitlines():
        if not line.strip():
            inside = False
        elif not line.startswith(" "):
            inside = bool(COMMAND_SECTIONS.match(line.strip()))
        elif inside and (match := COMMAND_LINE.match(line)):
            found.append((len(match.group(1)), match.group(2)))
    if not found:
        return []
    indent = min(depth for depth, _ in found)
    return [name for depth, name in found if depth == indent]


def _help(mediapulse: str, *command: str) -> str:
    result = subprocess.run(
        [mediapulse, *command, "--help"], capture_output=True, text=True, timeout=300,
        env={**os.environ, **HELP_ENV}, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SiteError(
            f"`mediapulse {' '.join([*command, '--help'])}` exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    return result.stdout.rstrip()


def _fence(text: str) -> str:
    """A fenced code block that no run of backticks in ``text`` can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def cli_reference(mediapulse: str) -> str:
    top = _help(mediapulse)
    names = commands(top)
    if not names:
        raise SiteError("`mediapulse --help` lists no commands: the reference would be empty")
    # each `--help` is a process start and an import of the CLI: a few at a time
    with ThreadPoolExecutor(max_workers=4) as pool:
        helps = list(pool.map(lambda name: _help(mediapulse, name), names))
    parts = [INTRO, "## mediapulse\n", _fence(top), ""]
    for name, text in zip(names, helps, strict=True):
        parts += [f"## mediapulse {name}\n", _fence(text), ""]
    return "\n".join(parts)


def _nav_pages(entry: object) -> list[str]:
    if isinstance(entry, str):
        return [] if re.match(r"^[a-z]+://", entry) else [entry]
    if isinstance(entry, list):
        return [page for item in entry for page in _nav_pages(item)]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in _nav_pages(value)]
    return []


def check_nav(config: dict, docs: Path) -> None:
    listed = _nav_pages(config.get("nav") or [])
    generated = {REFERENCE.as_posix()}  # written by this script, after the check
    problems = [f"the nav names {page}, but docs/{page} does not exist"
                for page in listed
                if page not in generated and not (docs / page).is_file()]  # fmt: skip
    for page in sorted(docs.rglob("*.md")):
        name = page.relative_to(docs).as_posix()
        if name not in listed:
            problems.append(f"docs/{name} is in no nav entry of mkdocs.yml: add it there")
    if problems:
        raise SiteError("\n".join(problems))


def build(root: Path, config_file: Path) -> int:
    config = yaml.safe_load(config_file.read_text())
    site = (root / config.get("site_dir", "site")).resolve()
    if root.resolve() not in site.parents:
        raise SiteError(f"site_dir {site} is outside {root}: not removing it")
    shutil.rmtree(site, ignore_errors=True)  # a page removed from docs/ leaves no stale copy
    result = subprocess.run(
        [sys.executable, "-m", "zensical", "build", "--strict", "--config-file",
         str(config_file)],
        cwd=root, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    # Zensical colours its report whatever the terminal; a log or a test reads it plain
    output = ANSI.sub("", result.stdout + result.stderr)
    if result.returncode != 0:
        output = output.split("Traceback (most recent call last)")[0].rstrip()
        print(output, file=sys.stderr)
        print(f"docs: the strict build failed: fix the warnings above ({config_file.name})",
              file=sys.stderr)  # fmt: skip
        return 1
    print(output.rstrip())
    print(f"docs: site built in {site.relative_to(root.resolve())}/")
    return 0


def _unchanged(root: Path, config_file: Path, docs: Path, base: str) -> str | None:
    """Why the site need not be built (none of its files changed since ``base``), or None."""
    from mediapulse.ci.changed import UnknownBase, changed_files

    try:
        changed = changed_files(root, base)
    except UnknownBase:
        return None
    inputs = (f"{docs.relative_to(root)}/", config_file.name, *SITE_INPUTS)
    if any(name.startswith(inputs) for name in changed):
        return None
    return f"none of the site's files changed since {base}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mediapulse",
        default=str(Path(sys.executable).parent / "mediapulse"),
        help="the installed CLI to document (default: beside this Python)",
    )
    parser.add_argument("--config", default="mkdocs.yml", help="the site's configuration")
    parser.add_argument(
        "--changed-from",
        metavar="COMMIT",
        help="build only if the site's files changed since this git commit",
    )
    args = parser.parse_args(argv)
    config_file = Path(args.config).resolve()
    root = config_file.parent
    try:
        config = yaml.safe_load(config_file.read_text())
        docs = root / config.get("docs_dir", "docs")
        if args.changed_from is not None:
            unchanged = _unchanged(root, config_file, docs, args.changed_from)
            if unchanged:
                print(f"docs: {unchanged}: not built")
                return 0
        check_nav(config, docs)
        reference = docs / REFERENCE
        reference.parent.mkdir(parents=True, exist_ok=True)
        reference.write_text(cli_reference(args.mediapulse))
        return build(root, config_file)
    except SiteError as error:
        print(f"docs: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
