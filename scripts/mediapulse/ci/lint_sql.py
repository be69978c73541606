"""`mediapulse lint-sql`: sqlfluff on the project's SQL, rendered by dbt as a build renders it.

The rules are in `.sqlfluff` (the house SQL shape) and what sqlfluff does not lint in
`.sqlfluffignore`. sqlfluff's dbt templater compiles each model on the `dev` target, which
attaches the raw catalog read-only, so dbt needs a warehouse to open but no data in it.
Linting runs on scratch warehouses of its own under target/sqlfluff, each with its own dbt
target and log directories: the same result on a fresh clone and on a built checkout, without
opening warehouse/ or replacing the manifest a build left in target/.

An incremental model is two SQL texts: `is_incremental()` is true only when the model's table
exists. So the files are linted twice:

- as a full refresh renders them, on an empty scratch warehouse (`full-refresh`): every file;
- as an incremental run renders them (`incremental`): the incremental models only, on a scratch
  warehouse where a tiny generated data set was built into them first, so that their tables
  exist and hold rows and the watermark filters render as in a daily run.

The two run side by side (two dbt processes on two cores). A finding in both renderings is
reported once; one in a single rendering of an incremental model says which.

sqlfluff's own line-length rule (LT05) is off: it measures lines after dbt renders them. The
lines as written are measured here instead (rule MP01), in every .sql file, macros included.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb

from mediapulse.ci.changed import SQL_DIRS, sql_to_lint
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import WAREHOUSE_ENV, Project
from mediapulse.data import generate
from mediapulse.dbt import artifacts, deps
from mediapulse.dbt.env import dbt_env
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.base import DEV_TARGET
from mediapulse.engines.targets import resolve

CONFIG_FILES = (".sqlfluff", ".sqlfluffignore")
# Where the project's SQL lives. sqlfluff skips what .sqlfluffignore lists (macros, generic
# tests: the dbt templater cannot render a macro on its own); line lengths are checked in all.
DEFAULT_PATHS = SQL_DIRS
# the target `.sqlfluff` names for the dbt templater
LINT_TARGET = DEV_TARGET
FULL_REFRESH = "full refresh"
INCREMENTAL = "incremental run"
# sqlfluff's default, when .sqlfluff does not set max_line_length
SQLFLUFF_MAX_LINE_LENGTH = 80
LINE_RULE = "MP01"
LINE_RULE_NAME = "mediapulse.source_line_length"
# What the incremental models are built from before their incremental branch is linted: a
# second to generate and a few seconds to build, yet every incremental model gets rows.
INCREMENTAL_DATA = dict(seed=42, users=30, days=3, events_per_user_day=12.0)
INCREMENTAL_BUILD = (
    "build",
    "--resource-type",
    "seed",
    "--resource-type",
    "model",
    "--select",
    "+config.materialized:incremental",
)


@dataclass(frozen=True)
class Finding:
    """One departure from the rules, where the file says it (line and position as written)."""

    path: str
    line: int
    position: int
    code: str
    description: str
    name: str

    @property
    def key(self) -> tuple[str, int, int, str]:
        return (self.path, self.line, self.position, self.code)

    def describe(self, rendering: str | None = None) -> str:
        where = f" ({rendering})" if rendering else ""
        return (
            f"L:{self.line:4d} | P:{self.position:4d} | {self.code} | {self.description} "
            f"[{self.name}]{where}"
        )


@dataclass(frozen=True)
class Rendering:
    """What one sqlfluff pass linted, and what it found."""

    label: str
    files: tuple[str, ...]
    findings: tuple[Finding, ...]
    seconds: float
    prepared_s: float = 0.0  # building the scratch warehouse first


def _scratch(project: Project, name: str) -> Path:
    return project.target_dir / "sqlfluff" / name


def scratch_env(project: Project, name: str = "full-refresh") -> dict[str, str]:
    """The environment for dbt and sqlfluff: target `dev` on scratch warehouse ``name``
    (created empty: an empty raw database is enough for dbt to compile)."""
    scratch = _scratch(project, name)
    warehouse = scratch / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    raw = warehouse / "raw.duckdb"
    if not raw.exists():
        duckdb.connect(str(raw)).close()
    return {
        **os.environ,
        # the scratch warehouse's own key for hashing personal data, if one is needed at all
        **dbt_env(resolve(replace(project, warehouse_dir=warehouse), LINT_TARGET)),
        WAREHOUSE_ENV: str(warehouse),
        "DBT_TARGET_PATH": str(scratch / "target"),
        "DBT_LOG_PATH": str(scratch / "logs"),
    }


def _check_config(project: Project) -> None:
    for name in CONFIG_FILES:
        if not (project.root / name).is_file():
            raise MediaPulseError(
                f"{project.root / name} is missing: it holds the house SQL rules; restore it "
                f"from git (git checkout -- {name})"
            )


def max_line_length(project: Project) -> int:
    """`max_line_length` of .sqlfluff's [sqlfluff] section (the limit for lines as written)."""
    path = project.root / ".sqlfluff"
    config = configparser.ConfigParser()
    try:
        config.read(path)
        return config.getint("sqlfluff", "max_line_length", fallback=SQLFLUFF_MAX_LINE_LENGTH)
    except (configparser.Error, ValueError) as exc:
        raise MediaPulseError(
            f"{path}: cannot read max_line_length in [sqlfluff] ({exc}): set it to a number"
        ) from exc


def _relative(project: Project, path: Path) -> str:
    return str(path.relative_to(project.root)) if path.is_relative_to(project.root) else str(path)


def sql_files(project: Project, paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """The .sql files under ``paths`` (default: DEFAULT_PATHS), relative to the checkout as
    git names them: (those sqlfluff lints, after .sqlfluffignore; all of them)."""
    from sqlfluff.core.linter.discovery import paths_from_path

    # sqlfluff warns about an exact path its ignore file excludes (a staged macro, say):
    # here that is expected, the file is still measured for line length.
    logging.getLogger("sqlfluff.linter").addHandler(logging.NullHandler())
    logging.getLogger("sqlfluff.linter").propagate = False
    requested = [Path(p).resolve() for p in paths] or [
        project.root / p for p in DEFAULT_PATHS if (project.root / p).is_dir()
    ]
    lintable: list[str] = []
    every: list[str] = []
    root = str(project.root)
    for path in requested:
        if not path.exists():
            raise MediaPulseError(f"{path} does not exist: pass .sql files or directories")
        for ignore_files, found in ((True, lintable), (False, every)):
            for name in paths_from_path(str(path), ignore_files=ignore_files, working_path=root):
                relative = _relative(project, Path(name).resolve())
                if relative not in found:
                    found.append(relative)
    return lintable, every


def long_lines(project: Project, files: Sequence[str], limit: int) -> list[Finding]:
    """Lines longer than ``limit`` characters as written (not as dbt renders them)."""
    found: list[Finding] = []
    for name in files:
        text = (project.root / name).read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            if len(line) > limit:
                found.append(
                    Finding(
                        name,
                        number,
                        limit + 1,
                        LINE_RULE,
                        f"Line is {len(line)} characters, over max_line_length ({limit}) of "
                        ".sqlfluff: wrap it.",
                        LINE_RULE_NAME,
                    )
                )
    return found


def _sqlfluff(
    project: Project, env: dict[str, str], files: Sequence[str], extra: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sqlfluff", *extra, *files]
    return subprocess.run(command, cwd=project.root, env=env, capture_output=True, text=True)


def _lint(project: Project, env: dict[str, str], files: Sequence[str], label: str) -> Rendering:
    """One `sqlfluff lint` of ``files``, read from its JSON report."""
    started = time.perf_counter()
    done = _sqlfluff(project, env, files, ["lint", "--format", "json", "--nocolor"])
    try:
        report = json.loads(done.stdout) if done.returncode in (0, 1) else None
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, list):
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise MediaPulseError(
            f"sqlfluff did not lint the SQL ({label}, exit code {done.returncode}): "
            f"{detail[-1] if detail else 'no output'}; run `.venv/bin/python -m sqlfluff lint "
            f"{files[0]}` in {project.root} for the details"
        )
    findings = tuple(
        Finding(
            path=str(entry["filepath"]),
            line=int(v["start_line_no"]),
            position=int(v["start_line_pos"]),
            code=str(v["code"]),
            description=str(v["description"]),
            name=str(v.get("name") or v["code"]),
        )
        for entry in report
        for v in entry["violations"]
    )
    return Rendering(label, tuple(files), findings, time.perf_counter() - started)


def build_incremental_warehouse(project: Project) -> tuple[dict[str, str], list[str], float]:
    """Build the incremental models (and what they read) on a tiny data set in the
    `incremental` scratch warehouse, from scratch. Returns its environment, the files of the
    project's incremental models, and the seconds it took."""
    started = time.perf_counter()
    scratch = _scratch(project, "incremental")
    warehouse = scratch / "warehouse"
    # a first build each time, from current data: the same tables on every machine
    shutil.rmtree(warehouse, ignore_errors=True)
    warehouse.mkdir(parents=True)
    params = generate.Params(
        **INCREMENTAL_DATA, start_date=generate.default_start_date(INCREMENTAL_DATA["days"])
    )
    generate.generate(warehouse / "raw.duckdb", params)
    env = scratch_env(project, "incremental")
    # The build's own target directory: dbt and the dbt templater each keep a partial-parse
    # file that the other's configuration would invalidate (a full parse costs 10-25 s).
    overrides = {
        WAREHOUSE_ENV: env[WAREHOUSE_ENV],
        "DBT_TARGET_PATH": str(scratch / "build"),
        "DBT_LOG_PATH": env["DBT_LOG_PATH"],
    }
    scratch_project = replace(project, warehouse_dir=warehouse)
    result = run_dbt(resolve(scratch_project, LINT_TARGET), INCREMENTAL_BUILD, extra_env=overrides,
                     quiet=True)  # fmt: skip
    target = Path(overrides["DBT_TARGET_PATH"])
    if not result.success:
        try:
            failed = [r.describe() for r in artifacts.node_results(target) if r.failed]
        except MediaPulseError:
            failed = []
        raise MediaPulseError(
            "cannot lint the incremental runs: building the incremental models on a scratch "
            f"warehouse ({warehouse}) failed: "
            f"{'; '.join(failed) or result.error or 'see ' + str(scratch / 'logs' / 'dbt.log')}"
            "; fix the model (`make build` shows the same error)"
        )
    manifest = artifacts.load_json(target / "manifest.json", "dbt manifest")
    models = sorted(
        str(node["original_file_path"])
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
        and node["package_name"] == "mediapulse"
        and node["config"].get("materialized") == "incremental"
    )
    return env, models, time.perf_counter() - started


def _lint_incremental(project: Project, files: Sequence[str]) -> Rendering | None:
    env, models, prepared_s = build_incremental_warehouse(project)
    chosen = [f for f in files if f in models]
    if not chosen:
        return None
    rendering = _lint(project, env, chosen, INCREMENTAL)
    return Rendering(rendering.label, rendering.files, rendering.findings, rendering.seconds,
                     prepared_s)  # fmt: skip


def _needs_incremental_pass(project: Project, files: Sequence[str], default: bool) -> bool:
    """Always for the whole project. For named files (a commit hook's), only when one of them
    branches on `is_incremental()`: a model that does not renders the same SQL either way, so
    the build would be spent for nothing."""
    return default or any(
        "is_incremental" in (project.root / f).read_text(encoding="utf-8") for f in files
    )


def _merge(full: Rendering | None, incremental: Rendering | None) -> list[tuple[Finding, str]]:
    """Every finding once, with the rendering it is limited to (for an incremental model
    linted both ways; '' when both renderings show it or the file has only one)."""
    both = set(incremental.files) if incremental else set()
    full_keys = {f.key for f in full.findings} if full else set()
    incremental_keys = {f.key for f in incremental.findings} if incremental else set()
    merged: dict[tuple[str, int, int, str], tuple[Finding, str]] = {}
    for rendering, other_keys, label in (
        (full, incremental_keys, FULL_REFRESH),
        (incremental, full_keys, INCREMENTAL),
    ):
        for finding in rendering.findings if rendering else ():
            only = finding.path in both and finding.key not in other_keys
            merged.setdefault(finding.key, (finding, label if only else ""))
    return sorted(merged.values(), key=lambda item: item[0].key)


def _print_report(findings: list[tuple[Finding, str]]) -> None:
    current = None
    for finding, rendering in findings:
        if finding.path != current:
            current = finding.path
            print(f"== [{current}] FAIL")
        print(finding.describe(rendering or None))


def _count(number: int, thing: str, things: str | None = None) -> str:
    return f"{number} {thing if number == 1 else things or thing + 's'}"


def _summary(
    full: Rendering | None, incremental: Rendering | None, measured: int, limit: int,
    scope: str = "",
) -> str:  # fmt: skip
    parts = []
    if full:
        parts.append(
            f"sqlfluff on {_count(len(full.files), 'file')}{scope} as a full refresh renders them "
            f"({full.seconds:.0f} s)"
        )
    if incremental:
        parts.append(
            f"on {_count(len(incremental.files), 'incremental model')} as an incremental run "
            f"renders them (built in {incremental.prepared_s:.0f} s, linted in "
            f"{incremental.seconds:.0f} s)"
        )
    parts.append(f"{_count(measured, '.sql file')} measured against {limit} characters a line")
    return "; ".join(parts)


def _fix(project: Project, lintable: list[str], default: bool) -> int:
    """`sqlfluff fix`, one rendering after the other (both may rewrite the same file)."""
    code = 0
    if lintable:
        fixed = _sqlfluff(project, scratch_env(project), lintable, ["fix"])
        print(fixed.stdout, end="", flush=True)
        print(fixed.stderr, end="", file=sys.stderr)
        code = fixed.returncode
    if lintable and _needs_incremental_pass(project, lintable, default):
        env, models, _ = build_incremental_warehouse(project)
        chosen = [f for f in lintable if f in models]
        if chosen:
            print(f"-- the incremental models as an incremental run renders them: {chosen}")
            fixed = _sqlfluff(project, env, chosen, ["fix"])
            print(fixed.stdout, end="", flush=True)
            print(fixed.stderr, end="", file=sys.stderr)
            code = max(code, fixed.returncode)
    return code


def lint_sql(
    project: Project, paths: list[str], fix: bool = False, changed_from: str | None = None
) -> int:
    """Lint (or with ``fix``, rewrite) ``paths`` (default: the whole project's SQL), or with
    ``changed_from`` (a git commit) the SQL files changed since it (changed.sql_to_lint).

    Returns 0 when nothing was found, 1 when something was (each printed with file, line
    and rule).
    """
    started = time.perf_counter()
    _check_config(project)
    scope = ""
    if changed_from is not None:
        changed, why = sql_to_lint(project.root, changed_from)
        if changed == []:
            print(f"No findings: {why}: sqlfluff not run")
            return 0
        if changed is None:
            print(f"Linting every SQL file: {why}")
        else:
            paths = [str(project.root / name) for name in changed]
            scope = f" changed since {changed_from}"
    report = deps.install(project, force=False)  # the dbt templater compiles with them
    if not report.already_installed:
        print(report.summary())
    lintable, every = sql_files(project, paths)
    limit = max_line_length(project)
    default = not paths
    if fix:
        code = _fix(project, lintable, default)
        too_long = [(f, "") for f in long_lines(project, every, limit)]
        _print_report(too_long)
        return max(code, 1 if too_long else 0)

    full: Rendering | None = None
    incremental: Rendering | None = None
    if lintable:
        with ThreadPoolExecutor(max_workers=2) as pool:
            full_job = pool.submit(_lint, project, scratch_env(project), lintable, FULL_REFRESH)
            incremental_job = (
                pool.submit(_lint_incremental, project, lintable)
                if _needs_incremental_pass(project, lintable, default)
                else None
            )
            full = full_job.result()
            incremental = incremental_job.result() if incremental_job else None
    findings = _merge(full, incremental) + [(f, "") for f in long_lines(project, every, limit)]
    findings.sort(key=lambda item: item[0].key)
    _print_report(findings)
    summary = _summary(full, incremental, len(every), limit, scope)
    elapsed = time.perf_counter() - started
    if findings:
        files = len({f.path for f, _ in findings})
        print(
            f"{_count(len(findings), 'finding')} in {_count(files, 'file')} "
            f"({summary}; {elapsed:.0f} s in all)"
        )
        return 1
    print(f"No findings ({summary}; {elapsed:.0f} s in all)")
    return 0
