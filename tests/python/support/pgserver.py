"""A throwaway PostgreSQL server for tests: initdb in a temp dir, loopback only, stopped after.

Uses the PostgreSQL binaries of the machine (Debian: package postgresql-15, which `make test`
installs: .ci/provision). As root, the server runs as the `postgres` user, as PostgreSQL
requires.

TLS only, as production's server should be: each server presents a self-signed certificate
(made once per test session with `openssl`) and its pg_hba.conf rejects every TCP connection
without TLS, so every PostgreSQL test that connects proves its connections use TLS (the
targets' default `sslmode` is `require`). `certificate()` is the root a `verify-full` client
trusts.
"""

from __future__ import annotations

import atexit
import functools
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "mediapulse"
PASSWORD = "mediapulse-test"
DATABASE = "mediapulse"
# The secret a server target hashes e-mail addresses with (MEDIAPULSE_PII_HASH_KEY): required
# there, so every test of a server target gets one. A test value, not a secret.
PII_HASH_KEY = "mediapulse-test-pii-hash-key"
# The three roles of docs/targets/postgresql-production.md ("Roles and grants"), each with a
# test password: `transformer` builds production, `ci` runs slim CI, `reporter` reads the
# marts. USER stays the loader (a superuser that owns the raw schemas, as an EL tool's role
# would).
ROLES = ("transformer", "ci", "reporter")


# Only TLS connections over TCP, each with a password; the unix socket (initdb, createdb) trusts.
HBA = """\
local all all trust
hostssl all all 127.0.0.1/32 scram-sha-256
hostnossl all all 127.0.0.1/32 reject
"""


@functools.cache
def certificate() -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost and its key, made once per test
    session: (certificate, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not found: the test servers need it for their TLS "
                           "certificate (Debian: apt-get install openssl)")  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="mediapulse-pg-tls-", dir="/tmp"))
    atexit.register(shutil.rmtree, folder, True)
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        [openssl, "req", "-new", "-x509", "-days", "2", "-nodes", "-newkey", "rsa:2048",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def find_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.insert(0, str(Path(on_path).resolve().parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    root: Path
    port: int

    @property
    def env(self) -> dict[str, str]:
        """The variables profiles.yml reads for the `postgres` target, and the hash key."""
        return {
            "MEDIAPULSE_PII_HASH_KEY": PII_HASH_KEY,
            "MEDIAPULSE_PG_HOST": "127.0.0.1",
            "MEDIAPULSE_PG_PORT": str(self.port),
            "MEDIAPULSE_PG_USER": USER,
            "MEDIAPULSE_PG_PASSWORD": PASSWORD,
            "MEDIAPULSE_PG_DATABASE": DATABASE,
        }

    def role_password(self, role: str) -> str:
        return f"{role}-test-password"

    def connect(self, role: str = USER, database: str = DATABASE):  # type: ignore[no-untyped-def]
        import psycopg2

        password = PASSWORD if role == USER else self.role_password(role)
        return psycopg2.connect(host="127.0.0.1", port=self.port, user=role, password=password,
                                dbname=database, sslmode="require")  # fmt: skip

    def execute(self, *statements: str, role: str = USER, database: str = DATABASE) -> list[tuple]:
        """Run statements in one committed transaction as ``role`` (by default the server's
        user, the loader: the way an EL tool or a person writes); the last one's rows."""
        con = self.connect(role, database)
        try:
            rows: list[tuple] = []
            with con.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                    rows = cursor.fetchall() if cursor.description else []
            con.commit()
            return rows
        finally:
            con.close()

    def create_roles(self) -> None:
        """The three MediaPulse roles, with LOGIN and nothing else (grants come after)."""
        self.execute(*(
            f"create role {role} login password '{self.role_password(role)}'" for role in ROLES
        ))  # fmt: skip

    def role_env(self, role: str) -> dict[str, str]:
        """`env` with the production target connecting as ``role``."""
        return {**self.env, "MEDIAPULSE_PG_USER": role,
                "MEDIAPULSE_PG_PASSWORD": self.role_password(role)}  # fmt: skip

    def ci_env(self, run_id: str) -> dict[str, str]:
        """What a pull-request job has: the CI role's credentials and its run's id, no
        production password."""
        env = {
            k: v
            for k, v in self.env.items()
            if k not in ("MEDIAPULSE_PG_USER", "MEDIAPULSE_PG_PASSWORD")
        }
        return {**env, "MEDIAPULSE_PG_CI_USER": "ci",
                "MEDIAPULSE_PG_CI_PASSWORD": self.role_password("ci"),
                "GITHUB_RUN_ID": run_id, "GITHUB_RUN_ATTEMPT": "1"}  # fmt: skip

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip() or done.stdout}")

    def start(self) -> None:
        data = self.root / "data"
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            "initdb", "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        (data / "pg_hba.conf").write_text(HBA)
        for source, name in zip(certificate(), ("server.crt", "server.key"), strict=True):
            shutil.copy(source, data / name)
            os.chmod(data / name, 0o600)  # PostgreSQL refuses a key others may read
            if os.geteuid() == 0:
                shutil.chown(data / name, "postgres")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c ssl=on "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(data), "-o", options, "-l", str(self.root / "log"), "-w", "start"
        )
        self._run("createdb", "-h", str(self.root), "-p", str(self.port), "-U", USER, DATABASE)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer | None:
    bindir = find_bindir()
    if bindir is None:
        return None
    root = Path(tempfile.mkdtemp(prefix="mediapulse-pg-", dir="/tmp"))
    os.chmod(root, 0o755)
    server = PgServer(bindir=bindir, root=root, port=_free_port())
    server.start()
    server.create_roles()  # every MediaPulse server has them: the models grant to them
    return server
