"""image rm: delete the chunk files of one or more mips, optionally within ranges."""
from __future__ import annotations

from functools import partial
from typing import Iterator

from taskqueue import queueable

from igneous_like import layers
from igneous_like.errors import UserError
from igneous_like.grid import Box, Vec3, expand_to_grid, grid_boxes, grid_count, vec3
from igneous_like.plan import Plan, fmt_vec


def plan_delete(layer: str, mip: int = 0, num_mips: int | None = None, shape: Vec3 | None = None,
                xrange=None, yrange=None, zrange=None) -> Plan:
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    layers.check_mip(info, mip, url)
    last = len(info["scales"]) if num_mips is None else mip + num_mips
    if num_mips is not None and num_mips < 1:
        raise UserError(f"--num-mips must be at least 1, got {num_mips}")
    last = min(last, len(info["scales"]))
    full = layers.scale_bounds(info, mip)
    region = layers.bounds_from_ranges(full, xrange, yrange, zrange, url, mip)
    chunk = layers.scale_chunk(info, mip)
    if shape is None:
        shape = vec3((chunk[0] * 16, chunk[1] * 16, chunk[2] * 4))
    elif any(s <= 0 or s % c for s, c in zip(shape, chunk)):
        raise UserError(f"--shape {fmt_vec(shape)} must be a positive multiple of the chunk size {fmt_vec(chunk)}")
    region = expand_to_grid(region, chunk, full.start, full)
    sharded = [m for m in range(mip, last) if layers.is_sharded(info, m)]
    if sharded and (xrange or yrange or zrange):
        raise UserError(f"mips {sharded} are sharded: a shard is deleted whole, so ranges cannot be used")
    plain = [m for m in range(mip, last) if m not in sharded]
    chunk_tasks = grid_count(region, shape, full.start) if plain else 0
    total = chunk_tasks + len(sharded)

    def tasks() -> Iterator:
        if plain:
            for box in grid_boxes(region, shape, full.start):
                yield partial(delete_task, url, mip, last - mip, box.to_list())
        for m in sharded:
            yield partial(delete_shards_task, url, info["scales"][m]["key"])

    details = {"layer": url, "mips": f"{mip} to {last - 1}", "task shape": fmt_vec(shape), "bounds": str(region)}
    return Plan("image rm", total, tasks, details=details)


@queueable
def delete_task(layer: str, mip: int, num_mips: int, box: list[int]) -> None:
    """Delete every chunk file that the box (at `mip`) covers, at each mip from `mip` up."""
    from cloudfiles import CloudFiles

    info = layers.read_info(layer)
    region = Box.from_list(box)
    base = info["scales"][mip]["resolution"]
    names: list[str] = []
    for m in range(mip, min(mip + num_mips, len(info["scales"]))):
        scale = info["scales"][m]
        if scale.get("sharding"):
            continue  # deleted whole by delete_shards_task
        ratio = [r / b for r, b in zip(scale["resolution"], base)]
        bounds = layers.scale_bounds(info, m)
        lo = layers.scale_bounds(info, mip).start
        start = vec3(bo + int((a - l) // q) for a, l, bo, q in zip(region.start, lo, bounds.start, ratio))
        stop = vec3(bo - int(-(b - l) // q) for b, l, bo, q in zip(region.stop, lo, bounds.start, ratio))
        sub = Box(start, stop).intersect(bounds)
        if not sub.empty():
            names.extend(layers.chunk_names(scale["key"], sub, bounds, layers.scale_chunk(info, m)))
    cf = CloudFiles(layer)
    # a chunk may be stored compressed under a suffixed name on file://
    cf.delete(names + [n + ".gz" for n in names] + [n + ".br" for n in names] + [n + ".zstd" for n in names])


def plan_object_dir_rm(layer: str, key: str, override: str | None = None) -> Plan:
    """Delete a mesh or skeleton directory (`key`: the info's "mesh" or "skeletons") and the
    info's pointer to it."""
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    dirname = override or info.get(key) or key

    def tasks() -> Iterator:
        yield partial(object_dir_rm_task, url, dirname)

    def prepare() -> None:
        if info.get(key) == dirname:
            layers.write_info(url, {k: v for k, v in info.items() if k != key})

    label = "mesh" if key == "mesh" else "skeleton"
    return Plan(f"{label} rm", 1, tasks, prepare, details={f"{label} directory": f"{url}/{dirname}"})


@queueable
def object_dir_rm_task(layer: str, dirname: str) -> None:
    """Delete every file under one directory of the layer."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{layer}/{dirname}")
    cf.delete(list(cf.list()))


@queueable
def delete_shards_task(layer: str, key: str) -> None:
    """Delete every shard file of one scale."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{layer}/{key}")
    cf.delete([n for n in cf.list() if n.endswith(".shard")])
