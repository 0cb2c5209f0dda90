"""`image contrast` commands: histogram, equalize, clahe (Igneous's names and options)."""
from __future__ import annotations

import click

from igneous_like.cli.options import (
    TUPLE2, TUPLE3, fill_missing_option, memory_option, producer_options, range_options, submit,
)


def bounds_mip_option(fn):
    return click.option("--bounds-mip", type=int, default=None,
                        help="Mip the --xrange/--yrange/--zrange values are given in (default: --mip).")(fn)


def slab_shape_option(fn):
    return click.option("--shape", type=TUPLE3, default=None,
                        help="Task shape in voxels, a multiple of the chunk size (default 2048,2048,chunk z).")(fn)


@click.group()
def contrast() -> None:
    """Contrast correction of image slices: histograms, equalization, CLAHE.

    \b
    Example:
      igneous-like image contrast histogram file://data/em --queue fq://q
      igneous-like execute fq://q -p 4 -x
      igneous-like image contrast equalize file://data/em file://data/em-eq --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """


@contrast.command()
@click.argument("layer")
@click.option("--mip", type=int, default=0, show_default=True, help="Build histograms from this mip.")
@click.option("--coverage", type=float, default=0.01, show_default=True,
              help="Fraction of each slice to sample, in whole chunk columns (1: every voxel).")
@range_options
@bounds_mip_option
@producer_options
@click.pass_context
def histogram(ctx, layer, mip, coverage, xrange, yrange, zrange, bounds_mip, queue, parallel, dry_run):
    """(1) Grey-level histogram of each z slice, written to LAYER/levels/MIP/Z.

    \b
    Example:
      igneous-like image contrast histogram file://data/em --coverage 0.05 --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    from igneous_like.ops.image.contrast import plan_histogram

    plan = plan_histogram(layer, mip=mip, coverage=coverage, xrange=xrange, yrange=yrange, zrange=zrange,
                          bounds_mip=bounds_mip)
    submit(ctx, plan, queue, parallel, dry_run)


@contrast.command()
@click.argument("src")
@click.argument("dest")
@slab_shape_option
@click.option("--translate", type=TUPLE3, default=(0, 0, 0), show_default=True, help="Shift the data by X,Y,Z voxels in DEST.")
@click.option("--mip", type=int, default=0, show_default=True, help="Equalize this mip.")
@click.option("--clip-fraction", type=float, default=0.01, show_default=True,
              help="Fraction of non-black voxels clipped at each end of a slice's histogram. Range: [0,0.5]")
@fill_missing_option
@click.option("--minval", default=None, help="Clip the output below this value (in the dtype's range).")
@click.option("--maxval", default=None, help="Clip the output above this value (in the dtype's range).")
@range_options
@bounds_mip_option
@producer_options
@click.pass_context
def equalize(ctx, src, dest, shape, translate, mip, clip_fraction, fill_missing, minval, maxval, xrange, yrange,
             zrange, bounds_mip, queue, parallel, dry_run):
    """(2) Stretch each z slice's grey levels between the clip points of its histogram.

    Needs the histograms of `image contrast histogram SRC` first. SRC is never modified.

    \b
    Example:
      igneous-like image contrast histogram file://data/em
      igneous-like image contrast equalize file://data/em file://data/em-eq --clip-fraction 0.01
    """
    from igneous_like.ops.image.contrast import plan_equalize

    plan = plan_equalize(src, dest, mip=mip, shape=shape, translate=translate, clip_fraction=clip_fraction,
                         fill_missing=fill_missing, minval=minval, maxval=maxval, xrange=xrange, yrange=yrange,
                         zrange=zrange, bounds_mip=bounds_mip)
    submit(ctx, plan, queue, parallel, dry_run)


@contrast.command()
@click.argument("src")
@click.argument("dest")
@slab_shape_option
@click.option("--mip", type=int, default=0, show_default=True, help="Apply CLAHE to this mip.")
@fill_missing_option
@range_options
@bounds_mip_option
@click.option("--clip-limit", type=float, default=40.0, show_default=True,
              help="OpenCV's clip limit: a bin holds at most clip-limit x the mean count of its tile's histogram; "
                   "the excess is spread over all bins. 0: no limit.")
@click.option("--tile-grid-size", type=TUPLE2, default="8,8", show_default=True,
              help="Tiles across the whole slice in x,y (OpenCV's tileGridSize).")
@memory_option
@producer_options
@click.pass_context
def clahe(ctx, src, dest, shape, mip, fill_missing, xrange, yrange, zrange, bounds_mip, clip_limit, tile_grid_size,
          memory, queue, parallel, dry_run):
    """Contrast Limited Adaptive Histogram Equalization of each whole z slice (OpenCV's CLAHE).

    Tasks read a one-tile halo, so the result equals OpenCV's CLAHE of the whole slice,
    with no seams at task borders. Without --shape, tasks shrink in x and y until their
    window (tiles plus halo) fits --memory.

    \b
    Example:
      igneous-like image contrast clahe file://data/em file://data/em-clahe --tile-grid-size 16,16 --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    from igneous_like.ops.image.clahe import plan_clahe

    plan = plan_clahe(src, dest, mip=mip, shape=shape, fill_missing=fill_missing, clip_limit=clip_limit,
                      tile_grid_size=tile_grid_size, xrange=xrange, yrange=yrange, zrange=zrange,
                      bounds_mip=bounds_mip, memory=memory)
    submit(ctx, plan, queue, parallel, dry_run)
