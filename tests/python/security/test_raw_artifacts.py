"""Production's raw data between GitHub runners: sealed (AES-256-GCM), masked for pull
requests, and the guard that stops a production job from the wrong branch or without its
secrets. From the user's side: the `mediapulse` commands and `python3 -m mediapulse.security.guard`
as the workflows run them, on a small generated raw.duckdb. The workflows themselves, run as
GitHub runs them, are in workflows/test_rehearsals.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import duckdb
import pytest
import yaml

from mediapulse.core.errors import MediaPulseError
from mediapulse.data import generate
from mediapulse.security import guard, sealing

from ..cli.test_main import _one_line_error, run_cli
from ..conftest import REPO

pytestmark = pytest.mark.reads(".github/workflows")

KEY = "c0ffee" * 10 + "beef"
SMALL = generate.Params(seed=3, users=40, days=2, events_per_user_day=2.0)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "raw.duckdb"
    generate.generate(path, SMALL)
    return path


def _warehouse(raw: Path, tmp_path: Path) -> Path:
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    (warehouse / "raw.duckdb").write_bytes(raw.read_bytes())
    return warehouse


def _cli(warehouse: Path, *args: str, key: str | None = KEY) -> subprocess.CompletedProcess:
    env = {sealing.KEY_ENV: key} if key is not None else {}
    return run_cli("--warehouse-dir", str(warehouse), *args, env=env)


def test_sealed_raw_data_travels_and_comes_back_byte_for_byte(raw: Path, tmp_path: Path) -> None:
    warehouse = _warehouse(raw, tmp_path)
    sealed = warehouse / "raw.duckdb.sealed"
    assert _cli(warehouse, "seal-raw").returncode == 0
    assert sealed.read_bytes()[:8] == sealing.MAGIC and sealed.stat().st_mode & 0o077 == 0
    # the next runner: only the sealed file, which opens into the same bytes
    runner = tmp_path / "next" / "warehouse"
    runner.mkdir(parents=True)
    (runner / sealed.name).write_bytes(sealed.read_bytes())
    opened = _cli(runner, "unseal-raw")
    assert opened.returncode == 0 and "unsealed" in opened.stdout, opened.stderr
    assert (runner / "raw.duckdb").read_bytes() == raw.read_bytes()
    # unchanged raw data: the sealed file it came in is published again, not a new one
    again = _cli(runner, "seal-raw")
    assert "published as it came" in again.stdout and (runner / sealed.name).read_bytes() == (
        sealed.read_bytes()
    )
    # bad keys and damaged files: one line each, nothing written
    (runner / "raw.duckdb").unlink()
    for key, needle in (
        (None, f"the secret {sealing.KEY_ENV} is not set"),
        ("0123abcd", f"the secret {sealing.KEY_ENV} is 8 characters, not the 64 hex"),
        ("ab" * 32, f"does not open with {sealing.KEY_ENV}: the key is not the one"),
    ):
        line = _one_line_error(_cli(runner, "unseal-raw", key=key), needle)
        assert "Settings → Environments → production" in line and KEY not in line
    assert _one_line_error(_cli(runner, "seal-raw", key=""), "is not set")
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 1
    (runner / sealed.name).write_bytes(bytes(data))
    _one_line_error(_cli(runner, "unseal-raw"), "was changed or cut short")
    assert not (runner / "raw.duckdb").exists()
    assert [p.name for p in runner.iterdir()] == [sealed.name], "no partial file left"


def test_a_sealed_file_refuses_truncation_and_reordering(tmp_path: Path) -> None:
    key = bytes.fromhex(KEY)
    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    plain.write_bytes(os.urandom(3 * 1000 + 7))
    chunk = 1000
    original = sealing.CHUNK
    sealing.CHUNK = chunk  # several chunks from a small file
    try:
        sealing.seal(plain, sealed, key)
        sealing.unseal(sealed, tmp_path / "back", key, "test")
        assert (tmp_path / "back").read_bytes() == plain.read_bytes()
        data = sealed.read_bytes()
        block = chunk + sealing.TAG
        head, body = data[: sealing.HEADER], data[sealing.HEADER :]
        blocks = [body[i : i + block] for i in range(0, len(body), block)]
        for damaged in (
            head + b"".join(blocks[:-1]),  # the last chunk cut off
            head + blocks[1] + blocks[0] + b"".join(blocks[2:]),  # two chunks swapped
        ):
            sealed.write_bytes(damaged)
            with pytest.raises(MediaPulseError, match="changed or cut short"):
                sealing.unseal(sealed, tmp_path / "out", key, "test")
    finally:
        sealing.CHUNK = original


def test_the_masked_copy_has_every_table_and_no_personal_value(raw: Path, tmp_path: Path) -> None:
    warehouse = _warehouse(raw, tmp_path)
    out = tmp_path / "ci-raw" / "raw.duckdb"
    result = _cli(warehouse, "mask-raw", "--out", str(out), key=None)
    assert result.returncode == 0 and "accounts.users" in result.stdout, result.stderr
    tables = (
        "select table_schema, table_name, column_name, data_type from information_schema.columns "
        "order by all"
    )
    with duckdb.connect(str(raw), read_only=True) as real, duckdb.connect(str(out)) as masked:
        assert masked.execute(tables).fetchall() == real.execute(tables).fetchall()
        people = real.execute("select email, full_name, birth_date from accounts.users").fetchall()
        users = masked.execute("select email, full_name, birth_date from accounts.users")
        copies = users.fetchall()
    assert len(copies) == len(people)
    clear = {v for row in people for v in row[:2]}
    assert not clear & {v for row in copies for v in row[:2]}
    assert all(c[0].endswith("@example.invalid") and (c[2].month, c[2].day) == (1, 1)
               for c in copies)  # fmt: skip
    on_postgres = _cli(warehouse, "mask-raw", "--target", "postgres", "--out", str(out))
    assert "keeps its raw data in its database: nothing to do" in on_postgres.stdout


def test_the_guard_reads_the_profiles_targets_without_yaml() -> None:
    text = (REPO / "profiles" / "profiles.yml").read_text()
    outputs = yaml.safe_load(text)["mediapulse"]["outputs"]
    assert guard.target_types(text) == {name: o["type"] for name, o in outputs.items()}


@pytest.mark.parametrize(
    ("environ", "job", "target", "needle"),
    [
        ({"GITHUB_REF": "refs/heads/feature"}, "nightly", "prod",
         "nightly writes production and runs only from main, not refs/heads/feature"),
        ({"GITHUB_REF": "refs/pull/7/merge"}, "deploy", "postgres", "not refs/pull/7/merge"),
        ({}, "rollback", "prod", "runs only from main, not an unknown ref"),
        ({"GITHUB_REF": "refs/heads/main", "MEDIAPULSE_PII_HASH_KEY": "k"}, "refresh", "prod",
         f"refresh on target 'prod' (duckdb) needs the secret(s) {sealing.KEY_ENV}, empty"),
        ({"GITHUB_REF": "refs/heads/main"}, "deploy", "postgres",
         "needs the secret(s) MEDIAPULSE_PG_PASSWORD, MEDIAPULSE_PII_HASH_KEY, empty"),
        ({"GITHUB_REF": "refs/heads/main", "MEDIAPULSE_PII_HASH_KEY": "k",
          sealing.KEY_ENV: "short"}, "nightly", "prod", "is 5 characters, not the 64 hex"),
        ({"GITHUB_REF": "refs/heads/main"}, "nightly", "nope", "unknown target 'nope'"),
    ],
)  # fmt: skip
def test_the_guard_stops_a_production_job_with_one_line(
    environ: dict[str, str], job: str, target: str, needle: str
) -> None:
    """As the workflows run it: the runner's python3, the standard library, before any
    install (PYTHONPATH=scripts)."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "scripts"), **environ}
    result = subprocess.run(
        ["python3", "-S", "-m", "mediapulse.security.guard", "--job", job, "--target", target],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    line = _one_line_error(result, needle)
    assert line.startswith("mediapulse guard: error: ")
    if "secret" in needle:
        assert "Settings → Environments → production" in line


def test_the_guard_lets_main_run_with_its_secrets() -> None:
    environ = {
        "GITHUB_REF": "refs/heads/main",
        "MEDIAPULSE_PII_HASH_KEY": "k",
        sealing.KEY_ENV: KEY,
    }
    text = (REPO / "profiles" / "profiles.yml").read_text()
    assert guard.check("nightly", "prod", environ, text) == (
        "guard: nightly from refs/heads/main on target 'prod' (duckdb); secrets set: "
        f"MEDIAPULSE_PII_HASH_KEY, {sealing.KEY_ENV}"
    )
    assert "none needed" in guard.check("rollback", "prod", environ, text)
