"""image export: a Precomputed layer out to OME-Zarr 0.4 (Zarr v2), OME-Zarr 0.5 (Zarr v3,
optionally sharded) or a directory of 2D TIFFs, one per z.

Every exported mip is one multiscales level whose scale and translation come from the layer's
resolution and voxel offset. Tasks are z-slabs aligned to the Zarr chunk (or shard) grid, so
no two tasks write one chunk or shard file; TIFF tasks own whole slices.
"""
from __future__ import annotations

import io
import math
import os
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import layers, volume_io
from igneous_like.errors import UserError
from igneous_like.grid import Box, Vec3, grid_boxes, grid_count, vec3
from igneous_like.plan import PROCESS_OVERHEAD, Plan, fmt_vec, human_bytes

FORMATS = ("ome-zarr", "ome-zarr-v3", "tiff")
# voxel bytes one task reads at most, however large --memory is: enough tasks for every worker
# (a 2048x2048 slab 64 deep is 4 tasks, not 1), and each still writes whole chunks or shards
TASK_BYTES = 64 * 2**20


def plan_export(
    layer: str,
    dest: str,
    fmt: str = "ome-zarr",
    mip: int = 0,
    xrange=None,
    yrange=None,
    zrange=None,
    shard_shape: Vec3 | None = None,
    memory: float = 3.5e9,
    force: bool = False,
) -> Plan:
    url = layers.normalize_url(layer)
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}: choose {', '.join(FORMATS)}")
    info = layers.read_info(url)
    layers.check_mip(info, mip, url)
    region = layers.bounds_from_ranges(layers.scale_bounds(info, mip), xrange, yrange, zrange, url, mip)
    dest_url = layers.normalize_url(dest)
    check_dest(dest_url, fmt, force)
    if shard_shape is not None and fmt != "ome-zarr-v3":
        raise UserError("--shard-shape applies to --format ome-zarr-v3 only")
    mips = [mip] if fmt == "tiff" else list(range(mip, len(info["scales"])))
    boxes = {m: level_region(info, mip, m, region) for m in mips}
    mips = [m for m in mips if not boxes[m].empty()]
    grids = {m: write_grid(info, m, fmt, shard_shape) for m in mips}
    width = np.dtype(info["data_type"]).itemsize * info["num_channels"]
    shapes = {m: task_shape(boxes[m], grids[m], width, memory) for m in mips}
    total = sum(grid_count(boxes[m], shapes[m], boxes[m].start) for m in mips)
    peak = max(PROCESS_OVERHEAD + 3 * math.prod(clip(shapes[m], boxes[m].shape)) * width for m in mips)

    def tasks() -> Iterator:
        for m in mips:
            for box in grid_boxes(boxes[m], shapes[m], boxes[m].start):
                yield partial(export_task, url, dest_url, fmt, m, mips.index(m), box.to_list(),
                              list(boxes[m].start))

    details = {
        "layer": f"{url} ({info['type']}, {info['data_type']}, {info['num_channels']} channel(s))",
        "destination": f"{dest_url} ({fmt})",
        "levels": ", ".join(f"mip {m}: {fmt_vec(boxes[m].shape)} from {fmt_vec(boxes[m].start)}" for m in mips),
        "axes": "x,y,z,c -> " + ("(c,)z,y,x" if fmt != "tiff" else "one y,x(,c) TIFF per z"),
        "task shape": ", ".join(f"mip {m}: {fmt_vec(clip(shapes[m], boxes[m].shape))}" for m in mips),
        "peak memory per task": f"~{human_bytes(peak)}",
    }
    if fmt != "tiff":
        details["chunks (x,y,z)"] = ", ".join(f"mip {m}: {fmt_vec(grids[m])}" for m in mips)
    return Plan("image export", total, tasks, lambda: prepare(url, info, dest_url, fmt, mips, boxes, shard_shape),
                details)


def check_dest(url: str, fmt: str, force: bool) -> None:
    from cloudfiles import CloudFiles

    if fmt != "tiff" and not url.startswith(("file://", "s3://", "gs://")):
        raise UserError(f"--format {fmt} writes to file://, s3:// or gs://, not {url}")
    layers.check_writable(url)
    if not force and next(iter(CloudFiles(url).list()), None) is not None:
        raise UserError(f"destination {url} exists and is not empty (pass --force to write into it)")


def level_region(info: dict, base: int, mip: int, region: Box) -> Box:
    """`region` (at mip `base`) at another mip: offsets scale by the resolution ratio."""
    f = [r1 / r0 for r0, r1 in zip(info["scales"][base]["resolution"], info["scales"][mip]["resolution"])]
    start = vec3(math.floor(a / fi) for a, fi in zip(region.start, f))
    stop = vec3(math.ceil(b / fi) for b, fi in zip(region.stop, f))
    return Box(start, stop).intersect(layers.scale_bounds(info, mip))


def write_grid(info: dict, mip: int, fmt: str, shard_shape: Vec3 | None) -> Vec3:
    """The file grid tasks must align to: the Zarr chunk (the layer's), or the shard."""
    chunk = layers.scale_chunk(info, mip)
    if fmt == "tiff":
        return vec3((1, 1, chunk[2]))
    if shard_shape is not None:
        if any(s <= 0 or s % c for s, c in zip(shard_shape, chunk)):
            raise UserError(f"--shard-shape {fmt_vec(shard_shape)} must be a positive multiple of the chunk size "
                            f"{fmt_vec(chunk)} at mip {mip}")
        return vec3(shard_shape)
    return chunk


def clip(shape: Vec3, limit: Vec3) -> Vec3:
    return vec3(min(a, b) for a, b in zip(shape, limit))


def task_shape(region: Box, grid: Vec3, width: int, memory: float) -> Vec3:
    """One grid cell deep in z; whole slices if they fit in memory and TASK_BYTES, else
    grid-aligned tiles (TIFF tasks always own whole slices)."""
    size = region.shape
    shape = vec3((size[0], size[1], grid[2]))
    budget = min(memory / 3, TASK_BYTES)
    if math.prod(clip(shape, size)) * width <= budget or grid[:2] == (1, 1):
        return shape
    tile = vec3((grid[0], grid[1], grid[2]))
    while math.prod(clip(vec3((tile[0] * 2, tile[1] * 2, tile[2])), size)) * width <= budget and \
            (tile[0] < size[0] or tile[1] < size[1]):
        tile = vec3((tile[0] * 2, tile[1] * 2, tile[2]))
    return tile


def ome_axes(channels: int) -> list[dict]:
    axes = [{"name": "c", "type": "channel"}] if channels > 1 else []
    return axes + [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]


def multiscales(info: dict, mips: list[int], boxes: dict[int, Box], name: str) -> dict:
    """One level per mip: scale = resolution, translation = first voxel's corner, in nm."""
    channels = info["num_channels"]
    datasets = []
    for i, m in enumerate(mips):
        res = info["scales"][m]["resolution"]
        scale = [float(r) for r in reversed(res)]
        trans = [float(o * r) for o, r in zip(reversed(boxes[m].start), reversed(res))]
        if channels > 1:
            scale, trans = [1.0, *scale], [0.0, *trans]
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": scale}, {"type": "translation", "translation": trans}]})
    return {"name": name, "axes": ome_axes(channels), "datasets": datasets}


def zarr_shape(box: Box, channels: int) -> tuple[int, ...]:
    z, y, x = reversed(box.shape)
    return (channels, z, y, x) if channels > 1 else (z, y, x)


def array_spec(dest: str, level: int, version: int) -> dict:
    from igneous_like.storage import tensorstore_kvstore

    kv = tensorstore_kvstore(dest)
    return {"driver": "zarr3" if version == 3 else "zarr", "kvstore": {**kv, "path": kv["path"] + f"{level}/"}}


def array_metadata(shape: tuple, chunks: tuple, dtype: str, version: int, shards: tuple | None,
                   names: list[str]) -> dict:
    """Zarr array metadata: v2 with blosc/zstd; v3 with zstd, sharded when `shards` is given."""
    if version == 2:
        return {"shape": list(shape), "chunks": list(chunks), "dtype": np.dtype(dtype).str, "fill_value": 0,
                "order": "C", "compressor": {"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1}}
    inner = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 3}}]
    codecs = inner if shards is None else [{"name": "sharding_indexed", "configuration": {
        "chunk_shape": list(chunks), "codecs": inner, "index_location": "end",
        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]}}]
    return {"shape": list(shape), "data_type": dtype, "fill_value": 0, "dimension_names": names,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shards or chunks)}},
            "chunk_key_encoding": {"name": "default"}, "codecs": codecs}


def prepare(url: str, info: dict, dest: str, fmt: str, mips: list[int], boxes: dict[int, Box],
            shard_shape: Vec3 | None) -> None:
    """Create the Zarr group, its arrays and OME metadata (TIFF directories need nothing)."""
    if fmt == "tiff":
        return
    import tensorstore as ts
    from cloudfiles import CloudFiles

    version = 3 if fmt == "ome-zarr-v3" else 2
    channels = info["num_channels"]
    names = [a["name"] for a in ome_axes(channels)]
    for i, m in enumerate(mips):
        chunk = tuple(reversed(layers.scale_chunk(info, m)))
        chunks = (channels, *chunk) if channels > 1 else chunk
        shards = None
        if shard_shape is not None:
            shard = tuple(reversed(shard_shape))
            shards = (channels, *shard) if channels > 1 else shard
        meta = array_metadata(zarr_shape(boxes[m], channels), chunks, info["data_type"], version, shards, names)
        ts.open({**array_spec(dest, i, version), "metadata": meta}, create=True, delete_existing=True).result()
    meta = multiscales(info, mips, boxes, os.path.basename(url))
    cf = CloudFiles(dest)
    if version == 3:
        cf.put_json("zarr.json", {"zarr_format": 3, "node_type": "group",
                                  "attributes": {"ome": {"version": "0.5", "multiscales": [meta]}}})
    else:
        cf.put_json(".zgroup", {"zarr_format": 2})
        cf.put_json(".zattrs", {"multiscales": [{"version": "0.4", **meta}]})


@queueable
def export_task(layer: str, dest: str, fmt: str, mip: int, level: int, box: list[int], origin: list[int]) -> None:
    """Read one block of the layer and write it as whole Zarr chunks/shards or whole slices."""
    info = layers.read_info(layer)
    region = Box.from_list(box)
    img = volume_io.read(layer, info, mip, region, False)  # x,y,z,c
    rel = [a - o for a, o in zip(region.start, origin)]
    if fmt == "tiff":
        write_slices(dest, img, rel[2])
        return
    import tensorstore as ts

    arr = ts.open(array_spec(dest, level, 3 if fmt == "ome-zarr-v3" else 2), open=True).result()
    zyx = img.transpose(3, 2, 1, 0)  # c,z,y,x
    index = tuple(slice(a, a + n) for a, n in zip(reversed(rel), zyx.shape[1:]))
    if info["num_channels"] > 1:
        arr[(slice(None), *index)].write(zyx).result()
    else:
        arr[index].write(zyx[0]).result()


def write_slices(dest: str, img: np.ndarray, z0: int) -> None:
    """One 2D TIFF per z (y,x or y,x,c; three channels as RGB), named by z for natural order."""
    import tifffile
    from cloudfiles import CloudFiles

    cf = CloudFiles(dest)
    channels = img.shape[3]
    for dz in range(img.shape[2]):
        plane = np.ascontiguousarray(img[:, :, dz, :].transpose(1, 0, 2))
        buf = io.BytesIO()
        if channels == 1:
            tifffile.imwrite(buf, plane[..., 0])
        else:
            tifffile.imwrite(buf, plane, photometric="rgb" if channels == 3 else "minisblack",
                             planarconfig="contig")
        cf.put(f"z{z0 + dz:05d}.tif", buf.getvalue(), compress=None)
