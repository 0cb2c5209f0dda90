"""Option types and options shared by several commands, defined once."""
from __future__ import annotations

import click

from igneous_like.validate import NONNEG_INT, POSITIVE_INT


class TupleN(click.ParamType):
    """Comma-separated integers, e.g. 128,128,64 (each at least `minimum`, if given)."""

    def __init__(self, n: int, minimum: int | None = None, cast=int):
        self.n, self.minimum, self.cast = n, minimum, cast
        self.name = f"{'INT' if cast is int else 'FLOAT'}{n}"

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, list)):
            parts = list(value)
        else:
            parts = [p for p in str(value).replace(" ", "").split(",") if p != ""]
        try:
            nums = tuple(self.cast(float(p)) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not {self.n} comma-separated numbers", param, ctx)
        if len(nums) != self.n:
            self.fail(f"{value!r} needs exactly {self.n} comma-separated integers", param, ctx)
        if self.minimum is not None and any(v < self.minimum for v in nums):
            self.fail(f"{value!r}: every value must be at least {self.minimum}", param, ctx)
        return nums


TUPLE2 = TupleN(2)
TUPLE3 = TupleN(3)
POSITIVE3 = TupleN(3, minimum=1)  # shapes, chunk sizes, factors
FLOAT3 = TupleN(3, cast=float)


class ByteSize(click.ParamType):
    """Bytes as a number (3.5e9) or with a unit (256MB, 2GiB)."""

    name = "BYTES"
    UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            value = str(value)
        import re

        match = re.fullmatch(r"\s*(-?[0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = match and self.UNITS.get(match.group(2).lower())
        try:
            size = float(match.group(1)) * unit if match and unit is not None else None
        except ValueError:
            size = None
        if size is None:
            self.fail(f"{value!r} is not a size in bytes (e.g. 3.5e9, 256MB, 2GiB)", param, ctx)
        if size <= 0:
            self.fail(f"{size!r} is not in the range x>0", param, ctx)
        return size


BYTES = ByteSize()


def queue_option(fn):
    return click.option(
        "--queue",
        default=None,
        help="Queue to insert tasks into: fq://DIR (a bare path means fq://) or sqs://NAME. "
        "Without it, tasks run here with -p workers.",
    )(fn)


def parallel_option(fn):
    return click.option(
        "-p", "--parallel", type=NONNEG_INT, default=None,
        help="Worker processes when running without --queue (default: the root -p, else 1).",
    )(fn)


def dry_run_option(fn):
    return click.option(
        "--dry-run", is_flag=True, default=False,
        help="Print the plan (tasks, shape, mips, memory, files) and enqueue nothing.",
    )(fn)


def memory_option(fn):
    return click.option(
        "--memory", type=BYTES, default=3.5e9, show_default=True,
        help="Memory budget of one task in bytes (or with a unit: 256MB, 2GiB); the task shape is chosen to fit it.",
    )(fn)


def ranges(note: str = "grown to whole tasks"):
    """--xrange/--yrange/--zrange, with what the command does with the span (`note`)."""
    def decorate(fn):
        for axis in ("z", "y", "x"):
            fn = click.option(
                f"--{axis}range", type=TUPLE2, default=None,
                help=f"Only this {axis} span (voxels at --mip), e.g. 0,1024; {note}.",
            )(fn)
        return fn
    return decorate


range_options = ranges()


def producer_options(fn):
    """--queue, -p and --dry-run: the three options of every command that plans tasks."""
    return queue_option(parallel_option(dry_run_option(fn)))


def fill_missing_option(fn):
    return click.option("--fill-missing", is_flag=True, help="Read missing chunks as background instead of failing.")(fn)


def encoding_options(fn):
    fn = click.option(
        "--compress", default=None,
        help="File compression: none, gzip, br. Default: none on file:// (plain names that "
        "viewers can fetch), cloud-volume's choice elsewhere.",
    )(fn)
    fn = click.option(
        "--encoding-level", type=int, default=None,
        help="jpeg/jxl quality, png level or fpzip precision.",
    )(fn)
    fn = click.option(
        "--encoding", default="auto", show_default=True,
        help="raw, png, jpeg, jpegxl (jxl), compressed_segmentation (cseg), compresso (cpso), "
        "crackle (ckl), fpzip, kempressed, zfpc. auto keeps the source's.",
    )(fn)
    return fn


def downsample_method_option(name: str = "--method"):
    return click.option(
        name, "method", default="auto", show_default=True,
        type=click.Choice(["auto", "avg", "mode", "min", "max", "striding"]),
        help="auto: avg for images, mode for segmentations.",
    )


def shard_options(max_labels_per_shard: int):
    """How merge-sharded sizes shards for labelled objects. max_labels_per_shard: the default cap,
    Igneous's for the object kind (1000 meshes, 2000 skeletons): without a cap, the shard count
    follows the index sizes alone, and ten thousand labels fit one shard, which one worker then
    merges alone, holding all of it."""
    def decorate(fn):
        for deco in reversed([
            click.option("--shard-index-bytes", type=POSITIVE_INT, default=2**13, show_default=True,
                         help="Target shard index size."),
            click.option("--minishard-index-bytes", type=POSITIVE_INT, default=2**15, show_default=True,
                         help="Target minishard index size."),
            click.option("--min-shards", type=POSITIVE_INT, default=1, show_default=True, help="At least this many shards."),
            click.option("--max-labels-per-shard", type=POSITIVE_INT, default=max_labels_per_shard, show_default=True,
                         help="At most this many labels per shard on average (shard count rounded up to a power of two)."),
        ]):
            fn = deco(fn)
        return fn
    return decorate


def resolve_parallel(ctx: click.Context, parallel: int | None) -> int:
    if parallel is None:
        parallel = (ctx.find_root().obj or {}).get("parallel") or 1
    if parallel == 0:
        import os

        parallel = os.cpu_count() or 1
    if parallel < 0:
        raise click.BadParameter("must be 0 (all cores) or more", param_hint="-p/--parallel")
    return parallel


def submit(ctx: click.Context, plan, queue: str | None, parallel: int | None, dry_run: bool) -> None:
    """Dry run, enqueue, or run here: the one path every producer command takes."""
    from igneous_like import queues

    if dry_run:
        click.echo(plan.describe())
        return
    qurl = queues.normalize_queue_url(queue) if queue else None
    n = resolve_parallel(ctx, parallel)
    if plan.total == 0:
        click.echo(f"{plan.operation}: nothing to do (0 tasks)", err=True)
        return
    plan.prepare()
    if qurl:
        queues.insert_tasks(qurl, plan.tasks(), plan.total)
        click.echo(f"{plan.operation}: {plan.total} tasks queued; run: igneous-like execute {qurl} -p N", err=True)
    else:
        queues.run_local(plan.tasks(), plan.total, n)
        click.echo(f"{plan.operation}: {plan.total} tasks done", err=True)


class MipOrAuto(click.ParamType):
    """A mip number, or `auto` (the forges' near-isotropic choice)."""

    name = "MIP|auto"

    def convert(self, value, param, ctx):
        if str(value) == "auto":
            return value
        try:
            mip = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a mip number nor 'auto'", param, ctx)
        if mip < 0:
            self.fail(f"{mip} is negative: mips count from 0", param, ctx)
        return mip


def forge_mip(layer: str, mip, what: str) -> int:
    """--mip as a number: `auto` resolved (and the choice printed) for a forge of `what`."""
    if mip != "auto":
        return mip
    from igneous_like.mip_choice import choose_forge_mip

    choice = choose_forge_mip(layer, what)
    click.echo(choice.describe(what), err=True)
    return choice.mip
