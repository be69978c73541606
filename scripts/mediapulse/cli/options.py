"""What the commands share, defined once: the options several of them take (`--target`,
`--artifacts`, `--summary`, the releases' set), the global ones, the value types, and the
command class that parses them (as dbt-core's CLI does in dbt/cli/params.py).

The values and messages are argparse's, which the CLI used before click: `--out OUT` where click
would say `--out TEXT`, "'0' must be greater than zero".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from mediapulse import __version__
from mediapulse.core.project import Project
from mediapulse.engines.base import DEFAULT_TARGETS, DEV_ROLE, PROD_ROLE, Role, default_target

F = TypeVar("F", bound=Callable[..., Any])

# -- value types -------------------------------------------------------------------------------


class _Positive(click.ParamType):
    """A number greater than zero."""

    def __init__(self, kind: type[int] | type[float], what: str) -> None:
        self.kind = kind
        self.name = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = self.kind(value)
        except (TypeError, ValueError):
            number = None
        if number is None:
            self.fail(f"{value!r} is not a {self.name}", param, ctx)
        if number <= 0:
            self.fail(f"{value!r} must be greater than zero", param, ctx)
        return number


POSITIVE_INT = _Positive(int, "whole number")
POSITIVE_FLOAT = _Positive(float, "number")


class _IsoDate(click.ParamType):
    name = "date"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
        self.fail(f"{value!r} is not a date like 2026-01-31", param, ctx)


ISO_DATE = _IsoDate()


class LazyChoice(click.Choice):
    """A choice whose names are read when first needed, not when the CLI starts: the fault
    names live beside the faults, in a module that imports DuckDB."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names
        self.case_sensitive = True

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        return tuple(sorted(self._names()))


# -- parameters and the command ----------------------------------------------------------------


class Option(click.Option):
    """click.Option with argparse's metavar, the option's name in capitals (`--out OUT`, not
    `--out TEXT`); its help may be a function, called only when --help shows it."""

    def __init__(
        self, *args: Any, help: str | Callable[[], str] | None = None, **attrs: Any
    ) -> None:
        self._help = help
        super().__init__(*args, help=None if callable(help) else help, **attrs)
        if self.metavar is None and not self.is_flag and not isinstance(self.type, click.Choice):
            self.metavar = (self.name or "").upper()

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if callable(self._help):
            self.help = self._help()
        return super().get_help_record(ctx)


def option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    return click.option(*decls, cls=Option, **attrs)


class Argument(click.Argument):
    """A positional argument with a help text, listed under Arguments in --help (click's
    arguments have none)."""

    def __init__(self, decls: Sequence[str], help: str = "", **attrs: Any) -> None:
        super().__init__(decls, **attrs)
        self.help = help


def argument(name: str, **attrs: Any) -> Callable[[F], F]:
    return click.argument(name, cls=Argument, **attrs)


@dataclass(frozen=True)
class Call:
    """A command line parsed and not run (`main.parse`): the command and its parameters."""

    command: str
    params: dict[str, Any]


# Passed as the context's object by `main.parse`: commands stop once their options parsed.
PARSE_ONLY = object()


class Command(click.Command):
    """A mediapulse command. `exclusive`: groups of options a call may give only one of."""

    def __init__(self, *args: Any, exclusive: Sequence[Sequence[str]] = (), **attrs: Any) -> None:
        super().__init__(*args, **attrs)
        self.exclusive = exclusive

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            rest = super().parse_args(ctx, args)
        except click.UsageError as exc:  # click leaves some without it (--out with no value)
            exc.ctx = exc.ctx or ctx
            raise
        by_flag = {flag: p.name for p in self.params for flag in p.opts}
        for flags in self.exclusive:
            given = [f for f in flags if _given(ctx, by_flag[f])]
            if len(given) > 1:
                raise click.UsageError(f"{given[1]} is not allowed with {given[0]}", ctx)
        return rest

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(p.human_readable_name, p.help) for p in self.params if isinstance(p, Argument)]
        if rows:
            with formatter.section("Arguments"):
                formatter.write_dl(rows)
        super().format_options(ctx, formatter)

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.obj is PARSE_ONLY:
            return Call(ctx.info_name or "", dict(ctx.params))
        return super().invoke(ctx)


def _given(ctx: click.Context, name: str | None) -> bool:
    return ctx.get_parameter_source(name or "") is ParameterSource.COMMANDLINE


def command(name: str, **attrs: Any) -> Callable[[Callable[..., int]], Command]:
    return click.command(name, cls=Command, **attrs)


def compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several options as one decorator, listed in --help in this order."""

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def pass_project(function: Callable[..., int]) -> Callable[..., int]:
    """Call the command with the project as its first argument: found from --project-dir,
    $MEDIAPULSE_PROJECT_DIR or the current directory, once the whole command line parsed (a
    usage error comes first). Every command finds it, even one that does not use it."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> int:
        top = click.get_current_context().find_root().params
        project = Project.discover(top["project_dir"], top["warehouse_dir"])
        return function(project, *args, **kwargs)

    return run


# -- the global options: before the command --------------------------------------------------

version = click.version_option(
    __version__, "--version", prog_name="mediapulse", message="%(prog)s %(version)s"
)
project_dir = option(
    "--project-dir", help="the MediaPulse checkout (default: found from the current directory)"
)
warehouse_dir = option(
    "--warehouse-dir",
    help="where the DuckDB files live (default: $MEDIAPULSE_WAREHOUSE_DIR or ./warehouse)",
)

# -- options several commands take -------------------------------------------------------------

JOBS = ("nightly", "deploy", "refresh", "build", "slim-ci")
SUMMARY_HELP = "Markdown report path (default: $GITHUB_STEP_SUMMARY when set)"


def target_option(role: Role = DEV_ROLE) -> Callable[[F], F]:
    """--target, defaulting to the role's target (engines.base.DEFAULT_TARGETS)."""
    env, target = DEFAULT_TARGETS[role]
    return option(
        "--target",
        default=lambda: default_target(role),
        help=f"dbt target from profiles/profiles.yml (default: ${env} or {target})",
    )


def artifacts_option(help: str, required: bool = True) -> Callable[[F], F]:
    return option("--artifacts", required=required, help=help)


def summary_option(help: str = SUMMARY_HELP) -> Callable[[F], F]:
    return option("--summary", help=help)


def release_options(start_over: bool = True) -> Callable[[F], F]:
    """What the releases share: they build production and publish its state."""
    shared = [
        target_option(PROD_ROLE),
        artifacts_option("directory to write the production state to"),
        summary_option(),
    ]
    if start_over:  # a refresh adds to production: there is nothing to start over
        shared.append(
            option(
                "--start-over",
                is_flag=True,
                help="build production from empty although its state says it exists (its "
                "warehouse file was lost): snapshot history starts again",
            )
        )
    return compose(*shared)


def pass_engine(function: Callable[..., int]) -> Callable[..., int]:
    """Call the command with its --target resolved, once, into the target's engine (which
    knows its project, engine and role) as its first argument: an unknown target, or one whose
    engine's extra is not installed, stops here in one line, after the command line parsed."""

    @pass_project
    @functools.wraps(function)
    def run(project: Project, *args: Any, target: str, **kwargs: Any) -> int:
        from mediapulse.engines.targets import resolve  # loads the engines: not for --help

        return function(resolve(project, target), *args, **kwargs)

    return run
