"""MediaPulse's release jobs as Airflow DAGs (Airflow 3, astronomer-cosmos 1.15).

One DAG per job (`mediapulse_nightly`, `mediapulse_refresh`), each the release's steps:

    prepare -> [Cosmos task group: one dbt build, one task per model with its tests]
            -> publish -> record -> report -> alert

`prepare`, `publish` and the monitoring steps are the `mediapulse` commands of the release
(docs/orchestrators/airflow.md). The task group is rendered from dbt's manifest, never by
running dbt while Airflow parses the file. Its tasks run dbt through `mediapulse-dbt`, so every
dbt call works inside the staged release and is recorded there.

Execution: Cosmos' operators (LOCAL mode, dbt as a subprocess: `mediapulse-dbt`) in the
watcher's pattern. The `build` task runs the job's whole `dbt build` in one dbt process, as the
nightly does (a dbt process per model is what made Cosmos 7x slower, its issue #840); each
model's task then reads what the release recorded of its model and tests, and runs dbt only
when the build could not settle them: a model dbt skipped for a failure upstream, once the
tasks upstream have passed (a resumed release), or a failed model whose task was cleared. A
model or test that failed fails its task at once, without a retry: only transient errors are
retried, and `mediapulse-dbt` retries those itself. (Cosmos' WATCHER classes rely on Airflow
retries for the same: docs/orchestrators/airflow.md says why they are not used.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import PROJECT_ENV, Project
from mediapulse.dbt.pii import KEY_ENV as PII_KEY_ENV
from mediapulse.engines.base import DEFAULT_TARGETS, PROD_ROLE, PROD_TARGET_ENV
from mediapulse.engines.secrets import CONNECTION_SECRETS
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history
from mediapulse.release import record as records

PACKAGES_HINT = "pip install -e '.[airflow]' in the checkout, into Airflow's own environment"


def _missing_packages() -> list[str]:
    missing = []
    for module, package in (("airflow.sdk", "apache-airflow>=3"), ("cosmos", "astronomer-cosmos")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    return missing


if _missing_packages():
    raise MediaPulseError(
        f"MediaPulse's Airflow DAGs need the Python package(s) {', '.join(_missing_packages())}, "
        f"missing in {sys.executable}: {PACKAGES_HINT}"
    )


from airflow.providers.standard.operators.bash import BashOperator  # noqa: E402
from airflow.providers.standard.operators.empty import EmptyOperator  # noqa: E402
from airflow.providers.standard.operators.python import PythonOperator  # noqa: E402
from airflow.sdk import DAG, TaskGroup  # noqa: E402
from airflow.sdk.exceptions import AirflowFailException  # noqa: E402
from cosmos import (  # noqa: E402
    DbtTaskGroup,
    ExecutionConfig,
    ExecutionMode,
    InvocationMode,
    LoadMode,
    ProfileConfig,
    ProjectConfig,
    RenderConfig,
    TestBehavior,
)
from cosmos import settings as cosmos_settings  # noqa: E402
from cosmos.constants import DbtResourceType  # noqa: E402
from cosmos.dbt.graph import DbtNode  # noqa: E402
from cosmos.operators.local import DbtBuildLocalOperator  # noqa: E402

ARTIFACTS_ENV = "MEDIAPULSE_ARTIFACTS"  # production's published state (`--artifacts`)
MANIFEST_ENV = "MEDIAPULSE_AIRFLOW_MANIFEST"  # the manifest the task groups are drawn from
REPORT_ENV = "MEDIAPULSE_AIRFLOW_REPORT_DIR"  # where `mediapulse report` writes the page
BIN_ENV = "MEDIAPULSE_BIN"  # where `mediapulse` and `mediapulse-dbt` are
SKIP_CODE = 99  # `release prepare --skip-code`: BashOperator skips what follows on it
# Nothing about the runs leaves the machine: Cosmos' usage statistics (Scarf) and Airflow's
# usage data collection are off, and so is dbt's tracking (DO_NOT_TRACK, also set by mediapulse)
QUIET_ENV = {
    "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
}
# dbt nodes a release builds that are not the project's own (selectors.yml, `mediapulse`)
EXCLUDED = ("package:dbt_project_evaluator", "path:models/monitoring")
PASSED = frozenset({"success", "pass", "warn"})
BROKEN = frozenset({"error", "fail", "runtime error"})


@dataclass(frozen=True)
class Job:
    """A release job as a DAG: its schedule and what its build does."""

    name: str
    schedule: str
    timeout_min: int  # the DAG run's limit, and how recent the alert wants the run

    @property
    def dag_id(self) -> str:
        return f"mediapulse_{self.name}"


# The same schedules and limits as the GitHub workflows (nightly.yml, refresh.yml)
JOBS = (
    Job("nightly", "0 2 * * *", timeout_min=60),
    Job("refresh", "15 * * * *", timeout_min=30),
)


@dataclass(frozen=True)
class Settings:
    """Where the DAGs find the project, production's state and the commands; from the
    environment Airflow runs with."""

    project: Path
    artifacts: Path
    target: str
    manifest: Path
    bin_dir: Path
    report_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str], project: Path) -> Settings:
        """The settings for the checkout ``project`` (the DAG file's, unless
        $MEDIAPULSE_PROJECT_DIR names another), or one line naming what is missing."""
        project = Path(environ.get(PROJECT_ENV) or project).resolve()
        artifacts = environ.get(ARTIFACTS_ENV)
        if not artifacts:
            raise MediaPulseError(
                f"MediaPulse's Airflow DAGs need the variable {ARTIFACTS_ENV} (production's "
                "published state, the directory `mediapulse nightly --artifacts` writes), unset "
                "in Airflow's environment"
            )
        bin_dir = Path(environ.get(BIN_ENV) or Path(sys.executable).parent)
        return cls(
            project=project,
            artifacts=Path(artifacts).resolve(),
            # the Airflow environment's production target, else the role's default
            target=environ.get(PROD_TARGET_ENV) or DEFAULT_TARGETS[PROD_ROLE][1],
            manifest=Path(
                environ.get(MANIFEST_ENV) or _manifest(Path(artifacts).resolve(), project)
            ),
            bin_dir=bin_dir,
            report_dir=Path(environ.get(REPORT_ENV) or project / "report"),
        )

    def command(self, name: str) -> Path:
        """A console script of the project's environment (`mediapulse`, `mediapulse-dbt`)."""
        return self.bin_dir / name

    def task_env(self) -> dict[str, str]:
        """What every task adds to Airflow's environment: the project, production's state,
        the target, and no telemetry."""
        return {
            PROJECT_ENV: str(self.project),
            ARTIFACTS_ENV: str(self.artifacts),
            PROD_TARGET_ENV: self.target,
            **QUIET_ENV,
        }


def _manifest(artifacts: Path, project: Path) -> Path:
    """The manifest the DAGs are drawn from: production's (the published state's, replaced
    whole by each release, so a DAG never reads one half written), or before the first
    release the checkout's last parse."""
    published = artifacts / "manifest.json"
    return published if published.is_file() else project / "target" / "manifest.json"


def check(settings: Settings, environ: Mapping[str, str]) -> None:
    """Stop with one line when the DAGs cannot run: no project, no commands, an unknown
    target, a secret its engine needs unset, or no manifest to draw the task groups from."""
    if not (settings.project / "dbt_project.yml").is_file():
        raise MediaPulseError(
            f"no dbt_project.yml in {settings.project}: set {PROJECT_ENV} to the MediaPulse "
            "checkout the DAGs run"
        )
    missing = [n for n in ("mediapulse", "mediapulse-dbt") if not settings.command(n).is_file()]
    if missing:
        raise MediaPulseError(
            f"no {' or '.join(missing)} in {settings.bin_dir} ({BIN_ENV}): {PACKAGES_HINT}"
        )
    engine = resolve(Project.discover(settings.project), settings.target)
    needs = list(CONNECTION_SECRETS.get(engine.kind, ()))
    if not engine.checkout_key_allowed:
        needs.append(PII_KEY_ENV)
    unset = [name for name in needs if not environ.get(name)]
    if unset:
        raise MediaPulseError(
            f"target '{settings.target}' ({engine.kind}, {PROD_TARGET_ENV}) needs the "
            f"variable(s) {', '.join(unset)}, unset in Airflow's environment"
        )
    if not settings.manifest.is_file():
        raise MediaPulseError(
            f"no dbt manifest at {settings.manifest} to draw the DAGs from: run the first "
            f"release by hand (`mediapulse nightly`) or `dbt parse --target {settings.target}` "
            f"in the checkout (or set {MANIFEST_ENV})"
        )


def configure_cosmos() -> None:
    """Cosmos as these DAGs need it, in this process and in what it starts.

    No telemetry: Cosmos reads its setting once, when first imported (Airflow's plugin manager
    may have imported it before this file), so its module-level switches are set as well as
    the variables. No DAG versioning hash: Cosmos would read every file of the checkout at each
    parse, the warehouse's DuckDB files included (gigabytes at scale); the manifest the DAGs
    are drawn from changes with the code anyway. And orjson, when installed, reads the
    manifest."""
    for name, value in QUIET_ENV.items():
        os.environ[name] = value
    cosmos_settings.enable_telemetry = False
    cosmos_settings.do_not_track = True
    cosmos_settings.no_analytics = True
    cosmos_settings.enable_dag_versioning = False
    cosmos_settings.enable_orjson_parser = importlib.util.find_spec("orjson") is not None


# --- one model's task ----------------------------------------------------------------------


@dataclass(frozen=True)
class Checks:
    """What a model's task answers for, from the manifest: ``tests`` run with it alone (its
    data tests, its unit tests, the tests of the sources it reads), ``shared`` tests it shares
    with other models (a relationship), and the ``sources`` whose tests a build of it runs."""

    tests: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


def verdict(model: str | None, tests: Iterable[str | None], shared: Iterable[str | None],
            cleared: bool) -> str:  # fmt: skip
    """What a model's task does with what the release recorded of its model and tests (pure):
    "passed" (nothing to run), "failed" (the model or a test of it failed: the task fails, but
    once cleared it builds them again) or "build" (dbt skipped it for a failure upstream).
    Nothing recorded: the build did not select it (a refresh builds what new rows reach). A
    shared test skipped is the other model's to run."""
    own = [model, *tests]
    if any(s in BROKEN for s in [*own, *shared]):
        return "build" if cleared else "failed"
    if model is None or all(s in PASSED or s is None for s in own):
        return "passed"
    return "build"


class ReleaseBuildOperator(DbtBuildLocalOperator):
    """The release's build: the job's whole `dbt build`, one dbt process, through
    `mediapulse-dbt` inside the staged release (which records each node's result).

    It fails only when dbt could not run the build: when dbt ran it and some models or tests
    failed (exit code 1), each failure is its model's task's to report, so that the one red
    task is the one to clear. Cleared, it runs the whole build again in the same release."""

    def handle_exception_subprocess(self, result: Any) -> None:
        if result.exit_code == 1:
            self.log.warning("the build ran and some nodes failed: their models' tasks say which")
            return
        super().handle_exception_subprocess(result)


class ReleaseModelOperator(DbtBuildLocalOperator):
    """A model (seed, snapshot) and its tests in the staged release.

    The release's build built them: this task reports what the release recorded, and runs dbt
    only when the build could not settle the model: `mediapulse-dbt build --select <the model>`
    (the model, its tests, its sources' tests) when dbt skipped it for a failure upstream that
    has since passed (a resumed release), or when the task, failed, was cleared. A model or
    test that failed in the build fails the task at once, without a retry."""

    def __init__(self, *, model_id: str, checks: Checks, artifacts: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id
        self.checks = checks
        self.artifacts = artifacts

    def execute(self, context: Any, **kwargs: Any) -> None:
        staged = records.load(Path(self.artifacts))
        nodes = staged.nodes if staged is not None and staged.status == records.STAGED else {}
        status = {uid: (nodes.get(uid) or {}).get("status") for uid in self._judged()}
        checks, cleared = self.checks, context["ti"].try_number > 1
        outcome = verdict(status[self.model_id], [status[t] for t in checks.tests],
                          [status[t] for t in checks.shared], cleared)  # fmt: skip
        if outcome == "failed":
            raise AirflowFailException(_failure_line(self.model_id, self._judged(), nodes))
        if outcome == "passed":
            self.log.info("%s and its %d tests: passed in the release's build",
                          self.model_id, len(checks.tests) + len(checks.shared))  # fmt: skip
            return
        self.log.info("building %s and its tests in the staged release (%s)", self.model_id,
                      "cleared" if cleared else "skipped by the build")  # fmt: skip
        super().execute(context, **kwargs)

    def _judged(self) -> list[str]:
        return [self.model_id, *self.checks.tests, *self.checks.shared]


def _failure_line(model_id: str, judged: list[str], nodes: Mapping[str, Any]) -> str:
    """One line: what failed (the model or its first failed test), dbt's first line, and
    what to do."""
    uid = next(u for u in judged if (nodes.get(u) or {}).get("status") in BROKEN)
    message = str(nodes[uid].get("message") or "").strip().splitlines()
    return (
        f"{uid} {nodes[uid]['status']} in the release's build"
        f"{': ' + message[0] if message else ''}; production is unchanged and the release stays "
        f"staged: fix it, then clear this task to build {model_id.split('.')[-1]} and what "
        "follows it in the same release"
    )


# --- the DAGs -------------------------------------------------------------------------------


def checks_by_model(manifest: Mapping[str, Any]) -> dict[str, Checks]:
    """Each model's, seed's and snapshot's tests (pure), as `dbt build --select` of it runs
    them: a test of one model alone is that model's; a test of several (a relationship, a
    reconciliation) is shared by each; a test of sources only belongs to the models that read
    those sources, and the build of such a model selects the sources' tests too."""
    tests: dict[str, list[str]] = {}
    shared: dict[str, list[str]] = {}
    by_source: dict[str, list[str]] = {}
    nodes = [*manifest["nodes"].values(), *(manifest.get("unit_tests") or {}).values()]
    for node in nodes:
        if node["resource_type"] not in ("test", "unit_test"):
            continue
        parents = sorted(set(node["depends_on"]["nodes"]))
        built = [p for p in parents if not p.startswith("source.")]
        if not built:
            for source in parents:
                by_source.setdefault(source, []).append(node["unique_id"])
        for parent in built:
            (tests if len(built) == 1 else shared).setdefault(parent, []).append(node["unique_id"])
    return {uid: _checks_of(node, tests, shared, by_source, manifest["sources"])
            for uid, node in manifest["nodes"].items()}  # fmt: skip


def _checks_of(node: Mapping[str, Any], tests: Mapping[str, list[str]],
               shared: Mapping[str, list[str]], by_source: Mapping[str, list[str]],
               sources: Mapping[str, Any]) -> Checks:  # fmt: skip
    read = sorted(p for p in node.get("depends_on", {}).get("nodes", []) if p in sources)
    uid = node["unique_id"]
    return Checks(
        tests=tuple(
            sorted([*tests.get(uid, []), *(t for s in read for t in by_source.get(s, []))])
        ),
        shared=tuple(sorted(shared.get(uid, []))),
        sources=tuple(f"source:{sources[s]['source_name']}.{sources[s]['name']}" for s in read),
    )


def _model_task(
    settings: Settings, checks: Mapping[str, Checks], task_args: dict[str, Any]
) -> Callable[..., Any]:
    """Cosmos' node converter: a model, seed or snapshot as a ReleaseModelOperator. Keeps
    the arguments Cosmos gives its operators in ``task_args``, for the build's task."""
    kept = task_args

    def convert(*, dag: DAG, task_group: TaskGroup | None, node: DbtNode, task_id: str,
                task_args: dict[str, Any], **_: Any) -> ReleaseModelOperator:  # fmt: skip
        kept.update(task_args)
        mine = checks.get(node.unique_id, Checks())
        selected = f"fqn:{'.'.join(node.fqn)}" if node.fqn else node.resource_name
        return ReleaseModelOperator(
            task_id=task_id, dag=dag, task_group=task_group, model_id=node.unique_id,
            checks=mine, artifacts=str(settings.artifacts),
            select=" ".join([selected, *mine.sources]),
            extra_context={"dbt_node_config": node.context_dict}, **task_args,
        )  # fmt: skip

    return convert


def dbt_group(settings: Settings, dag: DAG) -> DbtTaskGroup:
    """The Cosmos task group of a release's build, drawn from the manifest: the build's task
    (`build`), then one task per model, seed and snapshot in dbt's order."""
    manifest = json.loads(settings.manifest.read_text())
    task_args: dict[str, Any] = {}
    model = _model_task(settings, checks_by_model(manifest), task_args)
    group = DbtTaskGroup(
        group_id="dbt",
        dag=dag,
        project_config=ProjectConfig(
            dbt_project_path=settings.project,
            manifest_path=settings.manifest,
            project_name="mediapulse",
            install_dbt_deps=False,
        ),
        profile_config=ProfileConfig(
            profile_name="mediapulse",
            target_name=settings.target,
            profiles_yml_filepath=settings.project / "profiles" / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=str(settings.command("mediapulse-dbt")),
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.BUILD,
            exclude=list(EXCLUDED),
            emit_datasets=False,
            enable_mock_profile=False,
            node_converters={
                DbtResourceType.MODEL: model,
                DbtResourceType.SEED: model,
                DbtResourceType.SNAPSHOT: model,
                DbtResourceType.EXPOSURE: _no_task,
                DbtResourceType("operation"): _no_task,
            },
        ),
        # the release decides --full-refresh (the nightly) and a refresh's selection; dbt is
        # never retried by Airflow (mediapulse-dbt retries transient errors itself)
        operator_args={
            "install_deps": False,
            "env": settings.task_env(),
            "append_env": True,
            "retries": 0,
        },
    )
    _build_first(group, task_args)
    return group


def _no_task(**_: Any) -> None:
    """Cosmos' node converter for what the build runs but is no task of its own: exposures
    (nothing to build) and the project's on-run-end hook."""
    return None


def _build_first(group: DbtTaskGroup, task_args: dict[str, Any]) -> None:
    """The build's task, first in the group: the models without a model upstream follow it
    (each model's task reads what the build recorded)."""
    roots = [t for t in group.children.values() if not t.upstream_task_ids]
    build = ReleaseBuildOperator(task_id="build", task_group=group, dag=group.dag,
                                 exclude=list(EXCLUDED), **task_args)  # fmt: skip
    build >> roots


def release_step(settings: Settings, task_id: str, *args: str | Path, **kwargs: Any) -> Any:
    """A `mediapulse` command of the release as a task, run from the checkout, never
    retried by Airflow."""
    command = shlex.join([str(settings.command("mediapulse")), *map(str, args)])
    return BashOperator(
        task_id=task_id, bash_command=f"cd {shlex.quote(str(settings.project))} && {command}",
        env=settings.task_env(), append_env=True, retries=0, **kwargs,
    )  # fmt: skip


def record_unpublished(project: str, artifacts: str, target: str, job: str) -> str:
    """The `record` task: a release left staged (a model failed; kept for the rebuild that
    resumes it) goes into the run history as a failed run of its job, from what its builds
    recorded, so that the alert sees it. A published or discarded release recorded itself."""
    staged = records.load(Path(artifacts))
    if staged is None or staged.status != records.STAGED:
        return "no release left staged: publish (or prepare) recorded this run"
    if not (staged.folder / "run_results.json").is_file():
        return f"{staged.describe()} is staged and nothing was built in it: nothing to record"
    engine = resolve(Project.discover(project), target)
    line = history.record_artifacts(engine, job, staged.folder)
    return f"{staged.describe()} is staged, unpublished: {line}"


def make_dag(settings: Settings, job: Job) -> DAG:
    """The DAG of one release job: prepare, the build, publish; then, whatever happened,
    record, report and alert."""
    on = ("--target", settings.target, "--artifacts", settings.artifacts)
    with DAG(
        dag_id=job.dag_id, schedule=job.schedule, start_date=datetime(2026, 1, 1),
        catchup=False, max_active_runs=1, dagrun_timeout=timedelta(minutes=job.timeout_min),
        tags=["mediapulse", "release"], doc_md=__doc__,
    ) as dag:  # fmt: skip
        prepare = release_step(settings, "prepare", "release", "prepare", "--job", job.name, *on,
                               "--skip-code", str(SKIP_CODE),
                               skip_on_exit_code=SKIP_CODE)  # fmt: skip
        group = dbt_group(settings, dag)
        publish = release_step(settings, "publish", "release", "publish", *on)
        # the run's outcome: passes when the release is live, so a run whose release failed is
        # a failed run, though record, report and alert run after it whatever happened
        released = EmptyOperator(task_id="released")
        record = PythonOperator(
            task_id="record", python_callable=record_unpublished, trigger_rule="all_done",
            op_args=[str(settings.project), str(settings.artifacts), settings.target, job.name],
            retries=0,
        )  # fmt: skip
        report = release_step(settings, "report", "report", *on, "--out", settings.report_dir,
                              trigger_rule="all_done")  # fmt: skip
        alert = release_step(settings, "alert", "alert", "--target", settings.target, "--job",
                             job.name, "--within", str(job.timeout_min),
                             trigger_rule="all_done")  # fmt: skip
        prepare >> group >> publish >> [released, record]
        record >> report >> alert
    return dag


def make_dags(environ: Mapping[str, str], dag_file: Path) -> dict[str, DAG]:
    """Every job's DAG, by dag_id, for the checkout the DAG file is in; one line when the
    packages, the commands or the target's variables are missing."""
    configure_cosmos()
    settings = Settings.from_env(environ, dag_file.resolve().parents[3])
    check(settings, environ)
    return {job.dag_id: make_dag(settings, job) for job in JOBS}
