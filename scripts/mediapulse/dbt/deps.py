"""Install the pinned dbt packages: from the dbt hub when it answers, else from a local mirror.

The mirror is laid out like the hub, ``<mirror>/<org>/<package>/<version>/`` holding the
package's files (its ``dbt_project.yml`` at that level). We install exactly the versions pinned
in ``packages.yml`` and recorded in ``package-lock.yml``, check every package's own
dependencies against those pins, and copy the packages into ``dbt_packages/`` (git-ignored)
in one atomic swap, so a failed install leaves the previous packages in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.base import DEV_TARGET
from mediapulse.engines.targets import resolve

MIRROR_ENV = "DBT_PACKAGES_MIRROR"
HUB_ENV = "DBT_PACKAGE_HUB_URL"  # dbt's own variable: we probe the hub dbt would use
DEFAULT_HUB_URL = "https://hub.getdbt.com/"
HUB_PROBE_TIMEOUT_S = 5.0
MARKER_FILE = ".mediapulse-packages.json"
LOCK_FILE = "package-lock.yml"
_EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


class Source(StrEnum):
    AUTO = "auto"
    HUB = "hub"
    MIRROR = "mirror"


@dataclass(frozen=True, order=True)
class Pin:
    """One hub package at one exact version, e.g. ``dbt-labs/dbt_utils`` 1.4.1."""

    hub_id: str
    version: str

    @property
    def org(self) -> str:
        return self.hub_id.split("/", 1)[0]

    @property
    def package(self) -> str:
        return self.hub_id.split("/", 1)[1]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.version}"


@dataclass(frozen=True)
class MirroredPackage:
    pin: Pin
    path: Path
    project_name: str  # the directory name dbt expects under dbt_packages/


@dataclass(frozen=True)
class InstallReport:
    source: Source
    location: str
    packages: tuple[Pin, ...]
    already_installed: bool = False

    def summary(self) -> str:
        pins = ", ".join(str(p) for p in self.packages)
        if self.already_installed:
            return f"dbt packages already installed ({pins})"
        count = len(self.packages)
        return f"installed {count} dbt packages from the {self.source} ({self.location}): {pins}"


# -- reading packages.yml and package-lock.yml (pure) ------------------------------------------


def parse_pins(packages_yml: dict[str, Any], where: str = "packages.yml") -> list[Pin]:
    """The hub packages pinned in a parsed packages.yml; anything but an exact pin is an error."""
    entries = (packages_yml or {}).get("packages") or []
    pins: list[Pin] = []
    for entry in entries:
        if not isinstance(entry, dict) or "package" not in entry:
            raise MediaPulseError(
                f"{where}: entry {entry!r} is not a hub package; MediaPulse pins only hub "
                "packages (package: org/name, version: x.y.z) so they can install offline"
            )
        version = str(entry.get("version", ""))
        if not _EXACT_VERSION.match(version):
            raise MediaPulseError(
                f"{where}: {entry['package']} has version {entry.get('version')!r}; pin an "
                "exact version (x.y.z) so every machine installs the same code"
            )
        pins.append(Pin(str(entry["package"]), version))
    return pins


def lock_hash(packages_yml: dict[str, Any]) -> str:
    """The ``sha1_hash`` dbt stores in package-lock.yml for this packages.yml (dbt's own code)."""
    from dbt.config.project import package_config_from_data
    from dbt.task.deps import _create_sha1_hash

    config = package_config_from_data(packages_yml, packages_yml)
    return _create_sha1_hash(config.packages)


def check_lock(pins: list[Pin], lock: dict[str, Any] | None, expected_hash: str | None) -> None:
    """Fail unless package-lock.yml records exactly the pinned versions of packages.yml (and,
    given ``expected_hash``, was generated from this packages.yml)."""
    if lock is None:
        raise MediaPulseError(f"{LOCK_FILE} is missing: run `mediapulse deps --lock` and commit it")
    locked = {str(p.get("package")): str(p.get("version")) for p in lock.get("packages") or []}
    for pin in pins:
        if pin.hub_id not in locked:
            raise MediaPulseError(
                f"{pin.hub_id} is pinned in packages.yml ({pin.version}) but not in {LOCK_FILE}: "
                "run `mediapulse deps --lock` and commit it"
            )
        if locked[pin.hub_id] != pin.version:
            raise MediaPulseError(
                f"version mismatch for {pin.hub_id}: packages.yml pins {pin.version}, "
                f"{LOCK_FILE} has {locked[pin.hub_id]}; run `mediapulse deps --lock` and commit it"
            )
    if expected_hash is not None and lock.get("sha1_hash") != expected_hash:
        raise MediaPulseError(
            f"{LOCK_FILE} was not generated from the current packages.yml (sha1_hash differs): "
            "run `mediapulse deps --lock` and commit it"
        )


def check_requirements(pin: Pin, requires: dict[str, Any], pinned: dict[str, Pin]) -> None:
    """Fail unless every hub package ``pin`` depends on is pinned at a version it accepts."""
    from dbt_common import semver

    for dep in requires.get("packages") or []:
        hub_id = dep.get("package") if isinstance(dep, dict) else None
        if not hub_id:
            continue  # a package's own git/local dependencies are not installed by the hub either
        wanted = dep.get("version")
        ranges = wanted if isinstance(wanted, list) else [wanted]
        if hub_id not in pinned:
            raise MediaPulseError(
                f"{pin} needs {hub_id} {ranges}, which packages.yml does not pin: add it "
                "with an exact version in that range and run `mediapulse deps --lock`"
            )
        have = pinned[hub_id].version
        accepted = semver.reduce_versions(*[str(r) for r in ranges])
        if semver.resolve_to_specific_version(accepted, [have]) is None:
            raise MediaPulseError(
                f"version mismatch for {hub_id}: packages.yml pins {have}, but {pin} needs "
                f"{', '.join(str(r) for r in ranges)}"
            )


# -- the mirror --------------------------------------------------------------------------------


def default_mirror() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mediapulse" / "dbt-packages"


def mirror_dir() -> Path:
    configured = os.environ.get(MIRROR_ENV)
    return Path(configured).expanduser() if configured else default_mirror()


def _mirror_hint() -> str:
    return (
        f"set {MIRROR_ENV} to a directory laid out <org>/<package>/<version>/ "
        "(docs/getting-started.md: 'Packages offline')"
    )


def locate_in_mirror(pin: Pin, mirror: Path) -> MirroredPackage:
    package_root = mirror / pin.org / pin.package
    path = package_root / pin.version
    if not (path / "dbt_project.yml").is_file():
        others = sorted(p.name for p in package_root.glob("*") if (p / "dbt_project.yml").is_file())
        if others:
            raise MediaPulseError(
                f"version mismatch for {pin.hub_id}: packages.yml pins {pin.version}, the mirror "
                f"at {package_root} has only {', '.join(others)}; add {pin.version} to the mirror"
            )
        raise MediaPulseError(
            f"{pin} is not in the package mirror: looked for {path}/dbt_project.yml; "
            f"{_mirror_hint()}"
        )
    try:
        project_yml = yaml.safe_load((path / "dbt_project.yml").read_text())
        project_name = str(project_yml["name"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise MediaPulseError(f"{path}/dbt_project.yml is unreadable ({exc}): re-fill it") from exc
    return MirroredPackage(pin=pin, path=path, project_name=project_name)


def resolve_from_mirror(pins: list[Pin], mirror: Path) -> list[MirroredPackage]:
    if not mirror.is_dir():
        raise MediaPulseError(f"no dbt package mirror at {mirror}: {_mirror_hint()}")
    pinned = {p.hub_id: p for p in pins}
    resolved = [locate_in_mirror(pin, mirror) for pin in pins]
    for package in resolved:
        requires_file = package.path / "packages.yml"
        if requires_file.is_file():
            requires = yaml.safe_load(requires_file.read_text()) or {}
            check_requirements(package.pin, requires, pinned)
    return resolved


# -- installing ----------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MediaPulseError(f"{path} is not valid YAML: {exc}") from exc


def load_pins(project: Project) -> tuple[list[Pin], dict[str, Any]]:
    packages_yml = _read_yaml(project.root / "packages.yml")
    if packages_yml is None:
        raise MediaPulseError(f"no packages.yml in {project.root}")
    return parse_pins(packages_yml), packages_yml


def write_lock(project: Project, mirror: Path) -> Path:
    """Write package-lock.yml as `dbt deps --lock` would, resolving names from the mirror."""
    from dbt.task.deps import dbtPackageDumper  # dbt's own layout for the lock file

    pins, packages_yml = load_pins(project)
    resolved = resolve_from_mirror(pins, mirror)
    lock = {
        "packages": [
            {"package": p.pin.hub_id, "version": p.pin.version, "name": p.project_name}
            for p in resolved
        ],
        "sha1_hash": lock_hash(packages_yml),
    }
    path = project.root / LOCK_FILE
    with path.open("w") as handle:
        yaml.dump(lock, handle, Dumper=dbtPackageDumper)
    return path


def _marker(project: Project) -> dict[str, Any] | None:
    path = project.packages_dir / MARKER_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_marker(project: Project, marker: dict[str, Any]) -> None:
    (project.packages_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")


def _expected_marker(pins: list[Pin], source: Source, location: str) -> dict[str, Any]:
    return {
        "source": str(source),
        "location": location,
        "packages": {p.hub_id: p.version for p in pins},
    }


def is_installed(project: Project, pins: list[Pin]) -> bool:
    marker = _marker(project)
    if not marker or marker.get("packages") != {p.hub_id: p.version for p in pins}:
        return False
    return all((project.packages_dir / name).is_dir() for name in marker.get("names", []))


def install_from_mirror(project: Project, pins: list[Pin], mirror: Path) -> InstallReport:
    resolved = resolve_from_mirror(pins, mirror)
    staging = project.root / "dbt_packages.installing"
    previous = project.root / "dbt_packages.previous"
    for leftover in (staging, previous):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir()
    for package in resolved:
        shutil.copytree(package.path, staging / package.project_name, symlinks=True)
    marker = _expected_marker(pins, Source.MIRROR, str(mirror))
    marker["names"] = [p.project_name for p in resolved]
    marker["lock_checked"] = _declared_digest(project)
    (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    target = project.packages_dir
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
    return InstallReport(Source.MIRROR, str(mirror), tuple(pins))


def hub_url() -> str:
    url = os.environ.get(HUB_ENV) or DEFAULT_HUB_URL
    return url if url.endswith("/") else url + "/"


def probe_hub(url: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None when the hub answers its index; otherwise why not (for the error message)."""
    try:
        with urllib.request.urlopen(f"{url}api/v1/index.json", timeout=timeout_s) as response:
            if response.status != 200:
                return f"HTTP {response.status}"
            json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason)
    return None


def install_from_hub(project: Project, pins: list[Pin], url: str) -> InstallReport:
    # dbt deps re-locks silently when the lock is stale; we checked it is not, so it won't.
    result = run_dbt(resolve(project, DEV_TARGET), ["deps"], extra_env={HUB_ENV: url})
    if not result.success:
        raise MediaPulseError(
            f"dbt deps from the hub {url} failed ({result.error or 'see output above'}); "
            f"to install offline instead, {_mirror_hint()} and pass --source mirror"
        )
    marker = _expected_marker(pins, Source.HUB, url)
    marker["names"] = sorted(
        p.name for p in project.packages_dir.iterdir() if (p / "dbt_project.yml").is_file()
    )
    marker["lock_checked"] = _declared_digest(project)
    _write_marker(project, marker)
    return InstallReport(Source.HUB, url, tuple(pins))


def _declared_digest(project: Project) -> str:
    """What the lock check depends on: packages.yml and package-lock.yml, byte for byte, and
    the dbt whose hash it compares (read from the installed distribution, not imported)."""
    from importlib.metadata import version

    digest = hashlib.sha256(version("dbt-core").encode() + b"\0")
    for name in ("packages.yml", LOCK_FILE):
        path = project.root / name
        digest.update(path.read_bytes() if path.is_file() else b"-")
        digest.update(b"\0")
    return digest.hexdigest()


def install(project: Project, source: Source = Source.AUTO, force: bool = True) -> InstallReport:
    """Install the pinned packages from ``source``; with ``force=False`` skip if already there.

    The lock's hash is dbt's own, and computing it imports dbt (seconds, paid by every job
    before its first dbt call): the installed packages' marker records the files it was checked
    against, and the same files are not checked again."""
    pins, packages_yml = load_pins(project)
    declared = _declared_digest(project)
    marker = _marker(project) or {}
    checked_before = marker.get("lock_checked") == declared
    check_lock(pins, _read_yaml(project.root / LOCK_FILE),
               None if checked_before else lock_hash(packages_yml))  # fmt: skip
    if not force and is_installed(project, pins):
        if not checked_before:
            _write_marker(project, {**marker, "lock_checked": declared})
        return InstallReport(
            Source(marker.get("source", "mirror")),
            str(marker.get("location", "")),
            tuple(pins),
            already_installed=True,
        )
    url = hub_url()
    if source is Source.HUB:
        problem = probe_hub(url)
        if problem:
            raise MediaPulseError(
                f"the dbt hub at {url} is unreachable ({problem}); to install offline, "
                f"{_mirror_hint()} and pass --source mirror"
            )
        return install_from_hub(project, pins, url)
    mirror = mirror_dir()
    if source is Source.MIRROR:
        return install_from_mirror(project, pins, mirror)
    problem = probe_hub(url)
    if problem is None:
        return install_from_hub(project, pins, url)
    if not mirror.exists():
        raise MediaPulseError(
            f"cannot install dbt packages: the dbt hub at {url} is unreachable ({problem}) and "
            f"there is no package mirror at {mirror}; {_mirror_hint()}"
        )
    return install_from_mirror(project, pins, mirror)
