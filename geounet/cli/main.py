"""The ``geounet`` click group: global options, error handling and the command list.

Every :class:`~geounet.core.errors.GeounetError` becomes one line on stderr and exit code 2;
Ctrl-C exits with 130 (outputs are written atomically, so nothing half-written is left).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from typing import Any

import click

from geounet.core.errors import GeounetError, InvalidParameterError
from geounet.core.version import __version__

__all__ = ["DASK_LOG_ENV", "cli", "main"]

#: Dask's setting of its ``distributed`` loggers' level, set to ``warning`` below ``-vv``.
DASK_LOG_ENV = "DASK_LOGGING__DISTRIBUTED"
#: Loggers of the ONNX export's graph passes (a line per initializer merged and pass run).
ONNX_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")
#: The group's own options, which go before the command name.
GLOBAL_OPTIONS = ("-v", "--verbose", "-q", "--quiet")


class _Group(click.Group):
    """A click group that turns geounet errors and Ctrl-C into short messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; every error becomes one line on stderr and exit code 2.

        The error is also kept in ``ctx.obj["error"]`` for callers that pass ``obj={}``.
        """
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # an option click itself refused: also one line
            self._fail(ctx, InvalidParameterError(_usage_message(exc)), exc)
        except GeounetError as exc:
            self._fail(ctx, exc, exc)
        except KeyboardInterrupt:
            click.echo("geounet: interrupted; no partial output was left.", err=True)
            ctx.exit(130)

    @staticmethod
    def _fail(ctx: click.Context, err: GeounetError, raised: BaseException) -> None:
        if isinstance(ctx.obj, dict):
            ctx.obj["error"] = err
        if (ctx.obj or {}).get("verbose"):
            traceback.print_exception(raised)
        click.echo(f"geounet: error: {' '.join(str(err).split())}", err=True)
        ctx.exit(2)


def _usage_message(exc: click.UsageError) -> str:
    """What click refused, and the way out: add it, move a global option, or fix a value."""
    name = exc.ctx.command_path if exc.ctx else "geounet"
    message = exc.format_message().rstrip(".")
    if isinstance(exc, click.MissingParameter):
        return f"{message}; add it (see `{name} --help`)."
    if isinstance(exc, click.NoSuchOption) and exc.option_name in GLOBAL_OPTIONS:
        command = name.split(" ", 1)[-1]
        return (
            f"{exc.option_name} is an option of geounet itself, not of `{name}`: put it before "
            f"the command, `geounet {exc.option_name} {command} ...`."
        )
    return f"{message}; give an allowed value (see `{name} --help`)."


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geounet")
@click.option("-v", "--verbose", count=True, help="More messages (-vv: debug, tracebacks).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """geounet: semantic segmentation of georeferenced imagery with U-Nets.

    \b
    Everyday use:
      geounet demo                         # train on the bundled sample data, once
      geounet classify scene.tif           # -> scene_classified.tif beside it
      geounet classify scene.tif --vector features.gpkg
    """
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=verbose, quiet=quiet)
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    if verbose < 2:  # third-party chatter ("Created 157 records") only when debugging
        for name in ("pyogrio", "rasterio", "fiona", "matplotlib", "PIL", *ONNX_LOGGERS):
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
        # Dask's scheduler and workers log every start and stop at INFO; distributed sets its
        # loggers' levels from its config as it loads (and its worker processes inherit this).
        os.environ.setdefault(DASK_LOG_ENV, "warning")
    if quiet:
        warnings.simplefilter("ignore")
    elif verbose < 2:  # "warning: ..." on one line, each message once (-vv: Python's own)
        warnings.formatwarning = one_line_warning
        warnings.simplefilter("once", UserWarning)  # deprecations stay hidden, as by default


def one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A warning as the CLI prints it: ``warning: <message>`` on one line, no source line.

    Example:
        >>> one_line_warning(UserWarning("no CRS;   continuing"), UserWarning, "x.py", 1)
        'warning: no CRS; continuing\\n'
    """
    return f"warning: {' '.join(str(message).split())}\n"


def _register() -> None:
    from geounet.cli import (
        classify,
        demo,
        evaluate,
        export,
        info,
        prepare,
        qgis_install,
        train,
        vectorize,
    )

    commands = (classify, prepare, train, vectorize, evaluate, export, qgis_install, info, demo)
    for module in commands:
        cli.add_command(module.command)


_register()


def main() -> None:
    """Entry point for ``python -m geounet``."""
    cli(prog_name="geounet")
