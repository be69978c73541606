"""A GitHub Actions job, run here the way a hosted runner runs it, for our workflows' steps.

Each job starts in a new, empty workspace: `actions/checkout` clones the given commit of a git
repository, the download steps copy artifacts out of an artifact store (a directory standing
in for GitHub's: one folder per artifact name, holding what the latest successful run on
`main` uploaded), every `run:` step runs in bash with the environment the workflow gives it,
and the upload steps put files back. Secrets are GitHub's two kinds: the repository's, which
every job receives, and an environment's, which only a job that declares `environment:` with
that name receives; an environment's deployment-branch policy ("main" only) keeps a job on any
other ref from starting at all, as GitHub does. Nothing else reaches the job: not another
job's files, not the developer's environment variables. The Python environment is the one
thing the runner is given ready (GitHub: setup-python and a warm pip cache), as `.venv`
pointing at this test session's virtualenv, with install stamps so `make venv` and `make lint`
install nothing.

Only what our workflows use is supported; anything else (an unknown action, an expression
this module cannot evaluate) raises, so a workflow change cannot be rehearsed half-way.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

VENV = Path(sys.executable).parent.parent
STEP_TIMEOUT_S = 1800


# Each job a run of its own, with an id unique on this machine (GitHub's run ids are unique).
_RUN_IDS = itertools.count(os.getpid() * 1000 + 1)


class UnsupportedWorkflow(Exception):
    """The workflow uses something this emulator does not model."""


# -- the artifact store -----------------------------------------------------------------------


COMPLETED = ".completed"  # inside a store: the uploads of every finished run, failed ones too


@dataclass(frozen=True)
class Store:
    """Artifacts by name, as the download steps (`branch: main`) find them: with
    `workflow_conclusion: success` what the latest successful run on main uploaded, with
    `completed` what the latest finished run uploaded, whether it failed or not (the
    `completed()` store, kept inside this one)."""

    root: Path

    def completed(self) -> Store:
        return Store(self.root / COMPLETED)

    def path(self, name: str) -> Path:
        return self.root / name

    def has(self, name: str) -> bool:
        return self.path(name).is_dir()

    def names(self) -> set[str]:
        if not self.root.exists():
            return set()
        return {p.name for p in self.root.iterdir()} - {COMPLETED}

    def copy(self, destination: Path) -> Store:
        if self.root.exists():
            shutil.copytree(self.root, destination)
        else:
            destination.mkdir(parents=True)
        return Store(destination)

    def expire(self, name: str) -> None:
        """The retention period of an artifact ran out."""
        shutil.rmtree(self.path(name))
        shutil.rmtree(self.completed().path(name), ignore_errors=True)


def _upload(workspace: Path, spec: str, destination: Path, hidden: bool) -> int:
    """actions/upload-artifact: the files the paths match, stored relative to their least
    common ancestor (a single directory: its contents). Hidden files are left out unless
    `include-hidden-files`. Returns the number of files stored."""
    paths = [workspace / line.strip() for line in spec.splitlines() if line.strip()]
    existing = [p for p in paths if p.exists()]
    if not existing:
        return 0
    if len(existing) == 1 and existing[0].is_dir():
        root = existing[0]
    else:
        root = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in existing]))
    files = []
    for path in existing:
        files += [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    stored = 0
    for file in files:
        relative = file.relative_to(root)
        if not hidden and any(part.startswith(".") for part in relative.parts):
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
        stored += 1
    return stored


# -- expressions ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*')|(?P<op>\|\||&&|==|!=|!|\(|\))|(?P<call>[a-z]+)\(\)"
    r"|(?P<path>[A-Za-z_][\w.-]*)|(?P<bad>\S))"
)


def _lookup(path: str, context: Mapping[str, Any]) -> Any:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def evaluate(expression: str, context: Mapping[str, Any], status: Mapping[str, bool]) -> Any:
    """A GitHub expression of the forms our workflows use: property paths (`vars.X`,
    `github.event.pull_request.number`, `steps.guard.outcome`), 'strings', `||`, `&&`, `!`,
    `==`, `!=`, parentheses and the status functions. Like GitHub, `a || b` gives the first
    truthy operand."""
    tokens = []
    for match in _TOKEN.finditer(expression.strip()):
        if match.group("bad"):
            raise UnsupportedWorkflow(f"cannot evaluate {expression!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def primary() -> Any:
        kind, text = take()
        if kind == "op" and text == "!":
            return not primary()
        if kind == "op" and text == "(":
            value = disjunction()
            if take() != ("op", ")"):
                raise UnsupportedWorkflow(f"unbalanced parentheses in {expression!r}")
            return value
        if kind == "str":
            return text[1:-1]
        if kind == "call":
            if text not in status:
                raise UnsupportedWorkflow(f"unknown function {text}() in {expression!r}")
            return status[text]
        if kind == "path":
            if text in ("true", "false"):
                return text == "true"
            return _lookup(text, context)
        raise UnsupportedWorkflow(f"cannot evaluate {expression!r}")

    def comparison() -> Any:
        left = primary()
        while peek() in (("op", "=="), ("op", "!=")):
            _, op = take()
            right = primary()
            left = (left == right) if op == "==" else (left != right)
        return left

    def conjunction() -> Any:
        left = comparison()
        while peek() == ("op", "&&"):
            take()
            right = comparison()
            left = left and right
        return left

    def disjunction() -> Any:
        left = conjunction()
        while peek() == ("op", "||"):
            take()
            right = conjunction()
            left = left or right
        return left

    value = disjunction()
    if peek() is not None:
        raise UnsupportedWorkflow(f"cannot evaluate {expression!r}")
    return value


def render(text: str, context: Mapping[str, Any], status: Mapping[str, bool]) -> str:
    """`${{ ... }}` in a string replaced by its value (None renders empty, as on GitHub)."""

    def value(match: re.Match[str]) -> str:
        result = evaluate(match.group(1), context, status)
        if isinstance(result, bool):
            return "true" if result else "false"
        return "" if result is None else str(result)

    return re.sub(r"\$\{\{(.*?)\}\}", value, str(text))


def _condition(raw: Any, context: Mapping[str, Any], status: Mapping[str, bool]) -> bool:
    if raw is None:
        return status["success"]
    text = str(raw).strip()
    match = re.fullmatch(r"\$\{\{(.*)\}\}", text)
    expression = match.group(1) if match else text
    uses_status = re.search(r"\b(success|failure|cancelled|always)\(\)", expression)
    result = bool(evaluate(expression, context, status))
    # GitHub adds `success() &&` to a condition that names no status function
    return result if uses_status else result and status["success"]


# -- running a job ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """A deployment environment (Settings → Environments): its secrets, and the branches
    allowed to deploy to it (None: any ref, GitHub's default for a new environment)."""

    secrets: Mapping[str, str] = field(default_factory=dict)
    branches: tuple[str, ...] | None = None

    def refuses(self, ref: str) -> bool:
        if self.branches is None:
            return False
        return not any(ref == f"refs/heads/{b}" for b in self.branches)


def _ref_name(ref: str) -> str:
    return ref.removeprefix("refs/heads/")


@dataclass
class StepResult:
    name: str
    outcome: str  # success, failure, skipped
    command: str | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)  # what it wrote to $GITHUB_OUTPUT


@dataclass
class JobResult:
    workflow: str
    job: str
    workspace: Path
    steps: list[StepResult] = field(default_factory=list)
    uploaded: dict[str, Path] = field(default_factory=dict)  # this run's artifacts
    comment: str | None = None  # what the sticky PR comment step would post
    skipped: bool = False  # the job's `if:` was false
    environment: str | None = None  # the deployment environment it declares
    secrets: frozenset[str] = frozenset()  # the names its `secrets` context held
    not_started: str | None = None  # why GitHub did not start it (an environment's rules)

    @property
    def success(self) -> bool:
        return (
            not self.skipped and self.not_started is None
            and all(s.outcome != "failure" for s in self.steps)
        )  # fmt: skip

    def step(self, name: str) -> StepResult:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"no step {name!r} in {self.workflow}:{self.job}: {self.log()}")

    def log(self) -> str:
        """Every step's outcome and the tail of its output, for assertion messages."""
        parts = [f"--- not started: {self.not_started}"] if self.not_started else []
        for s in self.steps:
            parts.append(f"--- {s.name}: {s.outcome} ({s.seconds:.0f} s)")
            if s.outcome == "failure":
                parts.append((s.stdout[-3000:] + "\n" + s.stderr[-3000:]).strip())
        return "\n".join(parts)


def _runner_env() -> dict[str, str]:
    """The machine's environment as a job sees it: none of this session's MediaPulse or
    GitHub settings, which would reach into the developer's own warehouse or summary."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MEDIAPULSE_", "GITHUB_", "DBT_PROFILES", "DBT_PROJECT"))
    }


@dataclass
class Runner:
    """Runs one job of a workflow file, as a fresh hosted runner would."""

    repository: Path  # a git repository; checkout clones `ref` from it
    store: Store
    work: Path  # where workspaces are created
    # the repository's variables and secrets (`vars.*`, `secrets.*`); none by default: the
    # documented defaults apply (DuckDB), alerts are skipped
    variables: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    # deployment environments by name; a job naming one that is not here gets an empty one
    # with no protection (GitHub creates it on first use)
    environments: Mapping[str, Environment] = field(default_factory=dict)
    # pull request number -> the artifacts its latest PR workflow run uploaded (what a
    # download step with `pr:` finds)
    pull_requests: Mapping[str, Mapping[str, Path]] = field(default_factory=dict)

    def run(
        self,
        workflow_file: Path,
        job_name: str,
        *,
        commit: str,
        event: str,
        event_payload: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
        on_main: bool = False,
        ref: str | None = None,
        run_artifacts: Mapping[str, Path] | None = None,
        skip: tuple[str, ...] = (),
    ) -> JobResult:
        """Run the job; when it succeeds on main, its uploads replace the store's artifacts
        of the same names (what later runs will download). ``ref`` is the ref it runs on
        (default: main with ``on_main``, else a pull request's merge ref). Steps named in
        ``skip`` are not run (for steps that read and write nothing another step uses, proven
        elsewhere)."""
        workflow = yaml.safe_load(workflow_file.read_text())
        job = workflow["jobs"][job_name]
        runs = sorted(self.work.glob(f"{workflow_file.stem}-{job_name}-*"))
        workspace = self.work / f"{workflow_file.stem}-{job_name}-{len(runs) + 1}"
        workspace.mkdir(parents=True)
        result = JobResult(workflow_file.name, job_name, workspace)
        run_id = str(next(_RUN_IDS))
        ref = ref or ("refs/heads/main" if on_main else "refs/pull/1/merge")
        secrets = dict(self.secrets)  # the repository's; an environment's are added below
        context: dict[str, Any] = {
            "github": {
                "event_name": event,
                "event": dict(event_payload or {}),
                "ref": ref,
                "repository": "mediapulse/mediapulse",
                "run_id": run_id,
                "run_attempt": "1",
            },
            "inputs": dict(inputs or {}),
            "vars": dict(self.variables),
            "secrets": secrets,
            "steps": {},  # by step id: outcome, as each step ends
        }
        status = {"success": True, "failure": False, "cancelled": False, "always": True}
        if not _condition(job.get("if"), context, status):
            result.skipped = True
            return result
        declared = job.get("environment")
        if declared is not None:
            name = declared["name"] if isinstance(declared, Mapping) else str(declared)
            environment = self.environments.get(name, Environment())
            result.environment = name
            if environment.refuses(ref):
                result.not_started = (
                    f'Branch "{_ref_name(ref)}" is not allowed to deploy to {name} due to '
                    "environment protection rules."
                )
                return result
            secrets.update(environment.secrets)
        result.secrets = frozenset(secrets)
        env = _runner_env()
        env["HOME"] = os.environ.get("HOME", str(workspace))
        env["CI"] = "true"
        env["GITHUB_ACTIONS"] = "true"
        env["GITHUB_RUN_ID"], env["GITHUB_RUN_ATTEMPT"] = run_id, "1"
        env["GITHUB_REF"], env["GITHUB_REF_NAME"] = ref, _ref_name(ref)
        env["GITHUB_EVENT_NAME"] = event
        env["GITHUB_STEP_SUMMARY"] = str(workspace.parent / f"{workspace.name}.summary.md")
        for scope in (workflow.get("env"), job.get("env")):
            env.update({k: render(v, context, status) for k, v in (scope or {}).items()})
        uploads: dict[str, Path] = {}
        artifacts_dir = self.work / f"{workspace.name}.artifacts"
        for index, step in enumerate(job["steps"]):
            name = step.get("name") or step.get("uses") or f"step {index}"
            ok = all(s.outcome != "failure" for s in result.steps)
            status = {"success": ok, "failure": not ok, "cancelled": False, "always": True}
            if not _condition(step.get("if"), context, status):
                result.steps.append(StepResult(name, "skipped"))
                if step.get("id"):
                    context["steps"][step["id"]] = {"outcome": "skipped"}
                continue
            step_env = {**env}
            for key, value in (step.get("env") or {}).items():
                step_env[key] = render(value, context, status)
            if name in skip:
                result.steps.append(StepResult(name, "skipped"))
                continue
            started = time.perf_counter()
            outcome = self._step(step, name, workspace, step_env, context, status, uploads,
                                 artifacts_dir, run_artifacts or {}, result, commit)  # fmt: skip
            outcome.seconds = time.perf_counter() - started
            result.steps.append(outcome)
            if step.get("id"):
                context["steps"][step["id"]] = {"outcome": outcome.outcome,
                                                "outputs": outcome.outputs}  # fmt: skip
        result.uploaded = uploads
        if on_main:
            stores = [self.store.completed()] + ([self.store] if result.success else [])
            for store in stores:
                for name, path in uploads.items():
                    shutil.rmtree(store.path(name), ignore_errors=True)
                    shutil.copytree(path, store.path(name))
        return result

    def _step(
        self,
        step: dict[str, Any],
        name: str,
        workspace: Path,
        env: dict[str, str],
        context: Mapping[str, Any],
        status: Mapping[str, bool],
        uploads: dict[str, Path],
        artifacts_dir: Path,
        run_artifacts: Mapping[str, Path],
        result: JobResult,
        commit: str,
    ) -> StepResult:
        if "run" in step:
            command = render(step["run"], context, status)
            output = workspace.parent / f"{workspace.name}.output-{len(result.steps)}"
            output.write_text("")
            proc = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", command],
                cwd=workspace, env={**env, "GITHUB_OUTPUT": str(output)}, capture_output=True,
                text=True, timeout=STEP_TIMEOUT_S,
            )  # fmt: skip
            outcome = "success" if proc.returncode == 0 else "failure"
            outputs = dict(
                line.split("=", 1) for line in output.read_text().splitlines() if "=" in line
            )  # name=value lines (the multi-line form is not used by our workflows)
            return StepResult(name, outcome, command, proc.stdout, proc.stderr, outputs=outputs)
        uses = step["uses"].split("@")[0]
        if uses == "actions/cache":
            return StepResult(name, "success")  # a fresh runner: always a cache miss
        options = {k: render(v, context, status) for k, v in (step.get("with") or {}).items()}
        if uses == "actions/checkout":
            self._checkout(workspace, commit, env)
            return StepResult(name, "success")
        if uses == "actions/setup-python":
            venv = workspace / ".venv"
            venv.mkdir(parents=True, exist_ok=True)
            # bin, lib and pyvenv.cfg: `.venv/bin/python` is then the virtualenv's interpreter
            # (`make docs` runs it), as after a real `make venv`, not the base Python
            for name in ("bin", "lib", "pyvenv.cfg"):
                (venv / name).symlink_to(VENV / name, target_is_directory=name != "pyvenv.cfg")
            for part in ("", "-dev", "-postgres", "-spark", "-docs"):  # base, extras (Makefile)
                (venv / f".installed{part}").touch()  # newer than the checkout's lock files
            return StepResult(name, "success")
        if uses == "dawidd6/action-download-artifact" and options.get("pr"):
            # a pull request's artifact: what its latest PR workflow run uploaded
            if options.get("branch") or options.get("workflow") != "pr-slim-ci.yml":
                raise UnsupportedWorkflow(f"{name}: only pr-slim-ci.yml's runs of a PR modelled")
            artifact = options["name"]
            found = self.pull_requests.get(options["pr"], {}).get(artifact)
            if found is None:
                if options.get("if_no_artifact_found") == "warn":
                    return StepResult(name, "success", stderr=f"warning: no artifact {artifact}")
                return StepResult(name, "failure", stderr=f"no artifact {artifact}")
            shutil.copytree(found, workspace / options["path"], dirs_exist_ok=True)
            return StepResult(name, "success")
        if uses == "dawidd6/action-download-artifact":
            conclusion = options.get("workflow_conclusion")
            if options.get("branch") != "main" or conclusion not in ("success", "completed"):
                raise UnsupportedWorkflow(f"{name}: only main's finished runs are modelled")
            artifact = options["name"]
            store = self.store if conclusion == "success" else self.store.completed()
            if not store.has(artifact):
                if options.get("if_no_artifact_found") == "warn":
                    return StepResult(name, "success", stderr=f"warning: no artifact {artifact}")
                return StepResult(name, "failure", stderr=f"no artifact {artifact}")
            shutil.copytree(store.path(artifact), workspace / options["path"],
                            dirs_exist_ok=True)  # fmt: skip
            return StepResult(name, "success")
        if uses == "actions/download-artifact":  # an artifact of this same run
            artifact = options["name"]
            if artifact not in run_artifacts:
                return StepResult(name, "failure", stderr=f"no artifact {artifact} in this run")
            shutil.copytree(run_artifacts[artifact], workspace / options["path"],
                            dirs_exist_ok=True)  # fmt: skip
            return StepResult(name, "success")
        if uses == "actions/upload-artifact":
            artifact = options["name"]
            destination = artifacts_dir / artifact
            shutil.rmtree(destination, ignore_errors=True)
            hidden = options.get("include-hidden-files") == "true"
            stored = _upload(workspace, options["path"], destination, hidden)
            if stored == 0:
                if options.get("if-no-files-found", "warn") == "error":
                    return StepResult(name, "failure", stderr=f"no files for {artifact}")
                return StepResult(name, "success", stderr=f"warning: no files for {artifact}")
            uploads[artifact] = destination
            return StepResult(name, "success")
        if uses == "marocchino/sticky-pull-request-comment":
            result.comment = (workspace / options["path"]).read_text()
            return StepResult(name, "success")
        raise UnsupportedWorkflow(f"{name}: action {uses} is not modelled")

    def _checkout(self, workspace: Path, commit: str, env: Mapping[str, str]) -> None:
        git = ["git", "-c", "advice.detachedHead=false"]
        subprocess.run([*git, "clone", "--quiet", str(self.repository), str(workspace)],
                       check=True, capture_output=True, env=dict(env))  # fmt: skip
        subprocess.run([*git, "checkout", "--quiet", commit], cwd=workspace, check=True,
                       capture_output=True, env=dict(env))  # fmt: skip


def git(repository: Path, *args: str) -> str:
    """Run git in the scenario's repository (commits by a fixed test identity)."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "MediaPulse CI rehearsal",
        "GIT_AUTHOR_EMAIL": "ci@mediapulse.example",
        "GIT_COMMITTER_NAME": "MediaPulse CI rehearsal",
        "GIT_COMMITTER_EMAIL": "ci@mediapulse.example",
    }
    proc = subprocess.run(
        ["git", *args], cwd=repository, env=env, check=True, capture_output=True, text=True
    )
    return proc.stdout.strip()
