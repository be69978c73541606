"""Releasing production: `mediapulse nightly` and `mediapulse deploy`.

Both rebuild production from scratch (`dbt build --full-refresh`, every test included) and
generate the docs; the nightly also checks source freshness. Everything runs against a staged
copy of production that replaces the live one only when every step passed: a copy of the file
on DuckDB (release.py), green schemas swapped in by one transaction on PostgreSQL
(pg_release.py). The artifacts (manifest.json, run_results.json, sources.json, catalog.json and
a Markdown report) go to ``--artifacts DIR``: the production state `mediapulse slim-ci --state`
compares with.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mediapulse import artifacts, build
from mediapulse.errors import MediaPulseError
from mediapulse.pg_release import PREVIOUS as PG_PREVIOUS
from mediapulse.pg_release import PgRelease, rename_in_state
from mediapulse.project import Project
from mediapulse.release import Release, new_release_id, publish_state, published_state
from mediapulse.report import markdown_table, write_summary
from mediapulse.runner import run_dbt

STATE_FILES = ("manifest.json", "run_results.json", "sources.json", "catalog.json")


@dataclass
class Step:
    name: str
    command: str
    ok: bool
    seconds: float
    problems: list[str] = field(default_factory=list)


def _freshness_problems(target_dir: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the last `dbt source freshness`, one line per stale source."""
    data = artifacts.load_json(target_dir / "sources.json", "source freshness results")
    errors, warnings = [], []
    for result in data.get("results", []):
        source = result["unique_id"].split(".", 2)[-1]
        age = result.get("max_loaded_at_time_ago_in_s")
        line = f"source {source}: {result['status']}" + (
            f", newest row loaded {age / 3600:.1f} h ago" if age is not None else ""
        )
        if result["status"] in ("error", "runtime error"):
            errors.append(line)
        elif result["status"] == "warn":
            warnings.append(line)
    return errors, warnings


def run_nightly(
    project: Project,
    target: str,
    artifacts_dir: Path,
    summary: Path | None,
    start_over: bool = False,
) -> int:
    """Full refresh, source freshness, docs; publish production and its state."""
    return run_release(
        project, target, artifacts_dir, summary, "Nightly", freshness=True, start_over=start_over
    )


def run_deploy(
    project: Project,
    target: str,
    artifacts_dir: Path,
    summary: Path | None,
    start_over: bool = False,
) -> int:
    """Build production from the merged code with every test; swap it in only if all pass."""
    return run_release(
        project, target, artifacts_dir, summary, "Deploy", freshness=False, start_over=start_over
    )


def check_production_present(
    project: Project, release: Release, artifacts_dir: Path, start_over: bool
) -> None:
    """Refuse to rebuild production from nothing when the published state says it exists.

    On GitHub the production file travels as an artifact that expires; rebuilding from an
    empty file would silently drop the snapshots' history (and demo data would stand in for
    the loader's raw data), so that takes an explicit --start-over.
    """
    previous = published_state(artifacts_dir)
    missing = [p for p in (release.live, project.raw_path) if not p.exists()]
    if previous is None and not release.live.exists():
        print(
            f"notice: no production yet (no state in {artifacts_dir}, no {release.live}): "
            "building production from scratch (first run)"
        )
        return
    if not missing:
        return
    names = " and ".join(str(p) for p in missing)
    if start_over:
        print(f"warning: --start-over: {names} missing; production starts again from empty")
        return
    described = (
        f"release {previous['release_id']}" if previous and previous.get("release_id")
        else f"built {previous.get('built_at')}" if previous else "the existing production"
    )  # fmt: skip
    raise MediaPulseError(
        f"production ({described}, state in {artifacts_dir}) exists but {names} is missing "
        "(on GitHub: the production-warehouse artifact expired or was not downloaded); "
        "rebuilding from empty would lose the snapshots' history: restore the file(s), or "
        "start production over deliberately with --start-over"
    )


def check_pg_production_present(release: PgRelease, artifacts_dir: Path, start_over: bool) -> None:
    """PostgreSQL's counterpart of check_production_present: the state says production exists,
    but no live schema carries a release (they were dropped), so the snapshots' history is gone."""
    previous = published_state(artifacts_dir)
    if previous is None or release.live_schemas():
        return
    where = f"target '{release.target}' (no {release.base_schema}* schema carries a release)"
    if start_over:
        print(f"warning: --start-over: no production on {where}; production starts again")
        return
    raise MediaPulseError(
        f"production (state in {artifacts_dir}) exists but not on {where}: rebuilding from "
        "empty would lose the snapshots' history: restore the schemas, or start production "
        "over deliberately with --start-over"
    )


def run_release(
    project: Project,
    target: str,
    artifacts_dir: Path,
    summary: Path | None,
    title: str,
    freshness: bool,
    start_over: bool = False,
) -> int:
    kind = project.target_type(target)
    release = Release(project) if kind == "duckdb" else None
    pg = PgRelease(project, target) if kind == "postgres" else None
    if release:
        check_production_present(project, release, artifacts_dir, start_over)
    build.prepare(project, target)
    if pg:
        check_pg_production_present(pg, artifacts_dir, start_over)
    env: dict[str, str] = {}
    if release:
        release.prepare()
        env = release.env
    steps: list[Step] = []
    saved: dict[str, Path] = {}
    schemas: list[str] = []
    notes: list[str] = []
    staging = artifacts_dir.with_name(artifacts_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    release_id = new_release_id()
    ok = False
    try:
        plan = [("build", ["build", "--full-refresh"])]
        if freshness:
            plan.append(("freshness", ["source", "freshness", "--select", "source:*"]))
        plan.append(("docs", ["docs", "generate"]))
        if pg:
            parsed, schemas, snapshots = pg.parse()
            env = pg.env
            if parsed.success:
                pg.prepare(schemas, snapshots)
            else:
                steps.append(Step("parse", parsed.command, False, parsed.elapsed_s,
                                  [parsed.error or "dbt parse failed"]))  # fmt: skip
                plan = []
        for name, args in plan:
            result = run_dbt(project, args, target=target, extra_env=env)
            step = Step(name, result.command, result.success, result.elapsed_s)
            if name == "build":
                step.problems = [
                    r.describe() for r in artifacts.node_results(project.target_dir) if r.failed
                ]
                shutil.copy2(project.target_dir / "run_results.json", staging / "run_results.json")
            elif name == "freshness":
                errors, warnings = _freshness_problems(project.target_dir)
                step.ok = not errors and (result.success or not result.error)
                step.problems = errors + warnings
                shutil.copy2(project.target_dir / "sources.json", staging / "sources.json")
            elif result.success:
                shutil.copy2(project.target_dir / "catalog.json", staging / "catalog.json")
            if not step.ok and not step.problems and result.error:
                step.problems = [result.error]
            steps.append(step)
            if not step.ok:
                break
        if (project.target_dir / "manifest.json").exists():
            shutil.copy2(project.target_dir / "manifest.json", staging / "manifest.json")
        ok = bool(plan) and all(s.ok for s in steps) and len(steps) == len(plan)
        if ok and pg:
            try:
                seconds = pg.publish(schemas, release_id)
                notes.append(
                    f"swap: {len(schemas)} schemas in {seconds * 1000:.1f} ms, one transaction "
                    f"(the replaced release is kept as *{PG_PREVIOUS})"
                )
                rename_in_state(staging)
            except MediaPulseError as exc:
                ok = False
                notes.append(f"swap gave up: {exc}")
        report = _render(title, target, steps, ok, release_id, staged=release or pg, notes=notes)
        (staging / f"{title.lower()}.md").write_text(report)
        if ok:
            if release:
                release.publish(release_id)
            publish_state(staging, artifacts_dir, release_id, title.lower(), project.vars)
            saved = {f: artifacts_dir / f for f in STATE_FILES if (artifacts_dir / f).exists()}
    finally:
        if release:
            release.discard()
        if pg and schemas:  # a failed release's green; after a swap there is none left
            pg.discard(schemas)
        shutil.rmtree(staging, ignore_errors=True)
    print(report)
    write_summary(report, summary)
    if not ok:
        staged = release is not None or pg is not None
        outcome = "production left as it was" if staged else "production built in place"
        print(f"{title.lower()} on target '{target}' failed: {outcome}")
        return 1
    print(f"production state for slim CI written to {artifacts_dir} ({', '.join(saved)})")
    return 0


def _render(
    title: str,
    target: str,
    steps: list[Step],
    ok: bool,
    release_id: str,
    staged: object,
    notes: list[str] | None = None,
) -> str:
    if ok:
        verdict = f"passed, release {release_id} is live"
    elif staged:
        verdict = "FAILED, production unchanged"
    else:  # built in place: what the failed run reached is already in production
        verdict = "FAILED, production was built in place and may be partly rebuilt"
    rows = [
        (s.name, "ok" if s.ok else "failed", f"{s.seconds:.0f} s", f"`{s.command}`") for s in steps
    ]
    lines = [f"## {title} on `{target}`: {verdict}", "", markdown_table(
        ("step", "result", "time", "command"), rows
    )]  # fmt: skip
    if notes:
        lines += ["", *notes]
    for step in steps:
        if step.problems:
            lines += ["", f"### {step.name}", *[f"- {p}" for p in step.problems]]
    return "\n".join(lines) + "\n"


def check_artifacts_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise MediaPulseError(f"--artifacts {path} is a file: pass a directory")
    return path
