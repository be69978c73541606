"""The CLI as a user meets it: one-line errors that name the thing and the fix, exit codes."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from mediapulse import __version__
from mediapulse.cli.main import main
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.data.faults import FAULTS

from ..conftest import REPO

pytestmark = pytest.mark.reads()

COMMANDS = ("deps", "generate", "build", "query")


def run_cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAPULSE_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mediapulse", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_help_lists_every_command_and_each_has_help() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        sub = run_cli(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "usage: mediapulse" in sub.stdout.lower()


def test_unknown_flag_is_one_line_pointing_at_help() -> None:
    _one_line_error(
        run_cli("generate", "--bogus"), "mediapulse generate: error:", "--bogus", "--help"
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("generate", "--users", "0"), "'0' must be greater than zero"),
        (("generate", "--days", "many"), "'many' is not a whole number"),
        (("generate", "--start-date", "31/01/2026"), "is not a date like 2026-01-31"),
        (("generate", "--fault", "meteor_strike"), "'meteor_strike'"),
        (("deps", "--source", "ftp"), "'ftp'"),
    ],
)
def test_bad_values_are_named(args: tuple[str, ...], needle: str) -> None:
    _one_line_error(run_cli(*args), args[1], needle)


def test_unknown_target_lists_the_known_ones(config_copy: Project) -> None:
    line = _one_line_error(
        run_cli("build", "--target", "staging", cwd=config_copy.root),
        "unknown target 'staging'",
        "dev",
        "prod",
    )
    assert "--target" in line
    assert not (config_copy.root / "warehouse").exists(), "nothing is done for a bad target"


def test_build_without_hub_or_mirror_fails_with_the_package_error(config_copy: Project) -> None:
    env = {
        "DBT_PACKAGES_MIRROR": "/nonexistent/mirror",
        "DBT_PACKAGE_HUB_URL": "http://127.0.0.1:9/",
    }
    result = run_cli("build", cwd=config_copy.root, env=env)
    _one_line_error(result, "cannot install dbt packages", "/nonexistent/mirror", "unreachable")
    assert not (config_copy.root / "warehouse").exists(), "no data generated, nothing built"
    assert not (config_copy.root / "dbt_packages").exists()


def test_not_a_checkout_is_named(tmp_path: Path) -> None:
    _one_line_error(run_cli("query", "select 1", cwd=tmp_path), "not inside a MediaPulse checkout")


def test_absent_corrupt_and_locked_warehouse_files(config_copy: Project) -> None:
    warehouse = config_copy.root / "warehouse"
    _one_line_error(run_cli("query", "select 1", cwd=config_copy.root), "dev.duckdb does not exist")

    warehouse.mkdir()
    (warehouse / "dev.duckdb").write_bytes(b"\x00garbage" * 1000)
    _one_line_error(
        run_cli("query", "select 1", cwd=config_copy.root), "not a readable DuckDB database"
    )

    (warehouse / "dev.duckdb").unlink()
    holder = duckdb.connect(str(warehouse / "dev.duckdb"))  # a writer holds the lock
    try:
        _one_line_error(
            run_cli("query", "select 1", cwd=config_copy.root),
            "is locked by another process",
            f"process {os.getpid()}",
        )
    finally:
        holder.close()
    ok = run_cli("query", "select 42 as answer", cwd=config_copy.root)
    assert ok.returncode == 0 and "42" in ok.stdout


def test_append_day_without_a_data_set(config_copy: Project) -> None:
    _one_line_error(
        run_cli("generate", "--append-day", cwd=config_copy.root), "raw.duckdb does not exist"
    )


def test_generate_then_query_the_raw_data(project_copy: Project) -> None:
    gen = run_cli(
        "generate", "--users", "50", "--days", "2", "--start-date", "2026-02-01",
        cwd=project_copy.root,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    assert "streaming.watch_events" in gen.stdout
    again = run_cli("generate", "--users", "50", cwd=project_copy.root)
    _one_line_error(again, "already holds a data set", "--force")
    dev = duckdb.connect(str(project_copy.root / "warehouse" / "dev.duckdb"))
    dev.close()
    result = run_cli("query", "select count(*) as n from raw.accounts.users", cwd=project_copy.root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].strip() == "n"


# -- the surface: what the workflows, the Makefile, the README and people's fingers call -------

FAULT = sorted(FAULTS)[0]
# Every command with every option it takes: an example value, or None for a flag.
SURFACE: dict[str, dict[str, str | None]] = {
    "deps": {"--source": "mirror", "--if-needed": None, "--lock": None},
    "generate": {
        "--seed": "7", "--users": "10", "--days": "2", "--events-per-user": "1.5",
        "--start-date": "2026-01-31", "--append-day": None, "--event-copies": "0",
        "--fault": FAULT, "--out": "raw.duckdb", "--force": None,
    },
    "build": {"--target": "dev", "--full-refresh": None, "--select": "m", "--sample": "3 days"},
    "load-raw": {"--target": "dev"},
    "access-sql": {"--target": "prod"},
    "drop-ci-schemas": {"--target": "ci"},
    "evaluate": {"--target": "dev", "--json": "e.json", "--markdown": "e.md", "--baseline": "b"},
    "codegen": {"--target": "dev", "--check": None, "--dry-run": None, "--markdown": "c.md"},
    "nightly": {"--target": "prod", "--artifacts": "s", "--summary": "n.md", "--start-over": None},
    "deploy": {"--target": "prod", "--artifacts": "s", "--summary": "d.md", "--start-over": None},
    "refresh": {"--target": "prod", "--artifacts": "s", "--summary": "r.md"},
    "rollback": {"--target": "prod", "--artifacts": "s", "--to": ""},
    "releases": {"--target": "prod"},
    # a release in steps, for schedulers (a group: `mediapulse release prepare ...`)
    "release prepare": {
        "--target": "prod", "--artifacts": "s", "--job": "nightly", "--start-over": None,
        "--skip-code": "99",
    },
    "release build": {"--target": "prod", "--artifacts": "s"},
    "release publish": {"--target": "prod", "--artifacts": "s", "--summary": "p.md"},
    "release discard": {"--target": "prod", "--artifacts": "s"},
    "release status": {"--artifacts": "s", "--json": None},
    "unseal-raw": {"--target": "prod"},
    "seal-raw": {"--target": "prod"},
    "mask-raw": {"--target": "prod", "--out": "masked.duckdb"},
    "record": {"--target": "prod", "--artifacts": "s", "--job": "slim-ci"},
    "report": {
        "--target": "prod", "--out": "r", "--artifacts": "s", "--rebuild": None,
        "--summary": "r.md",
    },
    "notify": {
        "--webhook-env": "HOOK", "--title": "Nightly", "--status": "cancelled",
        "--summary": "n.md",
    },
    "alert": {
        "--target": "prod", "--job": "nightly", "--run-id": "abc", "--within": "90",
        "--job-failed": None, "--timeout": "2.5", "--dry-run": None, "--summary": "a.md",
    },
    "keep-diff": {
        "--target": "prod", "--diff": "d.json", "--pull-request": "42",
        "--commit-message-env": "COMMIT_MESSAGE", "--release-id": "r1",
        "--print-pull-request": None,
    },
    "summarize": {"--title": "PR", "--out": "all.md"},
    "slim-ci": {
        "--target": "ci", "--state": "s", "--select": "tag:critical+",
        "--prod-warehouse": "prod.duckdb", "--summary": "s.md",
    },
    "diff": {
        "--target": "ci", "--state": "s", "--prod-warehouse": "prod.duckdb",
        "--summary": "d.md", "--max-chars": "1000", "--json": "d.json",
    },
    "bench": {
        "--scale": "1M", "--days": "3", "--runs": "1", "--work-dir": "w", "--out": "b.json",
        "--markdown": "b.md", "--review": "one-mart",
    },
    "query": {"--target": "dev", "--max-rows": "5"},
    "lint-sql": {"--fix": None, "--changed-from": "HEAD^1"},
}  # fmt: skip
# the top-level commands: a group's subcommands are listed under it
TOP = sorted({command.split()[0] for command in SURFACE})
POSITIONALS = {"query": ["select 1"], "summarize": ["a.md", "b.md"], "lint-sql": ["models"]}
# Pairs of options a command takes one of, not both.
EXCLUSIVE = {"codegen": ("--check", "--dry-run"), "alert": ("--job", "--run-id")}
# The headings of `mediapulse --help`, in order, and their commands, in order.
GROUPS = {
    "Develop": ["generate", "build", "query", "codegen", "lint-sql"],
    "CI": ["slim-ci", "diff", "evaluate", "summarize", "drop-ci-schemas"],
    "Release": ["nightly", "deploy", "refresh", "rollback", "releases", "release"],
    "Operate": [
        "load-raw", "unseal-raw", "seal-raw", "mask-raw", "record", "report", "alert",
        "keep-diff", "notify", "access-sql",
    ],
    "Tooling": ["deps", "bench"],
}  # fmt: skip
# Where --target defaults to, and the variable CI sets it from (README, "GitHub Actions").
TARGET_DEFAULTS = {
    "dev": "MEDIAPULSE_TARGET", "prod": "MEDIAPULSE_PROD_TARGET", "ci": "MEDIAPULSE_CI_TARGET",
}  # fmt: skip
TARGETS = {
    **dict.fromkeys(("build", "load-raw", "evaluate", "codegen", "query"), "dev"),
    **dict.fromkeys(("slim-ci", "diff", "drop-ci-schemas"), "ci"),
    **dict.fromkeys(
        ("access-sql", "nightly", "deploy", "refresh", "rollback", "releases", "unseal-raw",
         "seal-raw", "mask-raw", "record", "report", "alert", "keep-diff", "release prepare",
         "release build", "release publish", "release discard"), "prod"),
}  # fmt: skip


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """main() in this process: its exit code (returned, or exited with), stdout, stderr."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _usage_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].endswith("--help)"), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def _with_values(options: dict[str, str | None]) -> list[str]:
    return [word for flag, value in options.items() for word in (flag, value) if word is not None]


def test_the_surface_is_every_command_and_only_those(capsys: pytest.CaptureFixture[str]) -> None:
    assert {c for commands in GROUPS.values() for c in commands} == set(TOP)
    assert set(TARGETS) == {c for c, options in SURFACE.items() if "--target" in options}
    code, out, _ = call(capsys, "--help")
    assert code == 0
    listed = re.findall(r"^ {2,4}([a-z][a-z-]+)\s\s", out, flags=re.MULTILINE)
    assert sorted(listed) == TOP, out


@pytest.mark.parametrize("command", sorted(SURFACE))
def test_every_command_has_help_naming_every_option(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for help_flag in ("--help", "-h"):
        code, out, err = call(capsys, *command.split(), help_flag)
        assert code == 0, err
        assert f"mediapulse {command}" in out
        for flag in ("-h", "--help", *SURFACE[command]):
            assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", out), f"{flag} not in\n{out}"


@pytest.mark.parametrize("command", sorted(SURFACE))
def test_every_option_is_accepted(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Every option with a value parses: what stops the call is that --project-dir is no
    checkout, which main() finds only after the whole command line parsed."""
    monkeypatch.delenv("MEDIAPULSE_PROJECT_DIR", raising=False)
    options = SURFACE[command]
    first, second = EXCLUSIVE.get(command, (None, None))
    calls = [{k: v for k, v in options.items() if k != second}]
    if second:
        calls.append({k: v for k, v in options.items() if k != first})
    nowhere = tmp_path / "nowhere"
    for chosen in calls:
        argv = ["--project-dir", str(nowhere), "--warehouse-dir", str(tmp_path), *command.split()]
        argv += [*_with_values(chosen), *POSITIONALS.get(command, [])]
        code, _, err = call(capsys, *argv)
        assert code == 2, err
        top = command.split()[0]
        assert err == f"mediapulse {top}: error: no dbt_project.yml in {nowhere}: pass " \
            "--project-dir pointing at a MediaPulse checkout\n", argv  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("generate", "--bogus"), ("--bogus",)),
        (("generate", "--users"), ("--users",)),  # no value
        (("build", "extra"), ("extra",)),
        (("query",), ("SQL",)),
        (("summarize", "--out", "x.md"), ("INPUTS",)),
        (("nightly",), ("--artifacts",)),
        (("deploy", "--target", "prod"), ("--artifacts",)),
        (("refresh",), ("--artifacts",)),
        (("rollback",), ("--artifacts",)),
        (("record", "--artifacts", "s"), ("--job",)),
        (("record", "--artifacts", "s", "--job", "weekly"), ("--job", "'weekly'")),
        (("mask-raw",), ("--out",)),
        (("notify", "--status", "success"), ("--title",)),
        (("notify", "--title", "t", "--status", "fine"), ("--status", "'fine'")),
        (("summarize", "a.md"), ("--out",)),
        (("codegen", "--check", "--dry-run"), ("--check", "--dry-run")),
        (("alert", "--job", "nightly", "--run-id", "x"), ("--job", "--run-id")),
        (("alert", "--within", "-1"), ("--within", "'-1'")),
        (("diff", "--max-chars", "0"), ("--max-chars", "'0'")),
        (("bench", "--runs", "x"), ("--runs", "'x'")),
        (("generate", "--event-copies", "two"), ("--event-copies", "'two'")),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    args: tuple[str, ...], needles: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    line = _usage_error(*call(capsys, *args)[::2], *needles)
    assert line.startswith(f"mediapulse {args[0]}: error: "), line


@pytest.mark.parametrize("args", [("nosuch",), ("slim",), (), ("--bogus", "build")])
def test_no_or_an_unknown_command_exits_2_with_one_line(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    line = _usage_error(*call(capsys, *args)[::2], *args[:1])
    assert line.startswith("mediapulse: error: "), line


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"mediapulse {__version__}\n"


def test_exit_codes_of_a_command_that_ran(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the command returns; an expected error's own code, on one line; 130 for ^C; 0 when
    the output's reader went away; anything else is a bug and keeps its traceback."""
    from mediapulse.ci import summarize

    argv = ("--project-dir", str(REPO), "summarize", "--out", str(tmp_path / "o.md"), "a.md")
    outcomes: list[BaseException] = [
        MediaPulseError("the title is empty", exit_code=1), MediaPulseError("no such report"),
        KeyboardInterrupt(), BrokenPipeError(), RuntimeError("a bug"),
    ]  # fmt: skip

    def fake(title: str, inputs: list[Path], out: Path) -> Path:
        assert (title, inputs, out) == ("MediaPulse CI", [Path("a.md")], tmp_path / "o.md")
        if outcomes:
            raise outcomes.pop(0)
        return out

    monkeypatch.setattr(summarize, "write_combined", fake)
    assert call(capsys, *argv)[::2] == (1, "mediapulse summarize: error: the title is empty\n")
    assert call(capsys, *argv)[::2] == (2, "mediapulse summarize: error: no such report\n")
    assert call(capsys, *argv)[::2] == (130, "mediapulse summarize: interrupted\n")
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(list(argv)) == 0
    assert stderr.closed
    monkeypatch.undo()
    monkeypatch.setattr(summarize, "write_combined", fake)
    with pytest.raises(RuntimeError, match="a bug"):
        main(list(argv))
    assert call(capsys, *argv) == (0, f"wrote {tmp_path / 'o.md'}\n", "")


def test_help_groups_the_commands_under_headings(capsys: pytest.CaptureFixture[str]) -> None:
    """Under click's one "Commands:" section (where tools/docs_site.py reads them for the CLI
    reference), each heading with its commands, in order."""
    code, out, _ = call(capsys, "--help")
    assert code == 0
    section = out.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    found: dict[str, list[str]] = {}
    for line in section.splitlines():
        if heading := re.fullmatch(r"  (\S.*):", line):
            found[heading.group(1)] = []
        elif command := re.match(r"    ([a-z][a-z-]+)  ", line):
            list(found.values())[-1].append(command.group(1))
    assert list(found.items()) == list(GROUPS.items()), out


def test_the_docs_sites_cli_reference_finds_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """tools/docs_site.py writes the CLI reference from `mediapulse --help`: the commands it
    reads from it must be all of them, headings or not."""
    spec = importlib.util.spec_from_file_location("docs_site", REPO / "tools" / "docs_site.py")
    assert spec and spec.loader
    docs_site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs_site)
    assert sorted(docs_site.commands(call(capsys, "--help")[1])) == TOP


def test_shell_completion_offers_commands_and_choices() -> None:
    """`mediapulse sl<TAB>` in bash, as the line --help gives to enable it asks for it."""
    assert "_MEDIAPULSE_COMPLETE=bash_source mediapulse" in run_cli("--help").stdout
    env = {
        "_MEDIAPULSE_COMPLETE": "bash_complete",
        "COMP_WORDS": "mediapulse sl",
        "COMP_CWORD": "1",
    }
    result = run_cli(env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain,slim-ci"]
    env["COMP_WORDS"], env["COMP_CWORD"] = "mediapulse generate --fault ", "3"
    result = run_cli(env=env)
    assert result.stdout.split() == [f"plain,{name}" for name in sorted(FAULTS)], result.stderr


def test_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a command does when an option is left out, as the parse without a run sees it."""
    from mediapulse.cli.main import parse

    for env in TARGET_DEFAULTS.values():
        monkeypatch.delenv(env, raising=False)
    for command, default in TARGETS.items():
        argv = [*command.split(), *_with_values({k: v for k, v in SURFACE[command].items()
                                         if k in ("--artifacts", "--out", "--job")})]  # fmt: skip
        assert parse([*argv, *POSITIONALS.get(command, [])]).params["target"] == default
        monkeypatch.setenv(TARGET_DEFAULTS[default], "staging")
        assert parse([*argv, *POSITIONALS.get(command, [])]).params["target"] == "staging"
        monkeypatch.setenv(TARGET_DEFAULTS[default], "")  # an unset repository variable
        assert parse([*argv, *POSITIONALS.get(command, [])]).params["target"] == default
    assert parse(["generate"]).params == {
        "seed": 42, "users": 2000, "days": 30, "events_per_user": 12.0, "start_date": None,
        "append_day": False, "event_copies": 1, "fault": (), "out": None, "force": False,
    }  # fmt: skip
    call = parse(["generate", "--fault", FAULT, "--fault", FAULT, "--start-date", "2026-01-31"])
    assert call.params["fault"] == (FAULT, FAULT)
    assert call.params["start_date"] == date(2026, 1, 31)
    assert parse(["deps"]).params == {"source": "auto", "if_needed": False, "lock": False}
    assert parse(["bench"]).params == {
        "scale": "10M", "days": 90, "runs": 3, "work_dir": "bench/work",
        "out": "bench/results.json", "markdown": None, "review": "both",
    }  # fmt: skip
    assert parse(["diff"]).params["max_chars"] == 40_000
    assert parse(["query", "select 1"]).params["max_rows"] == 50
    assert parse(["report"]).params["out"] == "report"
    assert parse(["notify", "--title", "t", "--status", "success"]).params == {
        "webhook_env": "MEDIAPULSE_WEBHOOK_URL", "title": "t", "status": "success",
        "summary": None,
    }  # fmt: skip
    assert parse(["summarize", "--out", "o", "a", "b"]).params == {
        "title": "MediaPulse CI", "out": "o", "inputs": ("a", "b"),
    }  # fmt: skip
    assert parse(["lint-sql"]).params == {"paths": (), "fix": False, "changed_from": None}
    assert parse(["--project-dir", "p", "releases"]).command == "releases"


def test_help_loads_no_room_and_neither_duckdb_nor_dbt() -> None:
    """`mediapulse --help` starts in a tenth of a second: each command loads its room when it
    runs, and --fault its names when given or shown (they import DuckDB). Of the engines, only
    their base (the roles' default targets, for --target's default) loads: no engine's driver."""
    probe = (
        "import sys\nfrom mediapulse.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    for args in (["--help"], ["build", "--help"], ["slim-ci", "--help"]):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60
        )
        loaded = result.stderr.split()
        ours = {m.split(".")[1] for m in loaded if m.startswith("mediapulse.")}
        assert ours == {"cli", "core", "engines"}, (args, ours)
        engines = {m for m in loaded if m.startswith("mediapulse.engines")}
        assert engines == {"mediapulse.engines", "mediapulse.engines.base"}, (args, engines)
        assert not {"duckdb", "dbt"} & set(loaded), args
