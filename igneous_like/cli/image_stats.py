"""`image stats` and `image voxels count|sum`: per-label statistics (attached to the image group)."""
from __future__ import annotations

import click

from igneous_like.cli.options import (
    TUPLE3, dry_run_option, memory_option, parallel_option, queue_option, range_options, submit,
)


@click.command()
@click.argument("layer")
@click.option("--mip", type=int, default=0, show_default=True, help="Measure at this mip.")
@click.option("--image", "image", default=None,
              help="Paired image layer (same geometry at --mip): adds intensity mean, std, min and max.")
@click.option("--shape", type=TUPLE3, default=None, help="Map task shape in voxels (default from --memory).")
@memory_option
@range_options
@click.option("--fill-missing", is_flag=True, help="Read missing chunks as background instead of failing.")
@click.option("--out", default=None, help="Where the table goes (default: LAYER/stats).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True,
              help="Table file format.")
@click.option("--segment-properties/--no-segment-properties", "properties", default=True, show_default=True,
              help="Write Neuroglancer segment properties at LAYER/segment_properties, linked from the info.")
@click.option("--top", type=int, default=None, help="Segment properties for only the N largest labels.")
@click.option("--min-voxels", type=int, default=0, show_default=True,
              help="Segment properties only for labels with at least this many voxels.")
@click.option("--partitions", type=int, default=None,
              help="Label partitions (reduce tasks). Default from the volume size and --memory.")
@click.option("--merge", is_flag=True, help="Queued runs, phase 2: plan the reduce once the map tasks have run.")
@click.option("--auto-merge", is_flag=True,
              help="Queued runs: the last map task queues the reduce into the same queue, so one "
                   "`execute -x` runs both phases (no --merge command).")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def stats(ctx, layer, mip, image, shape, memory, xrange, yrange, zrange, fill_missing, out, fmt, properties, top,
          min_voxels, partitions, merge, auto_merge, queue, parallel, dry_run):
    """Per-label statistics: voxel count, bounding box, centroid, volume, voxel-face surface
    area, border contact, ellipsoid axes (and intensities with --image), as a table at
    LAYER/stats/ and as Neuroglancer segment properties.

    Without --queue both phases run here. With --queue, enqueue the map tasks, run them,
    then repeat the command with --merge to enqueue the reduce; or pass --auto-merge and the
    last map task enqueues the reduce itself.

    \b
    Example:
      igneous-like image stats file://data/seg --image file://data/em --queue fq://q
      igneous-like execute fq://q -p 4 -x
      igneous-like image stats file://data/seg --image file://data/em --queue fq://q --merge
      igneous-like execute fq://q -p 4 -x
    \b
    Or both phases from one queue:
      igneous-like image stats file://data/seg --queue fq://q --auto-merge
      igneous-like execute fq://q -p 4 -x
    Read the table whole: pyarrow.parquet.read_table("data/seg/stats")
    """
    from igneous_like.errors import UserError
    from igneous_like.ops.analysis import stats as op

    if auto_merge and merge:
        raise UserError("--auto-merge queues the reduce from the map: it does not go with --merge")

    job = op.open_job(layer, image=image, mip=mip, shape=shape, memory=memory, xrange=xrange, yrange=yrange,
                      zrange=zrange, fill_missing=fill_missing, out=out, fmt=fmt, properties=properties, top=top,
                      min_voxels=min_voxels, partitions=partitions)
    if queue:
        from igneous_like import queues

        follow = queues.normalize_queue_url(queue) if auto_merge else None
        plan = op.plan_stats_reduce(job, memory) if merge else op.plan_stats_map(job, memory, follow)
        submit(ctx, plan, queue, parallel, dry_run)
        if auto_merge and not dry_run:
            click.echo("image stats: the last map task queues the reduce into the same queue", err=True)
        elif not merge and not dry_run:
            click.echo("image stats: after the map tasks have run, repeat with --merge", err=True)
        return
    if dry_run:
        click.echo(op.plan_stats_reduce(job, memory).describe() if merge else op.describe_both(job, memory))
        return
    if not merge:
        submit(ctx, op.plan_stats_map(job, memory), None, parallel, False)
    submit(ctx, op.plan_stats_reduce(job, memory), None, parallel, False)


@click.group()
def voxels() -> None:
    """Voxel counts per label (Igneous-compatible): count in tasks, then sum."""


@voxels.command("count")
@click.argument("layer")
@click.option("--mip", type=int, default=0, show_default=True, help="Count this mip.")
@click.option("--fill-missing", is_flag=True, help="Read missing chunks as background instead of failing.")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def count(ctx, layer, mip, fill_missing, queue, parallel, dry_run):
    """Count voxels per label in 512^3 tasks: KEY/stats/voxel_counts/BBOX.json.

    \b
    Example:
      igneous-like image voxels count file://data/seg --queue fq://q
      igneous-like execute fq://q -p 4 -x
      igneous-like image voxels sum file://data/seg
    """
    from igneous_like.ops.analysis.voxel_counts import plan_voxel_count

    submit(ctx, plan_voxel_count(layer, mip=mip, fill_missing=fill_missing), queue, parallel, dry_run)


@voxels.command("sum")
@click.argument("layer")
@click.option("--mip", type=int, default=0, show_default=True, help="Sum the counts of this mip.")
@click.option("--compress", default="zstd", show_default=True, help="Compression of the result: none, gzip, br, zstd.")
@click.option("-o", "--output", default=None, help="Also write the IntMap to this local file.")
def sum_(layer, mip, compress, output):
    """Add up the task counts into one IntMap (mapbuffer): KEY/stats/voxel_counts.im.

    \b
    Example:
      igneous-like image voxels sum file://data/seg -o counts.im
    """
    from igneous_like.ops.analysis.voxel_counts import sum_voxel_counts

    n = sum_voxel_counts(layer, mip=mip, compress=compress, output=output)
    click.echo(f"image voxels sum: {n} labels", err=True)
