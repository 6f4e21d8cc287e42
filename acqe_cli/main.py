"""Entry point of the `acqe` command: registers sub-commands and maps errors to one line + exit code."""
from __future__ import annotations

import importlib
import sys

import click

from acqe_cli import status_codes
from acqe_cli._errors import debug_enabled, format_error

# Sub-command name -> module under acqe_cli.commands that defines `command`. Modules are imported
# lazily so `acqe inspect` never pays for importing torch.
COMMANDS = {
    "inspect": "inspect_cmd",
    "verify": "verify",
    "convert": "convert",
    "export": "export",
    "generate": "generate",
    "profile-cache": "profile_cache",
    "demo": "demo",
}


# The extra a command needs beyond the base install, named first when one of its imports is missing
# (the extras themselves are read from the package's requirements: acqe_cli.extras).
COMMAND_EXTRAS = {"generate": "runtime", "profile-cache": "runtime", "demo": "runtime", "convert": "encoder"}


def _command_extra(argv: list[str] | None) -> str | None:
    args = sys.argv[1:] if argv is None else argv
    name = next((a for a in args if not a.startswith("-")), None)
    return COMMAND_EXTRAS.get(name)


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        module_name = COMMANDS.get(name)
        if module_name is None:
            return None
        module = importlib.import_module(f"acqe_cli.commands.{module_name}")
        return module.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="acqe")
def cli():
    """ACQE: entropy-coded diffusion model files and a caching runtime."""


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="acqe", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns EOFError (and so TruncatedFileError, which is one) into Abort: report the cause.
        cause = exc.__cause__
        line = format_error(cause) if isinstance(cause, EOFError) else None
        if line is not None and not debug_enabled():
            click.echo(f"Error: {line}", err=True)
            return getattr(cause, "exit_code", status_codes.ERROR)
        click.echo("Aborted.", err=True)
        return status_codes.INTERRUPTED
    except click.UsageError as exc:
        # one line, like every other error: the message, then where the help is
        cmd = exc.ctx.command_path if exc.ctx is not None else "acqe"
        click.echo(f"Error: {exc.format_message()} (see '{cmd} -h')", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return status_codes.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place where errors become exit codes
        line = format_error(exc, _command_extra(argv))
        if line is None or debug_enabled():
            raise
        click.echo(f"Error: {line}", err=True)
        return getattr(exc, "exit_code", status_codes.ERROR)
    # Non-standalone click returns ctx.exit()'s code (or the command's return value) instead of exiting.
    return rv if isinstance(rv, int) else status_codes.OK


if __name__ == "__main__":
    sys.exit(main())
