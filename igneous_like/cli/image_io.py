"""`image import`, `image create` and `image export`: outside formats in and out."""
from __future__ import annotations

import click

from igneous_like.cli.options import (
    FLOAT3, TUPLE3, memory_option, producer_options, range_options, submit,
)


def source_options(fn):
    """Which part of the source to read and how to order it."""
    for deco in reversed([
        click.option("--dataset", default=None, help="HDF5 dataset or Zarr array inside SRC (default: the only 3D one)."),
        click.option("--level", type=int, default=None, help="OME-Zarr multiscales level (default 0)."),
        click.option("--axes", default=None, help="Axis order of a .npy file: xyz (default, as Igneous) or zyx."),
        click.option("--order", type=click.Choice(["natural", "lexical"]), default="natural", show_default=True,
                     help="Slice order of a stack: natural (z2 before z10) or lexical."),
        click.option("--pad", is_flag=True, help="Pad slices smaller than the largest with zeros."),
    ]):
        fn = deco(fn)
    return fn


def encoding_level_option(fn):
    return click.option("--encoding-level", type=int, default=None, help="jpeg/jxl quality, png level or fpzip precision.")(fn)


def compress_option(fn):
    return click.option("--compress", default=None, help="File compression: none, gzip, br (default: none on file://).")(fn)


def chunk_size_option(fn):
    return click.option("--chunk-size", type=TUPLE3, default=None, help="Chunk size, default 128,128,64.")(fn)


def layer_options(fn):
    """The new layer's geometry and encoding."""
    for deco in reversed([
        click.option("--resolution", type=FLOAT3, default=None,
                     help="Voxel size X,Y,Z in nm (required only where SRC records none)."),
        click.option("--offset", type=TUPLE3, default=None, help="Voxel offset X,Y,Z (default: SRC's translation, or 0)."),
        click.option("--encoding", default=None,
                     help="Chunk encoding (default raw for images, compressed_segmentation for 32/64-bit segmentations)."),
        encoding_level_option,
        compress_option,
        chunk_size_option,
        click.option("--sharded", is_flag=True, help="Write mip 0 as shards, one task per shard."),
    ]):
        fn = deco(fn)
    return fn


@click.command("import")
@click.argument("src")
@click.argument("dest")
@source_options
@layer_options
@click.option("--type", "layer_type", type=click.Choice(["image", "segmentation"]), default=None,
              help="Layer type (default image).")
@click.option("--seg", is_flag=True, help="Same as --type segmentation.")
@click.option("--downsample/--no-downsample", default=True, show_default=True,
              help="Build the whole pyramid in the same tasks (and the tasks that complete each slab).")
@click.option("--force", is_flag=True, help="Write into a DEST that already has files.")
@memory_option
@producer_options
@click.pass_context
def import_(ctx, src, dest, dataset, level, axes, order, pad, resolution, offset, encoding, encoding_level,
            compress, chunk_size, sharded, layer_type, seg, downsample, force, memory, queue, parallel, dry_run):
    """Import a volume into a new Precomputed layer, streamed in z-slabs within --memory.

    SRC: a directory or glob of 2D TIFF/PNG slices, a multi-page TIFF, BigTIFF or OME-TIFF, an
    HDF5 file, a Zarr v2/v3 array or group (OME-Zarr 0.4/0.5), N5, NIfTI, NRRD or .npy; a path or
    file:// URL. DEST: a new layer (file://, s3://, gs://, ...).

    \b
    Example:
      igneous-like image import ./slices/ file://data/em --resolution 4,4,40 --queue fq://q
      igneous-like execute fq://q -p 4 -x
      igneous-like image import stack.ome.tif s3://bucket/em --memory 256MB --dry-run
    """
    from igneous_like import queues
    from igneous_like.ops.image.import_volume import plan_import

    plan = plan_import(
        src, dest, dataset=dataset, level=level, axes=axes, order=order, pad=pad, resolution=resolution,
        offset=offset, layer_type="segmentation" if seg else (layer_type or "image"), encoding=encoding,
        encoding_level=encoding_level, compress=compress, chunk_size=chunk_size, sharded=sharded, memory=memory,
        downsample=downsample, force=force, queue=queues.normalize_queue_url(queue) if queue else None,
    )
    announce(plan, dry_run)
    submit(ctx, plan, queue, parallel, dry_run)


@click.command("create")
@click.argument("src")
@click.argument("dest")
@click.option("--resolution", type=FLOAT3, default=None, help="Voxel size X,Y,Z in nm (where SRC records none).")
@click.option("--offset", type=TUPLE3, default=None, help="Voxel offset X,Y,Z.")
@click.option("--seg", is_flag=True, help="A segmentation layer.")
@click.option("--encoding", default=None, help="Chunk encoding (default raw, or compressed_segmentation with --seg).")
@encoding_level_option
@compress_option
@chunk_size_option
@click.option("--h5-dataset", default=None, help="Dataset inside an HDF5 file.")
@memory_option
@producer_options
@click.pass_context
def create(ctx, src, dest, resolution, offset, seg, encoding, encoding_level, compress, chunk_size, h5_dataset, memory, queue,
           parallel, dry_run):
    """Igneous's `image create` on the import machinery: any SRC `image import` reads.

    \b
    Example:
      igneous-like image create vol.h5 file://data/em --h5-dataset raw --resolution 4,4,40
    """
    from igneous_like.ops.image.import_volume import plan_import

    plan = plan_import(
        src, dest, dataset=h5_dataset, resolution=resolution, offset=offset,
        layer_type="segmentation" if seg else "image", encoding=encoding, encoding_level=encoding_level,
        compress=compress,
        chunk_size=chunk_size, memory=memory, operation="image create",
    )
    announce(plan, dry_run)
    submit(ctx, plan, queue, parallel, dry_run)


def announce(plan, dry_run: bool) -> None:
    """Print what was detected before anything is written (the dry run prints it all)."""
    if dry_run:
        return
    for key in ("source", "shape", "axes", "resolution", "voxel offset", "largest id", "task shape", "mips",
                "peak memory per task"):
        if key in plan.details:
            click.echo(f"  {key}: {plan.details[key]}", err=True)


@click.command("export")
@click.argument("layer")
@click.argument("dest")
@click.option("--format", "fmt", type=click.Choice(["ome-zarr", "ome-zarr-v3", "tiff"]), default="ome-zarr",
              show_default=True, help="OME-Zarr 0.4 on Zarr v2, OME-Zarr 0.5 on Zarr v3, or one 2D TIFF per z.")
@click.option("--mip", type=int, default=0, show_default=True,
              help="Finest mip exported (OME-Zarr: it and every coarser mip; TIFF: only it).")
@range_options
@click.option("--shard-shape", type=TUPLE3, default=None, help="ome-zarr-v3: shard X,Y,Z in voxels (chunk multiples).")
@click.option("--force", is_flag=True, help="Write into a DEST that already has files.")
@memory_option
@producer_options
@click.pass_context
def export(ctx, layer, dest, fmt, mip, xrange, yrange, zrange, shard_shape, force, memory, queue, parallel,
           dry_run):
    """Export a layer to OME-Zarr (every mip a multiscales level) or a directory of TIFFs.

    \b
    Example:
      igneous-like image export file://data/em ./em.ome.zarr --format ome-zarr --queue fq://q
      igneous-like execute fq://q -p 4 -x
      igneous-like image export s3://bucket/em ./em-v3.zarr --format ome-zarr-v3 --shard-shape 512,512,64
    """
    from igneous_like.ops.image.export import plan_export

    plan = plan_export(layer, dest, fmt, mip, xrange, yrange, zrange, shard_shape, memory, force)
    submit(ctx, plan, queue, parallel, dry_run)
