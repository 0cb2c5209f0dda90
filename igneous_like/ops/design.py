"""design: helpers for choosing task shapes and repairing a layer's bounds, as Igneous's
`design` commands do. ds-memory and ds-shape use the same memory model as `image downsample`,
so what they print is what the planner will do."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from igneous_like import layers
from igneous_like.errors import UserError
from igneous_like.grid import Box, Vec3, vec3
from igneous_like.ops.image.downsample import mips_in_shape, task_memory, task_shape
from igneous_like.pyramid import resolve_method

CHUNK_NAME = re.compile(r"^(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)_(-?\d+)-(-?\d+)(?:\.(?:gz|br|zstd|bz2|xz))?$")


@dataclass(frozen=True)
class ChunkBounds:
    """What the chunk files of one scale say about it."""

    bounds: Box
    chunk: Vec3
    files: int


def raw_info(url: str) -> dict:
    """The info as JSON, without the validation a broken info would fail."""
    info = layers.read_info(url, check=False)
    if not isinstance(info, dict) or not isinstance(info.get("scales"), list) or not info["scales"]:
        raise UserError(f"malformed info file at {url}/info: no 'scales' list to repair")
    return info


def scale_key(info: dict, mip: int, url: str) -> str:
    if not 0 <= mip < len(info["scales"]):
        raise UserError(f"mip {mip} is out of range for {url}: it has mips 0 to {len(info['scales']) - 1}")
    scale = info["scales"][mip]
    if "key" not in scale:
        raise UserError(f"malformed info file at {url}/info: scale {mip} has no 'key'")
    if "sharding" in scale:
        raise UserError(f"mip {mip} of {url} is sharded: its bounds are not in file names")
    return scale["key"]


def chunk_bounds(url: str, key: str) -> ChunkBounds:
    """Bounds and chunk size from the chunk file names `x0-x1_y0-y1_z0-z1` under key/ (the most
    common extent per axis is the chunk size: edge chunks are smaller)."""
    lo, hi = [None] * 3, [None] * 3
    extents: list[Counter] = [Counter(), Counter(), Counter()]
    files = 0
    for name in list_names(url, key):
        m = CHUNK_NAME.match(name[len(key) + 1:])
        if not m:
            continue
        files += 1
        for axis in range(3):
            a, b = int(m.group(2 * axis + 1)), int(m.group(2 * axis + 2))
            lo[axis] = a if lo[axis] is None else min(lo[axis], a)
            hi[axis] = b if hi[axis] is None else max(hi[axis], b)
            extents[axis][b - a] += 1
    if not files:
        raise UserError(f"no chunk files under {url}/{key}/: nothing to compute bounds from")
    chunk = vec3(max(c, key=lambda e: (c[e], e)) for c in extents)
    return ChunkBounds(Box(vec3(lo), vec3(hi)), chunk, files)


def list_names(url: str, key: str):
    """Names under key/, none when the directory does not exist (file:// raises there)."""
    from cloudfiles import CloudFiles

    try:
        yield from CloudFiles(url).list(prefix=f"{key}/", flat=True)
    except FileNotFoundError:
        return


def info_differences(info: dict, mip: int, found: ChunkBounds) -> list[str]:
    """What the info's scale says that the files contradict, one line each."""
    scale = info["scales"][mip]
    want = {"voxel_offset": list(found.bounds.start), "size": list(found.bounds.shape),
            "chunk_sizes": [list(found.chunk)]}
    return [f"{k}: info {scale.get(k)} -> files {v}" for k, v in want.items() if scale.get(k) != v]


def fixed_info(info: dict, mip: int, found: ChunkBounds) -> dict:
    scale = {**info["scales"][mip], "voxel_offset": list(found.bounds.start),
             "size": list(found.bounds.shape), "chunk_sizes": [list(found.chunk)]}
    return {**info, "scales": [scale if i == mip else s for i, s in enumerate(info["scales"])]}


@dataclass(frozen=True)
class DownsampleDesign:
    shape: Vec3
    num_mips: int
    memory: float


def ds_memory(info: dict, mip: int, factor: Vec3, memory: float, max_mips: int, method: str) -> DownsampleDesign:
    """The task shape yielding the most mips (up to max_mips) within `memory` bytes."""
    base = layers.scale_chunk(info, mip)
    method = resolve_method(method, info["type"])
    best = None
    for k in range(1, max_mips + 1):
        shape = task_shape(base, [base] * k, factor)
        need = task_memory(shape, info["data_type"], info["num_channels"], factor, k, method)
        if need > memory:
            break
        best = DownsampleDesign(shape, k, need)
    if best is None:
        shape = task_shape(base, [base], factor)
        need = task_memory(shape, info["data_type"], info["num_channels"], factor, 1, method)
        raise UserError(f"{memory:.4g} bytes do not fit one mip: a task of {','.join(map(str, shape))} "
                        f"needs about {need:.4g} bytes")
    return best


def ds_shape(info: dict, mip: int, shape: Vec3, factor: Vec3, max_mips: int, method: str) -> DownsampleDesign:
    """The mips a task of `shape` yields and its peak memory."""
    if any(s <= 0 for s in shape):
        raise UserError(f"shape {','.join(map(str, shape))} must be positive")
    base = layers.scale_chunk(info, mip)
    k = mips_in_shape(shape, base, factor, max_mips)
    need = task_memory(shape, info["data_type"], info["num_channels"], factor, max(k, 1),
                       resolve_method(method, info["type"]))
    return DownsampleDesign(vec3(shape), k, need)
