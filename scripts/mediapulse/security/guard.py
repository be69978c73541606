"""The first step of every job that writes production: from main, with its secrets, or stop.

    PYTHONPATH=scripts python3 -m mediapulse.security.guard --job nightly \
        --target "$MEDIAPULSE_PROD_TARGET"

Runs right after the checkout, before anything is installed (the standard library only: the
runner's own python3), so a job dispatched from another branch stops before any of that
branch's code or packages run, with one line saying why. GitHub's deployment-branch policy on
the `production` environment ("main" only) already refuses to start such a job; this is the
same rule inside the job, for a repository where the policy was never set. Then it checks that
each secret the job needs for its target is set (production's secrets are secrets of the
`production` environment: a job that does not run in it receives them empty), naming the
missing ones and where to set them, so a job never half-runs for want of one.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mediapulse.core.errors import MediaPulseError
from mediapulse.engines.secrets import CONNECTION_SECRETS, RAW_DATA_FILE
from mediapulse.security.sealing import KEY_ENV as RAW_KEY_ENV
from mediapulse.security.sealing import WHERE, key_problem

BRANCH = "main"
JOBS = {"nightly": "build", "refresh": "build", "deploy": "build", "rollback": "restore"}
PII_KEY_ENV = "MEDIAPULSE_PII_HASH_KEY"
PROFILES = Path(__file__).resolve().parents[3] / "profiles" / "profiles.yml"


def target_types(profiles_text: str) -> dict[str, str]:
    """Each output of profiles.yml and its `type`, read without a YAML library: the outputs'
    names are the keys one level under `outputs:`, their type the `type:` key one level under
    each name (tests compare this with PyYAML's reading of the real file)."""
    types: dict[str, str] = {}
    lines = [x for x in profiles_text.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    start = next((i for i, x in enumerate(lines) if x.strip() == "outputs:"), None)
    if start is None:
        return types
    outputs, name, name_depth, child_depth = depth(lines[start]), None, None, None
    for line in lines[start + 1 :]:
        if depth(line) <= outputs:
            break
        if name_depth is None:
            name_depth = depth(line)
        key = re.match(r"\s*([\w-]+):\s*(.*?)\s*$", line)
        if depth(line) == name_depth and key:
            name, child_depth = key.group(1), None
        elif name is not None and depth(line) > name_depth:
            child_depth = child_depth or depth(line)
            if depth(line) == child_depth and key and key.group(1) == "type":
                types[name] = key.group(2).strip("'\"")
    return types


def depth(line: str) -> int:
    return len(line) - len(line.lstrip())


def needed_secrets(job: str, kind: str) -> list[str]:
    """The secrets ``job`` needs on a target of engine ``kind``."""
    needs = list(CONNECTION_SECRETS.get(kind, ()))
    if JOBS[job] == "build":
        needs.append(PII_KEY_ENV)  # the hashes stay the same from one release to the next
        if kind in RAW_DATA_FILE:
            needs.append(RAW_KEY_ENV)  # the raw data travels sealed with it
    return needs


def check(job: str, target: str, environ: Mapping[str, str], profiles_text: str) -> str:
    """One line saying the job may run, or MediaPulseError with one line saying why not."""
    ref = environ.get("GITHUB_REF", "")
    if ref != f"refs/heads/{BRANCH}":
        raise MediaPulseError(
            f"{job} writes production and runs only from {BRANCH}, not {ref or 'an unknown ref'}: "
            f"run the workflow from {BRANCH} (Run workflow → Use workflow from: {BRANCH}); "
            "production is untouched"
        )
    kind = target_types(profiles_text).get(target)
    if kind is None:
        raise MediaPulseError(
            f"unknown target '{target}' (repository variable MEDIAPULSE_PROD_TARGET): "
            "profiles/profiles.yml does not define it"
        )
    needs = needed_secrets(job, kind)
    missing = [name for name in needs if not environ.get(name)]
    if missing:
        raise MediaPulseError(
            f"{job} on target '{target}' ({kind}) needs the secret(s) {', '.join(missing)}, "
            f"empty in this job: set them as secrets of the production environment ({WHERE})"
        )
    if RAW_KEY_ENV in needs:
        problem = key_problem(environ.get(RAW_KEY_ENV))
        if problem:
            raise MediaPulseError(f"{problem}: set a new one in {WHERE}")
    return (
        f"guard: {job} from {ref} on target '{target}' ({kind}); secrets set: "
        f"{', '.join(needs) or 'none needed'}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediapulse.security.guard",
        description="the first step of a job that writes production",
    )
    parser.add_argument("--job", required=True, choices=sorted(JOBS))
    parser.add_argument("--target", required=True, help="the production target")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(check(args.job, args.target, os.environ, PROFILES.read_text()))
    except MediaPulseError as exc:
        print(f"mediapulse guard: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
