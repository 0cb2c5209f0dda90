"""image contrast histogram / equalize: per-slice luminance histograms, then a per-slice
stretch of the grey levels between clip points read off those histograms.

Histograms are written as Igneous writes them, one JSON file per z at `LAYER/levels/MIP/Z`
({"levels": [count per grey level], "patch_size", "num_patches", "coverage_ratio"}), so each
tool can equalize from the other's histograms. A histogram task covers one chunk-deep z slab
and samples whole chunk columns (every chunk it reads is used in full, for every z in it);
which columns it samples is seeded by the slab, so a re-run writes the same bytes.

Equalize applies, per z, Igneous's rule: ignore black (level 0), take `lower` and `upper` at
--clip-fraction from either end of the cumulative histogram, map lower..upper linearly onto
0..dtype max (float32, rounded half to even), clip to --minval/--maxval. It is applied as a
per-slice lookup table, so a task never holds a float copy of its block.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import layers, volume_io
from igneous_like.errors import TaskError, UserError
from igneous_like.grid import Box, Vec3, expand_to_grid, grid_boxes, grid_count, mips_to_top, vec3
from igneous_like.plan import PROCESS_OVERHEAD, Plan, fmt_vec, human_bytes

DTYPES = ("uint8", "uint16")
DEFAULT_TASK_XY = 2048  # Igneous's default task footprint for equalize and clahe
MIP_FACTOR = (2, 2, 1)


# ---- shared by histogram, equalize and clahe ------------------------------------------------

def open_source(url: str, mip: int) -> dict:
    """SRC's info, checked: a one-channel uint8/uint16 image at an existing mip."""
    info = layers.read_info(url)
    layers.check_mip(info, mip, url)
    if info["type"] != "image" or info["data_type"] not in DTYPES or info["num_channels"] != 1:
        raise UserError(
            f"{url} is a {info['num_channels']}-channel {info['data_type']} {info['type']} layer: "
            "contrast correction needs a one-channel uint8 or uint16 image"
        )
    return info


def region_at(info: dict, mip: int, bounds_mip: int | None, xrange, yrange, zrange, url: str) -> Box:
    """The box named by the ranges (given in voxels of --bounds-mip) in voxels of --mip."""
    bmip = mip if bounds_mip is None else bounds_mip
    layers.check_mip(info, bmip, url)
    box = layers.bounds_from_ranges(layers.scale_bounds(info, bmip), xrange, yrange, zrange, url, bmip)
    if bmip == mip:
        return box
    src_res, dst_res = info["scales"][bmip]["resolution"], info["scales"][mip]["resolution"]
    start = vec3(math.floor(a * r / d) for a, r, d in zip(box.start, src_res, dst_res))
    stop = vec3(math.ceil(b * r / d) for b, r, d in zip(box.stop, src_res, dst_res))
    return Box(start, stop).intersect(layers.scale_bounds(info, mip))


def task_shape(shape: Vec3 | None, chunk: Vec3, full: Box) -> Vec3:
    """--shape (a multiple of the chunk size) or Igneous's default footprint rounded to chunks."""
    if shape is None:
        shape = (DEFAULT_TASK_XY, DEFAULT_TASK_XY, chunk[2])
        shape = vec3(-(-s // c) * c for s, c in zip(shape, chunk))
        return vec3(min(s, -(-f // c) * c) for s, c, f in zip(shape, chunk, full.shape))
    if any(s <= 0 for s in shape) or any(s % c for s, c in zip(shape, chunk)):
        raise UserError(f"--shape {fmt_vec(shape)} must be a positive multiple of the chunk size {fmt_vec(chunk)}")
    return shape


def dest_info(info: dict, dest_url: str, mip: int, translate: Vec3) -> dict:
    """DEST's info: its own if it exists (checked against SRC), else SRC's up to --mip, shifted."""
    from igneous_like.ops.image.transfer import dest_info_for

    new = dest_info_for(info, dest_url, mip, translate, layers.scale_chunk(info, mip), None, None, True)
    if layers.is_sharded(new, mip):
        raise UserError(f"DEST {dest_url} is sharded at mip {mip}: contrast correction writes chunk files")
    return new


def add_mips(new_info: dict, mip: int, shape: Vec3) -> int:
    """Add to DEST's info the mips a task of `shape` can build whole (2x2x1 averages, as Igneous
    builds them while equalizing); returns how many."""
    from igneous_like.ops.image.downsample import mips_in_shape

    chunk = layers.scale_chunk(new_info, mip)
    full = layers.scale_bounds(new_info, mip)
    limit = mips_to_top(full.shape, chunk, MIP_FACTOR) if any(s > c for s, c in zip(full.shape[:2], chunk[:2])) else 0
    k = mips_in_shape(shape, chunk, MIP_FACTOR, limit)
    layers.add_mip_scales(new_info, mip, k, MIP_FACTOR, chunk)
    return k


def write_with_mips(url: str, info: dict, mip: int, region: Box, img: np.ndarray, num_mips: int, compress) -> None:
    """Write the block at --mip and its averaged mips above it."""
    from igneous_like.pyramid import make_pyramid

    volume_io.write(url, info, mip, region, img, compress, False, 0)
    if num_mips:
        pyramid = make_pyramid(img, MIP_FACTOR, num_mips, "avg")
        volume_io.write_pyramid(url, info, mip, region, MIP_FACTOR, pyramid, compress, False, 0)


def levels_name(mip: int, z: int) -> str:
    return f"levels/{mip}/{z}"


# ---- histogram ------------------------------------------------------------------------------

def plan_histogram(layer: str, mip: int = 0, coverage: float = 0.01, xrange=None, yrange=None, zrange=None,
                   bounds_mip: int | None = None) -> Plan:
    url = layers.normalize_url(layer)
    info = open_source(url, mip)
    if not 0 < coverage <= 1:
        raise UserError(f"--coverage {coverage} must be in (0, 1]")
    region = region_at(info, mip, bounds_mip, xrange, yrange, zrange, url)
    layers.check_writable(url)
    full = layers.scale_bounds(info, mip)
    chunk = layers.scale_chunk(info, mip)
    slab = (full.shape[0], full.shape[1], chunk[2])  # one task per chunk row in z
    origin = full.start
    total = grid_count(region, slab, origin)
    patch = (chunk[0], chunk[1], 1)
    columns = grid_count(Box(region.start, (region.stop[0], region.stop[1], region.start[2] + 1)), patch, origin)
    sampled = math.ceil(columns * coverage)

    def tasks() -> Iterator:
        for box in grid_boxes(region, slab, origin):
            yield partial(histogram_task, url, mip, box.to_list(), coverage)

    width = np.dtype(info["data_type"]).itemsize
    details = {
        "layer": url,
        "mip": mip,
        "bounds": str(region),
        "tasks": f"one per {chunk[2]}-deep z slab; each samples {sampled} of {columns} chunk columns "
                 f"({fmt_vec(patch[:2])} voxels) and writes one histogram per z",
        "output": f"{url}/levels/{mip}/{{z}} for z in {region.start[2]}..{region.stop[2] - 1}",
        "peak memory per task": f"~{human_bytes(PROCESS_OVERHEAD + 4 * math.prod(chunk) * width + chunk[2] * 2 ** (8 * width) * 16)}",
    }
    return Plan("image contrast histogram", total, tasks, lambda: None, details)


def sample_columns(region: Box, chunk: Vec3, origin: Vec3, coverage: float) -> list[Box]:
    """The chunk columns of region's xy plane a histogram samples: a seeded random choice of
    ceil(coverage * count), the seed being the region itself (same task, same sample)."""
    xs = range(origin[0] + ((region.start[0] - origin[0]) // chunk[0]) * chunk[0], region.stop[0], chunk[0])
    ys = range(origin[1] + ((region.start[1] - origin[1]) // chunk[1]) * chunk[1], region.stop[1], chunk[1])
    count = len(xs) * len(ys)
    n = math.ceil(count * coverage)
    if n >= count:
        picks = range(count)
    else:
        rng = np.random.default_rng([abs(v) for v in region.to_list()])
        picks = np.sort(rng.choice(count, size=n, replace=False))
    boxes = []
    for i in picks:
        x0, y0 = xs[int(i) % len(xs)], ys[int(i) // len(xs)]
        column = Box((x0, y0, region.start[2]), (x0 + chunk[0], y0 + chunk[1], region.stop[2]))
        boxes.append(column.intersect(region))
    return boxes


@queueable
def histogram_task(layer: str, mip: int, box: list[int], coverage: float) -> None:
    """Histogram every z of `box` over a sample of its chunk columns; write levels/MIP/Z."""
    from cloudfiles import CloudFiles

    info = layers.read_info(layer)
    region = Box.from_list(box)
    bins = 2 ** (8 * np.dtype(info["data_type"]).itemsize)
    depth = region.shape[2]
    columns = sample_columns(region, layers.scale_chunk(info, mip), layers.scale_bounds(info, mip).start, coverage)
    counts = np.zeros(depth * bins, dtype=np.uint64)
    read = partial(volume_io.read, layer, info, mip, fill_missing=True)  # missing chunks are black, as in Igneous
    threads = 1 if layer.startswith(("file://", "mem://")) else 8
    with ThreadPoolExecutor(threads) as pool:
        for img in pool.map(read, columns):
            flat = img[..., 0].astype(np.int64) + (np.arange(depth, dtype=np.int64) * bins)[None, None, :]
            counts += np.bincount(flat.ravel(), minlength=depth * bins).astype(np.uint64)
    counts = counts.reshape(depth, bins)
    area = region.shape[0] * region.shape[1]
    covered = sum(c.shape[0] * c.shape[1] for c in columns)
    biggest = max(columns, key=lambda c: c.shape[0] * c.shape[1]).shape if columns else (0, 0, 1)
    files = []
    for k in range(depth):
        doc = {
            "levels": counts[k].tolist(),
            "patch_size": [biggest[0], biggest[1], 1],
            "num_patches": len(columns),
            "coverage_ratio": covered / area,
        }
        files.append((levels_name(mip, region.start[2] + k), json.dumps(doc).encode()))
    CloudFiles(layer).puts(files, content_type="application/json", cache_control="no-cache", compress=None)


# ---- equalize -------------------------------------------------------------------------------

def clip_points(levels: np.ndarray, lower_fraction: float, upper_fraction: float) -> tuple[int, int]:
    """(lower, upper) grey levels: the last levels before the cumulative share of non-black
    voxels first exceeds each fraction (Igneous's rule; (0, 0) for an all-black slice)."""
    hist = np.asarray(levels, dtype=np.uint64).copy()
    hist[0] = 0
    cdf = np.cumsum(hist)
    total = float(cdf[-1])
    if total == 0:
        return 0, 0
    share = cdf / total

    def before_exceeding(fraction: float) -> int:
        above = np.flatnonzero(share > fraction)
        return len(hist) - 1 if len(above) == 0 else max(int(above[0]) - 1, 0)

    return before_exceeding(lower_fraction), before_exceeding(upper_fraction)


def stretch_table(levels: np.ndarray, dtype: str, clip_fraction: float, minval: float, maxval: float) -> np.ndarray:
    """Lookup table grey level -> equalized grey level for one slice."""
    top = float(np.iinfo(dtype).max)
    lower, upper = clip_points(levels, clip_fraction, 1 - clip_fraction)
    grey = np.arange(int(top) + 1, dtype=np.float32)
    if lower != upper:
        grey = (grey - np.float32(lower)) * np.float32(top / (upper - lower))
    return np.clip(np.round(grey), minval, maxval).astype(dtype)


def plan_equalize(src: str, dest: str, mip: int = 0, shape: Vec3 | None = None, translate: Vec3 = (0, 0, 0),
                  clip_fraction: float = 0.01, fill_missing: bool = False, minval: float | None = None,
                  maxval: float | None = None, xrange=None, yrange=None, zrange=None,
                  bounds_mip: int | None = None) -> Plan:
    src_url, dest_url = layers.normalize_url(src), layers.normalize_url(dest)
    if src_url == dest_url:
        raise UserError("SRC and DEST are the same layer: equalize never modifies SRC")
    info = open_source(src_url, mip)
    if not 0 <= clip_fraction <= 0.5:
        raise UserError(f"--clip-fraction {clip_fraction} must be in [0, 0.5] (it is clipped from each side)")
    lo, hi = value_range(info["data_type"], minval, maxval)
    region = region_at(info, mip, bounds_mip, xrange, yrange, zrange, src_url)
    check_levels(src_url, mip, region)
    layers.check_writable(dest_url)
    new_info = dest_info(info, dest_url, mip, translate)
    full = layers.scale_bounds(info, mip)
    shape = task_shape(shape, layers.scale_chunk(new_info, mip), full)
    moved = Box(vec3(a + t for a, t in zip(region.start, translate)), vec3(b + t for b, t in zip(region.stop, translate)))
    dest_full = layers.scale_bounds(new_info, mip)
    if not dest_full.contains(moved):
        raise UserError(f"the translated region {moved} does not fit inside {dest_url} at mip {mip} ({dest_full})")
    origin = dest_full.start
    moved = expand_to_grid(moved, shape, origin, dest_full)
    total = grid_count(moved, shape, origin)
    compress = layers.normalize_compress(None, dest_url)
    num_mips = add_mips(new_info, mip, shape)

    def tasks() -> Iterator:
        for box in grid_boxes(moved, shape, origin):
            yield partial(equalize_task, src_url, dest_url, mip, box.to_list(), list(translate), clip_fraction,
                          fill_missing, lo, hi, compress, num_mips)

    width = np.dtype(info["data_type"]).itemsize
    details = {
        "source": f"{src_url} (mip {mip}), histograms from {src_url}/levels/{mip}/",
        "destination": dest_url,
        "rule": f"per z: clip {clip_fraction} of non-black voxels at each end, stretch to 0..{np.iinfo(info['data_type']).max}, "
                f"clip to {lo:g}..{hi:g}",
        "task shape": fmt_vec(shape) + f" at mip {mip}",
        "mips written": ", ".join(str(mip + j) for j in range(num_mips + 1)) + " (mips from the task shape, as Igneous)",
        "bounds (dest)": str(moved),
        "peak memory per task": f"~{human_bytes(PROCESS_OVERHEAD + 2.2 * math.prod(shape) * width)}",
    }
    return Plan("image contrast equalize", total, tasks, lambda: layers.write_info(dest_url, new_info), details)


def value_range(dtype: str, minval, maxval) -> tuple[float, float]:
    """--minval/--maxval as numbers inside the dtype's range (default: the whole range)."""
    limits = np.iinfo(dtype)
    out = []
    for name, value, default in (("--minval", minval, limits.min), ("--maxval", maxval, limits.max)):
        if value is None:
            out.append(float(default))
            continue
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"{name} {value!r} is not a number") from None
        if not limits.min <= number <= limits.max:
            raise UserError(f"{name} {value} is outside the range of {dtype} ({limits.min}..{limits.max})")
        out.append(number)
    if out[0] > out[1]:
        raise UserError(f"--minval {out[0]:g} is above --maxval {out[1]:g}")
    return out[0], out[1]


def check_levels(url: str, mip: int, region: Box) -> None:
    """Every z of the region has a histogram (run `image contrast histogram` first)."""
    from cloudfiles import CloudFiles

    names = [levels_name(mip, z) for z in range(region.start[2], region.stop[2])]
    found = CloudFiles(url).exists(names)
    missing = [n for n in names if not found.get(n)]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(names)} slices have no histogram (first: {url}/{missing[0]}): "
            f"run `igneous-like image contrast histogram {url} --mip {mip}` first"
        )


@queueable
def equalize_task(src: str, dest: str, mip: int, box: list[int], translate: list[int], clip_fraction: float,
                  fill_missing: bool, minval: float, maxval: float, compress=False, num_mips: int = 0) -> None:
    """Stretch each z of the SRC block landing on `box` of DEST by its slice's histogram; write
    it and its mips."""
    from cloudfiles import CloudFiles

    src_info, out_info = layers.read_info(src), layers.read_info(dest)
    region = Box.from_list(box)
    src_box = Box(vec3(a - t for a, t in zip(region.start, translate)), vec3(b - t for b, t in zip(region.stop, translate)))
    img = volume_io.read(src, src_info, mip, src_box, fill_missing)
    names = [levels_name(mip, z) for z in range(src_box.start[2], src_box.stop[2])]
    docs = {r["path"]: r["content"] for r in CloudFiles(src).get(names)}
    dtype = src_info["data_type"]
    for k, name in enumerate(names):
        if docs.get(name) is None:
            raise TaskError(f"{src}/{name} is missing: run `image contrast histogram` for these slices")
        table = stretch_table(np.array(json.loads(docs[name])["levels"], dtype=np.uint64), dtype,
                              clip_fraction, minval, maxval)
        img[:, :, k, 0] = table[img[:, :, k, 0]]
    write_with_mips(dest, out_info, mip, region, img, num_mips, compress)
