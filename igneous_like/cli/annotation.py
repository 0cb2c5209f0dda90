"""`annotation import` and `annotation from-stats`: Neuroglancer precomputed annotation layers."""
from __future__ import annotations

import click

from igneous_like.cli.options import dry_run_option, memory_option, parallel_option, queue_option, submit


class Floats(click.ParamType):
    """Comma-separated numbers, exactly n of them."""

    def __init__(self, n: int):
        self.n = n
        self.name = f"FLOAT{n}"

    def convert(self, value, param, ctx):
        try:
            nums = tuple(float(p) for p in str(value).replace(" ", "").split(",") if p != "")
        except ValueError:
            self.fail(f"{value!r} is not {self.n} comma-separated numbers", param, ctx)
        if len(nums) != self.n:
            self.fail(f"{value!r} needs exactly {self.n} comma-separated numbers", param, ctx)
        return nums


def _common(fn):
    for deco in reversed([
        click.option("--limit", type=int, default=None,
                     help="Most annotations per spatial index cell (default 1000); never exceeded."),
        click.option("--partitions", type=int, default=None,
                     help="Partitions of the reduce and emit phases (default from the row count and --memory)."),
        click.option("--rows-per-task", type=int, default=None,
                     help="Rows per map task, about (default from the row count and --memory)."),
        click.option("--shard-above", type=int, default=4096, show_default=True,
                     help="Shard an index (by_id, each relationship) holding more keys than this."),
        click.option("--merge", is_flag=True,
                     help="Queued runs: plan the next phase (counts, then emit) once the previous one has run."),
        memory_option, queue_option, parallel_option, dry_run_option,
    ]):
        fn = deco(fn)
    return fn


@click.group()
def annotation() -> None:
    """Neuroglancer precomputed annotation layers (points, lines, boxes, ellipsoids)."""


@annotation.command("import")
@click.argument("table")
@click.argument("dest")
@click.option("--type", "kind", type=click.Choice(["point", "line", "box", "ellipsoid"]), default="point",
              show_default=True, help="Geometry: x,y,z | x1,y1,z1,x2,y2,z2 | two box corners | x,y,z,rx,ry,rz.")
@click.option("--columns", default=None, help="Rename columns: ROLE=COLUMN,... (roles x y z x1 .. z2 rx ry rz id).")
@click.option("--resolution", type=Floats(3), default="1,1,1", show_default=True,
              help="nm per coordinate unit along x,y,z (coordinates are voxels of this size).")
@click.option("--property", "properties", multiple=True,
              help="NAME:TYPE[:COLUMN], TYPE one of uint8 int8 uint16 int16 uint32 int32 float32 rgb rgba enum "
                   "(enum: a string column stored as the smallest integer type with its labels). Repeatable.")
@click.option("--relationship", "relationships", multiple=True,
              help="NAME:COLUMN, a segment id column (e.g. pre:pre_id); empty or 0 means none. Repeatable.")
@click.option("--bounds", type=Floats(6), default=None,
              help="x0,y0,z0,x1,y1,z1 in coordinate units (default: the data's extent).")
@click.option("--clip", is_flag=True, help="Drop rows outside --bounds instead of refusing the table.")
@click.option("--format", "fmt", type=click.Choice(["auto", "csv", "parquet"]), default="auto", show_default=True,
              help="Table format (auto: from the file name).")
@_common
@click.pass_context
def import_(ctx, table, dest, kind, columns, resolution, properties, relationships, bounds, clip, fmt, limit, partitions,
            rows_per_task, shard_above, merge, memory, queue, parallel, dry_run):
    """Import a CSV or Parquet table (a file, or a directory of part files) of annotations
    into a Neuroglancer precomputed annotation layer at DEST: a multi-level spatial index,
    by_id, and one index per relationship, sharded when large. Every row is checked first.

    \b
    Example:
      igneous-like annotation import synapses.csv file://data/synapses --resolution 8,8,40 \\
          --property score:float32 --property kind:enum \\
          --relationship pre:pre_id --relationship post:post_id
    Queued: add --queue fq://q, run the workers, then repeat with --merge (counts, then emit;
    once more at the end to write the info, last, and remove the working files).
    """
    from igneous_like.ops.annotation import import_table as op
    from igneous_like.ops.annotation.rows import parse_property, parse_relationship

    job = None
    if not merge:
        job = op.open_job(table, dest, kind=kind, columns=columns,
                          properties=[parse_property(p) for p in properties],
                          relationships=[parse_relationship(r) for r in relationships], resolution=resolution,
                          bounds=bounds, clip=clip, limit=op.DEFAULT_LIMIT if limit is None else limit, fmt=fmt,
                          memory=memory, partitions=partitions, rows_per_task=rows_per_task, shard_above=shard_above)
    drive(ctx, job, dest, queue, parallel, dry_run, merge)


@annotation.command("from-stats")
@click.argument("layer")
@click.argument("dest")
@click.option("--type", "kind", type=click.Choice(["point", "box"]), default="point", show_default=True,
              help="point: each label's centroid; box: its bounding box.")
@click.option("--stats", default=None, help="The statistics table (default: LAYER/stats, as `image stats` writes it).")
@_common
@click.pass_context
def from_stats(ctx, layer, dest, kind, stats, limit, partitions, rows_per_task, shard_above, merge, memory, queue,
               parallel, dry_run):
    """One annotation per label of a segmentation, from its `image stats` table: a point at
    the centroid (or the bounding box), every numeric column as a property, and a `segment`
    relationship, so selecting a segment in Neuroglancer shows its annotation.

    \b
    Example:
      igneous-like image stats file://data/seg
      igneous-like annotation from-stats file://data/seg file://data/seg-centroids
    """
    from igneous_like.ops.annotation.from_stats import open_stats_job

    job = None if merge else open_stats_job(layer, dest, kind=kind, stats=stats, limit=limit, memory=memory,
                                            partitions=partitions, rows_per_task=rows_per_task,
                                            shard_above=shard_above)
    drive(ctx, job, dest, queue, parallel, dry_run, merge)


def drive(ctx, job, dest: str, queue, parallel, dry_run: bool, merge: bool) -> None:
    """The phases: map, counts, emit. Queued: one phase per invocation (--merge advances);
    unqueued: all of them here."""
    from igneous_like.errors import UserError
    from igneous_like.ops.annotation import import_table as op

    if job is not None:
        plan = op.plan_map(job)
        if queue or dry_run:
            submit(ctx, plan, queue, parallel, dry_run)
            if queue and not dry_run:
                click.echo("annotation: after the map tasks have run, repeat with --merge", err=True)
            return
        submit(ctx, plan, None, parallel, False)
        dest = job.dest
    job = op.load_job(dest)
    while True:
        try:
            plan = op.next_phase(job)
        except UserError:  # e.g. duplicate ids: unqueued, leave nothing behind; queued, keep the record
            if not queue and not dry_run:
                op.remove_work(job)
            raise
        if plan is None:  # every phase has run
            if not dry_run:
                op.finish(job)  # the info, last
            click.echo(f"annotation: {job.dest} is complete ({job.count} annotations)"
                       + ("" if dry_run else "; info written, working files removed"), err=True)
            return
        submit(ctx, plan, queue, parallel, dry_run)
        if queue or dry_run:
            if not dry_run:
                click.echo(f"annotation: after the {plan.operation.split('(')[-1].rstrip(')')} tasks have run, "
                           "repeat with --merge", err=True)
            return

