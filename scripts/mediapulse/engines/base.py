"""What every engine is: a target of profiles.yml, resolved once into an object that knows
its engine, its role and what it can do, and owns its connection.

A module that needs the warehouse asks the target's engine (``resolve(project, target)``),
never compares engine names: a capability says what an engine can do, and
``require`` says in one line what it cannot, naming the target, its engine and what to use.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from enum import Enum
from typing import Any, ClassVar, Literal

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import TARGET_ENV, Project

Role = Literal["prod", "ci", "dev"]

# The targets the release jobs build and swap unless CI names another (the workflows'
# repository variable MEDIAPULSE_PROD_TARGET, the releases' default target)
PROD_TARGET_ENV = "MEDIAPULSE_PROD_TARGET"


class Capability(Enum):
    """What an engine may or may not do; the value completes "cannot ..." in an error."""

    STAGED_RELEASES = "stage a release beside production and keep the ones it replaces"
    RUN_HISTORY = "keep the run history"
    DATA_DIFF = "compare a pull request's data with production's"
    SCHEMA_CHECK = "check the raw sources' columns before dbt starts"
    ROLES = "grant database roles"
    CI_SCHEMAS = "give a CI run schemas of its own"
    LOADER_SCHEMAS = "read raw schemas a loader owns"


class Session:
    """A DB-API connection with its parameter marker: SQL written with ``marker`` runs on it."""

    def __init__(self, con: Any, marker: str) -> None:
        self.con = con
        self.marker = marker

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.con.cursor()
        try:
            cursor.execute(sql, list(params) if params else None)  # no params: `%` is literal
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None


class Engine(ABC):
    """A target of profiles.yml and the engine it runs on."""

    kind: ClassVar[str]  # the profile's `type`
    label: ClassVar[str]  # as users name it
    capabilities: ClassVar[frozenset[Capability]]
    # its warehouse is a file beside the checkout that goes with the runner (no server)
    embedded: ClassVar[bool] = False

    def __init__(self, project: Project, target: str) -> None:
        self.project = project
        self.target = target
        self.output: dict[str, Any] = project.outputs[target]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} target {self.target!r}>"

    @property
    def described(self) -> str:
        return f"target '{self.target}' ({self.label})"

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def require(self, capability: Capability, command: str = "") -> None:
        """One line when this engine cannot do ``capability``, naming the engines that can."""
        if self.can(capability):
            return
        able = [c.label for c in ENGINES if capability in c.capabilities]
        what = f"{command}: " if command else ""
        raise MediaPulseError(
            f"{what}{self.described} cannot {capability.value}: use a "
            f"{' or '.join(able) or 'different'} target"
        )

    @property
    def role(self) -> Role:
        """What the target is for: production's (the releases build and swap it), a CI run's
        (a pull request's code runs there), or a developer's own."""
        if self.target in self.production_targets():
            return "prod"
        return "ci" if self.is_ci() else "dev"

    @property
    def is_production(self) -> bool:
        return self.role == "prod"

    @classmethod
    def production_targets(cls) -> set[str]:
        return {*PRODUCTION_TARGETS, os.environ.get(PROD_TARGET_ENV) or PRODUCTION_TARGETS[0]}

    def is_ci(self) -> bool:
        """A target a pull request's code runs on."""
        return False

    @property
    def raw_schema_suffix(self) -> str:
        """What the sources' RAW_SCHEMA_SUFFIX_ENV is: the raw schemas' own names by default."""
        return ""

    @property
    def checkout_key_allowed(self) -> bool:
        """Personal data may be hashed with this checkout's own key (warehouse/pii-hash.key)
        instead of a secret set in the environment."""
        return True

    def check_runtime(self) -> None:
        """What this process needs before dbt runs on the target; one line when it is missing."""
        return None

    def check_raw_data(self) -> None:
        """The raw data the target reads is there, for engines that check it themselves."""
        return None

    @abstractmethod
    def connect(self, purpose: str, write: bool = False) -> AbstractContextManager[Session]:
        """A session on the target's warehouse; ``purpose`` completes "cannot ..." errors."""

    def connect_raw(self, purpose: str) -> AbstractContextManager[Session]:
        """A read-only session where the sources' raw tables are (a server: its own)."""
        return self.connect(purpose)


# Each engine's production target in profiles/profiles.yml (DuckDB's first: the default)
PRODUCTION_TARGETS = ("prod", "postgres")
# The targets a command runs on when none is given: a developer's own, and CI's (DuckDB)
DEV_TARGET = "dev"
CI_TARGET = "ci"
CI_TARGET_ENV = "MEDIAPULSE_CI_TARGET"
# The roles by name, for callers that pick a role's default target
DEV_ROLE: Role = "dev"
CI_ROLE: Role = "ci"
PROD_ROLE: Role = "prod"
# Where a role's target comes from when a command names none: CI sets these from repository
# variables, so a workflow step never spells the target; the DuckDB targets are the default.
DEFAULT_TARGETS: dict[Role, tuple[str, str]] = {
    DEV_ROLE: (TARGET_ENV, DEV_TARGET),
    PROD_ROLE: (PROD_TARGET_ENV, PRODUCTION_TARGETS[0]),
    CI_ROLE: (CI_TARGET_ENV, CI_TARGET),
}


def default_target(role: Role) -> str:
    """The target a command of ``role`` runs on when none is given."""
    env, target = DEFAULT_TARGETS[role]
    return os.environ.get(env) or target


# Filled by the engine modules as they are imported (engines/targets.py imports them all)
ENGINES: list[type[Engine]] = []
