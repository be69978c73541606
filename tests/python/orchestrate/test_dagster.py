"""The Dagster definitions (orchestrators/dagster/definitions.py, mediapulse/orchestrate/
dagster_defs.py) with real Dagster, dagster-dbt, dbt and DuckDB, on a copy of production built
by `mediapulse nightly`:

- loading them reads the manifest and runs no dbt, in a process of its own or inside;
- what is missing (production's state directory, a target, the manifest, the dbt packages) is
  one line;
- a clean run of `mediapulse_nightly` through the `dagster` CLI, in a network namespace with no
  way out, publishes the marts `mediapulse nightly` does and sends nothing (Dagster's telemetry
  and dbt's usage events off);
- a model made to fail fails the run and leaves production byte for byte as it was, the
  release staged; fixed, the run re-executed from its failure builds only what failed, what
  it skipped and what was edited since (and a model newer than the manifest, with a warning),
  then publishes;
- a refresh without new raw rows skips its build and publish; one with a new day publishes it.
"""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from mediapulse.ci.changed import RUNS_EVERY_TEST
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.engines.duckdb import production_file
from mediapulse.orchestrate import dagster_defs
from mediapulse.release import record as records

from ..conftest import clone_built, copy_project
from ..support import netsandbox
from ..support.compare_marts import same_rows, tolerances_of

BIN = Path(sys.executable).parent
DEFINITIONS = Path("orchestrators") / "dagster" / "definitions.py"
INSTANCE_YAML = Path("orchestrators") / "dagster" / "dagster.yaml"
BROKEN = Path("models") / "marts" / "engagement" / "fct_watch_sessions.sql"
ADDED = Path("models") / "staging" / "stg_added_after_the_manifest.sql"
GOOD_LINE = "content.duration_seconds as content_duration_seconds"
BAD_LINE = "content.no_such_column as content_duration_seconds"
EDITED = Path("models") / "marts" / "core" / "dim_content.sql"
# what the run after the fix must build: the model that failed, the one it skipped, and the
# one edited since it was built (none of these three is built from another)
REBUILT = {"marts/fct_watch_sessions", "marts/fct_daily_engagement", "marts/dim_content"}
# Variables a user may have set that would switch telemetry or tracking on or off: the tests
# choose
TRACKING_ENV = ("DO_NOT_TRACK", "DBT_SEND_ANONYMOUS_USAGE_STATS", "DAGSTER_DISABLE_TELEMETRY")


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_manifest(after_nightly: Project, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Production after `mediapulse nightly`, with the manifest the definitions read."""
    project = clone_built(after_nightly, tmp_path_factory.mktemp("dagster") / "project")
    assert dagster_defs.write_manifest(project) == project.root / dagster_defs.MANIFEST
    return project


@pytest.fixture
def production(with_manifest: Project, tmp_path: Path) -> Project:
    return clone_built(with_manifest, tmp_path / "project")


@pytest.fixture
def dagster_home(production: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A persistent Dagster instance with the project's dagster.yaml, and the variables a run
    reads. In memory where the machine has /dev/shm: Dagster's SQLite storage commits each of
    a run's ~600 events, several seconds on a disk."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(
        prefix="mediapulse-dagster-", dir=shm if shm.is_dir() else None
    ) as home:
        shutil.copy(production.root / INSTANCE_YAML, home)
        for name in ("MEDIAPULSE_PROJECT_DIR", "MEDIAPULSE_WAREHOUSE_DIR"):  # the copy's own
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("DAGSTER_HOME", home)
        monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("MEDIAPULSE_ARTIFACTS", str(production.root / "state"))
        yield Path(home)


# -- helpers --------------------------------------------------------------------------------


def _execute(project: Project, job: str, parent: str | None = None) -> str:
    """Run ``job`` of the project's definitions in this process (re-executing ``parent``
    from its failure); the run's id."""
    recon = ReconstructableRepository.for_file(
        str(project.root / DEFINITIONS), "defs", str(project.root)
    ).get_reconstructable_job(job)
    with dg.DagsterInstance.get() as instance:
        options = dg.ReexecutionOptions.from_failure(parent, instance) if parent else None
        return dg.execute_job(recon, instance, reexecution_options=options).run_id


def _run(run_id: str) -> tuple[dg.DagsterRunStatus, list[dg.EventLogEntry]]:
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        return run.status, list(instance.all_logs(run_id))


def _of_type(logs: list[dg.EventLogEntry], kind: dg.DagsterEventType) -> list[dg.EventLogEntry]:
    return [e for e in logs if e.dagster_event and e.dagster_event.event_type == kind]


def _materialized(logs: list[dg.EventLogEntry]) -> dict[str, dict]:
    """Each asset the run materialized: its metadata."""
    found = {}
    for entry in _of_type(logs, dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        assert materialization is not None
        found[materialization.asset_key.to_user_string()] = dict(materialization.metadata)
    return found


def _rebuilt(logs: list[dg.EventLogEntry]) -> set[str]:
    """The dbt assets dbt built in the run (not reported as left as they were)."""
    return {
        key for key, metadata in _materialized(logs).items()
        if not key.startswith("mediapulse/") and "mediapulse/not rebuilt" not in metadata
    }  # fmt: skip


def _digest(project: Project) -> dict[str, str]:
    """Production: its file and its published state, byte for byte."""
    files = [production_file(project), *sorted((project.root / "state").rglob("*"))]
    return {
        str(p.relative_to(project.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file()
    }


def _marts(project: Project) -> dict[str, tuple[dict, list[tuple]]]:
    """Every mart production holds: its manifest node and its rows."""
    manifest = json.loads((project.root / "state" / "manifest.json").read_text())
    nodes = {
        n["name"] + (f"_v{n['version']}" if n.get("version") is not None else ""): n
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["package_name"] == "mediapulse"
        and n["fqn"][1] == "marts"
    }  # fmt: skip
    with duckdb.connect(str(production_file(project)), read_only=True) as con:
        return {
            name: (node, con.execute(f"select * from {node['relation_name']}").fetchall())
            for name, node in nodes.items()
        }


def _assert_same_marts(published: Project, nightly: Project) -> None:
    mine, theirs = _marts(published), _marts(nightly)
    assert mine.keys() == theirs.keys()
    assert {"fct_daily_engagement", "fct_subscription_revenue", "revenue_by_content"} <= set(mine)
    for name, (node, rows) in theirs.items():
        assert rows, f"{name} is empty after the nightly: the comparison would prove nothing"
        difference = same_rows(
            rows, mine[name][1], tolerances_of(name, node), name, "the Dagster job"
        )
        assert difference is None, f"{name}: {difference}"


def _live(project: Project) -> str:
    return json.loads((project.root / "state" / "release.json").read_text())["release_id"]


def _user_env(**extra: str) -> dict[str, str]:
    """The caller's environment without MediaPulse or tracking choices, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MEDIAPULSE_", "DAGSTER_")) and k not in TRACKING_ENV
    }
    return {**env, **extra}


# -- the pure parts -------------------------------------------------------------------------


def _manifest(edges: dict[str, list[str]], tests: dict[str, list[str]]) -> dict:
    """A manifest of models (``edges``: each model's parents) and tests (the nodes they read)."""
    nodes = {
        uid: {"resource_type": uid.split(".")[0], "fqn": ["p", uid.split(".")[-1]],
              "depends_on": {"nodes": parents}}
        for uid, parents in {**edges, **tests}.items()
    }  # fmt: skip
    children: dict[str, list[str]] = {uid: [] for uid in nodes}
    for uid, parents in {**edges, **tests}.items():
        for parent in parents:
            children.setdefault(parent, []).append(uid)
    return {"nodes": nodes, "child_map": children, "parent_map": {**edges, **tests},
            "sources": {}}  # fmt: skip


def test_a_resumed_build_keeps_what_passed_and_rebuilds_what_failed_and_what_it_feeds() -> None:
    manifest = _manifest(
        {"model.p.a": [], "model.p.b": ["model.p.a"], "model.p.c": ["model.p.b"],
         "model.p.d": ["model.p.a"], "seed.p.s": []},
        {"test.p.a_ok": ["model.p.a"], "test.p.b_c": ["model.p.b", "model.p.c"],
         "test.p.d_fails": ["model.p.d"], "test.p.s_ok": ["seed.p.s"]},
    )  # fmt: skip
    ok, failed, skipped = {"status": "success"}, {"status": "error"}, {"status": "skipped"}
    passed = {"status": "pass"}
    results = {
        "model.p.a": ok, "model.p.b": failed, "model.p.c": skipped, "model.p.d": ok,
        "seed.p.s": ok, "test.p.a_ok": passed, "test.p.b_c": skipped,
        "test.p.d_fails": {"status": "fail"}, "test.p.s_ok": {"status": "warn"},
    }  # fmt: skip
    # b failed, c was skipped, d passed but its test failed: all three again, with their tests
    assert dagster_defs.kept_nodes(manifest, results) == {
        "model.p.a", "test.p.a_ok", "seed.p.s", "test.p.s_ok"
    }  # fmt: skip
    assert dagster_defs.kept_nodes(manifest, {}) == set()
    # a's code changed since it was built: a, all built from it, and their tests, again
    assert dagster_defs.kept_nodes(manifest, results, {"model.p.a"}) == {"seed.p.s", "test.p.s_ok"}
    args = dagster_defs.exclude_args(manifest, {"model.p.a", "test.p.a_ok"})
    assert args == ["--indirect-selection", "empty", "--exclude", "fqn:p.a fqn:p.a_ok"]
    assert dagster_defs.exclude_args(manifest, set()) == []
    order = dagster_defs.topological(manifest, {"model.p.c", "model.p.a", "model.p.b"})
    assert order == ["model.p.a", "model.p.b", "model.p.c"]


def test_a_refresh_reaches_what_its_selectors_name_and_what_is_built_from_it() -> None:
    manifest = _manifest(
        {"model.p.stg": ["source.p.raw.events"], "model.p.fct": ["model.p.stg"],
         "model.p.dim": [], "model.p.clock": [], "model.p.after_clock": ["model.p.clock"]},
        {},
    )  # fmt: skip
    manifest["sources"] = {"source.p.raw.events": {"source_name": "raw", "name": "events"}}
    manifest["child_map"]["source.p.raw.events"] = ["model.p.stg"]
    selectors = ["source:raw.events+", "fqn:p.clock+"]
    assert dagster_defs.reached(manifest, selectors) == {
        "model.p.stg", "model.p.fct", "model.p.clock", "model.p.after_clock"
    }  # fmt: skip
    with pytest.raises(MediaPulseError, match="neither source: nor fqn:"):
        dagster_defs.reached(manifest, ["tag:hourly"])
    # what the build leaves as it is live: the rest, where the refresh narrows (DuckDB's staged
    # copy holds production); nothing where it builds everything (PostgreSQL's green schemas)
    for narrow, left in ((True, {"model.p.dim"}), (False, set())):
        refresh = {"selection": selectors, "narrow": narrow}
        staged = records.StagedRelease(Path("."), {"release_id": "r1", "refresh": refresh})
        assert set(dagster_defs.not_built_here(manifest, staged, set())) == left


# -- loading --------------------------------------------------------------------------------

# Loads the definitions in a fresh interpreter that records every process it starts, every
# dbt invocation inside it and every file it writes under the project's target/, and prints
# what it loaded.
LOADER = """
import json, runpy, sys, time
started = time.perf_counter()
spawned, invoked, written = [], [], []
def audit(event, args):
    if event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.system"):
        spawned.append(repr(args[:2]))
    path, mode = (args[0], args[1]) if event == "open" else (None, None)
    if isinstance(path, str) and "/target/" in path and mode not in (None, "r", "rb"):
        written.append(path)
sys.addaudithook(audit)
from dbt.cli.main import dbtRunner
dbtRunner.invoke = lambda self, args, **kw: invoked.append(args)
defs = runpy.run_path(sys.argv[1])["defs"]
repository = defs.get_repository_def()
graph = defs.resolve_asset_graph()
print(json.dumps({
    "seconds": time.perf_counter() - started, "spawned": spawned, "invoked": invoked,
    "written": written,
    "jobs": sorted(j.name for j in repository.get_all_jobs() if not j.name.startswith("__")),
    "schedules": {s.name: s.cron_schedule for s in repository.schedule_defs},
    "assets": sorted(k.to_user_string() for k in graph.materializable_asset_keys),
    "checks": len(list(graph.asset_check_keys)),
}))
"""


@pytest.mark.dbt
def test_the_definitions_load_from_the_manifest_without_running_dbt(
    with_manifest: Project, tmp_path: Path
) -> None:
    project = with_manifest
    env = _user_env(MEDIAPULSE_ARTIFACTS=str(project.root / "state"), DAGSTER_DISABLE_TELEMETRY="1")
    # from a scheduler's own working directory, not the checkout (dbt's `path:` selectors glob
    # the working directory: the monitoring models came back as assets)
    done = subprocess.run(
        [sys.executable, "-c", LOADER, str(project.root / DEFINITIONS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    # no dbt, in a process or in this one (Python's `platform` may ask `file` what it is)
    assert not [c for c in loaded["spawned"] if "dbt" in c or "mediapulse" in c], loaded["spawned"]
    assert loaded["invoked"] == [], "loading the definitions invoked dbt"
    assert loaded["written"] == [], "loading the definitions wrote under target/"
    print(f"definitions loaded in {loaded['seconds']:.1f} s (a fresh interpreter, imports too)")
    assert loaded["seconds"] < 60

    assert loaded["jobs"] == ["mediapulse_discard", "mediapulse_nightly", "mediapulse_refresh"]
    assert loaded["schedules"] == {
        "mediapulse_nightly_schedule": "0 2 * * *", "mediapulse_refresh_schedule": "15 * * * *"
    }  # fmt: skip
    # every model, seed and snapshot a plain `dbt build` builds, and the release's two steps
    manifest = json.loads((project.root / dagster_defs.MANIFEST).read_text())
    built = {
        n["alias"] if n.get("version") is not None else n["name"]
        for n in manifest["nodes"].values()
        if n["resource_type"] in ("model", "seed", "snapshot")
        and n["package_name"] == "mediapulse"
        and not n["original_file_path"].startswith("models/monitoring/")
    }  # fmt: skip
    assert {"mediapulse/staged_release", "mediapulse/live_release"} <= set(loaded["assets"])
    assert {k.split("/")[-1] for k in loaded["assets"]} == built | {
        "staged_release", "live_release"
    }  # fmt: skip
    tests = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"]
    assert 100 < loaded["checks"] <= len(tests)


def _one_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = [
        line for line in result.stderr.splitlines()
        if line.strip() and "Warning" not in line and "return callback" not in line
    ]  # fmt: skip
    assert result.returncode != 0 and len(lines) == 1, result.stderr[-4000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _dagster_execute(project: Project, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "dagster"), "job", "execute", "-f", str(project.root / DEFINITIONS),
               "-j", "mediapulse_nightly"]  # fmt: skip
    return subprocess.run(
        command, cwd=project.root, env=env, capture_output=True, text=True, check=False,
        timeout=600,
    )  # fmt: skip


@pytest.mark.reads(*RUNS_EVERY_TEST, str(DEFINITIONS))
def test_what_is_missing_is_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the project's configuration and the job alone: each error comes before a model is read
    project = copy_project(tmp_path / "project", only=(*RUNS_EVERY_TEST, str(DEFINITIONS)))
    # through the `dagster` CLI: its own one-line error, no stack. The instance here is
    # Dagster's default (no dagster.yaml, telemetry on): the control of the clean run's test,
    # which finds no usage events where Dagster writes them
    default_home = tmp_path / "dagster-home"
    default_home.mkdir()
    done = _dagster_execute(project, _user_env(DAGSTER_HOME=str(default_home)))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-4000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: mediapulse: $MEDIAPULSE_ARTIFACTS is not set"), last
    # (after Dagster's own banner for an instance without a dagster.yaml, and its usage events)
    assert "execute_execute_command_started" in (default_home / "logs/event.log").read_text()

    for name in [n for n in os.environ if n.startswith("MEDIAPULSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MEDIAPULSE_ARTIFACTS", str(tmp_path / "state"))
    monkeypatch.setenv("MEDIAPULSE_PROD_TARGET", "staging")
    with pytest.raises(MediaPulseError, match="unknown target 'staging'"):
        dagster_defs.load(project.root)
    monkeypatch.delenv("MEDIAPULSE_PROD_TARGET")
    with pytest.raises(MediaPulseError, match=r"no dbt manifest at .*python -m mediapulse"):
        dagster_defs.load(project.root)

    # the manifest needs the dbt packages: without the hub or a mirror, one line, nothing done
    offline = {**_user_env(), "DBT_PACKAGES_MIRROR": "/nonexistent/mirror",
               "DBT_PACKAGE_HUB_URL": "http://127.0.0.1:9/"}  # fmt: skip
    made = subprocess.run(
        [sys.executable, "-m", "mediapulse.orchestrate.dagster_defs", str(project.root)],
        cwd=project.root, env=offline, capture_output=True, text=True, check=False,
    )  # fmt: skip
    _one_line(made, "cannot install dbt packages", "/nonexistent/mirror")
    assert not (project.root / "target").exists()


# -- runs -----------------------------------------------------------------------------------


@pytest.mark.dbt
def test_a_clean_run_publishes_the_marts_of_the_nightly_and_sends_nothing(
    production: Project, after_nightly: Project, tmp_path: Path
) -> None:
    problem = netsandbox.unavailable()
    if problem is not None:
        pytest.skip(f"no network sandbox: {problem}")
    before = _live(production)
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as home:
        shutil.copy(production.root / INSTANCE_YAML, home)
        env = _user_env(MEDIAPULSE_ARTIFACTS=str(production.root / "state"), DAGSTER_HOME=home,
                        DAGSTER_DISABLE_TELEMETRY="1")  # fmt: skip
        command = [str(BIN / "dagster"), "job", "execute", "-f",
                   str(production.root / DEFINITIONS), "-j", "mediapulse_nightly"]  # fmt: skip
        started = time.perf_counter()
        outcome = netsandbox.run(command, cwd=production.root, env=env, timeout_s=900)
        seconds = time.perf_counter() - started
        print(f"mediapulse_nightly through `dagster job execute`: {seconds:.0f} s")
        assert outcome.returncode == 0, outcome.output[-6000:]
        assert not outcome.attempts, f"the run tried to leave: {outcome.describe_attempts()}"
        assert "RUN_SUCCESS" in outcome.output
        # Dagster wrote no usage events (with telemetry on it logs them under logs/)
        assert not list(Path(home).glob("logs/*")), list(Path(home).glob("logs/*"))

    staged = records.load(production.root / "state")
    assert staged is not None and staged.status == records.PUBLISHED
    assert _live(production) == staged.release_id != before
    # dbt was told not to track, whatever the environment said
    metadata = json.loads((production.root / "state" / "manifest.json").read_text())["metadata"]
    assert metadata["send_anonymous_usage_stats"] is False
    _assert_same_marts(production, after_nightly)


def _break(project: Project) -> None:
    path = project.root / BROKEN
    text = path.read_text()
    assert GOOD_LINE in text
    path.write_text(text.replace(GOOD_LINE, BAD_LINE))


def _fix(project: Project) -> None:
    path = project.root / BROKEN
    path.write_text(path.read_text().replace(BAD_LINE, GOOD_LINE))


def _tick(project: Project, schedule: str) -> dg.SkipReason | list[dg.RunRequest]:
    recon = ReconstructableRepository.for_file(
        str(project.root / DEFINITIONS), "defs", str(project.root)
    )
    schedule_def = recon.get_definition().get_schedule_def(schedule)
    with dg.build_schedule_context() as context:
        data = schedule_def.evaluate_tick(context)
    return dg.SkipReason(data.skip_message) if data.skip_message else list(data.run_requests or [])


@pytest.mark.dbt
def test_a_failed_model_leaves_production_and_the_reexecution_resumes_then_publishes(
    production: Project, after_nightly: Project, dagster_home: Path
) -> None:
    before, live = _digest(production), _live(production)
    _break(production)

    failed = _execute(production, "mediapulse_nightly")

    status, logs = _run(failed)
    assert status == dg.DagsterRunStatus.FAILURE
    failures = _of_type(logs, dg.DagsterEventType.STEP_FAILURE)
    assert [f.step_key for f in failures] == ["dbt_build"]
    error = failures[0].dagster_event.step_failure_data.error  # type: ignore[union-attr]
    assert error is not None
    message = error.message.splitlines()[0]
    assert "fct_watch_sessions" in message and "production unchanged" in message, message
    assert "re-execute" in message and "mediapulse_discard" in message, message
    assert "mediapulse/live_release" not in _materialized(logs), "nothing published"
    assert _digest(production) == before, "production changed"
    staged = records.load(production.root / "state")
    assert staged is not None and staged.status == records.STAGED
    assert staged.nodes["model.mediapulse.fct_watch_sessions"]["status"] == "error"
    assert staged.nodes["model.mediapulse.fct_daily_engagement"]["status"] == "skipped"
    assert staged.nodes["model.mediapulse.dim_content"]["status"] == "success"
    # while it waits for a fix, the schedules start no run that would refuse
    tick = _tick(production, "mediapulse_nightly_schedule")
    assert isinstance(tick, dg.SkipReason) and staged.release_id in str(tick.skip_message)

    _fix(production)
    # a model that had passed, edited since (publish refuses what was built from other code)
    edited = production.root / EDITED
    edited.write_text("-- edited after the failed run\n" + edited.read_text())
    # and a model the definitions' manifest does not know: built in the release, not an asset
    (production.root / ADDED).write_text("select 1 as id\n")
    resumed = _execute(production, "mediapulse_nightly", parent=failed)

    status, logs = _run(resumed)
    assert status == dg.DagsterRunStatus.SUCCESS
    materialized = _materialized(logs)
    assert "mediapulse/staged_release" not in materialized, "prepared once, by the failed run"
    assert materialized["mediapulse/live_release"]["release"].value == staged.release_id
    # dbt built the model that failed and the one it skipped; the rest stayed as built
    assert _rebuilt(logs) == REBUILT
    kept = [k for k, m in materialized.items() if "mediapulse/not rebuilt" in m]
    assert "staging/stg_catalog__content" in kept and len(kept) > 25
    published = records.load(production.root / "state")
    assert published is not None and published.status == records.PUBLISHED
    assert published.nodes[f"model.mediapulse.{ADDED.stem}"]["status"] == "success"
    warnings = [e.user_message for e in logs if e.level == logging.WARNING]
    assert any(ADDED.stem in w and "write the manifest again" in w for w in warnings), warnings
    last = published.data["builds"][-1]
    assert last["success"] and "--exclude" in last["args"] and last["nodes"] < 60, last
    assert _live(production) == staged.release_id != live
    assert isinstance(_tick(production, "mediapulse_nightly_schedule"), list)
    _assert_same_marts(production, after_nightly)


@pytest.mark.dbt
def test_a_refresh_skips_without_new_rows_and_publishes_a_new_day(
    production: Project, dagster_home: Path
) -> None:
    live = _live(production)
    nothing = _execute(production, "mediapulse_refresh")
    status, logs = _run(nothing)
    assert status == dg.DagsterRunStatus.SUCCESS
    skipped = {e.step_key for e in _of_type(logs, dg.DagsterEventType.STEP_SKIPPED)}
    assert skipped == {"dbt_build", "mediapulse__live_release"}
    assert _materialized(logs) == {} and _live(production) == live

    sessions = len(_marts(production)["fct_watch_sessions"][1])
    generate.append_day(production.raw_path)
    refreshed = _execute(production, "mediapulse_refresh")
    status, logs = _run(refreshed)
    assert status == dg.DagsterRunStatus.SUCCESS
    record = json.loads((production.root / "state" / "release.json").read_text())
    assert record["job"] == "refresh" and record["release_id"] != live
    # dbt built what the new rows reach (the release's selection); the rest, seeds included,
    # is reported as left as it is live, and nothing is both
    staged = records.load(production.root / "state")
    assert staged is not None and staged.data["refresh"] is not None
    manifest = json.loads((production.root / dagster_defs.MANIFEST).read_text())
    reach = dagster_defs.reached(manifest, staged.data["refresh"]["selection"])
    names = {uid: manifest["nodes"][uid]["alias"] if manifest["nodes"][uid].get("version")
             else manifest["nodes"][uid]["name"] for uid in manifest["nodes"]}  # fmt: skip
    rebuilt = {k.split("/")[-1] for k in _rebuilt(logs)}
    assert rebuilt == {names[uid] for uid in reach} and "fct_watch_sessions" in rebuilt
    left = {
        k.split("/")[-1] for k, m in _materialized(logs).items() if "mediapulse/not rebuilt" in m
    }
    assert "currencies" in left and not left & rebuilt
    assert len(_marts(production)["fct_watch_sessions"][1]) > sessions, "the new day is live"
