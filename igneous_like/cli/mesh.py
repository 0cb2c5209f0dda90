"""`mesh` commands: forge, merge."""
from __future__ import annotations

import click

from igneous_like.cli.spatial_index import spatial_index_group
from igneous_like.cli.options import POSITIVE3, MipOrAuto, forge_mip, shard_options, dry_run_option, memory_option, parallel_option, queue_option, range_options, submit

from igneous_like.validate import DRACO_LEVEL, FILL_HOLES, MAGNITUDE, NONNEG_FLOAT, NONNEG_INT, POSITIVE_INT, VQB


def label_list(value):
    if value is None:
        return None
    try:
        return [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of labels") from None


@click.group()
def mesh() -> None:
    """Meshes of segmentations: forge fragments, then merge them."""


@mesh.command()
@click.argument("layer")
@click.option("--mip", type=MipOrAuto(), default=0, show_default=True,
              help="Mesh at this mip; auto: the finest near-isotropic one (max/min resolution at most 2).")
@click.option("--shape", type=POSITIVE3, default=None, help="Task shape in voxels (default from --memory, at most 448^3).")
@click.option("--simplify/--skip-simplify", default=True, show_default=True, help="Simplify meshes.")
@click.option("--max-error", type=NONNEG_FLOAT, default=40, show_default=True, help="Simplification error limit, physical units.")
@click.option("--dust-threshold", type=NONNEG_INT, default=0, show_default=True, help="Skip labels with fewer voxels in a task.")
@click.option("--dust-global/--dust-local", default=False, show_default=True,
              help="Apply --dust-threshold to whole objects (voxels counted by forge, applied by merge) or per task.")
@click.option("--fill-missing", is_flag=True, help="Read missing chunks as background.")
@click.option("--fill-holes", type=FILL_HOLES, default=0, show_default=True,
              help="0 none, 1 fill holes, 2 also fix borders, 3 also morphological closing.")
@click.option("--labels", default=None, help="Mesh only these labels, e.g. 12,57.")
@click.option("--exclude-labels", default=None, help="Do not mesh these labels.")
@click.option("--closed-edge/--open-edge", default=True, show_default=True, help="Close meshes on the dataset's edge.")
@click.option("--dir", "mesh_dir", default=None, help="Mesh directory (default: the info's, else 'mesh').")
@click.option("--spatial-index/--skip-spatial-index", default=True, show_default=True, help="Write the spatial index.")
@click.option("--sharded", is_flag=True, help="One fragment file per task (for merge-sharded) instead of one per label.")
@memory_option
@range_options
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def forge(ctx, layer, mip, shape, simplify, max_error, dust_threshold, dust_global, fill_missing, fill_holes, labels,
          exclude_labels, closed_edge, mesh_dir, spatial_index, sharded, memory, xrange, yrange, zrange, queue,
          parallel, dry_run):
    """(1) Mesh a segmentation in tasks that overlap by one voxel.

    \b
    Example:
      igneous-like mesh forge file://data/seg --queue fq://q
      igneous-like execute fq://q -p 4 -x
      igneous-like mesh merge file://data/seg --queue fq://q
    """
    from igneous_like.ops.mesh.forge import plan_mesh_forge

    plan = plan_mesh_forge(
        layer, mip=forge_mip(layer, mip, "meshes"), shape=shape, simplify=simplify, max_error=max_error, dust_threshold=dust_threshold,
        dust_global=dust_global, fill_missing=fill_missing, fill_holes=fill_holes, labels=label_list(labels),
        exclude_labels=label_list(exclude_labels), closed_edge=closed_edge, mesh_dir=mesh_dir,
        spatial_index=spatial_index, sharded=sharded, memory=memory, xrange=xrange, yrange=yrange, zrange=zrange,
    )
    submit(ctx, plan, queue, parallel, dry_run)


@mesh.command()
@click.argument("layer")
@click.option("--magnitude", type=MAGNITUDE, default=2, show_default=True, help="Split labels into ~10^magnitude tasks by prefix.")
@click.option("--nlod", type=NONNEG_INT, default=0, show_default=True,
              help="0: legacy single-resolution meshes. N: unsharded multi-resolution with N extra levels.")
@click.option("--vqb", type=VQB, default=16, show_default=True, help="(multires) Vertex quantization bits: 10 or 16.")
@click.option("--min-chunk-size", type=POSITIVE3, default=(256, 256, 256), show_default=True,
              help="(multires) Smallest octree node of the finest level of detail, in voxels.")
@click.option("--dir", "mesh_dir", default=None, help="Mesh directory (default: the info's).")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def merge(ctx, layer, magnitude, nlod, vqb, min_chunk_size, mesh_dir, queue, parallel, dry_run):
    """(2) Weld each label's fragments into one mesh (legacy single-resolution format).

    \b
    Example:
      igneous-like mesh merge file://data/seg --queue fq://q
    """
    from igneous_like.ops.mesh.merge import plan_mesh_merge

    plan = plan_mesh_merge(layer, mesh_dir=mesh_dir, magnitude=magnitude, nlod=nlod, vqb=vqb,
                           min_chunk_size=min_chunk_size)
    submit(ctx, plan, queue, parallel, dry_run)


@mesh.command()
@click.argument("layer")
@click.option("--dir", "mesh_dir", default=None, help="Mesh directory (default: the info's).")
@click.option("--magnitude", type=MAGNITUDE, default=1, show_default=True, help="Split the work by label prefix.")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def clean(ctx, layer, mesh_dir, magnitude, queue, parallel, dry_run):
    """Delete forge fragments after a merge (merged meshes and the spatial index stay).

    \b
    Example:
      igneous-like mesh clean file://data/seg
    """
    from igneous_like.ops.mesh.merge import plan_mesh_clean

    submit(ctx, plan_mesh_clean(layer, mesh_dir=mesh_dir, magnitude=magnitude), queue, parallel, dry_run)


@mesh.command("rm")
@click.argument("layer")
@click.option("--dir", "mesh_dir", default=None, help="Mesh directory (default: the info's).")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def rm(ctx, layer, mesh_dir, queue, parallel, dry_run):
    """Delete a mesh directory and the info's pointer to it.

    \b
    Example:
      igneous-like mesh rm file://data/seg
    """
    from igneous_like.ops.delete import plan_object_dir_rm

    submit(ctx, plan_object_dir_rm(layer, "mesh", mesh_dir), queue, parallel, dry_run)


@mesh.command("merge-sharded")
@click.argument("layer")
@click.option("--dir", "mesh_dir", default=None, help="Mesh directory (default: the info's).")
@click.option("--nlod", type=NONNEG_INT, default=1, show_default=True, help="Extra levels of detail.")
@click.option("--vqb", type=VQB, default=16, show_default=True, help="Vertex quantization bits: 10 or 16.")
@click.option("--compress-level", type=DRACO_LEVEL, default=7, show_default=True, help="Draco compression level 0-10.")
@shard_options(max_labels_per_shard=1000)
@click.option("--min-chunk-size", type=POSITIVE3, default=(256, 256, 256), show_default=True,
              help="Smallest octree node of the finest level of detail, in voxels.")
@click.option("--spatial-index-db", default=None,
              help="Plan from this database (see `mesh spatial-index db`) instead of listing forge files.")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def merge_sharded(ctx, layer, mesh_dir, nlod, vqb, compress_level, shard_index_bytes, minishard_index_bytes,
                  min_shards, max_labels_per_shard, min_chunk_size, spatial_index_db, queue, parallel, dry_run):
    """(2) Build multi-resolution Draco meshes into shards (parameters sized from the label count).

    \b
    Example:
      igneous-like mesh forge file://data/seg --sharded --queue fq://q
      igneous-like execute fq://q -x
      igneous-like mesh merge-sharded file://data/seg --nlod 2 --queue fq://q
      igneous-like execute fq://q -x
    """
    from igneous_like.ops.mesh.merge_sharded import plan_mesh_merge_sharded

    plan = plan_mesh_merge_sharded(
        layer, mesh_dir=mesh_dir, nlod=nlod, vqb=vqb, compress_level=compress_level,
        shard_index_bytes=shard_index_bytes, minishard_index_bytes=minishard_index_bytes, min_shards=min_shards,
        max_labels_per_shard=max_labels_per_shard, min_chunk_size=min_chunk_size,
        spatial_index_db=spatial_index_db,
    )
    submit(ctx, plan, queue, parallel, dry_run)


@mesh.command()
@click.argument("src")
@click.argument("dest")
@click.option("--sharded", is_flag=True, help="Write DEST as sharded multires meshes.")
@click.option("--dir", "mesh_dir", default=None, help="Mesh directory in DEST (default: DEST's info, else SRC's).")
@click.option("--magnitude", type=MAGNITUDE, default=2, show_default=True, help="Split unsharded copies by label prefix.")
@click.option("--nlod", type=NONNEG_INT, default=0, show_default=True, help="(to sharded, from legacy) Extra levels of detail.")
@click.option("--vqb", type=VQB, default=16, show_default=True, help="(to sharded, from legacy) Vertex quantization bits.")
@click.option("--min-shards", type=POSITIVE_INT, default=1, show_default=True, help="(to sharded) At least this many shards.")
@click.option("--max-labels-per-shard", type=POSITIVE_INT, default=None, help="(to sharded) At most this many labels per shard.")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def xfer(ctx, src, dest, sharded, mesh_dir, magnitude, nlod, vqb, min_shards, max_labels_per_shard, queue,
         parallel, dry_run):
    """Copy meshes to another layer: unsharded to sharded (--sharded), or sharded back to
    unsharded multires files.

    \b
    Example:
      igneous-like mesh xfer file://data/seg file://data/seg-sharded --sharded --nlod 2
      igneous-like mesh xfer file://data/seg-sharded file://data/seg-unsharded
    """
    from igneous_like.ops.mesh.transfer import plan_mesh_xfer

    plan = plan_mesh_xfer(src, dest, sharded=sharded, mesh_dir=mesh_dir, magnitude=magnitude, nlod=nlod, vqb=vqb,
                          min_shards=min_shards, max_labels_per_shard=max_labels_per_shard)
    submit(ctx, plan, queue, parallel, dry_run)


mesh.add_command(spatial_index_group("mesh"))
