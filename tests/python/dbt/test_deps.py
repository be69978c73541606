"""Package installation: pins, lock, mirror (offline), hub (online, a local hub server)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.dbt import deps

from ..conftest import REPO

PINNED = {
    "dbt-labs/dbt_utils": "1.4.1",
    "metaplane/dbt_expectations": "0.10.9",
    "godatadriven/dbt_date": "0.21.0",
    "dbt-labs/codegen": "0.14.1",
    "dbt-labs/dbt_project_evaluator": "1.3.2",
}
CLOSED_PORT_URL = "http://127.0.0.1:9/"  # discard port: nothing listens, refused at once


# -- pure parts ----------------------------------------------------------------------------------


def test_packages_yml_pins_exactly_the_agreed_versions() -> None:
    pins, _ = deps.load_pins(Project.discover(REPO))
    assert {p.hub_id: p.version for p in pins} == PINNED


def test_committed_lock_matches_packages_yml() -> None:
    project = Project.discover(REPO)
    pins, packages_yml = deps.load_pins(project)
    lock = yaml.safe_load((REPO / "package-lock.yml").read_text())
    deps.check_lock(pins, lock, deps.lock_hash(packages_yml))  # raises when out of sync


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"package": "dbt-labs/dbt_utils", "version": [">=1.0.0", "<2.0.0"]}, "exact version"),
        ({"package": "dbt-labs/dbt_utils", "version": "1.4"}, "exact version"),
        ({"git": "https://github.com/dbt-labs/dbt-utils.git"}, "not a hub package"),
    ],
)
def test_only_exact_hub_pins_are_accepted(entry: dict, message: str) -> None:
    with pytest.raises(MediaPulseError, match=message):
        deps.parse_pins({"packages": [entry]})


def test_lock_version_mismatch_names_package_and_both_versions() -> None:
    pins = [deps.Pin("dbt-labs/dbt_utils", "1.4.1")]
    lock = {"packages": [{"package": "dbt-labs/dbt_utils", "version": "1.3.0"}], "sha1_hash": "x"}
    with pytest.raises(MediaPulseError) as err:
        deps.check_lock(pins, lock, "x")
    assert "dbt-labs/dbt_utils" in str(err.value)
    assert "1.4.1" in str(err.value) and "1.3.0" in str(err.value)


def test_stale_lock_hash_and_missing_lock_are_errors() -> None:
    pins = [deps.Pin("dbt-labs/dbt_utils", "1.4.1")]
    lock = {"packages": [{"package": "dbt-labs/dbt_utils", "version": "1.4.1"}], "sha1_hash": "old"}
    with pytest.raises(MediaPulseError, match="sha1_hash differs"):
        deps.check_lock(pins, lock, "new")
    with pytest.raises(MediaPulseError, match=r"package-lock\.yml is missing"):
        deps.check_lock(pins, None, "new")


def test_transitive_requirement_outside_the_pinned_version_is_refused() -> None:
    pinned = {
        "metaplane/dbt_expectations": deps.Pin("metaplane/dbt_expectations", "0.10.9"),
        "godatadriven/dbt_date": deps.Pin("godatadriven/dbt_date", "1.2.0"),
    }
    requires = {
        "packages": [{"package": "godatadriven/dbt_date", "version": [">=0.9.0", "<1.0.0"]}]
    }
    with pytest.raises(MediaPulseError) as err:
        deps.check_requirements(pinned["metaplane/dbt_expectations"], requires, pinned)
    text = str(err.value)
    assert "godatadriven/dbt_date" in text and "1.2.0" in text and "<1.0.0" in text


def test_unpinned_transitive_dependency_is_refused() -> None:
    pin = deps.Pin("dbt-labs/codegen", "0.14.1")
    requires = {"packages": [{"package": "dbt-labs/dbt_utils", "version": [">=0.8.0", "<2.0.0"]}]}
    with pytest.raises(MediaPulseError, match="does not pin"):
        deps.check_requirements(pin, requires, {pin.hub_id: pin})


# -- a fake mirror (no package code needed to test the mirror logic) ---------------------------


def _fake_package(root: Path, hub_id: str, version: str, name: str, requires=None) -> Path:
    path = root / hub_id / version
    (path / "macros").mkdir(parents=True)
    (path / "dbt_project.yml").write_text(f"name: {name}\nversion: '0.0.1'\nconfig-version: 2\n")
    (path / "macros" / "m.sql").write_text(
        f"{{% macro {name}_marker() %}}{version}{{% endmacro %}}"
    )
    if requires:
        (path / "packages.yml").write_text(yaml.safe_dump({"packages": requires}))
    return path


@pytest.fixture
def fake_mirror(tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    _fake_package(root, "dbt-labs/dbt_utils", "1.4.1", "dbt_utils")
    _fake_package(
        root, "dbt-labs/codegen", "0.14.1", "codegen",
        [{"package": "dbt-labs/dbt_utils", "version": [">=0.8.0", "<2.0.0"]}],
    )  # fmt: skip
    return root


def _two_package_project(tmp_path: Path) -> Project:
    root = tmp_path / "proj"
    (root / "profiles").mkdir(parents=True)
    shutil.copy(REPO / "profiles" / "profiles.yml", root / "profiles" / "profiles.yml")
    (root / "dbt_project.yml").write_text("name: p\nprofile: mediapulse\nconfig-version: 2\n")
    packages = {
        "packages": [
            {"package": "dbt-labs/dbt_utils", "version": "1.4.1"},
            {"package": "dbt-labs/codegen", "version": "0.14.1"},
        ]
    }
    (root / "packages.yml").write_text(yaml.safe_dump(packages, sort_keys=False))
    return Project.discover(root, root / "warehouse")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(deps.HUB_ENV, CLOSED_PORT_URL)


def test_mirror_install_writes_packages_lock_and_marker(
    tmp_path: Path, fake_mirror: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _two_package_project(tmp_path)
    monkeypatch.setenv(deps.MIRROR_ENV, str(fake_mirror))
    deps.write_lock(project, fake_mirror)
    report = deps.install(project)
    assert report.source is deps.Source.MIRROR
    assert sorted(p.name for p in project.packages_dir.iterdir()) == [
        ".mediapulse-packages.json", "codegen", "dbt_utils",
    ]  # fmt: skip
    assert deps.is_installed(project, list(report.packages))
    again = deps.install(project, force=False)
    assert again.already_installed


@pytest.mark.reads()
def test_a_job_checks_installed_packages_without_loading_dbt(
    tmp_path: Path, fake_mirror: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every job starts with the packages check; once the packages are installed from this
    packages.yml and lock, it must not pay for importing dbt (seconds) to check them again,
    and a stale lock is still refused."""
    project = _two_package_project(tmp_path)
    monkeypatch.setenv(deps.MIRROR_ENV, str(fake_mirror))
    deps.write_lock(project, fake_mirror)
    deps.install(project)
    check = (
        "import sys; from pathlib import Path; from mediapulse.dbt import deps; "
        "from mediapulse.core.project import Project; "
        f"p = Project.discover(Path({str(project.root)!r}), Path({str(tmp_path / 'wh')!r})); "
        "r = deps.install(p, force=False); "
        "print(r.already_installed, [m for m in sys.modules if m.startswith('dbt.')][:3])"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         check=True, env=os.environ).stdout  # fmt: skip
    assert out.strip() == "True []", out
    # packages.yml changed since the install: the lock is checked again, and is stale
    packages = yaml.safe_load((project.root / "packages.yml").read_text())
    packages["packages"][1]["version"] = "0.14.0"
    (project.root / "packages.yml").write_text(yaml.safe_dump(packages, sort_keys=False))
    with pytest.raises(MediaPulseError, match="version mismatch for dbt-labs/codegen"):
        deps.install(project, force=False)


def test_missing_version_in_mirror_names_both_versions(
    tmp_path: Path, fake_mirror: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _two_package_project(tmp_path)
    deps.write_lock(project, fake_mirror)
    shutil.move(fake_mirror / "dbt-labs/dbt_utils/1.4.1", fake_mirror / "dbt-labs/dbt_utils/1.3.0")
    monkeypatch.setenv(deps.MIRROR_ENV, str(fake_mirror))
    with pytest.raises(MediaPulseError) as err:
        deps.install(project)
    text = str(err.value)
    assert "version mismatch for dbt-labs/dbt_utils" in text
    assert "1.4.1" in text and "1.3.0" in text


def test_missing_package_names_it_and_where_it_looked(
    tmp_path: Path, fake_mirror: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _two_package_project(tmp_path)
    deps.write_lock(project, fake_mirror)
    shutil.rmtree(fake_mirror / "dbt-labs/codegen")
    monkeypatch.setenv(deps.MIRROR_ENV, str(fake_mirror))
    with pytest.raises(MediaPulseError) as err:
        deps.install(project)
    assert "dbt-labs/codegen 0.14.1 is not in the package mirror" in str(err.value)
    assert str(fake_mirror / "dbt-labs/codegen/0.14.1") in str(err.value)


def test_no_hub_and_no_mirror_says_both(
    tmp_path: Path, fake_mirror: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _two_package_project(tmp_path)
    deps.write_lock(project, fake_mirror)
    monkeypatch.setenv(deps.MIRROR_ENV, str(tmp_path / "no-such-mirror"))
    with pytest.raises(MediaPulseError) as err:
        deps.install(project)
    text = str(err.value)
    assert CLOSED_PORT_URL in text and "unreachable" in text
    assert str(tmp_path / "no-such-mirror") in text and deps.MIRROR_ENV in text


def test_failed_install_keeps_the_previous_packages(
    tmp_path: Path, fake_mirror: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _two_package_project(tmp_path)
    monkeypatch.setenv(deps.MIRROR_ENV, str(fake_mirror))
    deps.write_lock(project, fake_mirror)
    deps.install(project)
    before = sorted(p.name for p in project.packages_dir.rglob("*"))

    def broken_copy(*args: object, **kwargs: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(deps.shutil, "copytree", broken_copy)
    with pytest.raises(OSError):
        deps.install(project)
    assert sorted(p.name for p in project.packages_dir.rglob("*")) == before


# -- online: real `dbt deps` against a local hub that serves the mirror -------------------------


class _Hub(BaseHTTPRequestHandler):
    mirror: Path
    base: str

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts == ["api", "v1", "index.json"]:
            names = [f"{o.name}/{p.name}" for o in self.mirror.iterdir() for p in o.iterdir()]
            return self._send(json.dumps(names).encode(), "application/json")
        if parts[:2] == ["api", "v1"] and len(parts) == 4:
            org, name = parts[2], parts[3].removesuffix(".json")
            versions = {}
            for vdir in sorted((self.mirror / org / name).iterdir()):
                requires = (
                    yaml.safe_load((vdir / "packages.yml").read_text())
                    if (vdir / "packages.yml").exists()
                    else {}
                )
                versions[vdir.name] = {
                    "name": name,
                    "packages": (requires or {}).get("packages", []),
                    "downloads": {
                        "tarball": f"{self.base}tarballs/{org}/{name}/{vdir.name}.tar.gz"
                    },
                }
            body = {"name": name, "namespace": org, "versions": versions}
            return self._send(json.dumps(body).encode(), "application/json")
        if parts[0] == "tarballs":
            org, name, file = parts[1], parts[2], parts[3]
            version = file.removesuffix(".tar.gz")
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                tar.add(self.mirror / org / name / version, arcname=f"{name}-{version}")
            return self._send(buffer.getvalue(), "application/gzip")
        self.send_error(404)


@pytest.fixture
def local_hub() -> Iterator[str]:
    mirror = deps.mirror_dir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    _Hub.mirror, _Hub.base = mirror, base
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()


@pytest.mark.dbt
def test_online_install_runs_dbt_deps_against_the_hub(
    project_copy: Project, local_hub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mirror = deps.mirror_dir()
    monkeypatch.setenv(deps.HUB_ENV, local_hub)
    monkeypatch.setenv(deps.MIRROR_ENV, str(project_copy.root / "no-mirror"))  # must not be used
    lock_before = (project_copy.root / "package-lock.yml").read_text()
    report = deps.install(project_copy)
    assert report.source is deps.Source.HUB and report.location == local_hub
    installed = {p.name for p in project_copy.packages_dir.iterdir() if p.is_dir()}
    assert installed == {
        "dbt_utils",
        "dbt_expectations",
        "dbt_date",
        "codegen",
        "dbt_project_evaluator",
    }
    # the hub served the mirror's files, so what dbt installed must be byte-identical to them
    for hub_id, version in PINNED.items():
        mirrored = deps.locate_in_mirror(deps.Pin(hub_id, version), real_mirror)
        got = project_copy.packages_dir / mirrored.project_name / "dbt_project.yml"
        assert got.read_bytes() == (mirrored.path / "dbt_project.yml").read_bytes()
    assert (project_copy.root / "package-lock.yml").read_text() == lock_before, "lock untouched"
    marker = json.loads((project_copy.packages_dir / deps.MARKER_FILE).read_text())
    assert marker["source"] == "hub" and marker["packages"] == PINNED


@pytest.mark.dbt
def test_real_mirror_installs_every_pinned_package(project_copy: Project, offline: None) -> None:
    report = deps.install(project_copy, deps.Source.AUTO)
    assert report.source is deps.Source.MIRROR
    assert {p.hub_id: p.version for p in report.packages} == PINNED
    for name in ("dbt_utils", "dbt_expectations", "dbt_date", "codegen", "dbt_project_evaluator"):
        assert (project_copy.packages_dir / name / "dbt_project.yml").is_file()
