"""Where things are: the dbt project, its profiles, targets and warehouse files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from mediapulse.core.errors import MediaPulseError

PROFILE_NAME = "mediapulse"
WAREHOUSE_ENV = "MEDIAPULSE_WAREHOUSE_DIR"
TARGET_ENV = "MEDIAPULSE_TARGET"
PROJECT_ENV = "MEDIAPULSE_PROJECT_DIR"
RAW_DATABASE_FILE = "raw.duckdb"


def _find_root(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / "dbt_project.yml"
        if candidate.is_file() and (directory / "profiles" / "profiles.yml").is_file():
            return directory
    return None


@dataclass(frozen=True)
class Project:
    """A MediaPulse checkout (the real one, or a throwaway copy in tests)."""

    root: Path
    warehouse_dir: Path

    @classmethod
    def discover(
        cls, project_dir: Path | str | None = None, warehouse_dir: Path | str | None = None
    ) -> Project:
        """Find the project from an explicit path, ``$MEDIAPULSE_PROJECT_DIR`` or the cwd."""
        explicit = project_dir or os.environ.get(PROJECT_ENV)
        if explicit:
            root = Path(explicit).resolve()
            if not (root / "dbt_project.yml").is_file():
                raise MediaPulseError(
                    f"no dbt_project.yml in {root}: pass --project-dir pointing at a "
                    "MediaPulse checkout"
                )
        else:
            found = _find_root(Path.cwd().resolve())
            if found is None:
                raise MediaPulseError(
                    f"{Path.cwd()} is not inside a MediaPulse checkout (no dbt_project.yml "
                    "with profiles/ beside it): cd into the repository or pass --project-dir"
                )
            root = found
        warehouse = warehouse_dir or os.environ.get(WAREHOUSE_ENV) or root / "warehouse"
        warehouse_path = Path(warehouse)
        if not warehouse_path.is_absolute():
            warehouse_path = root / warehouse_path
        return cls(root=root, warehouse_dir=warehouse_path.resolve())

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def packages_dir(self) -> Path:
        return self.root / "dbt_packages"

    @property
    def target_dir(self) -> Path:
        return self.root / "target"

    @property
    def raw_path(self) -> Path:
        return self.warehouse_dir / RAW_DATABASE_FILE

    @cached_property
    def outputs(self) -> dict[str, dict[str, Any]]:
        """The outputs of profiles/profiles.yml, unrendered (enough to know names and types)."""
        path = self.profiles_dir / "profiles.yml"
        try:
            profiles = yaml.safe_load(path.read_text())
            outputs = profiles[PROFILE_NAME]["outputs"]
        except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise MediaPulseError(
                f"cannot read the '{PROFILE_NAME}' profile from {path}: {exc}"
            ) from exc
        return dict(outputs)

    @cached_property
    def _dbt_project(self) -> dict[str, Any]:
        path = self.root / "dbt_project.yml"
        try:
            return yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise MediaPulseError(f"cannot read {path}: {exc}") from exc

    @property
    def vars(self) -> dict[str, Any]:
        """The `vars:` of dbt_project.yml as written (unrendered), for comparing releases."""
        return dict(self._dbt_project.get("vars") or {})

    @property
    def dbt_project_name(self) -> str:
        return str(self._dbt_project.get("name"))

    def check_target(self, target: str) -> str:
        if target not in self.outputs:
            known = ", ".join(sorted(self.outputs))
            raise MediaPulseError(
                f"unknown target '{target}': profiles/profiles.yml defines {known}; "
                "pass one of those with --target"
            )
        return target

    def dbt_path(self, path: Path) -> str:
        """A path as dbt is given it (dbt runs in the project's root): relative when inside the
        project. dbt's partial parsing starts over when the rendered profile changes, and a
        relative path renders the same in every copy of the project: a copy's first dbt run
        reuses the parse its source left (tests copy built projects dozens of times)."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)
