"""Personal data is protected: e-mail addresses are hashed with a secret key, and no mart
carries a raw personal column or a hash of one.

The rule the marts are held to: the source columns documented as "Personal." (e-mail, name,
date of birth), and `email_hash`, stay out of every mart, by name and by value. A hash of an
address identifies a person as well as the address does, so it stays in staging, where
analysts may join or count on it; reduced forms that identify nobody (`birth_year`) may pass.
The PostgreSQL side of the hash is checked in data/test_rawload.py.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.dbt import pii
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.targets import resolve

from ..cli.test_main import _one_line_error, run_cli
from ..conftest import REPO, manifest_models, relation_of

pytestmark = pytest.mark.reads("models")

SOURCES = REPO / "models" / "staging" / "accounts" / "_accounts__sources.yml"
HASHES = frozenset({"email_hash"})


def personal_columns() -> set[str]:
    """The raw columns the source documents as personal."""
    document = yaml.safe_load(SOURCES.read_text())
    return {
        column["name"]
        for source in document["sources"]
        for table in source["tables"]
        for column in table.get("columns", [])
        if str(column.get("description", "")).startswith("Personal.")
    }


def _key_of(project: Project) -> str:
    """The key the build hashed with: the checkout's generated one, else the variable."""
    path = project.warehouse_dir / pii.KEY_FILE
    return path.read_text().strip() if path.exists() else os.environ[pii.KEY_ENV]


def test_the_source_documents_the_personal_columns() -> None:
    assert personal_columns() == {"email", "full_name", "birth_date"}


@pytest.mark.dbt
def test_no_mart_carries_a_personal_column_or_its_hash(built: Project) -> None:
    forbidden = personal_columns() | HASHES
    models = manifest_models(built)
    marts = {name: relation_of(n) for name, n in models.items() if n["fqn"][1] == "marts"}
    assert len(marts) >= 8, marts
    found = []
    with duckdb.connect(str(duckdb_file(built, "dev")), read_only=True) as con:
        con.execute(f"attach '{built.raw_path}' as raw_check (read_only)")
        staged = relation_of(models["stg_accounts__users"])
        # Every personal value and every hash, to find them under any column name.
        con.execute(
            "create temp table personal as "
            "select lower(trim(email)) as v from raw_check.accounts.users "
            "union select full_name from raw_check.accounts.users "
            f"union select email_hash from {staged}"
        )
        for name, relation in sorted(marts.items()):
            database, schema, table = relation.split(".")
            columns = con.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_catalog = ? and table_schema = ? and table_name = ?",
                [database, schema, table],
            ).fetchall()
            assert columns, f"{name}: no columns found for {relation}"
            for column, data_type in columns:
                if column in forbidden:
                    found.append(f"{name}.{column}: a personal column by name")
                elif data_type == "VARCHAR":
                    hits = con.execute(
                        f'select count(*) from {relation} where lower(trim("{column}")) in '
                        "(select v from personal)"
                    ).fetchone()[0]
                    if hits:
                        found.append(f"{name}.{column}: {hits} personal values")
    assert not found, "personal data reached a mart: " + "; ".join(found)


@pytest.mark.dbt
def test_the_email_hash_is_keyed(built: Project) -> None:
    key = _key_of(built)
    staged = relation_of(manifest_models(built)["stg_accounts__users"])
    with duckdb.connect(str(duckdb_file(built, "dev")), read_only=True) as con:
        con.execute(f"attach '{built.raw_path}' as raw_check (read_only)")
        rows = con.execute(
            f"select u.email, s.email_hash from raw_check.accounts.users as u "
            f"join {staged} as s using (user_id) order by user_id limit 50"
        ).fetchall()
    assert len(rows) == 50
    for email, digest in rows:
        normalised = email.strip().lower()
        assert digest == hashlib.sha256(f"{key}|{normalised}".encode()).hexdigest(), email
        assert digest != hashlib.md5(normalised.encode()).hexdigest()


@pytest.mark.dbt
def test_the_key_is_in_no_artifact(built: Project) -> None:
    """The manifest and run results are published (slim CI reads them): the key is not there,
    nor in the compiled SQL."""
    key = _key_of(built)
    leaking = [
        str(path.relative_to(built.root))
        for path in built.target_dir.rglob("*")
        if path.is_file() and path.suffix in (".json", ".sql") and key in path.read_text()
    ]
    assert not leaking


def test_a_fresh_checkout_gets_a_private_key_for_duckdb_targets(
    project_copy: Project, isolated_env: None
) -> None:
    env = pii.hash_key_env(resolve(project_copy, "dev"))
    path = project_copy.warehouse_dir / pii.KEY_FILE
    key = path.read_text().strip()
    assert env == {pii.KEY_ENV: key, pii.SECRET_ENV: key} and len(key) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pii.hash_key_env(resolve(project_copy, "prod")) == env, "one key per checkout"
    ignored = subprocess.run(["git", "check-ignore", "-q", "warehouse/pii-hash.key"], cwd=REPO)
    assert ignored.returncode == 0, "the generated key must never be committed"


def test_a_server_target_without_the_key_is_one_line_naming_the_variable(
    project_copy: Project, isolated_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MediaPulseError, match=pii.KEY_ENV):
        pii.hash_key_env(resolve(project_copy, "postgres"))
    assert not (project_copy.warehouse_dir / pii.KEY_FILE).exists()
    # From the user's side: before any work (no packages installed, no server contacted).
    result = run_cli("build", "--target", "postgres", cwd=project_copy.root)
    line = _one_line_error(result, "environment variable MEDIAPULSE_PII_HASH_KEY is not set")
    assert "target 'postgres'" in line
    assert not (project_copy.root / "dbt_packages").exists()
    monkeypatch.setenv(pii.KEY_ENV, "from-the-secret-store")
    assert (
        pii.hash_key_env(resolve(project_copy, "postgres"))[pii.KEY_ENV] == "from-the-secret-store"
    )


def test_two_jobs_starting_at_once_share_one_complete_key(
    tmp_path: Path, isolated_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs in one fresh checkout (nightly and its evaluator, two rehearsals) both find no
    key and create one. Writing the key is slowed down, as a loaded disk would: the job that
    loses the race must read the winner's whole key, never a file that exists but is empty."""
    project = Project(REPO, tmp_path / "warehouse")
    real_fdopen = os.fdopen

    class SlowFile:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> SlowFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

        def write(self, text: str) -> int:
            time.sleep(0.5)
            return self.handle.write(text)

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: SlowFile(real_fdopen(*a, **k)))
    start = threading.Barrier(2)
    keys: list[str] = []
    errors: list[str] = []

    def job() -> None:
        start.wait()
        try:
            keys.append(pii.hash_key_env(resolve(project, "dev"))[pii.KEY_ENV])
        except MediaPulseError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    path = project.warehouse_dir / pii.KEY_FILE
    assert len(keys) == 2 and keys[0] == keys[1] == path.read_text().strip()
    assert len(keys[0]) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in project.warehouse_dir.iterdir()] == [pii.KEY_FILE], "no temp left"


def test_the_ci_server_target_hashes_with_a_key_of_its_own_not_productions(
    project_copy: Project, isolated_env: None
) -> None:
    """Pull requests never receive production's key: on PostgreSQL the CI role's target
    (postgres_ci, a CI run's schemas) gets this checkout's random key instead of stopping;
    production's target still requires the variable."""
    env = pii.hash_key_env(resolve(project_copy, "postgres_ci"))
    key = (project_copy.warehouse_dir / pii.KEY_FILE).read_text().strip()
    assert env[pii.KEY_ENV] == key and len(key) == 64
    with pytest.raises(MediaPulseError, match=pii.KEY_ENV):
        pii.hash_key_env(resolve(project_copy, "postgres"))
