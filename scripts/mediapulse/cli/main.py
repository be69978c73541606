"""The `mediapulse` command: the group of commands (click, as dbt's own CLI), listed under
headings in --help, and main(), which runs one and maps errors to exit codes.

Exit codes: 0 success; 1 the job ran and found a problem (a failing test, a violation);
2 bad usage or an expected error that stopped the job (the message says what to fix);
130 interrupted. An unexpected exception is a bug: it keeps its traceback (exit 1).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click
from click.shell_completion import shell_complete

from mediapulse.cli import ci, develop, operate, release, steps, tooling
from mediapulse.cli.options import PARSE_ONLY, Call, project_dir, version, warehouse_dir
from mediapulse.core.errors import MediaPulseError

# The commands under their --help headings, in the order shown.
SECTIONS: dict[str, Sequence[click.Command]] = {
    "Develop": develop.COMMANDS,
    "CI": ci.COMMANDS,
    "Release": [*release.COMMANDS, *steps.COMMANDS],
    "Operate": operate.COMMANDS,
    "Tooling": tooling.COMMANDS,
}
COMPLETE_VAR = "_MEDIAPULSE_COMPLETE"  # click's shell completion: _{PROG}_COMPLETE
EPILOG = f"""\b
Shell completion (bash; zsh_source or fish_source for those), e.g. in ~/.bashrc:
  eval "$({COMPLETE_VAR}=bash_source mediapulse)"
"""


class SectionedGroup(click.Group):
    """A group that lists its commands under headings, in the order given, not A to Z: one
    section "Commands:" as click's own, where tools/docs_site.py finds them for the docs."""

    def __init__(
        self, *args: Any, sections: Mapping[str, Sequence[click.Command]], **attrs: Any
    ) -> None:
        commands = [command for listed in sections.values() for command in listed]
        super().__init__(*args, commands=commands, **attrs)
        self.sections = sections

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        width = max(len(name) for name in self.commands)  # one column across the headings
        with formatter.section("Commands"):
            for heading, commands in self.sections.items():
                formatter.write_text(f"{heading}:")
                with formatter.indentation():
                    formatter.write_dl(
                        [((c.name or "").ljust(width), _first_paragraph(c.help)) for c in commands]
                    )


def _first_paragraph(text: str | None) -> str:
    return " ".join(inspect.cleandoc(text or "").split("\n\n")[0].split())


@click.group(
    "mediapulse",
    cls=SectionedGroup,
    sections=SECTIONS,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=False,  # no command is a usage error (exit 2), not the help (exit 0)
    epilog=EPILOG,
)
@version
@project_dir
@warehouse_dir
def cli(project_dir: str | None, warehouse_dir: str | None) -> None:
    """MediaPulse tooling: generate data, install dbt packages, run the dbt jobs."""
    # Each command finds the project itself (options.pass_project), after its own options.


def _usage_line(exc: click.ClickException) -> str:
    """A usage error on one line (click's takes four), naming the command and its help."""
    ctx = exc.ctx if isinstance(exc, click.UsageError) else None
    path = ctx.command_path if ctx else "mediapulse"
    return f"{path}: error: {' '.join(exc.format_message().split())} (see {path} --help)"


def _command(ctx: click.Context | None) -> str:
    return (ctx.invoked_subcommand if ctx else None) or ""


def parse(argv: Sequence[str]) -> Call:
    """The command line parsed as main() parses it, without running the command: the workflow
    tests check every `run:` step with it. An unknown command or option, or a bad value, raises
    click.UsageError."""
    with cli.make_context("mediapulse", list(argv), obj=PARSE_ONLY) as ctx:
        call = cli.invoke(ctx)
    assert isinstance(call, Call)
    return call


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code. Bad usage, --help and --version exit
    (SystemExit 2 or 0) before anything ran."""
    instruction = os.environ.get(COMPLETE_VAR)
    if instruction:  # the shell asks what <TAB> completes to (the epilog of --help)
        return shell_complete(cli, {}, "mediapulse", COMPLETE_VAR, instruction)
    args = list(sys.argv[1:] if argv is None else argv)
    ctx: click.Context | None = None
    try:
        ctx = cli.make_context("mediapulse", args)
        with ctx:
            return int(cli.invoke(ctx))
    except click.exceptions.Exit as exc:  # --help or --version, printed
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        print(_usage_line(exc), file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except MediaPulseError as exc:
        print(f"mediapulse {_command(ctx)}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"mediapulse {_command(ctx)}: interrupted", file=sys.stderr)
        return 130
