"""image import / image create: any outside volume (TIFF stacks, HDF5, Zarr/OME-Zarr, N5,
NIfTI, NRRD, .npy) into a new Precomputed layer, streamed in z-slabs with bounded memory.

Tasks cover z-slabs one chunk (or shard) deep, so each reads its slices once. They split x
and y only where the source reads sub-boxes directly (tiled TIFF, Zarr, HDF5, .npy); strip
TIFFs split into full-width bands, other sources into whole slices. Every task writes whole
chunks and the mips its block holds. When a slab is split in x or y, the task that finds the
slab complete (markers in DEST) builds the slab's remaining mips from the last one written,
so one `execute` leaves the whole pyramid.
"""
from __future__ import annotations

import math
import sys
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import layers, volume_io
from igneous_like.errors import UserError
from igneous_like.formats import local_source_path, open_source
from igneous_like.formats.base import ACCESS_XYZ, ACCESS_YZ, Source, reorder_note
from igneous_like.formats.tiff import SliceStack, known_stack, task_stack
from igneous_like.grid import Box, Vec3, grid_boxes, grid_count, mips_to_top, vec3
from igneous_like.ops.image.downsample import task_memory
from igneous_like.plan import PROCESS_OVERHEAD, Plan, fmt_vec, human_bytes
from igneous_like.pyramid import make_pyramid, resolve_method

FACTOR: Vec3 = (2, 2, 1)
DEFAULT_CHUNK: Vec3 = (128, 128, 64)
MARKERS = "import-markers"  # per-slab completion markers, removed once the slab's mips are built


def plan_import(
    src: str,
    dest: str,
    dataset: str | None = None,
    level: int | None = None,
    axes: str | None = None,
    order: str = "natural",
    pad: bool = False,
    resolution: tuple[float, float, float] | None = None,
    offset: Vec3 | None = None,
    layer_type: str = "image",
    encoding: str | None = None,
    encoding_level: int | None = None,
    compress: str | None = None,
    chunk_size: Vec3 | None = None,
    sharded: bool = False,
    memory: float = 3.5e9,
    downsample: bool = True,
    force: bool = False,
    operation: str = "image import",
    queue: str | None = None,
) -> Plan:
    """Detect the source, check every option, and plan z-slab tasks into a new layer at DEST.
    Nothing is written until the plan's prepare (the info) and its tasks run."""
    spec = {"path": local_source_path(src), "dataset": dataset, "level": level, "axes": axes, "order": order,
            "pad": pad}
    source = open_source(spec)
    dest_url = layers.normalize_url(dest)
    if layer_type not in ("image", "segmentation"):
        raise UserError(f"--type must be image or segmentation, not {layer_type!r}")
    if layer_type == "segmentation" and source.dtype.kind not in "ui":
        raise UserError(f"a segmentation needs integer labels; {spec['path']} holds {source.dtype.name}")
    res, res_from = resolve_resolution(source, resolution)
    voxel_offset = vec3(offset) if offset is not None else vec3(source.offset)
    enc = layers.normalize_encoding(encoding, source.dtype.name, layer_type) or default_encoding(source, layer_type)
    compress_arg = layers.normalize_compress(compress, dest_url)
    chunk = layers.check_chunk_size(chunk_size) or DEFAULT_CHUNK
    if memory <= 0:
        raise UserError("--memory must be positive")
    check_empty_dest(dest_url, force)

    info = new_info(source, layer_type, enc, encoding_level, res, voxel_offset, chunk)
    size = source.shape
    full = layers.scale_bounds(info, 0)
    summary = detection(source, spec, res, res_from, voxel_offset, layer_type)
    spec_for = task_specs(spec, source, voxel_offset)
    if sharded:
        # downsample's budget counts the interpreter and a 1.3 margin; give its tasks >= 64 MB of data
        follow = {"queue": queue, "memory": 1.3 * (PROCESS_OVERHEAD + max(memory, 64e6))} if downsample else None
        return plan_sharded(spec_for, dest_url, info, source, full, memory, summary, operation, follow)
    top = mips_to_top(size, chunk, FACTOR) if downsample else 0
    shape, k = slab_shape(size, chunk, source, top, memory)
    layers.add_mip_scales(info, 0, top, FACTOR, chunk, enc, encoding_level)
    method = resolve_method("auto", layer_type)
    per_slab = grid_count(Box(full.start, vec3((full.stop[0], full.stop[1], full.start[2] + chunk[2]))),
                          shape, full.start)
    finish = top > k and per_slab > 1
    total = grid_count(full, shape, full.start)
    tile = finish_tile(size, chunk, source, memory)
    data = max(data_memory(clip(shape, size), source, k, method),
               data_memory(clip(tile, size), source, 1, method) if finish else 0.0)
    peak = PROCESS_OVERHEAD + data

    def tasks() -> Iterator:
        for box in grid_boxes(full, shape, full.start):
            yield partial(import_task, spec_for(box), dest_url, box.to_list(), list(voxel_offset), k,
                          top if finish else k, per_slab if finish else 0, method, compress_arg, list(tile))

    if data > memory:
        print(f"WARNING: one task needs about {human_bytes(peak)}, above --memory {human_bytes(memory)} plus "
              f"interpreter overhead ({source.format} cannot be split further without re-reading)", file=sys.stderr)
    details = {
        **summary,
        "destination": f"{dest_url} ({layer_type}, {enc}, chunks {fmt_vec(chunk)})",
        "task shape": f"{fmt_vec(clip(shape, size))} ({access_note(source)})",
        "mips": pyramid_note(k, top, finish),
        "peak memory per task": f"~{human_bytes(peak)} (data {human_bytes(peak - PROCESS_OVERHEAD)} within "
                                f"--memory {human_bytes(memory)}, plus ~{human_bytes(PROCESS_OVERHEAD)} interpreter)",
        "files to write": sum(grid_count(layers.scale_bounds(info, m), chunk, layers.scale_bounds(info, m).start)
                              for m in range(top + 1)),
    }
    return Plan(operation, total, tasks, lambda: layers.write_info(dest_url, info), details)


def task_specs(spec: dict, source: Source, offset: Vec3):
    """The source spec each task carries: for a slice stack, what planning found plus the
    names of the task's own slices (tasks neither list the stack nor read other headers)."""
    if not isinstance(source.array, SliceStack):
        return lambda box: spec
    known = known_stack(source)

    def spec_for(box: Box) -> dict:
        z0, z1 = box.start[2] - offset[2], box.stop[2] - offset[2]
        return {**spec, "stack": task_stack(source, known, z0, z1)}

    return spec_for


def resolve_resolution(source: Source, given) -> tuple[tuple[float, float, float], str]:
    if given is not None:
        if any(r <= 0 for r in given):
            raise UserError("--resolution must be positive in every axis")
        return tuple(float(r) for r in given), "--resolution"  # type: ignore[return-value]
    if source.resolution is None:
        raise UserError(f"{source.path} ({source.format}) records no physical voxel size: "
                        "pass --resolution X,Y,Z in nanometres")
    return source.resolution, source.resolution_source


def default_encoding(source: Source, layer_type: str) -> str:
    """raw for images; compressed_segmentation for 32/64-bit segmentations (raw below)."""
    if layer_type == "segmentation" and source.dtype.name in ("uint32", "uint64"):
        return "compressed_segmentation"
    return "raw"


def check_empty_dest(url: str, force: bool) -> None:
    from cloudfiles import CloudFiles

    layers.check_writable(url)
    if force:
        return
    try:
        first = next(iter(CloudFiles(url).list()), None)
    except Exception as exc:
        raise UserError(f"cannot list {url}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if first is not None:
        raise UserError(f"destination {url} exists and is not empty (pass --force to write into it)")


def new_info(source: Source, layer_type: str, encoding: str, encoding_level: int | None, resolution,
             offset: Vec3, chunk: Vec3) -> dict:
    """The new layer's info (mip 0 only). Built as a dict, as the Precomputed spec lays it out,
    so planning needs no cloud-volume import (~0.4 s CPU in a process that writes no chunks)."""
    res = [int(r) if float(r).is_integer() else r for r in resolution]
    base = {"key": "_".join(str(r) for r in res), "resolution": res, "voxel_offset": [int(o) for o in offset],
            "size": [int(n) for n in source.shape], "chunk_sizes": [list(chunk)], "encoding": encoding}
    info = {"type": layer_type, "data_type": source.dtype.name, "num_channels": int(source.channels),
            "scales": [base]}
    info["scales"][0] = layers.make_scale(base, (1, 1, 1), chunk, encoding, encoding_level)
    info["scales"][0]["key"] = base["key"]
    return info


def detection(source: Source, spec: dict, res, res_from: str, offset: Vec3, layer_type: str) -> dict:
    """What was found in the source, printed before anything is written."""
    out = {
        "source": f"{spec['path']} ({source.format})",
        "shape": f"{fmt_vec(source.shape)} voxels x {source.channels} channel(s), {source.dtype.name}",
        "axes": reorder_note(source.axes),
        "resolution": f"{','.join(f'{r:g}' for r in res)} nm (from {res_from})",
        "voxel offset": fmt_vec(offset),
    }
    if layer_type == "segmentation":
        out["largest id"] = f"up to {np.iinfo(source.dtype).max} ({source.dtype.name}; values are not scanned)"
    for i, note in enumerate(source.notes):
        out[f"note {i + 1}"] = note
    return out


def clip(shape: Vec3, size: Vec3) -> Vec3:
    return vec3(min(s, n) for s, n in zip(shape, size))


def data_memory(shape: Vec3, source: Source, mips: int, method: str) -> float:
    """Bytes a task holds beyond the interpreter: the source block in its own order, its
    x,y,z,c copy, the mips and their scratch space, and the reader's own buffers."""
    block = math.prod(shape) * source.channels * source.dtype.itemsize
    pyramid = task_memory(shape, source.dtype.name, source.channels, FACTOR, mips, method) - PROCESS_OVERHEAD
    return pyramid + block + source.read_buffer


def slab_shape(size: Vec3, chunk: Vec3, source: Source, top: int, memory: float) -> tuple[Vec3, int]:
    """Task shape (one chunk deep) and the mips it builds: full slices if they fit, else
    tiles (random-access sources) or full-width bands (strip TIFFs) of chunk * 2^k."""
    method = resolve_method("auto", "image")
    full = vec3((size[0], size[1], chunk[2]))
    if data_memory(clip(full, size), source, top, method) <= memory or source.access not in (ACCESS_XYZ, ACCESS_YZ):
        return full, top
    split_x = source.access == ACCESS_XYZ
    for k in range(top, -1, -1):
        unit = vec3((chunk[0] * 2**k if split_x else size[0], chunk[1] * 2**k, chunk[2]))
        if data_memory(clip(unit, size), source, k, method) > memory:
            continue
        shape = unit
        while True:  # grow along y (and x) while one task still fits: fewer, larger reads
            bigger = vec3((shape[0] * 2 if split_x and shape[0] < size[0] else shape[0],
                           shape[1] * 2 if shape[1] < size[1] else shape[1], shape[2]))
            if bigger == shape or data_memory(clip(bigger, size), source, k, method) > memory:
                return shape, k
            shape = bigger
    return vec3((chunk[0] if split_x else size[0], chunk[1], chunk[2])), 0


def finish_tile(size: Vec3, chunk: Vec3, source: Source, memory: float) -> Vec3:
    """Tile of the slab-completing task's mip-by-mip pass: 2x2 output chunks, doubled while
    one mip of it fits in memory."""
    method = resolve_method("auto", "image")
    tile = vec3((2 * chunk[0], 2 * chunk[1], chunk[2]))
    while tile[0] < size[0] or tile[1] < size[1]:
        bigger = vec3((tile[0] * 2, tile[1] * 2, tile[2]))
        if data_memory(clip(bigger, size), source, 1, method) > memory:
            break
        tile = bigger
    return tile


def access_note(source: Source) -> str:
    return {ACCESS_XYZ: "random access: tiles in x and y", ACCESS_YZ: "strips: full-width bands"}.get(
        source.access, "whole slices")


def pyramid_note(k: int, top: int, finish: bool) -> str:
    if top == 0:
        return "0 only (--no-downsample)"
    if not finish or k == top:
        return f"0 to {top}, all built by the import tasks from what they read"
    own = f"0 to {k} by each import task" if k else "0 by each import task"
    return f"0 to {top}: {own}, {k + 1} to {top} by the task that completes each z-slab (from mip {k})"


def plan_sharded(spec_for, dest_url, info, source, full, memory, summary, operation, follow: dict | None) -> Plan:
    """One task per shard of mip 0 (no two tasks touch one shard file). With `follow`, the task
    that finds every shard written plans the sharded pyramid (`image downsample --sharded`)
    into the same queue (or runs it, without one)."""
    from igneous_like.ops.image.sharded import image_sharding, shard_shape

    scale = info["scales"][0]
    size, chunk = vec3(scale["size"]), vec3(scale["chunk_sizes"][0])
    scale["sharding"] = image_sharding(size, chunk, scale["encoding"], info["data_type"], memory)
    shape = shard_shape(scale["sharding"], size, chunk)
    total = grid_count(full, shape, full.start)
    data = 3.0 * math.prod(clip(shape, size)) * source.channels * source.dtype.itemsize + source.read_buffer

    def tasks() -> Iterator:
        for box in grid_boxes(full, shape, full.start):
            yield partial(import_shard_task, spec_for(box), dest_url, box.to_list(), list(full.start),
                          {**follow, "total": total} if follow else None)

    details = {
        **summary,
        "destination": f"{dest_url} (sharded, {scale['encoding']}, chunks {fmt_vec(chunk)})",
        "shard shape (= task shape)": fmt_vec(shape),
        "mips": ("0 by these tasks; then the task that writes the last shard plans the sharded pyramid "
                 "(image downsample --sharded) into the same queue" if follow else "0 only (--no-downsample)"),
        "peak memory per task": f"~{human_bytes(PROCESS_OVERHEAD + data)} (limit {human_bytes(memory)} "
                                "plus interpreter)",
    }
    return Plan(operation, total, tasks, lambda: layers.write_info(dest_url, info), details)


def source_box(box: Box, offset: list[int]) -> Box:
    return Box(vec3(a - o for a, o in zip(box.start, offset)), vec3(b - o for b, o in zip(box.stop, offset)))


@queueable
def import_task(spec: dict, dest: str, box: list[int], offset: list[int], num_mips: int, top: int,
                per_slab: int, method: str, compress=False, tile: list[int] | None = None) -> None:
    """Read one block of the source, write its chunks and `num_mips` mips; with top > num_mips,
    the task that completes its z-slab builds the slab's mips num_mips+1..top."""
    info = layers.read_info(dest)
    region = Box.from_list(box)
    img = open_source(spec).read(source_box(region, offset))
    volume_io.write(dest, info, 0, region, img, compress, False, 0)
    if num_mips:
        pyramid = make_pyramid(img, FACTOR, num_mips, method)
        volume_io.write_pyramid(dest, info, 0, region, FACTOR, pyramid, compress, False, 0)
    del img
    if top > num_mips:
        finish_slab(dest, info, region, num_mips, top, per_slab, method, compress, vec3(tile))


def finish_slab(dest: str, info: dict, region: Box, mip: int, top: int, per_slab: int, method: str,
                compress, tile: Vec3) -> None:
    """Mark this block done; the task that sees every block of its slab done builds the
    slab's mips mip+1..top, one mip at a time in tiles. Two tasks finishing at once may both
    build them: same bytes, so harmless."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(dest)
    prefix = f"{MARKERS}/{region.start[2]}-{region.stop[2]}/"
    cf.put(prefix + str(region).replace(",", "_"), b"", compress=None)
    done = list(cf.list(prefix=prefix))
    if len(done) < per_slab:
        return
    for level in range(mip, top):
        bounds = layers.scale_bounds(info, level)
        slab = Box(vec3((bounds.start[0], bounds.start[1], region.start[2])),
                   vec3((bounds.stop[0], bounds.stop[1], region.stop[2])))
        for part in grid_boxes(slab, tile, bounds.start):
            img = volume_io.read(dest, info, level, part, False)
            pyramid = make_pyramid(img, FACTOR, 1, method)
            volume_io.write_pyramid(dest, info, level, part, FACTOR, pyramid, compress, False, 0)
    cf.delete(done)
    remove_empty_dirs(dest, prefix)


def remove_empty_dirs(url: str, prefix: str) -> None:
    """On file://, deleting the markers leaves their directories behind; drop them if empty."""
    import os

    path = layers.local_path(url)
    if path is None:
        return
    try:
        os.removedirs(os.path.join(path, prefix))
    except OSError:
        pass  # not empty (a straggler re-ran) or already gone


@queueable
def import_shard_task(spec: dict, dest: str, box: list[int], origin: list[int], follow: dict | None = None) -> None:
    """Read the source block of one shard of mip 0 and write that shard whole; with `follow`,
    the task that completes mip 0 starts its sharded pyramid."""
    from cloudfiles import CloudFiles

    from igneous_like.ops.image.sharded import encode_shard

    info = layers.read_info(dest)
    region = Box.from_list(box)
    offset = info["scales"][0]["voxel_offset"]
    img = open_source(spec).read(source_box(region, offset))
    name, data = encode_shard(dest, info, 0, region, img)
    CloudFiles(dest).put(name, data, compress=None)
    del img
    if follow:
        follow_with_pyramid(dest, region, follow)


def follow_with_pyramid(dest: str, region: Box, follow: dict) -> None:
    """Mark this shard done; once all are, plan the sharded pyramid into the import's queue, so
    the workers draining it build the mips too (or run it here, without a queue). Two tasks
    seeing the last marker at once would queue the same idempotent tasks twice: harmless."""
    from cloudfiles import CloudFiles

    from igneous_like import queues
    from igneous_like.errors import TaskError
    from igneous_like.ops.image.downsample import plan_downsample

    cf = CloudFiles(dest)
    prefix = f"{MARKERS}/shards/"
    cf.put(prefix + str(region).replace(",", "_"), b"", compress=None)
    done = list(cf.list(prefix=prefix))
    if len(done) < follow["total"]:
        return
    try:
        plan = plan_downsample(dest, mip=0, sharded=True, memory=follow["memory"])
    except UserError as exc:
        raise TaskError(f"mip 0 is written, but its sharded pyramid cannot be planned: {exc}") from None
    plan.prepare()
    if follow.get("queue"):
        queues.insert_tasks(follow["queue"], plan.tasks(), plan.total)
    else:
        for task in plan.tasks():
            task()
    cf.delete(done)
    remove_empty_dirs(dest, prefix)
