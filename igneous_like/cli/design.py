"""`design` commands: bounds, ds-memory, ds-shape (Igneous's names and meanings)."""
from __future__ import annotations

import click

from igneous_like.cli.options import TUPLE3, downsample_method_option


def fmt(values) -> str:
    return ",".join(str(int(v)) for v in values)


@click.group()
def design() -> None:
    """Tools to design tasks and repair layers: bounds from chunk files, downsample task shapes."""


@design.command()
@click.argument("layer")
@click.option("--mip", type=int, default=0, show_default=True, help="Scale whose chunk files to read.")
@click.option("--yes", "-y", is_flag=True, help="Write the corrected info without asking.")
def bounds(layer, mip, yes):
    """Recompute a scale's bounds and chunk size from the chunk files that exist (unsharded
    scales), and offer to fix the info when it disagrees.

    \b
    Example:
      igneous-like design bounds file://data/em --mip 0 --yes
    """
    from igneous_like import layers
    from igneous_like.ops import design as ops

    url = layers.normalize_url(layer)
    info = ops.raw_info(url)
    found = ops.chunk_bounds(url, ops.scale_key(info, mip, url))
    click.echo(f"Bounds: {fmt(found.bounds.start)} - {fmt(found.bounds.stop)}")
    click.echo(f"Volume: {fmt(found.bounds.shape)}")
    click.echo(f"Chunks: {fmt(found.chunk)}")
    click.echo(f"Files:  {found.files}")
    diffs = ops.info_differences(info, mip, found)
    if not diffs:
        click.echo(f"the info of mip {mip} agrees with the files")
        return
    for line in diffs:
        click.echo(f"differs: {line}")
    if yes or click.confirm(f"write these into {url}/info?", default=False, err=True):
        layers.check_writable(url)
        layers.write_info(url, ops.fixed_info(info, mip, found))
        click.echo(f"fixed mip {mip} of {url}/info")
    else:
        click.echo("info left as it was")


def design_options(fn):
    for deco in reversed([
        click.option("--mip", type=int, default=0, show_default=True, help="Downsample from this mip."),
        click.option("--factor", type=TUPLE3, default=(2, 2, 1), show_default=True, help="Downsample factor per mip."),
        downsample_method_option("--method"),
    ]):
        fn = deco(fn)
    return fn


def open_layer(layer: str, mip: int) -> dict:
    from igneous_like import layers

    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    layers.check_mip(info, mip, url)
    return info


@design.command("ds-memory")
@click.argument("layer")
@click.argument("memory_bytes", type=float)
@design_options
@click.option("--max-mips", type=int, default=5, show_default=True, help="At most this many mips per task.")
@click.option("--verbose", is_flag=True, help="Also print the dtype, factor, chunk size and memory.")
def ds_memory(layer, memory_bytes, mip, factor, method, max_mips, verbose):
    """The downsample task shape that makes the most mips within MEMORY_BYTES (the model
    `image downsample --memory` plans with).

    \b
    Example:
      igneous-like design ds-memory file://data/em 3.5e9 --verbose
    """
    import numpy as np

    from igneous_like import layers
    from igneous_like.ops import design as ops
    from igneous_like.plan import human_bytes

    info = open_layer(layer, mip)
    if max_mips < 1:
        raise click.BadParameter("must be at least 1", param_hint="--max-mips")
    found = ops.ds_memory(info, mip, factor, memory_bytes, max_mips, method)
    if not verbose:
        click.echo(fmt(found.shape))
        return
    click.echo(f"Data width:      {np.dtype(info['data_type']).itemsize * info['num_channels']} B")
    click.echo(f"Factor:          {fmt(factor)}")
    click.echo(f"Chunk size:      {fmt(layers.scale_chunk(info, mip))} voxels")
    click.echo(f"Memory limit:    {human_bytes(memory_bytes)}")
    click.echo(f"Optimized shape: {fmt(found.shape)}")
    click.echo(f"Downsamples:     {found.num_mips}")
    click.echo(f"Memory used:     {human_bytes(found.memory)} (block, its mips, scratch and the process)")


@design.command("ds-shape")
@click.argument("layer")
@click.argument("shape", type=TUPLE3)
@design_options
@click.option("--max-mips", type=int, default=5, show_default=True, help="Count at most this many mips.")
def ds_shape(layer, shape, mip, factor, method, max_mips):
    """Peak memory of a downsample task of SHAPE voxels, and how many mips it makes.

    \b
    Example:
      igneous-like design ds-shape file://data/em 1024,1024,64
    """
    from igneous_like.ops import design as ops
    from igneous_like.plan import human_bytes

    info = open_layer(layer, mip)
    found = ops.ds_shape(info, mip, shape, factor, max_mips, method)
    click.echo(human_bytes(found.memory))
    click.echo(f"{found.num_mips} mip(s) from a task of {fmt(shape)}", err=True)
