"""The release's steps as commands of their own (`mediapulse release prepare|build|publish|
discard|status`), for a scheduler that runs one task per model (orchestrators/, docs/
orchestrators/). release/record.py holds the staged release between them; release/execute.py
holds what every release does, which these steps call in the same order `mediapulse nightly`
does.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.markdown import write_summary
from mediapulse.dbt import artifacts, runner
from mediapulse.engines.base import Engine
from mediapulse.monitoring import history
from mediapulse.release import record as records
from mediapulse.release.execute import (
    DEPLOY,
    DOCS_STEP,
    MONITORING,
    NIGHTLY,
    REFRESH,
    BeforeStaging,
    Job,
    RefreshPlan,
    Step,
    _Run,
    _skip,
    before_staging,
    check_release_target,
    code_fingerprint,
    new_release_id,
    raw_marks,
    release_lock,
)
from mediapulse.release.in_release import run_in_release
from mediapulse.release.record import STAGED, StagedRelease
from mediapulse.release.staging import Staging, staging_for
from mediapulse.release.state import PARSE, RELEASE_PARSE, share_parse

JOBS = {job.name: job for job in (NIGHTLY, REFRESH, DEPLOY)}
# what a refresh never builds: the evaluator, the monitoring models, unit tests (the release of
# this code proved it)
REFRESH_EXCLUDED = ("package:dbt_project_evaluator", MONITORING, "resource_type:unit_test")


class Unpublishable(MediaPulseError):
    """A staged release whose builds did not all pass: it stays staged."""


def prepare_release(engine: Engine, artifacts_dir: Path, job_name: str,
                    start_over: bool = False, skip_code: int = 0) -> int:  # fmt: skip
    """The job's checks and a staged release with its record; ``skip_code`` when there is
    nothing to release (it says why and records a skipped run)."""
    job = JOBS[job_name]
    check_release_target(engine)
    records.refuse_if_staged(artifacts_dir, f"release prepare --job {job.name}")
    with release_lock(engine, f"{job.name} (prepare)"):
        records.refuse_if_staged(artifacts_dir, f"release prepare --job {job.name}")
        clock = history.Job(job.name, engine.target)
        staging = staging_for(engine)
        before = before_staging(engine, staging, artifacts_dir, job, start_over, clock)
        if before.skipped:
            _skip(engine, clock, before.skipped, None, before.notes)
            return skip_code
        notes = before.notes
        staged = _stage(engine, staging, artifacts_dir, job, before, clock)
    print("\n".join(notes))
    print(f"{staged.describe()} staged: build in it with `mediapulse release build` (or "
          f"mediapulse-dbt with MEDIAPULSE_ARTIFACTS={artifacts_dir}), then `mediapulse release "
          "publish`")  # fmt: skip
    return 0


def _stage(
    engine: Engine, staging: Staging, artifacts_dir: Path, job: Job, before: BeforeStaging,
    clock: history.Job,
) -> StagedRelease:  # fmt: skip
    refresh, notes, env = before.refresh, before.notes, before.env
    live = staging.live_release_id()
    staging.stage(notes)
    env.update(staging.env)
    parsed = staging.after_parse(env, refresh is not None, notes)
    if parsed:  # green schemas need the parse, and it failed
        staging.discard()
        raise MediaPulseError(f"dbt parse failed, nothing staged: {parsed.error}")
    folder = records.staged_dir(artifacts_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    # the last release's saved parse: the first build parses only what changed since
    share_parse(artifacts_dir / RELEASE_PARSE, folder / PARSE)
    staged = StagedRelease(folder, {
        "release_id": new_release_id(), "job": job.name, "target": engine.target,
        "status": STAGED, "prepared_at": records.now(), "started": clock.started.isoformat(),
        "live_at_prepare": live, "code": code_fingerprint(engine.project),
        "marks": refresh.marks if refresh else raw_marks(engine), "env": env,
        "schemas": list(getattr(staging, "schemas", [])), "notes": notes,
        "refresh": None if refresh is None else {
            "previous": refresh.previous, "since": refresh.since,
            "excluded": list(refresh.excluded), "new_rows": refresh.new_rows,
            "selection": list(refresh.selection),
            # a staged copy of production rebuilds what the new rows reach; green schemas
            # start empty and build everything
            "narrow": staging.holds_live,
        },
        "nodes": {}, "builds": [],
    })  # fmt: skip
    staged.save()
    staging.hold(staged.folder)
    return staged


def refresh_plan(staged: StagedRelease) -> RefreshPlan | None:
    saved = staged.data.get("refresh")
    if saved is None:
        return None
    return RefreshPlan(saved["previous"], staged.data["marks"], saved["since"],
                       tuple(saved["excluded"]), saved["new_rows"],
                       tuple(saved["selection"]))  # fmt: skip


def _restored_staging(engine: Engine, staged: StagedRelease) -> Staging:
    staging = staging_for(engine)
    if hasattr(staging, "schemas"):
        staging.schemas = list(staged.data.get("schemas") or [])
    return staging


def publish_release(engine: Engine, artifacts_dir: Path, summary: Path | None) -> int:
    """Refuse a release whose builds did not all pass; else the job's last steps, the swap,
    the state and the history. A failure from here on discards the release."""
    check_release_target(engine)
    staged = records.require_staged(artifacts_dir, engine, "release publish")
    job = JOBS[staged.job]
    early = records.publish_problems(staged, None, full=False)
    if early:  # before any work: what the record alone says
        raise Unpublishable(
            f"{staged.describe()} cannot be published: {'; '.join(early)}; build again "
            "(`mediapulse release build`) and publish, or `mediapulse release discard`; "
            "production untouched"
        )
    with release_lock(engine, f"{job.name} (publish)") as lock:
        staged = records.require_staged(artifacts_dir, engine, "release publish")
        staging = _restored_staging(engine, staged)
        live = staging.live_release_id()
        if live != staged.data.get("live_at_prepare"):
            raise MediaPulseError(
                f"production is release {live}, not release {staged.data.get('live_at_prepare')} "
                f"that {staged.describe()} was copied from: discard it (`mediapulse release "
                "discard`) and prepare again; production untouched"
            )
        run = _Run(engine, artifacts_dir, job, staging, refresh_plan(staged), staged.env,
                   list(staged.data.get("notes") or []), lock)  # fmt: skip
        return _publish(run, staged, summary)


def _publish(run: _Run, staged: StagedRelease, summary: Path | None) -> int:
    engine, job = run.engine, run.job
    state_dir = run.state_dir
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    clock = history.Job(job.name, engine.target)
    clock.started = datetime.fromisoformat(staged.data["started"])
    clock.clock -= records.elapsed_since(staged.data["prepared_at"])
    run.steps = [Step("build", "dbt " + " ".join(b["args"]), b["success"], b["seconds"])
                 for b in staged.data.get("builds") or []]  # fmt: skip
    try:
        ok, report = _finish(run, staged, clock)
    except Unpublishable:
        raise  # the release stays staged, for the builds that fix it
    except BaseException:
        history.record_job(engine, clock, False, state_dir)
        _close(run.staging, staged, records.DISCARDED)
        raise
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    print(report)
    write_summary(report, summary)
    if not ok:
        print(f"{job.name} on target '{engine.target}' failed: production left as it was")
        return 1
    return 0


def _finish(run: _Run, staged: StagedRelease, clock: history.Job) -> tuple[bool, str]:
    """What the job does after its builds, in one dbt process: its own last steps (a parse
    gives the manifest when no docs do), the refusal of failed builds, then the swap."""
    engine, job, state_dir = run.engine, run.job, run.state_dir
    finishing: list[tuple[str, list[str]]] = []
    if job.freshness:
        finishing.append(("freshness", ["source", "freshness", "--select", "source:*",
                                        "--exclude", "source:monitoring"]))  # fmt: skip
    finishing.append(DOCS_STEP if job.docs else ("parse", ["parse"]))
    # the builds' saved parse: publish parses only what changed since them
    share_parse(staged.folder / PARSE, engine.project.target_dir / PARSE)
    with runner.session(engine, run.env) as dbt:
        built_steps = list(run.steps)
        run.steps = []
        ok = run.build(finishing, state_dir)
        finished, run.steps = run.steps, built_steps
        manifest = artifacts.load_json(state_dir / "manifest.json", "manifest")
        problems = records.publish_problems(staged, manifest, job.full_refresh)
        if problems:
            raise Unpublishable(
                f"{staged.describe()} cannot be published: {'; '.join(problems)}; build them "
                "again (`mediapulse release build -- build --select ...`) and publish, or "
                "`mediapulse release discard`; production untouched"
            )
        _gather_results(staged, state_dir)
        share_parse(staged.folder / PARSE, state_dir / RELEASE_PARSE)  # for the next release
        run.steps += finished
        if ok and job.monitoring:
            run.notes.append(run.monitoring_views())
        run._carry_over()
        return _swap(run, staged, clock, ok, dbt)


def _swap(
    run: _Run, staged: StagedRelease, clock: history.Job, ok: bool, dbt: runner.DbtSession
) -> tuple[bool, str]:
    # the code of the checkout publish runs in: every model built in the release was built
    # from it (publish refused any built from other code), fixes made after prepare included
    code = code_fingerprint(run.project)
    ok, report = run.swap_and_record(staged.release_id, code, staged.data["marks"], clock, ok,
                                     dbt)  # fmt: skip
    _close(run.staging, staged, records.PUBLISHED if ok else records.DISCARDED)
    return ok, report


def _gather_results(staged: StagedRelease, state_dir: Path) -> None:
    """The builds' results as one run_results.json for the published state: each node's last."""
    merged = staged.folder / "run_results.json"
    if merged.is_file():
        shutil.copy2(merged, state_dir / "run_results.json")


def _close(staging: Staging, staged: StagedRelease, status: str) -> None:
    """The staged release is gone (swapped in, or dropped): its record says so."""
    if status != records.PUBLISHED:
        staging.discard()
    staging.release_hold()
    staged.data["status"] = status
    staged.data[f"{status}_at"] = records.now()
    staged.save()


def discard_release(engine: Engine, artifacts_dir: Path) -> int:
    """Drop the staged release; production untouched. Recorded as a failed run of its job."""
    staged = records.load(artifacts_dir)
    if staged is None or staged.status != STAGED:
        print(f"no release is staged for {artifacts_dir}: nothing to discard")
        return 0
    staged = records.require_staged(artifacts_dir, engine, "release discard")
    with release_lock(engine, f"{staged.job} (discard)"):
        staging = _restored_staging(engine, staged)
        clock = history.Job(staged.job, engine.target)
        clock.started = datetime.fromisoformat(staged.data["started"])
        _close(staging, staged, records.DISCARDED)
        print(history.record_job(engine, clock, False, None))
    print(f"{staged.describe()} discarded: production left as it was")
    return 0


def status(artifacts_dir: Path, as_json: bool) -> str:
    staged = records.load(artifacts_dir)
    if as_json:
        return json.dumps(staged.data if staged else {"status": "none"}, indent=2, default=str)
    if staged is None:
        return f"no release has been prepared for {artifacts_dir}"
    nodes = staged.nodes
    failed = sorted(u for u, r in nodes.items() if r["status"] in records.FAILED)
    lines = [f"{staged.describe()}: {staged.status}",
             f"builds: {len(staged.data.get('builds') or [])}, nodes recorded: {len(nodes)}, "
             f"failed: {len(failed)}"]  # fmt: skip
    lines += [f"  failed: {u}: {nodes[u]['message'].splitlines()[0] if nodes[u]['message'] else ''}"
              for u in failed]  # fmt: skip
    return "\n".join(lines)


def build_in_release(engine: Engine, artifacts_dir: Path, dbt_args: list[str]) -> int:
    """`dbt <dbt_args>` (default: the job's own build) inside the staged release, from the
    project's directory (dbt/in_release.py runs it; mediapulse-dbt is the same from any
    directory, for schedulers that call dbt themselves)."""
    staged = records.require_staged(artifacts_dir, engine, "release build")
    args = dbt_args or ["build"]
    return run_in_release(engine, artifacts_dir, staged, args, cwd=engine.project.root)
