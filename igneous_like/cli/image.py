"""`image` commands: downsample, xfer, rm."""
from __future__ import annotations

import click

from igneous_like.cli.options import (
    POSITIVE3, TUPLE3, downsample_method_option, dry_run_option, encoding_options, memory_option,
    parallel_option, queue_option, range_options, submit,
)

from igneous_like.validate import NONNEG_INT, POSITIVE_INT


@click.group()
def image() -> None:
    """Image and segmentation volumes: pyramids, transfers, deletion."""


@image.command()
@click.argument("layer")
@click.option("--mip", type=NONNEG_INT, default=0, show_default=True, help="Build upward from this mip.")
@click.option("--num-mips", type=POSITIVE_INT, default=None,
              help="Mips to add. Default: as many as fit --memory, up to a one-chunk top.")
@click.option("--factor", type=POSITIVE3, default=None, help="Downsample factor per mip (default 2,2,1).")
@click.option("--volumetric", is_flag=True, help="Use 2,2,2 downsampling.")
@downsample_method_option("--method")
@click.option("--sparse", is_flag=True, help="Ignore background (0) voxels in avg and mode.")
@click.option("--fill-missing", is_flag=True, help="Read missing chunks as background instead of failing.")
@encoding_options
@click.option("--chunk-size", type=POSITIVE3, default=None, help="Chunk size of the new mips, e.g. 128,128,64.")
@memory_option
@range_options
@click.option("--delete-bg", is_flag=True, help="Delete background chunks instead of writing them.")
@click.option("--bg-color", type=int, default=0, show_default=True, help="The background value.")
@click.option("--sharded", is_flag=True, help="Write the new mips as shards, several mips per task where --memory allows.")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def downsample(ctx, layer, mip, num_mips, factor, volumetric, method, sparse, fill_missing, encoding,
               encoding_level, compress, chunk_size, memory, xrange, yrange, zrange, delete_bg, bg_color,
               sharded, queue, parallel, dry_run):
    """Build an image pyramid above --mip, several mips per task.

    Images average (rounded to nearest, no drift up the pyramid); segmentations take the mode.

    \b
    Example:
      igneous-like image downsample file://data/em --num-mips 3 --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    from igneous_like.ops.image.downsample import plan_downsample

    if factor is None:
        factor = (2, 2, 2) if volumetric else (2, 2, 1)
    plan = plan_downsample(
        layer, mip=mip, num_mips=num_mips, factor=factor, method=method, sparse=sparse,
        fill_missing=fill_missing, encoding=encoding, encoding_level=encoding_level, compress=compress,
        chunk_size=chunk_size, memory=memory, xrange=xrange, yrange=yrange, zrange=zrange,
        delete_bg=delete_bg, bg_color=bg_color, sharded=sharded,
    )
    submit(ctx, plan, queue, parallel, dry_run)


@image.command()
@click.argument("src")
@click.argument("dest")
@click.option("--mip", type=NONNEG_INT, default=0, show_default=True, help="Transfer this mip.")
@click.option("--translate", type=TUPLE3, default=(0, 0, 0), show_default=True,
              help="Shift the data by X,Y,Z voxels in DEST.")
@click.option("--dest-voxel-offset", type=TUPLE3, default=None, help="Voxel offset of DEST at --mip.")
@click.option("--chunk-size", type=POSITIVE3, default=None, help="Chunk size of DEST, e.g. 128,128,64.")
@encoding_options
@click.option("--downsample/--skip-downsample", default=True, show_default=True,
              help="Build mips of DEST while transferring (one read of SRC).")
@click.option("--num-mips", type=NONNEG_INT, default=None, help="Mips to build while transferring.")
@click.option("--max-mips", type=NONNEG_INT, default=5, show_default=True, help="Upper limit on mips built.")
@click.option("--factor", type=POSITIVE3, default=None, help="Downsample factor per mip (default 2,2,1).")
@click.option("--volumetric", is_flag=True, help="Use 2,2,2 downsampling.")
@downsample_method_option("--downsample-method")
@click.option("--sparse", is_flag=True, help="Ignore background (0) voxels in avg and mode.")
@click.option("--fill-missing", is_flag=True, help="Read missing chunks as background instead of failing.")
@memory_option
@click.option("--shape", type=POSITIVE3, default=None, help="Task shape in voxels (overrides --memory).")
@range_options
@click.option("--clean-info", is_flag=True, help="Drop mesh and skeleton entries from DEST's info.")
@click.option("--sharded", is_flag=True,
              help="Write DEST's scale as shards (spec sized from the volume and --memory; one task per shard).")
@click.option("--sharding", "sharding_json", default=None,
              help='(experts) Explicit sharding spec as JSON, e.g. \'{"preshift_bits": 9, "minishard_bits": 3, '
                   '"shard_bits": 6}\'; implies --sharded.')
@click.option("--delete-bg", is_flag=True, help="Delete background chunks instead of writing them.")
@click.option("--bg-color", type=int, default=0, show_default=True, help="The background value.")
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def xfer(ctx, src, dest, mip, translate, dest_voxel_offset, chunk_size, encoding, encoding_level, compress,
         downsample, num_mips, max_mips, factor, volumetric, method, sparse, fill_missing, memory, shape,
         xrange, yrange, zrange, clean_info, sharded, sharding_json, delete_bg, bg_color, queue, parallel, dry_run):
    """Copy a layer, re-chunking, re-encoding and building mips on the way. SRC is never modified.

    With the same chunk size and encoding and --skip-downsample, files are copied byte for byte.

    \b
    Example:
      igneous-like image xfer file://data/seg file://data/seg-cseg --encoding cseg --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    from igneous_like.ops.image.transfer import plan_transfer

    if factor is None:
        factor = (2, 2, 2) if volumetric else (2, 2, 1)
    plan = plan_transfer(
        src, dest, mip=mip, translate=translate, dest_voxel_offset=dest_voxel_offset, chunk_size=chunk_size,
        encoding=encoding, encoding_level=encoding_level, compress=compress, downsample=downsample,
        num_mips=num_mips, max_mips=max_mips, factor=factor, method=method, sparse=sparse,
        fill_missing=fill_missing, memory=memory, shape=shape, xrange=xrange, yrange=yrange, zrange=zrange,
        clean_info=clean_info, delete_bg=delete_bg, bg_color=bg_color, sharded=sharded,
        sharding=_json_option(sharding_json, "--sharding"),
    )
    submit(ctx, plan, queue, parallel, dry_run)


def _json_option(text: str | None, name: str):
    import json

    from igneous_like.errors import UserError

    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UserError(f"{name} must be a JSON object")
    return value


@image.command("rm")
@click.argument("layer")
@click.option("--mip", type=NONNEG_INT, default=0, show_default=True, help="First mip to delete.")
@click.option("--num-mips", type=POSITIVE_INT, default=None, help="How many mips to delete (default: all from --mip).")
@click.option("--shape", type=POSITIVE3, default=None, help="Task shape at --mip (a multiple of the chunk size).")
@range_options
@queue_option
@parallel_option
@dry_run_option
@click.pass_context
def rm(ctx, layer, mip, num_mips, shape, xrange, yrange, zrange, queue, parallel, dry_run):
    """Delete the chunks of one or more mips (within ranges, if given).

    \b
    Example:
      igneous-like image rm file://data/em --mip 3 --queue fq://q
    """
    from igneous_like.ops.delete import plan_delete

    plan = plan_delete(layer, mip=mip, num_mips=num_mips, shape=shape, xrange=xrange, yrange=yrange, zrange=zrange)
    submit(ctx, plan, queue, parallel, dry_run)


@image.command()
@click.argument("layer")
@click.option("--mip", type=int, default=None, help="Search this mip (default: the coarsest).")
@click.option("--suppress-faint", type=int, default=0, show_default=True, help="Voxels at or below this value are background.")
@click.option("--dust", type=int, default=10, show_default=True, help="Drop connected components smaller than this (voxels).")
@click.option("--max-axial-len", type=int, default=512, show_default=True,
              help="Shrink sections larger than this squared (in memory) before searching.")
@click.option("--z-step", type=int, default=None, help="Search z slabs this thick (default: the whole z range).")
def roi(layer, mip, suppress_faint, dust, max_axial_len, z_step):
    """Find tissue: bounding boxes of non-empty regions at a low mip, written into the info
    (`scales[0].rois`, mip 0 voxels).

    \b
    Example:
      igneous-like image roi file://data/em --suppress-faint 20
    """
    from igneous_like.ops.image.roi import compute_rois, write_rois

    url, info, boxes = compute_rois(layer, mip, suppress_faint, dust, max_axial_len, z_step)
    for box in boxes:
        click.echo(str(box))
    write_rois(url, info, boxes)
    click.echo(f"{len(boxes)} ROI(s) detected; written into {url}/info", err=True)


# command families of the image group that live in their own modules
from igneous_like.cli.contrast import contrast  # noqa: E402
from igneous_like.cli.image_io import create, export, import_  # noqa: E402
from igneous_like.cli.image_stats import stats, voxels  # noqa: E402
from igneous_like.cli.ccl import ccl  # noqa: E402

for _command in (import_, create, export, contrast, stats, voxels, ccl):
    image.add_command(_command)
