"""The igneous-like command line: a thin layer over ops/ and queues.py.

Heavy libraries are imported inside commands so that `--help` starts fast.
"""
from __future__ import annotations

import os
import sys

import click

from igneous_like import __version__
from igneous_like.cli.image import image
from igneous_like.cli.mesh import mesh
from igneous_like.cli.skeleton import skeleton
from igneous_like.cli.queue import execute, queue
from igneous_like.cli.view import view
from igneous_like.cli.design import design
from igneous_like.cli.annotation import annotation
from igneous_like.errors import UserError
from igneous_like.validate import NONNEG_INT


def _usage_error(exc: click.UsageError) -> None:
    """A bad option value or a missing argument: one line and exit 1, like any other bad input."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: click shows its help
        raise exc
    where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
    click.echo(f"igneous-like: error: {exc.format_message()}{where}".replace("\n", " "), err=True)
    sys.exit(1)


class Root(click.Group):
    """Turns expected failures into one line and an exit code, never a traceback."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # the root's own options
            _usage_error(exc)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"igneous-like: error: {exc}", err=True)
            sys.exit(1)
        except click.UsageError as exc:
            _usage_error(exc)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if os.environ.get("IGNEOUS_LIKE_DEBUG"):
                raise
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
            click.echo(f"igneous-like: error: {msg} (set IGNEOUS_LIKE_DEBUG=1 for a traceback)", err=True)
            sys.exit(1)


@click.group(cls=Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "--parallel", type=NONNEG_INT, default=1, show_default=True,
              help="Processes for `execute` and for commands run without --queue (0: all cores).")
@click.version_option(__version__)
@click.pass_context
def cli(ctx: click.Context, parallel: int) -> None:
    """Build Neuroglancer Precomputed datasets (pyramids, transfers) with a task queue.

    \b
    Plan work into a queue, then run workers anywhere that sees the queue and the data:
      igneous-like image downsample file://data/img --queue fq://q
      igneous-like execute fq://q -p 4 -x
    Without --queue, tasks run right here:
      igneous-like -p 2 image downsample file://data/img
    """
    from igneous_like.storage import configure_environment

    configure_environment()
    ctx.obj = {"parallel": parallel}


cli.add_command(image)
cli.add_command(mesh)
cli.add_command(skeleton)
cli.add_command(execute)
cli.add_command(queue)
cli.add_command(view)
cli.add_command(design)
cli.add_command(annotation)


def main() -> None:
    try:
        cli(prog_name="igneous-like")
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    # The command is done and its output written. Skip the interpreter's teardown: thread pools
    # of C++ libraries (pyarrow, tensorstore) sometimes abort it ("terminate called without an
    # active exception", exit -6) in a process that forked workers, turning success into failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@cli.command()
@click.argument("layer")
@click.option("--decode/--no-decode", default=True, show_default=True, help="Also decode every chunk.")
def verify(layer, decode):
    """Check a finished job: every chunk or shard of every scale, and the mesh and skeleton
    of every label the spatial indexes name, exist (and decode). Exit 1 if anything is missing.

    \b
    Example:
      igneous-like verify file://data/seg
    """
    from igneous_like.ops.verify import verify_layer

    report = verify_layer(layer, decode=decode)
    for line in report.problems:
        click.echo(line)
    click.echo(f"checked {report.checked} files and objects: {len(report.problems)} problem(s)", err=True)
    sys.exit(1 if report.problems else 0)
