"""The GitHub workflows, checked without GitHub: every `run:` step is one call of ours that
exists and parses, actions are pinned, permissions and concurrency are right, each job
reaches exactly the secrets it needs (production's only from the `production` environment,
none from a pull request), the files validate against GitHub's schema, zizmor finds nothing,
shellcheck passes, and each workflow runs the same command sequence as its `make ci-*`
rehearsal."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mediapulse.cli.main import parse

from ..conftest import REPO

pytestmark = pytest.mark.reads(".github", "Makefile")

WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent
REHEARSAL = {
    "pr-slim-ci.yml": "ci-pr",
    "nightly.yml": "ci-nightly",
    "refresh.yml": "ci-refresh",
    "pr-validation.yml": "ci-validate",
    "deploy.yml": "ci-deploy",
    "rollback.yml": "ci-rollback",
}
RELEASES = ("nightly.yml", "refresh.yml", "deploy.yml", "rollback.yml")  # write production
MAKE_VARS = {
    "$(MP)": ".venv/bin/mediapulse",
    "$(STATE)": "ci-artifacts/production-state",
    "$(OUT)": "ci-output",
    "$(MAKE)": "make",
    "$(PROD_TARGET)": '"$MEDIAPULSE_PROD_TARGET"',
    "$(CI_TARGET)": '"$MEDIAPULSE_CI_TARGET"',
    '"$(TO)"': '"$ROLLBACK_TO"',  # the rollback's `to` input
}
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")
# The first step of a job that writes production, right after the checkout: the runner's own
# python3 and the standard library (mediapulse.security.guard), before anything is installed.
GUARD = re.compile(
    r'^python3 -m mediapulse\.security\.guard --job (\w+) --target "\$MEDIAPULSE_PROD_TARGET"$'
)
# Steps that move production's data between runners (and the guard): the workflow's business;
# a local rehearsal reads raw.duckdb where the loader wrote it.
RUNNER_ONLY = ("unseal-raw", "seal-raw", "mask-raw")
ALWAYS = "${{ always() }}"
GUARDED = {
    status: f"${{{{ {status}() && steps.guard.outcome == 'success' }}}}"
    for status in ("always", "failure")
}


def _workflows() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(WORKFLOWS.glob("*.yml"))}


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _make_targets() -> dict[str, list[str]]:
    """Each Makefile target's recipe lines, with our variables expanded."""
    targets: dict[str, list[str]] = {}
    current = None
    for line in (REPO / "Makefile").read_text().splitlines():
        head = re.match(r"^([a-z][\w-]*):", line)
        if head:
            current = head.group(1)
            targets[current] = []
        elif line.startswith("\t") and current:
            recipe = line.strip()
            for var, value in MAKE_VARS.items():
                recipe = recipe.replace(var, value)
            targets[current].append(recipe)
        elif line and not line.startswith("\t"):
            current = None
    return targets


def test_every_workflow_has_its_rehearsal() -> None:
    assert set(_workflows()) == set(REHEARSAL)


def test_every_run_step_is_one_existing_call_of_ours() -> None:
    targets = _make_targets()
    for name, workflow in _workflows().items():
        for step in _steps(workflow):
            if "run" not in step:
                continue
            command = step["run"].strip()
            assert "\n" not in command, f"{name}: multi-line run step {command!r}"
            assert not re.search(r"[;&|`]|\$\(", command), f"{name}: shell logic in {command!r}"
            words = shlex.split(command)
            if GUARD.match(command):
                from mediapulse.security import guard

                assert step["env"]["PYTHONPATH"] == "scripts", f"{name}: {command}"
                guard.build_parser().parse_args(words[3:])  # an unknown job or flag exits here
                continue
            if words[0] == "make":
                assert len(words) == 2 and words[1] in targets, f"{name}: {command}"
            else:
                assert words[0] == ".venv/bin/mediapulse", f"{name}: {command}"
                parse(words[1:])  # an unknown command or flag raises click.UsageError here


def test_each_workflow_runs_what_its_rehearsal_runs() -> None:
    targets = _make_targets()
    for name, target in REHEARSAL.items():
        # the default path: a step that runs only for a manual input is the alternative
        workflow_calls = [
            s["run"].strip() for s in _steps(_workflows()[name])
            if "run" in s and "inputs." not in str(s.get("if", "")).replace("!inputs.", "")
        ]  # fmt: skip
        workflow_calls = [c for c in workflow_calls if c != "make venv"]
        # a failure alert is the workflow's business; locally the exit code says it
        workflow_calls = [c for c in workflow_calls if " notify " not in c and " alert " not in c]
        workflow_calls = [
            c for c in workflow_calls
            if not GUARD.match(c) and not any(f" {w} " in c for w in RUNNER_ONLY)
        ]  # fmt: skip
        assert workflow_calls == targets[target], f"{name} and make {target} differ"


def test_actions_are_pinned_to_commits_with_the_version_in_a_comment() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text().splitlines():
            match = re.search(r"uses:\s*(\S+)(.*)$", line)
            if match:
                assert SHA_PIN.match(match.group(1)), f"{path.name}: {line.strip()}"
                assert re.search(r"#\s*v\d+", match.group(2)), f"{path.name}: {line.strip()}"


def test_permissions_concurrency_and_timeouts() -> None:
    for name, workflow in _workflows().items():
        assert workflow["permissions"] == {"contents": "read"}, name
        concurrency = workflow["concurrency"]
        releases = name in RELEASES
        assert concurrency["cancel-in-progress"] is (not releases), name
        if releases:
            assert concurrency["group"] == "production"
        for job_name, job in workflow["jobs"].items():
            assert job.get("timeout-minutes"), f"{name}:{job_name} has no timeout"
            permissions = job.get("permissions", {})
            writes = {k for k, v in permissions.items() if v == "write"}
            commenting = any(
                "sticky-pull-request-comment" in s.get("uses", "") for s in job["steps"]
            )
            assert writes == ({"pull-requests"} if commenting else set()), f"{name}:{job_name}"
            checkouts = [s for s in job["steps"] if "actions/checkout" in s.get("uses", "")]
            for checkout in checkouts:
                assert checkout["with"]["persist-credentials"] is False


def test_secrets_reach_only_env_and_targets_come_from_variables() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        text = path.read_text()
        for line in text.splitlines():
            if "secrets." in line:
                assert re.match(r"^\s+[A-Z_]+: \$\{\{ secrets\.[A-Z_]+ \}\}$", line), line
        assert re.search(r"MEDIAPULSE_(PROD|CI)_TARGET: \$\{\{ vars\.", text), path.name


PROD_COMMANDS = {
    "nightly", "refresh", "deploy", "rollback", "report", "alert", "keep-diff", *RUNNER_ONLY,
}  # fmt: skip
PR_WORKFLOWS = ("pr-slim-ci.yml", "pr-validation.yml")
# What a pull request's job may receive: the CI role's password; never production's password
# nor its hash key (CI hashes with a key of its own).
PR_SECRETS = {"MEDIAPULSE_PG_CI_PASSWORD"}


def test_every_step_takes_its_target_from_the_repository_variables() -> None:
    for name, workflow in _workflows().items():
        for job_name, job in workflow["jobs"].items():
            runs = [s["run"] for s in job.get("steps", []) if "run" in s]
            calls = [shlex.split(r) for r in runs if r.startswith(".venv/bin/mediapulse ")]
            uses_ci = False
            for words in calls:
                if "target" not in parse(words[1:]).params:
                    continue
                assert "--target" in words, f"{name}: {shlex.join(words)} names no target"
                target = words[words.index("--target") + 1]
                expected = "PROD" if words[1] in PROD_COMMANDS else "CI"
                assert target == f"$MEDIAPULSE_{expected}_TARGET", f"{name}: {shlex.join(words)}"
                uses_ci = uses_ci or expected == "CI"
            if uses_ci:  # a CI run's schemas on a server go after its last use, whatever happened
                last = [s for s in job["steps"] if "$MEDIAPULSE_CI_TARGET" in s.get("run", "")][-1]
                assert "drop-ci-schemas" in last["run"], f"{name}:{job_name}"
                assert last["if"] in (ALWAYS, GUARDED["always"]), f"{name}:{job_name}"
    makefile = (REPO / "Makefile").read_text()
    assert not re.search(r"--target (ci|prod|postgres\w*)\b", makefile)


def test_pull_request_workflows_get_only_the_ci_roles_secret() -> None:
    for name in PR_WORKFLOWS:
        text = (WORKFLOWS / name).read_text()
        assert set(re.findall(r"secrets\.(\w+)", text)) <= PR_SECRETS, name
        assert "MEDIAPULSE_PG_PASSWORD" not in text and "MEDIAPULSE_PG_USER:" not in text, name
    for name in RELEASES:
        assert "secrets.MEDIAPULSE_PG_PASSWORD" in (WORKFLOWS / name).read_text(), name


# Where each secret lives (docs/github-actions.md, "Secrets by environment"): production's
# are secrets of the `production` environment, whose deployment branches are main only; the
# CI role's password is a repository secret.
PRODUCTION_SECRETS = frozenset({
    "MEDIAPULSE_PG_PASSWORD", "MEDIAPULSE_PII_HASH_KEY", "MEDIAPULSE_RAW_ARTIFACT_KEY",
    "MEDIAPULSE_PAGE_WEBHOOK", "MEDIAPULSE_TICKET_WEBHOOK", "MEDIAPULSE_WEBHOOK_URL",
})  # fmt: skip
REPOSITORY_SECRETS = frozenset({"MEDIAPULSE_PG_CI_PASSWORD"})
# Events whose jobs run a pull request's code or on its behalf (never main's ref).
PR_EVENTS = frozenset({
    "pull_request", "pull_request_target", "pull_request_review", "pull_request_review_comment",
    "merge_group", "issue_comment", "workflow_run",
})  # fmt: skip
# Per job: the environment it runs in and every secret it can reach.
REACHES = {
    "nightly.yml:nightly": ("production", PRODUCTION_SECRETS | REPOSITORY_SECRETS),
    "refresh.yml:refresh": ("production", PRODUCTION_SECRETS),
    "deploy.yml:deploy": ("production", PRODUCTION_SECRETS | REPOSITORY_SECRETS),
    "rollback.yml:rollback": ("production", {"MEDIAPULSE_PG_PASSWORD", "MEDIAPULSE_WEBHOOK_URL"}),
    "pr-slim-ci.yml:code": (None, set()),
    "pr-slim-ci.yml:checks": (None, REPOSITORY_SECRETS),
    "pr-slim-ci.yml:comment": (None, set()),
    "pr-validation.yml:validate": (None, REPOSITORY_SECRETS),
}


def _triggers(workflow: dict) -> set[str]:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    return {on} if isinstance(on, str) else set(on)


def _reached_secrets(name: str, job_name: str, job: dict) -> set[str]:
    """The secrets a job can reach: those named in its env, its steps' env and `with:`.
    Anywhere else (a `run:`, an `if:`, `secrets: inherit`, the whole `secrets` context)
    fails here: GitHub would hand it over in ways this test could not follow."""
    places = [job.get("env") or {}]
    for step in job.get("steps", []):
        places += [step.get("env") or {}, step.get("with") or {}]
        rest = {k: v for k, v in step.items() if k not in ("env", "with")}
        assert "secrets" not in str(rest), f"{name}:{job_name}: a secret outside env/with"
    rest = {k: v for k, v in job.items() if k not in ("env", "steps")}
    assert "secrets" not in str(rest), f"{name}:{job_name}: secrets: inherit or the like"
    reached: set[str] = set()
    for place in places:
        for value in place.values():
            text = str(value)
            assert not re.search(r"secrets\s*[\[)]|toJSON\(\s*secrets", text), text
            reached |= set(re.findall(r"secrets\.(\w+)", text))
    return reached


def test_each_job_reaches_exactly_its_secrets_and_no_pull_request_reaches_productions() -> None:
    seen = {}
    for name, workflow in _workflows().items():
        triggers = _triggers(workflow)
        assert "pull_request_target" not in triggers and "workflow_run" not in triggers, name
        assert "secrets" not in str(workflow.get("env") or {}), name
        for job_name, job in workflow["jobs"].items():
            assert "uses" not in job, f"{name}:{job_name}: a reusable workflow's secrets"
            reached = _reached_secrets(name, job_name, job)
            environment = job.get("environment")
            seen[f"{name}:{job_name}"] = (environment, reached)
            if triggers & PR_EVENTS:  # reachable from a pull request: nothing of production's
                assert environment is None, f"{name}:{job_name} runs in {environment}"
                assert not reached & PRODUCTION_SECRETS, f"{name}:{job_name}: {reached}"
            if reached & PRODUCTION_SECRETS:  # only in production, only from main
                assert environment == "production", f"{name}:{job_name}"
                assert triggers <= {"schedule", "workflow_dispatch", "push"}, name
                assert workflow.get("on", workflow.get(True)).get("push") in (
                    None, {"branches": ["main"]},
                ), name  # fmt: skip
    assert seen == {k: (env, set(s)) for k, (env, s) in REACHES.items()}


def test_a_pull_requests_code_checks_run_beside_its_dbt_checks_and_reach_no_secret() -> None:
    """The lint and the unit tests need no warehouse and no production state: a job of their
    own, started with the dbt checks (the reviewer waits for the longer of the two, not their
    sum), on a runner that holds no secret at all, not even the CI role's password."""
    jobs = _workflows()["pr-slim-ci.yml"]["jobs"]
    code, checks, comment = jobs["code"], jobs["checks"], jobs["comment"]
    names = [s.get("name") for s in code["steps"] if "run" in s]
    assert names == ["Install", "Lint", "Unit tests"], names
    assert "needs" not in code and "needs" not in checks  # both start when the PR is pushed
    assert code["permissions"] == {"contents": "read"}
    assert "env" not in code and not _reached_secrets("pr-slim-ci.yml", "code", code)
    assert not any("download-artifact" in s.get("uses", "") for s in code["steps"])
    assert not {"Lint", "Unit tests"} & {s.get("name") for s in checks["steps"]}
    # the comment reports the dbt checks; the code job's outcome is the PR's own check
    assert comment["needs"] == "checks"


def test_every_job_that_writes_production_starts_with_the_guard() -> None:
    """Right after the checkout, before setup-python and the install: a dispatch from another
    branch runs none of its own code or packages, and when the guard stops the job no later
    step runs, not even one that runs whatever happened (`always()`, `failure()`)."""
    for name in RELEASES:
        [(job_name, job)] = _workflows()[name]["jobs"].items()
        assert job["environment"] == "production", name
        first, second = job["steps"][:2]
        assert "actions/checkout" in first["uses"], name
        match = GUARD.match(second.get("run", ""))
        assert match and match.group(1) == job_name and second["id"] == "guard", name
        for step in job["steps"][2:]:
            condition = str(step.get("if", ""))
            for status, guarded in GUARDED.items():
                if f"{status}()" in condition:
                    assert condition == guarded, f"{name}: {step['name']}: {condition}"


def test_caches_are_keyed_on_lock_files() -> None:
    for name, workflow in _workflows().items():
        for step in _steps(workflow):
            uses = step.get("uses", "")
            if "actions/cache" in uses:
                assert "hashFiles('package-lock.yml')" in step["with"]["key"], name
            if "setup-python" in uses and step["with"].get("cache"):
                assert step["with"]["cache-dependency-path"] == "requirements.lock", name


def test_workflows_validate_against_githubs_schema() -> None:
    files = [str(p) for p in sorted(WORKFLOWS.glob("*.yml"))]
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing() -> None:
    result = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--no-progress", str(WORKFLOWS)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(REHEARSAL))
def test_shellcheck_passes_on_every_run_step(name: str, tmp_path: Path) -> None:
    scripts = []
    for index, step in enumerate(_steps(_workflows()[name])):
        if "run" in step:
            script = tmp_path / f"step{index}.sh"
            script.write_text("#!/usr/bin/env bash\n" + step["run"] + "\n")
            scripts.append(str(script))
    result = subprocess.run(
        [str(BIN / "shellcheck"), "--severity=style", *scripts],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


def test_the_runner_rehearsal_understands_every_workflow_expression() -> None:
    """tests/python/support/gha.py runs the jobs in make test; an expression it cannot
    evaluate would make a rehearsal pass or fail for the wrong reason, so every one must parse
    here."""
    from ..support import gha

    context = {"github": {"event": {}}, "inputs": {}, "vars": {}, "secrets": {}}
    status = {"success": True, "failure": False, "cancelled": False, "always": True}
    for workflow in _workflows().values():
        scopes = [workflow.get("env") or {}]
        for job in workflow["jobs"].values():
            scopes.append(job.get("env") or {})
            if job.get("if"):
                gha.render(job["if"], context, status)
            for step in job["steps"]:
                scopes.append(step.get("env") or {})
                if step.get("if"):
                    gha.render(str(step["if"]), context, status)
                if "actions/cache" not in step.get("uses", ""):
                    scopes.append(step.get("with") or {})
        for scope in scopes:
            for value in scope.values():
                gha.render(str(value), context, status)
    assert gha.evaluate("vars.T || 'prod'", context, status) == "prod"
    assert gha.evaluate("!inputs.start_over", context, status) is True
    assert gha.evaluate("failure()", context, status) is False
    assert gha.evaluate(
        "github.event_name == 'merge_group' || github.event.review.state == 'approved'",
        {"github": {"event_name": "merge_group", "event": {}}}, status,
    )  # fmt: skip
