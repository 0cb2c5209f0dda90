"""image xfer: copy a layer to a new place, re-chunking, re-encoding and building mips from
the same read. SRC is only read, never written (its info included).

Two task kinds: `copy_task` moves chunk files byte for byte (same chunking and encoding, no
mips, no shift); `transfer_task` decodes a block, writes it, and writes its mips.
"""
from __future__ import annotations

import math
import sys
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import layers, validate, volume_io
from igneous_like.errors import UserError
from igneous_like.grid import Box, Vec3, downsampled, expand_to_grid, grid_boxes, grid_count, mips_to_top, vec3
from igneous_like.ops.image.downsample import mips_in_shape, task_memory, task_shape
from igneous_like.plan import PROCESS_OVERHEAD, Plan, fmt_vec, human_bytes
from igneous_like.pyramid import METHODS, make_pyramid, resolve_method

COPY_MAX_FILES = 1024  # chunk files per byte-copy task


def plan_transfer(
    src: str,
    dest: str,
    mip: int = 0,
    translate: Vec3 = (0, 0, 0),
    dest_voxel_offset: Vec3 | None = None,
    chunk_size: Vec3 | None = None,
    encoding: str | None = None,
    encoding_level: int | None = None,
    compress: str | None = None,
    downsample: bool = True,
    num_mips: int | None = None,
    max_mips: int = 5,
    factor: Vec3 = (2, 2, 1),
    method: str = "auto",
    sparse: bool = False,
    fill_missing: bool = False,
    memory: float = 3.5e9,
    shape: Vec3 | None = None,
    xrange=None,
    yrange=None,
    zrange=None,
    clean_info: bool = False,
    delete_bg: bool = False,
    bg_color: int = 0,
    sharded: bool = False,
    sharding: dict | None = None,
) -> Plan:
    src_url, dest_url = layers.normalize_url(src), layers.normalize_url(dest)
    if sharding is not None:
        sharded = True
    if src_url == dest_url:
        raise UserError("SRC and DEST are the same layer: xfer never modifies SRC")
    info = layers.read_info(src_url)
    layers.check_mip(info, mip, src_url)
    method = resolve_method(method, info["type"])
    if method not in METHODS:
        raise UserError(f"unknown --downsample-method {method!r}")
    enc = layers.normalize_encoding(encoding, info["data_type"], info["type"])
    validate.check_encoding_level(enc or info["scales"][mip]["encoding"], encoding_level, info["data_type"])
    validate.check_fits_dtype(bg_color, info["data_type"], "--bg-color")
    compress_arg = layers.normalize_compress(compress, dest_url)
    src_chunk = layers.scale_chunk(info, mip)
    chunk = layers.check_chunk_size(chunk_size) or src_chunk
    src_full = layers.scale_bounds(info, mip)
    region = layers.bounds_from_ranges(src_full, xrange, yrange, zrange, src_url, mip)
    if dest_voxel_offset is not None:
        if any(translate):
            raise UserError("give --translate or --dest-voxel-offset, not both")
        translate = vec3(d - s for d, s in zip(dest_voxel_offset, src_full.start))
    layers.check_writable(dest_url)

    dest_info = dest_info_for(info, dest_url, mip, translate, chunk, enc, encoding_level, clean_info)
    volume_io.check_opens(src_url, info, mip)
    volume_io.check_opens(dest_url, dest_info, mip)
    dest_full = layers.scale_bounds(dest_info, mip)
    dest_chunk = layers.scale_chunk(dest_info, mip)
    region = Box(vec3(a + t for a, t in zip(region.start, translate)), vec3(b + t for b, t in zip(region.stop, translate)))
    if not dest_full.contains(region):
        raise UserError(f"the transferred region {region} does not fit inside {dest_url} at mip {mip} ({dest_full})")

    if sharded:
        if sharding is not None:
            dest_info["scales"][mip]["sharding"] = _check_sharding(sharding)
        return _plan_sharded(src_url, dest_url, info, dest_info, mip, region, translate, memory, fill_missing)

    same_bytes = (
        not downsample and not any(translate) and dest_chunk == src_chunk
        and dest_info["scales"][mip]["encoding"] == info["scales"][mip]["encoding"]
        and compress is None and not layers.is_sharded(info, mip)
        and dest_full.start == src_full.start
    )
    dtype, channels = info["data_type"], info["num_channels"]
    if same_bytes:
        return _plan_copy(src_url, dest_url, info, dest_info, mip, region, fill_missing)

    k = 0
    if downsample:
        top = mips_to_top(dest_full.shape, dest_chunk, factor)
        limit = min(max_mips, num_mips if num_mips is not None else top)
        if shape is not None:
            k = mips_in_shape(shape, dest_chunk, factor, limit)
        else:
            for j in range(1, limit + 1):
                s = task_shape(dest_chunk, [dest_chunk] * j, factor)
                s = vec3(min(a, b) if f > 1 else a for a, b, f in zip(s, dest_full.shape, factor))
                if task_memory(s, dtype, channels, factor, j, method) > memory:
                    break
                k = j
        layers.add_mip_scales(dest_info, mip, k, factor, dest_chunk, None, encoding_level)
    if shape is None:
        shape = task_shape(dest_chunk, [dest_chunk] * k, factor) if k else _copy_shape(dest_chunk, dtype, channels, memory)
    elif any(s % c for s, c in zip(shape, dest_chunk)):
        raise UserError(f"--shape {fmt_vec(shape)} must be a multiple of the chunk size {fmt_vec(dest_chunk)}")
    elif shape and any(s <= 0 for s in shape):
        raise UserError("--shape must be positive")

    origin = dest_full.start
    region = expand_to_grid(region, shape, origin, dest_full)
    region = region.intersect(Box(vec3(a + t for a, t in zip(src_full.start, translate)),
                                  vec3(b + t for b, t in zip(src_full.stop, translate))))
    total = grid_count(region, shape, origin)
    one = Box(region.start, vec3(a + s for a, s in zip(region.start, shape))).intersect(region).shape
    peak = task_memory(one, dtype, channels, factor, k, method) if k else PROCESS_OVERHEAD + 2.2 * math.prod(one) * channels * np.dtype(dtype).itemsize
    if peak > memory:
        print(f"WARNING: one task needs about {human_bytes(peak)}, above --memory {human_bytes(memory)}", file=sys.stderr)

    def tasks() -> Iterator:
        for box in grid_boxes(region, shape, origin):
            yield partial(
                transfer_task, src_url, dest_url, mip, box.to_list(), list(translate), k, list(factor),
                method, sparse, fill_missing, compress_arg, delete_bg, bg_color,
            )

    written = sum(
        downsampled(region, factor, j, origin, layers.scale_bounds(dest_info, mip + j).start).voxels
        for j in range(0, k + 1)
    ) * channels * np.dtype(dtype).itemsize
    files = sum(
        grid_count(downsampled(region, factor, j, origin, layers.scale_bounds(dest_info, mip + j).start),
                   dest_chunk, layers.scale_bounds(dest_info, mip + j).start)
        for j in range(0, k + 1)
    )
    details = {
        "source": f"{src_url} (mip {mip}, {info['scales'][mip]['encoding']}, chunks {fmt_vec(src_chunk)})",
        "destination": f"{dest_url} ({dest_info['scales'][mip]['encoding']}, chunks {fmt_vec(dest_chunk)})",
        "mips written": ", ".join(str(mip + j) for j in range(0, k + 1)),
        "translate": fmt_vec(translate),
        "task shape": fmt_vec(shape) + f" at mip {mip}",
        "bounds (dest)": str(region),
        "peak memory per task": f"~{human_bytes(peak)} (limit {human_bytes(memory)})",
        "files to write": files,
        "bytes to write (before encoding)": human_bytes(written),
    }
    return Plan("image xfer", total, tasks, lambda: layers.write_info(dest_url, dest_info), details)


def _check_sharding(spec: dict) -> dict:
    """An expert's sharding spec, validated by cloud-volume's own checks."""
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    spec = {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity", "minishard_index_encoding": "gzip",
            "data_encoding": "gzip", **spec}
    try:
        ShardingSpecification.from_dict(spec)
    except Exception as exc:
        raise UserError(f"invalid --sharding spec: {exc}".splitlines()[0]) from None
    return spec


def _plan_sharded(src_url, dest_url, info, dest_info, mip, region, translate, memory, fill_missing) -> Plan:
    """One task per shard of DEST's scale; the spec is sized from the scale and --memory."""
    from igneous_like.ops.image.sharded import image_sharding, shard_shape

    scale = dest_info["scales"][mip]
    size, chunk = vec3(scale["size"]), vec3(scale["chunk_sizes"][0])
    if not scale.get("sharding"):
        scale["sharding"] = image_sharding(size, chunk, scale["encoding"], info["data_type"], memory)
    spec = scale["sharding"]
    grid_bits = sum(math.ceil(math.log2(-(-s // c))) for s, c in zip(size, chunk))
    if spec["preshift_bits"] + spec["minishard_bits"] + spec["shard_bits"] < grid_bits:
        raise UserError(
            f"sharding spec has {spec['preshift_bits'] + spec['minishard_bits'] + spec['shard_bits']} bits, the chunk "
            f"grid needs {grid_bits}: distant chunks would share a shard file (raise shard_bits)"
        )
    shape = shard_shape(spec, size, chunk)
    full = layers.scale_bounds(dest_info, mip)
    region = expand_to_grid(region, shape, full.start, full)
    total = grid_count(region, shape, full.start)
    width = np.dtype(info["data_type"]).itemsize * info["num_channels"]
    peak = PROCESS_OVERHEAD + 2.5 * math.prod(shape) * width
    if peak > memory:
        print(f"WARNING: one shard task needs about {human_bytes(peak)}, above --memory {human_bytes(memory)}",
              file=sys.stderr)

    def tasks() -> Iterator:
        for box in grid_boxes(region, shape, full.start):
            yield partial(sharded_transfer_task, src_url, dest_url, mip, box.to_list(), list(translate), fill_missing)

    details = {
        "source": f"{src_url} (mip {mip})",
        "destination": f"{dest_url} (sharded, {scale['encoding']}, chunks {fmt_vec(chunk)})",
        "sharding": f"preshift {spec['preshift_bits']}, minishard {spec['minishard_bits']}, shard {spec['shard_bits']} "
                    f"bits, data {spec['data_encoding']}",
        "shard shape (= task shape)": fmt_vec(shape),
        "shards to write": total,
        "shard size (before encoding)": human_bytes(math.prod(shape) * width),
        "peak memory per task": f"~{human_bytes(peak)} (limit {human_bytes(memory)})",
        "mips": "only mip %d (build sharded mips with image downsample)" % mip,
    }
    return Plan("image xfer", total, tasks, lambda: layers.write_info(dest_url, dest_info), details)


@queueable
def sharded_transfer_task(src: str, dest: str, mip: int, box: list[int], translate: list[int],
                          fill_missing: bool = False) -> None:
    """Read the block of SRC that lands on one shard of DEST and write that shard whole."""
    from cloudfiles import CloudFiles

    from igneous_like.ops.image.sharded import encode_shard

    src_info, dest_info = layers.read_info(src), layers.read_info(dest)
    region = Box.from_list(box)
    src_box = Box(vec3(a - t for a, t in zip(region.start, translate)), vec3(b - t for b, t in zip(region.stop, translate)))
    img = volume_io.read(src, src_info, mip, src_box, fill_missing)
    name, data = encode_shard(dest, dest_info, mip, region, img)
    CloudFiles(dest).put(name, data, compress=None)


def _copy_shape(chunk: Vec3, dtype: str, channels: int, memory: float) -> Vec3:
    """No mips: grow the task in x and y (up to 16x16 chunks) while it fits a quarter of memory."""
    width = np.dtype(dtype).itemsize * channels
    grow = 1
    while grow < 16 and math.prod(chunk) * (grow * 2) ** 2 * width * 2.2 + PROCESS_OVERHEAD < memory:
        grow *= 2
    return vec3((chunk[0] * grow, chunk[1] * grow, chunk[2]))


def dest_info_for(info, dest_url, mip, translate, chunk, enc, encoding_level, clean_info) -> dict:
    """DEST's info: its existing one (checked for compatibility) or SRC's, adapted."""
    from cloudfiles import CloudFiles

    src_scale = info["scales"][mip]
    if CloudFiles(dest_url).exists("info"):
        dest_info = layers.read_info(dest_url)
        for key in ("data_type", "num_channels", "type"):
            if dest_info[key] != info[key]:
                raise UserError(f"DEST {dest_url} exists with {key} {dest_info[key]!r}, SRC has {info[key]!r}")
        if mip >= len(dest_info["scales"]) or dest_info["scales"][mip]["resolution"] != src_scale["resolution"]:
            raise UserError(f"DEST {dest_url} has no mip {mip} at resolution {src_scale['resolution']}")
        scale = dest_info["scales"][mip]
        if enc and enc != scale["encoding"]:
            raise UserError(f"DEST {dest_url} exists with encoding {scale['encoding']}: cannot write {enc} into it")
        return {**dest_info, "scales": [dict(s) for s in dest_info["scales"]]}
    new = {k: v for k, v in info.items() if not (clean_info and k in ("mesh", "skeletons"))}
    new["scales"] = [dict(s) for s in info["scales"][: mip + 1]]
    scale = new["scales"][mip]
    scale.pop("sharding", None)
    scale["chunk_sizes"] = [list(chunk)]
    scale["voxel_offset"] = [o + t for o, t in zip(src_scale["voxel_offset"], translate)]
    if enc:
        scale["encoding"] = enc
        for key in ("jpeg_quality", "png_level", "jxl_quality", "fpzip_precision"):
            scale.pop(key, None)
        if enc == "compressed_segmentation":
            scale.setdefault("compressed_segmentation_block_size", [8, 8, 8])
    if encoding_level is not None:
        level = layers.make_scale(scale, (1, 1, 1), chunk, scale["encoding"], encoding_level)
        scale.update({k: v for k, v in level.items() if k.endswith(("quality", "level", "precision"))})
    return new


def _plan_copy(src_url, dest_url, info, dest_info, mip, region, fill_missing) -> Plan:
    chunk = layers.scale_chunk(info, mip)
    origin = layers.scale_bounds(info, mip).start
    shape = vec3((chunk[0] * 32, chunk[1] * 32, chunk[2]))
    region = expand_to_grid(region, chunk, origin, layers.scale_bounds(info, mip))
    total = grid_count(region, shape, origin)

    def tasks() -> Iterator:
        for box in grid_boxes(region, shape, origin):
            yield partial(copy_task, src_url, dest_url, mip, box.to_list(), fill_missing)

    files = grid_count(region, chunk, origin)
    details = {
        "mode": "byte-for-byte copy (same chunk size and encoding, no mips, no shift)",
        "source": f"{src_url} (mip {mip})",
        "destination": dest_url,
        "task shape": fmt_vec(shape) + f" at mip {mip}",
        "bounds": str(region),
        "peak memory per task": f"~{human_bytes(PROCESS_OVERHEAD + 64e6)}",
        "files to write": f"up to {files} (missing source chunks are skipped)",
    }
    return Plan("image xfer", total, tasks, lambda: layers.write_info(dest_url, dest_info), details)


@queueable
def copy_task(src: str, dest: str, mip: int, box: list[int], fill_missing: bool = False) -> None:
    """Copy the chunk files under `box` without decoding them."""
    from cloudfiles import CloudFiles

    info = layers.read_info(src)
    scale = info["scales"][mip]
    names = list(layers.chunk_names(scale["key"], Box.from_list(box), layers.scale_bounds(info, mip),
                                    layers.scale_chunk(info, mip)))
    CloudFiles(src).transfer_to(CloudFiles(dest), paths=names, allow_missing=True, progress=False)


@queueable
def transfer_task(
    src: str,
    dest: str,
    mip: int,
    box: list[int],
    translate: list[int],
    num_mips: int,
    factor: list[int],
    method: str,
    sparse: bool = False,
    fill_missing: bool = False,
    compress=False,
    delete_bg: bool = False,
    bg_color: int = 0,
) -> None:
    """Read the block of SRC that lands on `box` of DEST, write it and its mips."""
    src_info, dest_info = layers.read_info(src), layers.read_info(dest)
    region = Box.from_list(box)
    src_box = Box(vec3(a - t for a, t in zip(region.start, translate)), vec3(b - t for b, t in zip(region.stop, translate)))
    img = volume_io.read(src, src_info, mip, src_box, fill_missing)
    volume_io.write(dest, dest_info, mip, region, img, compress, delete_bg, bg_color)
    if num_mips:
        pyramid = make_pyramid(img, vec3(factor), num_mips, method, sparse)
        volume_io.write_pyramid(dest, dest_info, mip, region, vec3(factor), pyramid, compress, delete_bg, bg_color)
