"""image downsample: build mips above --mip, several per task, from one read of the base.

A task reads one block at the base mip and writes `num_mips` levels above it. Its shape is a
multiple of every output chunk times the factor to that level, so each output chunk is
written whole by exactly one task.
"""
from __future__ import annotations

import math
import sys
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import layers, validate
from igneous_like.errors import UserError
from igneous_like.grid import Box, Vec3, downsampled, expand_to_grid, grid_boxes, grid_count, lcm3, mips_to_top, vec3
from igneous_like.plan import PROCESS_OVERHEAD, Plan, fmt_vec, human_bytes
from igneous_like.pyramid import METHODS, read_pyramid, resolve_method
from igneous_like import volume_io


def task_memory(shape: Vec3, dtype: str, channels: int, factor: Vec3, num_mips: int, method: str) -> float:
    """Peak bytes of one task: the base block, its mips, and the method's scratch space."""
    voxels = math.prod(shape) * channels
    width = np.dtype(dtype).itemsize
    block = math.prod(factor)
    mips = voxels * width / (block - 1) if block > 1 else voxels * width * num_mips
    if method == "avg":
        scratch = 3.0 * voxels / block * max(2 * width, 4)  # accumulator, rounding temporaries
    elif method == "mode":
        scratch = 3.0 * voxels / block * width
    else:
        scratch = 1.0 * voxels / block * width
    return PROCESS_OVERHEAD + 1.1 * voxels * width + mips + scratch


def task_shape(base_chunk: Vec3, out_chunks: list[Vec3], factor: Vec3) -> Vec3:
    """Smallest block whose mips tile every output chunk exactly."""
    scaled = [vec3(c * f**level for c, f in zip(chunk, factor)) for level, chunk in enumerate(out_chunks, 1)]
    return lcm3(base_chunk, *scaled)


def mips_in_shape(shape: Vec3, chunk: Vec3, factor: Vec3, limit: int) -> int:
    """How many mips a user-given task shape supports (each output chunk must be whole)."""
    k = 0
    while k < limit:
        need = task_shape(chunk, [chunk] * (k + 1), factor)
        if any(s % n for s, n in zip(shape, need)):
            break
        k += 1
    return k


def choose_num_mips(
    info: dict, mip: int, factor: Vec3, chunk: Vec3, method: str, memory: float, bounds: Box
) -> int:
    """As many mips as fit in memory, but no more than it takes to reach one chunk."""
    base_chunk = layers.scale_chunk(info, mip)
    top = mips_to_top(bounds.shape, chunk, factor)
    fit = 0
    for k in range(1, top + 1):
        shape = task_shape(base_chunk, [chunk] * k, factor)
        shape = vec3(min(s, b) if f > 1 else s for s, b, f in zip(shape, bounds.shape, factor))
        if task_memory(shape, info["data_type"], info["num_channels"], factor, k, method) > memory:
            break
        fit = k
    return fit


def plan_downsample(
    layer: str,
    mip: int = 0,
    num_mips: int | None = None,
    factor: Vec3 = (2, 2, 1),
    method: str = "auto",
    sparse: bool = False,
    fill_missing: bool = False,
    encoding: str | None = None,
    encoding_level: int | None = None,
    compress: str | None = None,
    chunk_size: Vec3 | None = None,
    memory: float = 3.5e9,
    xrange=None,
    yrange=None,
    zrange=None,
    delete_bg: bool = False,
    bg_color: int = 0,
    sharded: bool = False,
) -> Plan:
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    layers.check_mip(info, mip, url)
    volume_io.check_opens(url, info, mip)
    method = resolve_method(method, info["type"])
    if method not in METHODS:
        raise UserError(f"unknown --method {method!r}: choose auto, {', '.join(METHODS)}")
    if any(f < 1 for f in factor) or math.prod(factor) == 1:
        raise UserError(f"--factor {fmt_vec(factor)} must be at least 1 in every axis and above 1 in one")
    encoding = layers.normalize_encoding(encoding, info["data_type"], info["type"])
    validate.check_encoding_level(encoding or info["scales"][mip]["encoding"], encoding_level, info["data_type"])
    validate.check_fits_dtype(bg_color, info["data_type"], "--bg-color")
    compress_arg = layers.normalize_compress(compress, url)
    chunk = layers.check_chunk_size(chunk_size) or layers.scale_chunk(info, mip)
    full = layers.scale_bounds(info, mip)
    bounds = layers.bounds_from_ranges(full, xrange, yrange, zrange, url, mip)
    layers.check_writable(url)

    if sharded:
        return _plan_sharded(url, info, mip, num_mips, factor, method, sparse, fill_missing, encoding,
                             encoding_level, chunk, memory, full, bounds)
    if num_mips is None:
        num_mips = choose_num_mips(info, mip, factor, chunk, method, memory, full)
        if num_mips == 0:
            need = task_memory(task_shape(layers.scale_chunk(info, mip), [chunk], factor),
                               info["data_type"], info["num_channels"], factor, 1, method)
            raise UserError(
                f"--memory {human_bytes(memory)} is too small for one task of one mip: "
                f"it needs about {human_bytes(need)}"
            )
    if num_mips < 1:
        raise UserError(f"--num-mips must be at least 1, got {num_mips}")

    new_info = _with_new_scales(info, mip, num_mips, factor, chunk, encoding, encoding_level)
    origin = full.start
    shape = task_shape(layers.scale_chunk(info, mip), [chunk] * num_mips, factor)
    bounds = expand_to_grid(bounds, shape, origin, full)
    total = grid_count(bounds, shape, origin)
    dtype, channels = info["data_type"], info["num_channels"]
    clipped = bounds.intersect(Box(bounds.start, vec3(a + s for a, s in zip(bounds.start, shape)))).shape
    peak = task_memory(clipped, dtype, channels, factor, num_mips, method)
    if peak > memory:
        print(f"WARNING: one task needs about {human_bytes(peak)}, above --memory {human_bytes(memory)}", file=sys.stderr)

    def tasks() -> Iterator:
        for box in grid_boxes(bounds, shape, origin):
            yield partial(
                downsample_task, url, mip, box.to_list(), num_mips, list(factor), method,
                sparse, fill_missing, compress_arg, delete_bg, bg_color,
            )

    files = written = 0
    for level in range(1, num_mips + 1):
        out = downsampled(bounds, factor, level, origin, layers.scale_bounds(new_info, mip + level).start)
        files += grid_count(out, chunk, layers.scale_bounds(new_info, mip + level).start)
        written += out.voxels * channels * np.dtype(dtype).itemsize
    details = {
        "layer": url,
        "mips": f"{mip} -> {', '.join(str(mip + k) for k in range(1, num_mips + 1))}",
        "method": method + (" (sparse)" if sparse else ""),
        "factor": fmt_vec(factor),
        "task shape": fmt_vec(shape) + f" at mip {mip}",
        "bounds": str(bounds),
        "peak memory per task": f"~{human_bytes(peak)} (limit {human_bytes(memory)})",
        "files to write": files,
        "bytes to write (before encoding)": human_bytes(written),
    }
    return Plan("image downsample", total, tasks, lambda: layers.write_info(url, new_info), details)


def _plan_sharded(url, info, mip, num_mips, factor, method, sparse, fill_missing, encoding, encoding_level,
                  chunk, memory, full, bounds) -> Plan:
    """Sharded mips: tasks of chunk * factor^k * 2^a voxels, so that at every output mip the
    task's block is a whole number of shards (shards are blocks of 2^a-ish chunks per axis)."""
    from igneous_like.ops.image.sharded import pyramid_sharding

    if any(f not in (1, 2) for f in factor):
        raise UserError(f"--sharded needs a factor of 1 or 2 per axis (shards are power-of-two blocks), got {fmt_vec(factor)}")
    dtype, channels = info["data_type"], info["num_channels"]
    base_chunk = layers.scale_chunk(info, mip)
    top = mips_to_top(full.shape, chunk, factor)
    wanted = num_mips if num_mips is not None else top
    choice = None
    def working_set(shape: Vec3) -> Vec3:
        """What a task holds at once: with no z downsampling it works one z slab at a time."""
        clipped = vec3(min(s, b) for s, b in zip(shape, full.shape))
        if factor[2] == 1:
            clipped = (clipped[0], clipped[1], min(clipped[2], math.lcm(base_chunk[2], chunk[2])))
        return clipped

    for spread in (2, 1, 0):  # shard side 2^spread chunks where the data allows; then memory
        for k in range(wanted, 0, -1):
            shape = task_shape(base_chunk, [vec3(c * 2**spread for c in chunk)] * k, factor)
            if task_memory(working_set(shape), dtype, channels, factor, k, method) * 1.3 <= memory or num_mips is not None:
                choice = (spread, k, shape)
                break
        if choice:
            break
    if choice is None:
        raise UserError(f"--memory {human_bytes(memory)} is too small for one sharded downsample task")
    spread, k, shape = choice
    new_info = _with_new_scales(info, mip, k, factor, chunk, encoding, encoding_level)
    for level in range(1, k + 1):
        scale = new_info["scales"][mip + level]
        counts = vec3(s // f**level // c for s, f, c in zip(shape, factor, chunk))
        scale["sharding"] = pyramid_sharding(vec3(scale["size"]), chunk, counts, scale["encoding"])
    origin = full.start
    bounds = expand_to_grid(bounds, shape, origin, full)
    total = grid_count(bounds, shape, origin)
    peak = task_memory(working_set(shape), dtype, channels, factor, k, method) * 1.3

    def tasks() -> Iterator:
        for box in grid_boxes(bounds, shape, origin):
            yield partial(sharded_downsample_task, url, mip, box.to_list(), k, list(factor), method, sparse,
                          fill_missing)

    from igneous_like.ops.image.sharded import shard_shape

    per_mip = []
    for level in range(1, k + 1):
        sc = new_info["scales"][mip + level]
        s_shape = shard_shape(sc["sharding"], vec3(sc["size"]), chunk)
        n = grid_count(layers.scale_bounds(new_info, mip + level), s_shape, layers.scale_bounds(new_info, mip + level).start)
        per_mip.append(f"mip {mip + level}: {n} shard(s) of {fmt_vec(s_shape)}")
    details = {
        "layer": url,
        "mips": f"{mip} -> {', '.join(str(mip + j) for j in range(1, k + 1))} (sharded)",
        "method": method + (" (sparse)" if sparse else ""),
        "task shape": fmt_vec(shape) + f" at mip {mip}",
        "shards": "; ".join(per_mip),
        "memory model": "one z slab (" + fmt_vec(working_set(shape)) + ") + accumulators + mips, "
                        "x1.3 for encoded chunks waiting for their shard; "
                        f"~{human_bytes(peak)} per task (limit {human_bytes(memory)})",
    }
    return Plan("image downsample", total, tasks, lambda: layers.write_info(url, new_info), details)


@queueable
def sharded_downsample_task(layer: str, mip: int, box: list[int], num_mips: int, factor: list[int], method: str,
                            sparse: bool = False, fill_missing: bool = False) -> None:
    """Read `box` at `mip` once; write the whole shards of the mips above it that it covers."""
    from igneous_like.ops.image.sharded import write_sharded_pyramid

    info = layers.read_info(layer)
    write_sharded_pyramid(layer, info, mip, Box.from_list(box), vec3(factor), num_mips, method, sparse, fill_missing)


def _with_new_scales(info, mip, num_mips, factor, chunk, encoding, encoding_level) -> dict:
    new_info = {**info, "scales": [dict(s) for s in info["scales"]]}
    layers.add_mip_scales(new_info, mip, num_mips, factor, chunk, encoding, encoding_level)
    return new_info


@queueable
def downsample_task(
    layer: str,
    mip: int,
    box: list[int],
    num_mips: int,
    factor: list[int],
    method: str,
    sparse: bool = False,
    fill_missing: bool = False,
    compress=False,
    delete_bg: bool = False,
    bg_color: int = 0,
) -> None:
    """Read `box` at `mip` once, write the `num_mips` mips above it."""
    info = layers.read_info(layer)
    region = Box.from_list(box)
    pyramid = read_pyramid(layer, info, mip, region, vec3(factor), num_mips, method, sparse, fill_missing)
    volume_io.write_pyramid(layer, info, mip, region, vec3(factor), pyramid, compress, delete_bg, bg_color)
