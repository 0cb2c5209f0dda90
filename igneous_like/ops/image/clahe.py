"""image contrast clahe: OpenCV's CLAHE of every whole z slice, computed in tasks.

--tile-grid-size X,Y counts CLAHE tiles across the whole slice (the region's xy plane, seen as
an image with x across and y down), as `cv2.createCLAHE(clip, (X, Y)).apply(slice)` would.
A task writes a chunk-aligned box and reads the tiles it touches plus one tile on each side:
a pixel's value is a bilinear mix of the lookup tables of the (up to) four tiles around it,
and a tile's table depends on all of that tile's pixels.

What OpenCV does that a task must reproduce:
- a slice whose width or height is not divisible by the grid is padded on the right and
  bottom (reflect-101) to `w + X - w % X` by `h + Y - h % Y` (both axes, even one that
  divides: it then gains X or Y pixels), and the tiles are cut from the padded slice;
- the clip limit is `max(int(clip * tile_area / bins), 1)` (none when clip <= 0);
- interpolation weights come from float32 `x / tile_width - 0.5` with x counted from the
  slice's left edge. In a task's window x starts elsewhere and the float rounding differs
  unless tile sizes are powers of two; then the task applies OpenCV to the window directly,
  otherwise it computes the same float32 expressions at the slice's coordinates in numpy.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import layers, volume_io
from igneous_like.errors import UserError
from igneous_like.grid import Box, Vec3, expand_to_grid, grid_boxes, grid_count, vec3
from igneous_like.ops.image.contrast import add_mips, dest_info, open_source, region_at, task_shape, write_with_mips
from igneous_like.plan import PROCESS_OVERHEAD, Plan, fmt_vec, human_bytes


def plan_clahe(src: str, dest: str, mip: int = 0, shape: Vec3 | None = None, fill_missing: bool = False,
               clip_limit: float = 40.0, tile_grid_size: tuple[int, int] = (8, 8), xrange=None, yrange=None,
               zrange=None, bounds_mip: int | None = None, memory: float = 3.5e9) -> Plan:
    src_url, dest_url = layers.normalize_url(src), layers.normalize_url(dest)
    if src_url == dest_url:
        raise UserError("SRC and DEST are the same layer: clahe never modifies SRC")
    info = open_source(src_url, mip)
    if any(t < 1 for t in tile_grid_size):
        raise UserError(f"--tile-grid-size {fmt_vec(tile_grid_size)} must be at least 1,1")
    if not math.isfinite(clip_limit):
        raise UserError(f"--clip-limit {clip_limit} must be a finite number")
    asked = region_at(info, mip, bounds_mip, xrange, yrange, zrange, src_url)
    layers.check_writable(dest_url)
    new_info = dest_info(info, dest_url, mip, (0, 0, 0))
    full = layers.scale_bounds(info, mip)
    chunk = layers.scale_chunk(new_info, mip)
    width = np.dtype(info["data_type"]).itemsize
    candidates = [task_shape(shape, chunk, full)]
    while shape is None and max(candidates[-1][:2]) > max(chunk[:2]):  # smaller tasks if the window is too big
        candidates.append(vec3(max(c, s // 2 // c * c) for s, c in zip(candidates[-1][:2] + (chunk[2],), chunk)))
    for task in candidates:
        region = expand_to_grid(asked, task, full.start, full)
        plane = [region.start[0], region.start[1], region.stop[0], region.stop[1]]
        grid = TileGrid(plane, tuple(tile_grid_size))
        window = [min(s + 4 * t, p) for s, t, p in zip(task[:2], grid.tile, grid.padded)]  # partial tiles + halo
        tables = math.prod(-(-w // t) for w, t in zip(window, grid.tile)) * 2 ** (8 * width) * 20  # hist + luts
        peak = PROCESS_OVERHEAD + 3 * math.prod(window) * task[2] * width + tables
        if peak <= memory:
            break
    shape = task
    if min(grid.tile) < 2 or min(plane[2] - plane[0], plane[3] - plane[1]) < 2:
        raise UserError(f"--tile-grid-size {fmt_vec(tile_grid_size)} is too fine for a "
                        f"{plane[2] - plane[0]}x{plane[3] - plane[1]} slice: tiles need at least 2x2 voxels")
    if peak > memory:
        raise UserError(f"a clahe task needs about {human_bytes(peak)} (tiles of {fmt_vec(grid.tile)} voxels and "
                        f"their halo), above --memory {human_bytes(memory)}: use a finer --tile-grid-size, "
                        "a smaller --shape or more --memory")
    total = grid_count(region, shape, full.start)
    compress = layers.normalize_compress(None, dest_url)
    num_mips = add_mips(new_info, mip, shape)

    def tasks() -> Iterator:
        for box in grid_boxes(region, shape, full.start):
            yield partial(clahe_task, src_url, dest_url, mip, box.to_list(), plane, list(tile_grid_size),
                          clip_limit, fill_missing, compress, num_mips)

    details = {
        "source": f"{src_url} (mip {mip})",
        "destination": dest_url,
        "tiles": f"{fmt_vec(tile_grid_size)} across the {plane[2] - plane[0]}x{plane[3] - plane[1]} slice, "
                 f"each {fmt_vec(grid.tile)} voxels (slice padded to {fmt_vec(grid.padded)}), clip limit {clip_limit:g}",
        "task shape": fmt_vec(shape) + f" at mip {mip}, reading up to {fmt_vec(window)} per z (one-tile halo)",
        "mips written": ", ".join(str(mip + j) for j in range(num_mips + 1)) + " (mips from the task shape)",
        "bounds": str(region),
        "peak memory per task": f"~{human_bytes(peak)} (limit {human_bytes(memory)})",
    }
    return Plan("image contrast clahe", total, tasks, lambda: layers.write_info(dest_url, new_info), details)


class TileGrid:
    """OpenCV's tiling of one slice: padded size, tile size, and the window a box needs."""

    def __init__(self, plane: list[int], tiles: tuple[int, int]):
        self.origin = (plane[0], plane[1])
        self.size = (plane[2] - plane[0], plane[3] - plane[1])
        self.tiles = tiles
        divisible = all(s % t == 0 for s, t in zip(self.size, tiles))
        self.padded = self.size if divisible else tuple(s + t - s % t for s, t in zip(self.size, tiles))
        self.tile = tuple(p // t for p, t in zip(self.padded, tiles))

    def window(self, axis: int, a: int, b: int) -> tuple[int, int]:
        """Tile-aligned span (plane coordinates, padded) holding the tiles that pixels a..b-1
        interpolate between, plus one tile of halo on each side."""
        t = self.tile[axis]
        first = max(a // t - 1, 0)
        last = min(-(-b // t) + 1, self.tiles[axis])
        return first * t, last * t


def read_window(url: str, info: dict, mip: int, grid: TileGrid, box: Box, fill_missing: bool) -> tuple[np.ndarray, list]:
    """The padded-plane window around box, as OpenCV would see it: (x, y, z) array and its spans."""
    spans, reads = [], []
    for axis in (0, 1):
        a = box.start[axis] - grid.origin[axis]
        b = box.stop[axis] - grid.origin[axis]
        wa, wb = grid.window(axis, a, b)
        n = grid.size[axis]
        lo = min(wa, max(2 * n - 1 - wb, 0)) if wb > n else wa  # reflect-101 mirrors n-2, n-3, ...
        spans.append((wa, wb))
        reads.append((lo, min(wb, n)))
    src = Box(
        (grid.origin[0] + reads[0][0], grid.origin[1] + reads[1][0], box.start[2]),
        (grid.origin[0] + reads[0][1], grid.origin[1] + reads[1][1], box.stop[2]),
    )
    img = volume_io.read(url, info, mip, src, fill_missing)[..., 0]
    pad = [(0, max(wb - grid.size[axis], 0)) for axis, (wa, wb) in enumerate(spans)] + [(0, 0)]
    if any(p[1] for p in pad):
        img = np.pad(img, pad, mode="reflect")
    img = img[spans[0][0] - reads[0][0]:, spans[1][0] - reads[1][0]:]
    return np.asfortranarray(img), spans


def clip_count(clip_limit: float, tile: tuple[int, int], bins: int) -> int:
    """OpenCV's integer clip limit per histogram bin (0: no clipping)."""
    if clip_limit <= 0:
        return 0
    return max(int(clip_limit * tile[0] * tile[1] / bins), 1)


def tile_tables(hist: np.ndarray, tile: tuple[int, int], clip: int, dtype) -> np.ndarray:
    """OpenCV's lookup tables from per-tile histograms (tiles, bins): clip each bin at `clip`,
    hand the excess out evenly (the remainder one by one at a fixed stride), scale the cumulative
    counts to the dtype's range."""
    bins = hist.shape[1]
    if clip > 0:
        excess = np.maximum(hist - clip, 0).sum(axis=1)
        hist = np.minimum(hist, clip)
        batch, residual = excess // bins, excess % bins
        hist += batch[:, None]
        step = np.maximum(bins // np.maximum(residual, 1), 1)[:, None]
        i = np.arange(bins)[None, :]
        hist += ((i % step == 0) & (i // step < residual[:, None])).astype(hist.dtype)
    scale = np.float32(bins - 1) / np.float32(tile[0] * tile[1])
    return np.rint(np.cumsum(hist, axis=1).astype(np.float32) * scale).astype(dtype)


def weights(positions: np.ndarray, tile: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's float32 interpolation: (first tile, second tile, weight of the second) per pixel."""
    f = positions.astype(np.float32) * (np.float32(1.0) / np.float32(tile)) - np.float32(0.5)
    first = np.floor(f)
    frac = (f - first).astype(np.float32)
    first = first.astype(np.int64)
    return np.maximum(first, 0), np.minimum(first + 1, tiles - 1), frac


class WindowCLAHE:
    """CLAHE of a task's window, slice after slice, equal to the whole slice's at `crop`
    (y0, y1, x0, x1 in the window); the geometry is worked out once per task."""

    def __init__(self, grid: TileGrid, spans: list, crop: tuple, shape: tuple[int, int], dtype, clip_limit: float):
        self.crop, self.dtype, self.clip_limit = crop, np.dtype(dtype), clip_limit
        self.bins = 256 if self.dtype == np.uint8 else 65536
        self.tile = grid.tile
        self.counts = (shape[1] // grid.tile[0], shape[0] // grid.tile[1])  # window tiles (x, y)
        y0, y1, x0, x1 = crop
        xs = np.arange(spans[0][0] + x0, spans[0][0] + x1)
        ys = np.arange(spans[1][0] + y0, spans[1][0] + y1)
        cols, rows = weights(xs, grid.tile[0], grid.tiles[0]), weights(ys, grid.tile[1], grid.tiles[1])
        self.fast = (np.array_equal(cols[2], weights(xs - spans[0][0], grid.tile[0], grid.tiles[0])[2])
                     and np.array_equal(rows[2], weights(ys - spans[1][0], grid.tile[1], grid.tiles[1])[2]))
        if self.fast:  # OpenCV's own arithmetic on the window gives the slice's values
            return
        tile_of = (np.arange(shape[0]) // grid.tile[1])[:, None] * self.counts[0] + np.arange(shape[1]) // grid.tile[0]
        self.hist_base = tile_of.astype(np.int64) * self.bins
        first_x, first_y = spans[0][0] // grid.tile[0], spans[1][0] // grid.tile[1]
        tx1, tx2 = cols[0] - first_x, cols[1] - first_x
        ty1, ty2 = rows[0] - first_y, rows[1] - first_y
        n = self.counts[0]
        self.bases = [((ty[:, None] * n + tx[None, :]) * self.bins) for ty in (ty1, ty2) for tx in (tx1, tx2)]
        self.xa, self.xa1 = cols[2][None, :], (np.float32(1) - cols[2])[None, :]
        self.ya, self.ya1 = rows[2][:, None], (np.float32(1) - rows[2])[:, None]

    def apply(self, window: np.ndarray) -> np.ndarray:
        """window: (rows=y, cols=x), C-ordered; returns the crop."""
        import cv2

        y0, y1, x0, x1 = self.crop
        if self.fast:
            return cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=self.counts).apply(window)[y0:y1, x0:x1]
        ntiles = self.counts[0] * self.counts[1]
        hist = np.bincount((self.hist_base + window).ravel(), minlength=ntiles * self.bins).reshape(ntiles, self.bins)
        clip = clip_count(self.clip_limit, self.tile, self.bins)
        flat = tile_tables(hist, self.tile, clip, self.dtype).astype(np.float32).reshape(-1)
        v = window[y0:y1, x0:x1]
        l11, l12, l21, l22 = (flat[base + v] for base in self.bases)
        # OpenCV's expression, operation for operation in float32
        res = (l11 * self.xa1 + l12 * self.xa) * self.ya1 + (l21 * self.xa1 + l22 * self.xa) * self.ya
        return np.rint(res).astype(self.dtype)


@queueable
def clahe_task(src: str, dest: str, mip: int, box: list[int], plane: list[int], tile_grid_size: list[int],
               clip_limit: float, fill_missing: bool = False, compress=False, num_mips: int = 0) -> None:
    """CLAHE of every z of `box`, as part of the whole slice `plane` (x0, y0, x1, y1); write it
    and its mips."""
    import cv2

    cv2.setNumThreads(0)  # workers are processes; OpenCV threads would only compete
    src_info, out_info = layers.read_info(src), layers.read_info(dest)
    region = Box.from_list(box)
    grid = TileGrid(plane, (tile_grid_size[0], tile_grid_size[1]))
    img, spans = read_window(src, src_info, mip, grid, region, fill_missing)
    x0 = region.start[0] - grid.origin[0] - spans[0][0]
    y0 = region.start[1] - grid.origin[1] - spans[1][0]
    crop = (y0, y0 + region.shape[1], x0, x0 + region.shape[0])
    out = np.empty(region.shape + (1,), dtype=img.dtype, order="F")
    clahe = WindowCLAHE(grid, spans, crop, (img.shape[1], img.shape[0]), img.dtype, clip_limit)
    for z in range(region.shape[2]):
        out[:, :, z, 0] = clahe.apply(np.ascontiguousarray(img[:, :, z].T)).T
    write_with_mips(dest, out_info, mip, region, out, num_mips, compress)
