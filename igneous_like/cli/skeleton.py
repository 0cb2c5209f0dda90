"""`skeleton` commands: forge, merge, merge-sharded, clean, rm."""
from __future__ import annotations

import click

from igneous_like.cli.mesh import label_list
from igneous_like.cli.spatial_index import spatial_index_group
from igneous_like.cli.options import POSITIVE3, MipOrAuto, forge_mip, shard_options, dry_run_option, memory_option, parallel_option, queue_option, range_options, submit

from igneous_like.validate import FILL_HOLES, MAGNITUDE, NONNEG_FLOAT, NONNEG_INT, POSITIVE_INT


@click.group()
def skeleton() -> None:
    """Skeletons of segmentations (TEASAR): forge fragments, then merge them."""


@skeleton.command()
@click.argument("layer")
@click.option("--mip", type=MipOrAuto(), default=0, show_default=True,
              help="Skeletonize at this mip; auto: the finest near-isotropic one (max/min resolution at most 2).")
@click.option("--shape", type=POSITIVE3, default=None, help="Task shape in voxels (default from --memory, at most 512^3).")
@click.option("--scale", type=NONNEG_FLOAT, default=4, show_default=True, help="TEASAR: invalidation radius multiplier.")
@click.option("--const", type=NONNEG_FLOAT, default=10, show_default=True, help="TEASAR: invalidation radius constant (physical).")
@click.option("--soma-detect", type=NONNEG_FLOAT, default=1100, show_default=True, help="Soma candidates above this boundary distance.")
@click.option("--soma-accept", type=NONNEG_FLOAT, default=3500, show_default=True, help="Accept somata above this boundary distance.")
@click.option("--soma-scale", type=NONNEG_FLOAT, default=1.0, show_default=True, help="Soma invalidation scale.")
@click.option("--soma-const", type=NONNEG_FLOAT, default=300, show_default=True, help="Soma invalidation constant.")
@click.option("--max-paths", type=POSITIVE_INT, default=None, help="Stop tracing an object after this many paths.")
@click.option("--dust-threshold", type=NONNEG_INT, default=1000, show_default=True, help="Skip objects with fewer voxels in a task.")
@click.option("--dust-global/--dust-local", default=False, show_default=True,
              help="Count --dust-threshold voxels over the whole volume (every piece is skeletonized, so small pieces "
              "of large objects at task corners are kept; the merge drops labels below it) or per task (local).")
@click.option("--fill-holes", type=FILL_HOLES, default=0, show_default=True, help="0 none, 1 fill, 2 +borders, 3 +closing.")
@click.option("--fix-branching/--no-fix-branching", default=True, show_default=True, help="Better branch points, slower.")
@click.option("--fix-borders/--no-fix-borders", default=True, show_default=True,
              help="Trace to shared border targets so neighbouring tasks' fragments meet.")
@click.option("--fix-avocados/--no-fix-avocados", default=False, show_default=True,
              help="Merge nuclei segmented apart from their soma.")
@click.option("--cross-section", type=NONNEG_INT, default=0, show_default=True,
              help="Compute cross-sectional area per vertex with this smoothing window (0: off).")
@click.option("--labels", default=None, help="Skeletonize only these labels, e.g. 12,57.")
@click.option("--sharded", is_flag=True, help="Accepted for Igneous compatibility: fragments are always one file per task.")
@click.option("--spatial-index/--skip-spatial-index", default=True, show_default=True, help="Write the spatial index.")
@click.option("--fill-missing", is_flag=True, help="Read missing chunks as background.")
@click.option("--dir", "skel_dir", default=None, help="Skeleton directory (default: the info's, else 'skeletons').")
@memory_option
@range_options
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def forge(ctx, layer, mip, shape, scale, const, soma_detect, soma_accept, soma_scale, soma_const, max_paths,
          dust_threshold, dust_global, fill_holes, fix_branching, fix_borders, fix_avocados, cross_section, labels,
          sharded, spatial_index, fill_missing, skel_dir, memory, xrange, yrange, zrange, queue, parallel, dry_run):
    """(1) Skeletonize a segmentation in tasks that overlap by one voxel.

    \b
    Example:
      igneous-like skeleton forge file://data/seg --queue fq://q
      igneous-like execute fq://q -x
      igneous-like skeleton merge file://data/seg --queue fq://q
    """
    from igneous_like.ops.skeleton.forge import plan_skeleton_forge

    plan = plan_skeleton_forge(
        layer, mip=forge_mip(layer, mip, "skeletons"), shape=shape, scale=scale, const=const, soma_detect=soma_detect, soma_accept=soma_accept,
        soma_scale=soma_scale, soma_const=soma_const, max_paths=max_paths, dust_threshold=dust_threshold,
        dust_global=dust_global, fill_holes=fill_holes, fix_branching=fix_branching, fix_borders=fix_borders,
        fix_avocados=fix_avocados, cross_section=cross_section, labels=label_list(labels), sharded=sharded,
        spatial_index=spatial_index, fill_missing=fill_missing, skel_dir=skel_dir, memory=memory,
        xrange=xrange, yrange=yrange, zrange=zrange,
    )
    submit(ctx, plan, queue, parallel, dry_run)


def merge_options(fn):
    for deco in reversed([
        click.option("--dir", "skel_dir", default=None, help="Skeleton directory (default: the info's)."),
        click.option("--tick-threshold", type=NONNEG_FLOAT, default=0, show_default=True,
                     help="Remove side branches shorter than this (physical units)."),
        click.option("--min-cable-length", type=NONNEG_FLOAT, default=1000, show_default=True,
                     help="Drop skeleton pieces shorter than this (physical units); a label with "
                     "nothing left gets no file."),
        click.option("--max-cable-length", type=NONNEG_FLOAT, default=None, help="Drop skeletons longer than this."),
    ]):
        fn = deco(fn)
    return fn


@skeleton.command()
@click.argument("layer")
@merge_options
@click.option("--magnitude", type=MAGNITUDE, default=2, show_default=True, help="Split labels into 10^magnitude tasks (by their last digits).")
@click.option("--delete-fragments", is_flag=True, help="Delete forge fragments once every merge task ran (in-process runs).")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def merge(ctx, layer, skel_dir, tick_threshold, min_cable_length, max_cable_length, magnitude, delete_fragments,
          queue, parallel, dry_run):
    """(2) Join each label's fragments into one skeleton file per label.

    \b
    Example:
      igneous-like skeleton merge file://data/seg --tick-threshold 3500 --queue fq://q
    """
    from igneous_like.errors import UserError
    from igneous_like.ops.skeleton.merge import plan_skeleton_clean, plan_skeleton_merge

    if delete_fragments and queue:
        raise UserError("--delete-fragments needs every merge task finished: run `skeleton clean` after the queue drains")
    plan = plan_skeleton_merge(layer, skel_dir=skel_dir, magnitude=magnitude, tick_threshold=tick_threshold,
                               min_cable_length=min_cable_length, max_cable_length=max_cable_length)
    submit(ctx, plan, queue, parallel, dry_run)
    if delete_fragments and not dry_run:
        submit(ctx, plan_skeleton_clean(layer, skel_dir=skel_dir), None, parallel, False)


@skeleton.command("merge-sharded")
@click.argument("layer")
@merge_options
@shard_options(max_labels_per_shard=2000)
@click.option("--spatial-index-db", default=None,
              help="Plan from this database (see `skeleton spatial-index db`) instead of listing forge files.")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def merge_sharded(ctx, layer, skel_dir, tick_threshold, min_cable_length, max_cable_length, shard_index_bytes,
                  minishard_index_bytes, min_shards, max_labels_per_shard, spatial_index_db, queue, parallel, dry_run):
    """(2) Join fragments into skeletons packed in shards (one task writes each shard whole).

    \b
    Example:
      igneous-like skeleton merge-sharded file://data/seg --queue fq://q
    """
    from igneous_like.ops.skeleton.merge import plan_skeleton_merge

    plan = plan_skeleton_merge(
        layer, skel_dir=skel_dir, sharded=True, tick_threshold=tick_threshold, min_cable_length=min_cable_length,
        max_cable_length=max_cable_length, shard_index_bytes=shard_index_bytes,
        minishard_index_bytes=minishard_index_bytes, min_shards=min_shards, max_labels_per_shard=max_labels_per_shard,
        spatial_index_db=spatial_index_db,
    )
    submit(ctx, plan, queue, parallel, dry_run)


@skeleton.command()
@click.argument("layer")
@click.option("--dir", "skel_dir", default=None, help="Skeleton directory (default: the info's).")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def clean(ctx, layer, skel_dir, queue, parallel, dry_run):
    """Delete forge fragments and merge worklists after a merge.

    \b
    Example:
      igneous-like skeleton clean file://data/seg
    """
    from igneous_like.ops.skeleton.merge import plan_skeleton_clean

    submit(ctx, plan_skeleton_clean(layer, skel_dir=skel_dir), queue, parallel, dry_run)


@skeleton.command("rm")
@click.argument("layer")
@click.option("--dir", "skel_dir", default=None, help="Skeleton directory (default: the info's).")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def rm(ctx, layer, skel_dir, queue, parallel, dry_run):
    """Delete a skeleton directory and the info's pointer to it.

    \b
    Example:
      igneous-like skeleton rm file://data/seg
    """
    from igneous_like.ops.delete import plan_object_dir_rm

    submit(ctx, plan_object_dir_rm(layer, "skeletons", skel_dir), queue, parallel, dry_run)


@skeleton.command()
@click.argument("src")
@click.argument("dest")
@click.option("--sharded", is_flag=True, help="Write DEST sharded (from sharded SRC without it: one file per label).")
@click.option("--dir", "skel_dir", default=None, help="Skeleton directory in DEST.")
@click.option("--magnitude", type=MAGNITUDE, default=2, show_default=True, help="Split plain copies into 10^magnitude tasks.")
@click.option("--min-shards", type=POSITIVE_INT, default=1, show_default=True, help="(to sharded) At least this many shards.")
@click.option("--max-labels-per-shard", type=POSITIVE_INT, default=None, help="(to sharded) At most this many labels per shard.")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def xfer(ctx, src, dest, sharded, skel_dir, magnitude, min_shards, max_labels_per_shard, queue, parallel, dry_run):
    """Copy skeletons to another layer, converting between sharded and one file per label.

    \b
    Example:
      igneous-like skeleton xfer file://data/seg file://data/seg-sharded --sharded
      igneous-like skeleton xfer file://data/seg-sharded file://data/seg-files
    """
    from igneous_like.ops.skeleton.transfer import plan_skeleton_xfer

    plan = plan_skeleton_xfer(src, dest, sharded=sharded, skel_dir=skel_dir, magnitude=magnitude,
                              min_shards=min_shards, max_labels_per_shard=max_labels_per_shard)
    submit(ctx, plan, queue, parallel, dry_run)


@skeleton.command()
@click.argument("src")
@click.argument("dest")
@click.argument("labels", required=False)
def convert(src, dest, labels):
    """Write skeletons of SRC as SWC files (LABEL.swc) into the local directory DEST.

    \b
    Example:
      igneous-like skeleton convert file://data/seg ./swc 12,57
    """
    from igneous_like.ops.skeleton.transfer import convert_to_swc

    n = convert_to_swc(src, dest, label_list(labels))
    click.echo(f"wrote {n} SWC file(s) to {dest}")


skeleton.add_command(spatial_index_group("skeletons"))
