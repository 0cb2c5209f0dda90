"""Sharded image and segmentation scales: automatic shard specs and whole-shard writes.

A task covers exactly one shard (its box is the shard's extent on the chunk grid anchored at
the scale's voxel offset), so no two tasks touch one shard file. Chunks are encoded with
cloud-volume's codecs and packed by its shard synthesizer; the loop between them is ours so
that a background chunk at the volume's edge is encoded at its clipped shape (cloud-volume's
own loop reuses the first background encoding, whose full-size length tensorstore rejects).
"""
from __future__ import annotations

import math

import numpy as np

from igneous_like import layers
from igneous_like.grid import Box, Vec3, vec3

SHARD_MEMORY_FRACTION = 0.25  # uncompressed shard bytes per task, as a share of --memory


def image_sharding(size: Vec3, chunk: Vec3, encoding: str, dtype: str, memory: float) -> dict:
    """Shard parameters from the scale's size, chunk, dtype and the task memory budget."""
    from cloudvolume.datasource.precomputed.sharding import compute_shard_params_for_image

    data_encoding = "raw" if encoding in ("jpeg", "png", "jpegxl") else "gzip"
    spec = compute_shard_params_for_image(
        dataset_size=size, chunk_size=chunk, encoding=encoding, dtype=dtype,
        uncompressed_shard_bytesize=int(max(memory * SHARD_MEMORY_FRACTION, math.prod(chunk) * 8)),
        data_encoding=data_encoding,
    )
    return spec.to_dict()


def shard_shape(spec: dict, size: Vec3, chunk: Vec3) -> Vec3:
    from cloudvolume.datasource.precomputed.sharding import image_shard_shape_from_spec

    return vec3(image_shard_shape_from_spec(spec, size, chunk))


def encode_chunks(url: str, info: dict, mip: int, box: Box, img: np.ndarray) -> dict[int, bytes]:
    """{morton code: encoded chunk} for the chunks that tile `box` (img covers box exactly)."""
    from cloudvolume.compression import compress  # the function cloud-volume's shard writer uses
    from cloudvolume import chunks as codecs
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification
    from cloudvolume.lib import Bbox

    from igneous_like.volume_io import open_volume

    vol = open_volume(url, info, mip)
    scale = info["scales"][mip]
    spec = ShardingSpecification.from_dict(scale["sharding"])
    chunk = np.asarray(layers.scale_chunk(info, mip))
    bounds = layers.scale_bounds(info, mip)
    gpts, codes = vol.image.morton_codes(Bbox(box.start, box.stop), mip=mip, spec=spec, same_shard=False)
    background: dict[tuple, bytes] = {}
    labels: dict[int, bytes] = {}
    for gpt, code in zip(gpts, codes):
        lo = np.asarray(bounds.start) + np.asarray(gpt) * chunk
        hi = np.minimum(lo + chunk, bounds.stop)
        rel_lo, rel_hi = lo - np.asarray(box.start), hi - np.asarray(box.start)
        piece = img[rel_lo[0]:rel_hi[0], rel_lo[1]:rel_hi[1], rel_lo[2]:rel_hi[2]]
        blank = not np.any(piece)
        if blank and piece.shape in background:  # same clipped shape, same bytes
            labels[int(code)] = background[piece.shape]
            continue
        data = codecs.encode(
            piece, scale["encoding"], block_size=scale.get("compressed_segmentation_block_size"),
            compression_params=vol.meta.compression_params(mip),
        )
        if spec.data_encoding != "raw":  # compress now: encoded chunks wait in memory for their shard
            data = compress(data, method=spec.data_encoding)
        if blank:
            background[piece.shape] = data
        labels[int(code)] = data
    return labels


def shard_files(url: str, info: dict, mip: int, labels: dict[int, bytes]) -> dict[str, bytes]:
    """{path: bytes} of the whole shards that these encoded (and compressed) chunks make up."""
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    from igneous_like.volume_io import open_volume

    scale = info["scales"][mip]
    spec = ShardingSpecification.from_dict({**scale["sharding"], "data_encoding": "raw"})  # already compressed
    reader = open_volume(url, info, mip).image.shard_reader(mip=mip)
    groups: dict[str, dict[int, bytes]] = {}
    for code, data in labels.items():
        groups.setdefault(reader.get_filename(code), {})[code] = data
    return {f"{scale['key']}/{name}": spec.synthesize_shard(group) for name, group in groups.items()}


def encode_shard(url: str, info: dict, mip: int, box: Box, img: np.ndarray) -> tuple[str, bytes]:
    """(file name, bytes) of the one shard whose chunks tile `box`."""
    ((name, data),) = shard_files(url, info, mip, encode_chunks(url, info, mip, box, img)).items()
    return name, data


def pyramid_sharding(size: Vec3, chunk: Vec3, task_chunks: Vec3, encoding: str) -> dict:
    """A spec whose shards tile a task's block at this mip (task_chunks chunks per axis).

    Shards are the blocks of chunks that share the high bits of the compressed Morton code,
    so their shape follows the code's round-robin bit order; take the most bits whose shape
    still fits in the task block, and enough shard bits to give every shard its own file."""
    from cloudvolume.datasource.precomputed.sharding import image_shard_shape_from_spec

    grid = [-(-s // c) for s, c in zip(size, chunk)]
    max_bits = sum(math.ceil(math.log2(g)) if g > 1 else 0 for g in grid)
    limit = np.asarray(task_chunks) * np.asarray(chunk)
    bits = 0
    while bits < max_bits:
        shape = image_shard_shape_from_spec({"preshift_bits": bits + 1, "minishard_bits": 0}, size, chunk)
        if np.any(np.asarray(shape) > limit):
            break
        bits += 1
    minishard = min(max(bits - 10, 0), 6)  # at most ~1000 chunks per minishard index
    return {
        "@type": "neuroglancer_uint64_sharded_v1",
        "hash": "identity",
        "preshift_bits": bits - minishard,
        "minishard_bits": minishard,
        "shard_bits": max_bits - bits,
        "minishard_index_encoding": "gzip",
        "data_encoding": "raw" if encoding in ("jpeg", "png", "jpegxl") else "gzip",
    }


def slab_depth(info: dict, mip: int, num_mips: int, factor: Vec3) -> int:
    """Depth (z, at mip) of slabs whose mips can be computed apart: with no z downsampling, one
    output chunk deep; otherwise the whole task."""
    if factor[2] != 1:
        return 0
    return math.lcm(layers.scale_chunk(info, mip)[2], *(layers.scale_chunk(info, mip + j)[2] for j in range(1, num_mips + 1)))


def write_sharded_pyramid(url: str, info: dict, mip: int, region: Box, factor: Vec3, num_mips: int,
                          method: str, sparse: bool, fill_missing: bool) -> None:
    """Build mips mip+1.. mip+num_mips of `region` and write their whole shards.

    With 2x2x1 downsampling the block is read and downsampled one z slab at a time; only the
    encoded chunks wait for their shard, so memory is one slab, not the task's whole block."""
    from cloudfiles import CloudFiles

    from igneous_like.grid import downsampled
    from igneous_like.pyramid import read_pyramid

    origin = layers.scale_bounds(info, mip).start
    depth = slab_depth(info, mip, num_mips, factor) or region.shape[2]
    encoded: dict[int, dict[int, bytes]] = {m: {} for m in range(mip + 1, mip + num_mips + 1)}
    for z in range(region.start[2], region.stop[2], depth):
        slab = Box((region.start[0], region.start[1], z), (region.stop[0], region.stop[1], min(z + depth, region.stop[2])))
        pyramid = read_pyramid(url, info, mip, slab, factor, num_mips, method, sparse, fill_missing)
        for level, img in enumerate(pyramid, 1):
            m = mip + level
            bounds = layers.scale_bounds(info, m)
            out = downsampled(slab, factor, level, origin, bounds.start).intersect(bounds)
            if not out.empty():
                sx, sy, sz = out.shape
                encoded[m].update(encode_chunks(url, info, m, out, img[:sx, :sy, :sz]))
        del pyramid
    cf = CloudFiles(url)
    for m, labels in encoded.items():
        if labels:
            _check_whole(info, m, region, factor, mip, origin)
            for name, data in shard_files(url, info, m, labels).items():
                cf.put(name, data, compress=None)


def _check_whole(info: dict, m: int, region: Box, factor: Vec3, mip: int, origin) -> None:
    """A task must cover whole shards: refuse to write one partially."""
    from igneous_like.grid import downsampled, grid_boxes

    bounds = layers.scale_bounds(info, m)
    out = downsampled(region, factor, m - mip, origin, bounds.start).intersect(bounds)
    shape = shard_shape(info["scales"][m]["sharding"], bounds.shape, layers.scale_chunk(info, m))
    for sbox in grid_boxes(out, shape, bounds.start):
        whole = Box(sbox.start, vec3(a + s for a, s in zip(sbox.start, shape))).intersect(bounds)
        if whole != sbox:
            raise RuntimeError(f"task block {region} would write part of shard {whole} at mip {m}")
