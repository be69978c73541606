"""Dagster definitions of MediaPulse's releases (orchestrators/dagster/definitions.py loads
them; docs/orchestrators/dagster.md): dbt's models, seeds and snapshots as assets, its tests as
asset checks, read from a manifest (loading runs no dbt), built by dagster-dbt through
`mediapulse-dbt`, so every dbt call builds the staged release and is recorded in it.

A job is three steps: ``mediapulse/staged_release`` (`mediapulse release prepare`), the dbt
assets (one `dbt build` for the selection, each model's materialization and each test's check
result streamed as dbt reports it), ``mediapulse/live_release`` (`mediapulse release
publish`). A model that fails fails the step: nothing is published, and the staged release
stays for the retry. Re-executed from the failure, the dbt step builds only what this release
has not built and passed yet (its record says), then publish runs.
"""

import hashlib
import importlib.metadata
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence, Set
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource, dbt_assets
from dagster_dbt.errors import DagsterDbtCliRuntimeError
from packaging import version

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.dbt import deps
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.base import PROD_ROLE, default_target
from mediapulse.engines.targets import resolve
from mediapulse.release import record as records
from mediapulse.release.in_release import ARTIFACTS_ENV

if TYPE_CHECKING:  # what define_asset_job returns, not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

STAGED = dg.AssetKey(["mediapulse", "staged_release"])
LIVE = dg.AssetKey(["mediapulse", "live_release"])
GROUP = "release"
JOB_TAG = "mediapulse/job"  # which release a run prepares: nightly or refresh
# Where `python -m mediapulse.orchestrate.dagster_defs` writes the manifest the definitions read
MANIFEST = Path("target") / "dagster" / "manifest.json"
MANIFEST_ENV = "MEDIAPULSE_DAGSTER_MANIFEST"  # another manifest to read
# What a plain `dbt build` builds (selectors.yml, the default selector `mediapulse`), written
# as select and exclude: a release narrows a selection, which dbt ignores beside --selector
DBT_SELECT = "fqn:*"
# by name, not `path:` (dbt globs a path in the working directory, which a scheduler chooses)
DBT_EXCLUDE = "package:dbt_project_evaluator fqn:mediapulse.monitoring"
BUILT = ("model", "seed", "snapshot")
PASSED = ("success", "pass", "warn")
SKIP_CODE = 99  # `release prepare` when there is nothing to release (a refresh without rows)
STALE = (
    "write the manifest again (`python -m mediapulse.orchestrate.dagster_defs`) and reload "
    "the definitions"
)
NIGHTLY_CRON, REFRESH_CRON = "0 2 * * *", "15 * * * *"  # as .github/workflows/


def sibling(name: str) -> Path:
    """A console script of this environment (mediapulse, mediapulse-dbt)."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise MediaPulseError(
            f"{path} not found: install the package with its dagster extra "
            "(`pip install -e '.[dagster]'`) in the environment that runs Dagster"
        )
    return path


class ReleaseDbt(DbtCliResource):
    """dagster-dbt's dbt resource, less what it does in Dagster's own process before each
    call: load a dbt adapter, for metadata it fetches on request only (row counts, columns),
    and ask the executable its version. dbt runs in `mediapulse-dbt`, and Dagster's process
    holds no dbt state (about 2 s a call)."""

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return None

    @cached_property
    def _cli_version(self) -> version.Version:
        """The dbt `mediapulse-dbt` runs: this environment's dbt-core (dagster-dbt would start
        `mediapulse-dbt --version` to ask, a second a call)."""
        return version.parse(importlib.metadata.version("dbt-core"))


class Release(dg.ConfigurableResource):
    """The release's steps, as the `mediapulse release` commands (one process each)."""

    project_dir: str
    artifacts: str
    target: str

    def staged(self) -> records.StagedRelease:
        """The release staged for this production, or one line saying there is none."""
        found = records.load(Path(self.artifacts))
        if found is None or found.status != records.STAGED:
            raise dg.Failure(
                description=f"no release is staged for {self.artifacts}: run the whole job "
                "(its first step, mediapulse/staged_release, prepares one)"
            )
        return found

    def step(self, log: dg.DagsterLogManager, name: str, *args: str) -> tuple[int, str]:
        """`mediapulse release NAME`: its exit code and output (logged); its error, if any, is
        the output's last line."""
        where = ["--target", self.target, "--artifacts", self.artifacts]
        command = [str(sibling("mediapulse")), "--project-dir", self.project_dir, "release"]
        done = subprocess.run(
            [*command, name, *where, *args], capture_output=True, text=True, check=False
        )
        output = (done.stdout.strip() + "\n" + done.stderr.strip()).strip()
        log.info(f"$ mediapulse release {name} {' '.join(args)}\n{output}")
        return done.returncode, output


def refusal(name: str, code: int, output: str) -> dg.Failure:
    """A step that did not do its work: its last line (mediapulse's one-line error)."""
    last = (output.splitlines() or [f"exit code {code}"])[-1]
    return dg.Failure(
        description=f"mediapulse release {name} (exit {code}): {last}",
        metadata={"output": dg.MetadataValue.md(f"```\n{output}\n```")},
    )


@dg.asset(key=STAGED, group_name=GROUP, output_required=False, kinds={"mediapulse"})
def staged_release(
    context: dg.AssetExecutionContext, release: Release
) -> Iterator[dg.MaterializeResult]:
    """`mediapulse release prepare`: the job's checks, then a copy of production to build in.
    Nothing new to release (a refresh without new raw rows): no output, the run skips the rest."""
    job = context.run.tags.get(JOB_TAG)
    if job not in ("nightly", "refresh"):
        raise dg.Failure(
            description=f"run tag {JOB_TAG} is {job!r}: launch job mediapulse_nightly or "
            "mediapulse_refresh, which say which release to prepare"
        )
    code, output = release.step(context.log, "prepare", "--job", job, "--skip-code", str(SKIP_CODE))
    if code == SKIP_CODE:
        context.log.info(f"nothing to release: {output.splitlines()[-1] if output else ''}")
        return
    if code != 0:
        raise refusal("prepare", code, output)
    staged = release.staged()
    yield dg.MaterializeResult(
        metadata={
            "release": staged.release_id,
            "job": staged.job,
            "output": dg.MetadataValue.md(f"```\n{output}\n```"),
        }
    )


class ReleaseTranslator(DagsterDbtTranslator):
    """dbt's nodes as assets, each built inside the staged release: a model, seed or snapshot
    depends on ``mediapulse/staged_release``, so nothing builds before a release is staged."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: Any
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id.split(".", 1)[0] in BUILT:
            return spec.merge_attributes(deps=[STAGED])
        return spec


def _tested(manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each test and unit test of the manifest: the nodes it reads."""
    graph = {**manifest["nodes"], **(manifest.get("unit_tests") or {})}
    return {
        uid: list(node.get("depends_on", {}).get("nodes") or [])
        for uid, node in graph.items()
        if node["resource_type"] in ("test", "unit_test")
    }


def _descendants(manifest: Mapping[str, Any], roots: set[str]) -> set[str]:
    children = manifest.get("child_map") or {}
    seen, todo = set(roots), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child.split(".", 1)[0] in BUILT and child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def kept_nodes(
    manifest: Mapping[str, Any],
    results: Mapping[str, Mapping[str, Any]],
    changed: Set[str] = frozenset(),
) -> set[str]:
    """What a staged release already built and passed that building it again need not redo
    (pure; ``results`` is its record: unique id to last result; ``changed``, the nodes whose
    code changed since). A model, seed or snapshot is built again when it did not pass, when
    its code changed, when a test of it failed, or when anything it is built from is built
    again; a test runs again when it did not pass, changed, or reads what is built again."""
    passed = {
        uid for uid, result in results.items()
        if result["status"] in PASSED and uid not in changed
    }  # fmt: skip
    tests = _tested(manifest)
    again = {uid for uid in results if uid.split(".", 1)[0] in BUILT and uid not in passed}
    for test, parents in tests.items():
        if test in results and results[test]["status"] in records.FAILED:
            again.update(p for p in parents if p.split(".", 1)[0] in BUILT)
    again = _descendants(manifest, again)
    return {
        uid for uid in passed if uid not in again and not (uid in tests and set(tests[uid]) & again)
    }


def changed_since_built(
    root: Path, manifest: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]
) -> set[str]:
    """The recorded nodes whose SQL or CSV file is not the code the release built them from:
    dbt's checksum of a file is the SHA-256 of its text, stripped (publish refuses a node built
    from other code than the checkout's, so the retry must build it again)."""
    changed = set()
    for uid, result in results.items():
        node = manifest["nodes"].get(uid)
        path = root / node["original_file_path"] if node else None
        if not result.get("checksum") or path is None or path.suffix not in (".sql", ".csv"):
            continue
        text = path.read_text() if path.is_file() else ""
        if hashlib.sha256(text.strip().encode()).hexdigest() != result["checksum"]:
            changed.add(uid)
    return changed


def exclude_args(manifest: Mapping[str, Any], kept: set[str]) -> list[str]:
    """dbt arguments that leave ``kept`` out and nothing else: without indirect selection,
    excluding a model does not take the tests that read it with it (pure)."""
    if not kept:
        return []
    graph = {**manifest["nodes"], **(manifest.get("unit_tests") or {})}
    names = sorted("fqn:" + ".".join(graph[uid]["fqn"]) for uid in kept if uid in graph)
    return ["--indirect-selection", "empty", "--exclude", " ".join(names)]


def reached(manifest: Mapping[str, Any], selectors: list[str]) -> set[str]:
    """The models, seeds and snapshots a refresh's selection reaches (pure): its selectors are
    `source:SOURCE.TABLE+` and `fqn:NAME+` (release/execute.py, refresh_selection)."""
    roots: set[str] = set()
    for selector in selectors:
        method, _, value = selector.removesuffix("+").partition(":")
        if method == "source":
            found = {
                u
                for u, s in manifest["sources"].items()
                if f"{s['source_name']}.{s['name']}" == value
            }
        elif method == "fqn":
            found = {u for u, n in manifest["nodes"].items() if ".".join(n["fqn"]) == value}
        else:
            raise MediaPulseError(f"a refresh's selector {selector!r} is neither source: nor fqn:")
        roots |= _descendants(manifest, found) if selector.endswith("+") else found
    return {uid for uid in roots if uid.split(".", 1)[0] in BUILT}


def topological(manifest: Mapping[str, Any], uids: set[str]) -> list[str]:
    """``uids`` with each after the ones it is built from (pure)."""
    parents = manifest.get("parent_map") or {}
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(uid: str) -> None:
        if uid in seen:
            return
        seen.add(uid)
        for parent in parents.get(uid, []):
            visit(parent)
        if uid in uids:
            ordered.append(uid)

    for uid in sorted(uids):
        visit(uid)
    return ordered


def _whole(context: dg.AssetExecutionContext) -> bool:
    """Whether the step builds all its assets and checks (not a subset Dagster chose)."""
    assets_def = context.assets_def
    return context.selected_asset_keys == set(assets_def.keys) and set(
        context.selected_asset_check_keys
    ) == set(assets_def.check_keys)


def not_built_here(
    manifest: Mapping[str, Any], staged: records.StagedRelease, kept: set[str]
) -> dict[str, str]:
    """The selected nodes this step's `dbt build` will not build, and why: built and passed
    by an earlier attempt at this release, or, for a refresh, not reached by its new rows."""
    why = {
        uid: f"built and passed earlier in release {staged.release_id}: not rebuilt"
        for uid in kept
        if uid.split(".", 1)[0] in BUILT
    }
    refresh = staged.data.get("refresh")
    # a refresh narrows the build where the staged copy holds production (DuckDB); green
    # schemas (PostgreSQL) start empty and build everything
    if refresh is not None and refresh.get("narrow", True):
        reach = reached(manifest, list(refresh["selection"]))
        for uid in manifest["nodes"]:
            if uid.split(".", 1)[0] in BUILT and uid not in reach:
                why.setdefault(uid, "not reached by the refresh's new rows: as it is live")
    return why


def report_not_built(
    context: dg.AssetExecutionContext,
    manifest: Mapping[str, Any],
    key_of: Mapping[str, dg.AssetKey],
    why: Mapping[str, str],
) -> Iterator[dg.MaterializeResult]:
    """A result for each selected asset the build leaves as it is in the staged release, first
    and upstream first (Dagster takes a multi-asset's outputs in that order): publish depends
    on every dbt asset, and Dagster skips a step whose inputs were not all yielded."""
    for uid in topological(manifest, set(why)):
        if key_of[uid] in context.selected_asset_keys:
            yield dg.MaterializeResult(
                asset_key=key_of[uid], metadata={"mediapulse/not rebuilt": why[uid]}
            )


class _Raised(NamedTuple):
    error: BaseException


def read_ahead(invocation: DbtCliInvocation) -> Iterator[Any]:
    """dbt's events as a thread of their own reads them: dbt writes its log to a pipe, and
    when Dagster is slow to store an event (a commit each) a full pipe stops dbt itself. An
    interrupted step stops dbt as dagster-dbt does (SIGINT, then a wait)."""
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    end = object()

    def pump() -> None:
        try:
            for event in invocation.stream_raw_events():
                events.put(event)
        except BaseException as error:  # dbt failed: raised where the step runs
            events.put(_Raised(error))
        events.put(end)

    reader = threading.Thread(target=pump, name="dbt-events", daemon=True)
    reader.start()
    try:
        while (item := events.get()) is not end:
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        if invocation.process.poll() is None:
            invocation.process.send_signal(signal.SIGINT)
            invocation.process.wait(timeout=invocation.termination_timeout_seconds)
        reader.join()


def streamed(invocation: DbtCliInvocation, context: dg.AssetExecutionContext) -> Iterator[Any]:
    """dagster-dbt's events for each node as dbt reports it, but for a node the manifest the
    definitions were loaded from does not know (code newer than it: the release builds it,
    Dagster cannot name it): a warning instead of dagster-dbt's KeyError."""
    known = invocation.manifest["nodes"]
    unknown: list[str] = []
    for event in read_ahead(invocation):
        unique_id = event.raw_event["data"].get("node_info", {}).get("unique_id")
        if event.is_result_event and unique_id not in known:
            unknown.append(unique_id)
            continue
        yield from event.to_default_asset_events(
            manifest=invocation.manifest,
            dagster_dbt_translator=invocation.dagster_dbt_translator,
            context=context,
            target_path=invocation.target_path,
        )
    if unknown:
        context.log.warning(
            f"built in the release but not in the definitions' manifest: {', '.join(unknown)}; "
            f"{STALE}"
        )


def build_in_release(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    release: Release,
    manifest: Mapping[str, Any],
    key_of: Mapping[str, dg.AssetKey],
) -> Iterator[Any]:
    """One `dbt build` of the selection in the staged release, less what it already passed."""
    staged = release.staged()
    changed = changed_since_built(Path(dbt.project_dir), manifest, staged.nodes)
    kept = kept_nodes(manifest, staged.nodes, changed) if _whole(context) else set()
    if kept:
        context.log.info(
            f"resuming release {staged.release_id}: {len(kept)} nodes built and "
            "passed by an earlier attempt are not built again"
        )
    why = not_built_here(manifest, staged, kept)
    yield from report_not_built(context, manifest, key_of, why)
    done = {key_of[uid] for uid in why}
    # the project's own target/, not a new folder per call: dbt parses only what changed
    # since the last parse there, and publish's dbt steps then parse nothing again
    invocation = dbt.cli(
        ["build", *exclude_args(manifest, kept)],
        context=context,
        target_path=Path(dbt.project_dir) / "target",
    )
    try:
        for event in streamed(invocation, context):
            if isinstance(event, dg.Output):
                done.add(context.asset_key_for_output(event.output_name))
            yield event
    except DagsterDbtCliRuntimeError as exc:
        raise _failed(release, exc) from exc
    missing = sorted(k.to_user_string() for k in context.selected_asset_keys - done)
    if missing:  # publish would be skipped without a word: say it
        raise dg.Failure(
            description=f"dbt did not build {', '.join(missing[:5])} ({len(missing)} assets) "
            f"in release {staged.release_id}, which stays staged: if they left the code, "
            f"{STALE}; then re-execute this run from the failure"
        )


def _failed(release: Release, exc: Exception) -> dg.Failure:
    staged = release.staged()
    failed = sorted(u for u, r in staged.nodes.items() if r["status"] in records.FAILED)
    names = ", ".join(u.split(".", 2)[-1] for u in failed[:5]) or str(exc).splitlines()[0]
    return dg.Failure(
        description=f"dbt build failed in release {staged.release_id} ({names}): production "
        "unchanged, the release stays staged; fix it and re-execute this run from the "
        "failure (what passed is not built again), or launch mediapulse_discard",
        metadata={"failed": dg.MetadataValue.json(failed)},
    )


def dbt_assets_of(manifest_path: Path) -> dg.AssetsDefinition:
    """The dbt assets and checks of the manifest, built by one `dbt build` in the release."""
    translator = ReleaseTranslator()
    manifest = json.loads(manifest_path.read_text())
    key_of = {
        uid: translator.get_asset_spec(manifest, uid, None).key
        for uid, node in manifest["nodes"].items()
        if node["resource_type"] in BUILT
    }

    @dbt_assets(
        manifest=manifest,
        select=DBT_SELECT,
        exclude=DBT_EXCLUDE,
        dagster_dbt_translator=translator,
        name="dbt_build",
    )
    def dbt_build(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, release: Release
    ) -> Iterator[Any]:
        yield from build_in_release(context, dbt, release, manifest, key_of)

    return dbt_build


def live_release_of(dbt: dg.AssetsDefinition) -> dg.AssetsDefinition:
    @dg.asset(key=LIVE, group_name=GROUP, deps=[dbt], kinds={"mediapulse"})
    def live_release(context: dg.AssetExecutionContext, release: Release) -> dg.MaterializeResult:
        """`mediapulse release publish`: refuses a release whose builds did not all pass, else
        its last steps (freshness, docs, the monitoring views), the swap, the state."""
        release_id = release.staged().release_id
        code, output = release.step(context.log, "publish")
        if code != 0:
            raise refusal("publish", code, output)
        return dg.MaterializeResult(
            metadata={
                "release": release_id,
                "report": dg.MetadataValue.md(output),
            }
        )

    return live_release


@dg.op
def discard(context: dg.OpExecutionContext, release: Release) -> None:
    """`mediapulse release discard`: drop the staged release; production untouched."""
    code, output = release.step(context.log, "discard")
    if code != 0:
        raise refusal("discard", code, output)


@dg.job(name="mediapulse_discard", tags={JOB_TAG: "discard"})
def discard_job() -> None:
    """Drop a staged release that failed instead of re-executing it."""
    discard()


def release_job(name: str, assets: list[dg.AssetsDefinition]) -> "UnresolvedAssetJobDefinition":
    # one process for the three steps, which run one after the other: no step pays for
    # starting a process and loading the definitions again
    return dg.define_asset_job(
        f"mediapulse_{name}",
        selection=dg.AssetSelection.assets(*assets),
        tags={JOB_TAG: name},
        executor_def=dg.in_process_executor,
        description=f"`mediapulse {name}` as prepare, dbt build, publish",
    )


def release_schedule(
    job: "UnresolvedAssetJobDefinition", cron: str, artifacts: Path
) -> dg.ScheduleDefinition:
    """The job on ``cron`` (UTC), skipping a tick while a release is staged (failed, waiting
    for a fix and a re-execution, or a discard)."""

    @dg.schedule(job=job, cron_schedule=cron, execution_timezone="UTC", name=f"{job.name}_schedule")
    def _tick(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        staged = records.load(artifacts)
        if staged is not None and staged.status == records.STAGED:
            return dg.SkipReason(f"{staged.describe()} is staged: re-execute its run or discard")
        return dg.RunRequest()

    return _tick


def manifest_path(project: Project, state: Path) -> Path:
    """The manifest the definitions are drawn from: $MEDIAPULSE_DAGSTER_MANIFEST; else the
    one `python -m mediapulse.orchestrate.dagster_defs` writes; else the checkout's last dbt
    manifest (a run's build leaves production's there); else production's published one."""
    named = os.environ.get(MANIFEST_ENV)
    candidates = [Path(named)] if named else [
        project.root / MANIFEST, project.target_dir / "manifest.json", state / "manifest.json"
    ]  # fmt: skip
    for path in candidates:
        if path.is_file():
            return path
    raise MediaPulseError(
        f"no dbt manifest at {candidates[0]}: write it with `python -m "
        "mediapulse.orchestrate.dagster_defs` (the dbt packages and a parse, no warehouse) "
        "after each change of the project's code"
    )


def load(project_dir: Path | None = None) -> dg.Definitions:
    """The Definitions for the project at ``project_dir``; production's state directory from
    $MEDIAPULSE_ARTIFACTS, its target from $MEDIAPULSE_PROD_TARGET (default prod)."""
    project = Project.discover(project_dir)
    artifacts = os.environ.get(ARTIFACTS_ENV)
    if not artifacts:
        raise MediaPulseError(
            f"${ARTIFACTS_ENV} is not set: set it to production's state directory (the "
            "--artifacts of `mediapulse nightly`) in the environment Dagster runs in"
        )
    target = project.check_target(default_target(PROD_ROLE))
    state = Path(artifacts).resolve()
    dbt = dbt_assets_of(manifest_path(project, state))
    assets = [staged_release, dbt, live_release_of(dbt)]
    nightly, refresh = release_job("nightly", assets), release_job("refresh", assets)
    return dg.Definitions(
        assets=assets,
        jobs=[nightly, refresh, discard_job],
        schedules=[
            release_schedule(nightly, NIGHTLY_CRON, state),
            release_schedule(refresh, REFRESH_CRON, state),
        ],
        resources={
            "dbt": ReleaseDbt(
                project_dir=project.root,
                profiles_dir=project.profiles_dir,
                target=target,
                dbt_executable=str(sibling("mediapulse-dbt")),
            ),
            "release": Release(project_dir=str(project.root), artifacts=str(state), target=target),
        },
    )


def write_manifest(project: Project) -> Path:
    """The manifest the definitions read: the pinned packages (mirror or hub), then `dbt
    parse` of production's target into target/dagster (no warehouse is opened)."""
    deps.install(project, force=False)
    engine = resolve(project, default_target(PROD_ROLE))
    parsed = run_dbt(engine, ["parse", "--target-path", str(MANIFEST.parent)])
    if not parsed.success:
        raise MediaPulseError(f"dbt parse failed: {parsed.error}")
    return project.root / MANIFEST


def main(argv: list[str] | None = None) -> int:
    """`python -m mediapulse.orchestrate.dagster_defs [PROJECT_DIR]`: write the manifest."""
    args = sys.argv[1:] if argv is None else argv
    try:
        path = write_manifest(Project.discover(args[0] if args else None))
    except MediaPulseError as exc:
        print(f"mediapulse dagster: error: {exc}", file=sys.stderr)
        return 2
    print(f"manifest for the Dagster definitions written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
