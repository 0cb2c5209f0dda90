"""Layer URLs, info validation, encodings and scale helpers that cloud-volume does not give.

Everything here raises UserError with a one-line message naming the problem and the fix.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

from igneous_like.errors import UserError
from igneous_like.grid import Box, Vec3, vec3
from igneous_like.validate import FLOATS as _FLOATS, INTS as _INTS

ENCODING_ALIASES = {
    "raw": "raw",
    "png": "png",
    "jpeg": "jpeg",
    "jpg": "jpeg",
    "jpegxl": "jpegxl",
    "jxl": "jpegxl",
    "compressed_segmentation": "compressed_segmentation",
    "cseg": "compressed_segmentation",
    "compresso": "compresso",
    "cpso": "compresso",
    "crackle": "crackle",
    "ckl": "crackle",
    "fpzip": "fpzip",
    "kempressed": "kempressed",
    "zfpc": "zfpc",
}

ENCODING_DTYPES = {
    "raw": _INTS + _FLOATS,
    "png": ("uint8", "uint16"),
    "jpeg": ("uint8",),
    "jpegxl": ("uint8",),
    "compressed_segmentation": ("uint32", "uint64"),
    "compresso": ("uint8", "uint16", "uint32", "uint64"),
    "crackle": _INTS,
    "fpzip": _FLOATS,
    "kempressed": _FLOATS,
    "zfpc": _FLOATS,
}

# module that cloud-volume needs for each encoding, and the package that provides it
CODEC_MODULES = {
    "png": ("pyspng", "pyspng-seunglab"),
    "jpeg": ("simplejpeg", "simplejpeg"),
    "jpegxl": ("imagecodecs", "imagecodecs"),
    "compressed_segmentation": ("compressed_segmentation", "compressed-segmentation"),
    "compresso": ("compresso", "compresso"),
    "crackle": ("crackle", "crackle-codec"),
    "fpzip": ("fpzip", "fpzip"),
    "kempressed": ("fpzip", "fpzip"),
    "zfpc": ("zfpc", "zfpc"),
}

COMPRESSIONS = {"none": False, "false": False, "gzip": "gzip", "br": "br", "zstd": "zstd"}
SCALE_KEYS = ("key", "size", "resolution", "voxel_offset", "chunk_sizes", "encoding")


def normalize_url(path: str) -> str:
    """A bare path means file://; other URLs must parse as cloud-files and cloud-volume parse them."""
    from igneous_like.urls import normalize_url as parse

    return parse(path)


def local_path(url: str) -> str | None:
    return url[len("file://") :] if url.startswith("file://") else None


def read_info(url: str, check: bool = True) -> dict[str, Any]:
    """Read and (unless check=False, for tools that repair a broken info) validate a layer's info."""
    from cloudfiles import CloudFiles

    try:
        raw = CloudFiles(url).get("info")
    except Exception as exc:  # unreachable bucket, bad credentials
        raise UserError(f"cannot read {url}/info: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if raw is None:
        raise UserError(f"no layer at {url}: the info file is missing (check the path)")
    try:
        info = json.loads(raw)
    except ValueError as exc:
        raise UserError(f"malformed info file at {url}/info: {exc}") from None
    if check:
        check_info(info, url)
    return info


def check_info(info: Any, url: str) -> None:
    """Refuse an info file that cloud-volume or a task would choke on (see validate.check_info)."""
    from igneous_like import validate

    validate.check_info(info, url, ENCODING_DTYPES)


def check_mip(info: dict, mip: int, url: str) -> None:
    n = len(info["scales"])
    if not 0 <= mip < n:
        raise UserError(f"mip {mip} is out of range for {url}: it has mips 0 to {n - 1}")


def scale_bounds(info: dict, mip: int) -> Box:
    scale = info["scales"][mip]
    off = vec3(scale["voxel_offset"])
    return Box(off, vec3(o + s for o, s in zip(off, scale["size"])))


def scale_chunk(info: dict, mip: int) -> Vec3:
    return vec3(info["scales"][mip]["chunk_sizes"][0])


def is_sharded(info: dict, mip: int) -> bool:
    return "sharding" in info["scales"][mip] and info["scales"][mip]["sharding"] is not None


def normalize_encoding(encoding: str | None, dtype: str, layer_type: str) -> str | None:
    """Map aliases to cloud-volume names and refuse encodings invalid for the dtype."""
    if encoding is None or encoding == "auto":
        return None
    enc = ENCODING_ALIASES.get(encoding.lower())
    if enc is None:
        names = ", ".join(sorted(set(ENCODING_ALIASES.values())))
        raise UserError(f"unknown encoding {encoding!r}: choose one of {names}")
    if dtype not in ENCODING_DTYPES[enc]:
        ok = ", ".join(ENCODING_DTYPES[enc])
        raise UserError(f"encoding {enc} cannot store {dtype} data (it takes {ok})")
    missing = missing_codec(enc)
    if missing:
        raise UserError(f"encoding {enc} needs an optional codec that is not installed: pip install {missing}")
    return enc


def normalize_compress(compress: str | None, url: str) -> Any:
    """cloud-volume's compress argument. On file:// the default is none, so file names stay
    plain (a gzipped file gets a .gz suffix there, which HTTP viewers never ask for)."""
    if compress is None:
        return False if url.startswith(("file://", "mem://")) else None
    value = COMPRESSIONS.get(str(compress).lower())
    if value is None and str(compress).lower() not in COMPRESSIONS:
        raise UserError(f"unknown compression {compress!r}: choose none, gzip, br or zstd")
    return value


def missing_codec(encoding: str) -> str | None:
    """The pip package to install for an encoding whose codec is absent (checked without
    importing it, to keep planning fast)."""
    import importlib.util

    module, package = CODEC_MODULES.get(encoding, (None, None))
    if module and importlib.util.find_spec(module) is None:
        return package
    return None


def check_chunk_size(chunk: Vec3 | None) -> Vec3 | None:
    if chunk is None:
        return None
    if any(c <= 0 for c in chunk):
        raise UserError(f"chunk size must be positive in every axis, got {','.join(map(str, chunk))}")
    return chunk


def check_writable(url: str) -> None:
    """Fail early when a file:// destination cannot be written."""
    path = local_path(url)
    if path is None:
        return
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"destination {url} is not writable ({probe} is read-only or not a directory)")


def write_info(url: str, info: dict) -> None:
    from cloudfiles import CloudFiles

    CloudFiles(url).put_json("info", info, cache_control="no-cache")


def bounds_from_ranges(full: Box, xrange, yrange, zrange, url: str, mip: int) -> Box:
    """The box named by --xrange/--yrange/--zrange (default: whole volume), checked against it."""
    start, stop = list(full.start), list(full.stop)
    for axis, (name, rng) in enumerate((("x", xrange), ("y", yrange), ("z", zrange))):
        if rng is None:
            continue
        a, b = rng
        if a >= b:
            raise UserError(f"--{name}range {a},{b} is empty: the start must be below the end")
        if a < full.start[axis] or b > full.stop[axis]:
            raise UserError(
                f"--{name}range {a},{b} lies outside {url} at mip {mip}: "
                f"{name} spans {full.start[axis]},{full.stop[axis]}"
            )
        start[axis], stop[axis] = a, b
    return Box(vec3(start), vec3(stop))


def make_scale(
    base: dict, factor: Vec3, chunk: Vec3, encoding: str | None, encoding_level: int | None
) -> dict:
    """A new scale `factor` coarser than `base` (offset floors, size ceils, as cloud-volume does)."""
    res = [r * f for r, f in zip(base["resolution"], factor)]
    res = [int(r) if float(r).is_integer() else r for r in res]
    encoding = encoding or base["encoding"]
    scale = {
        "key": "_".join(str(r) for r in res),
        "resolution": res,
        "voxel_offset": [o // f for o, f in zip(base["voxel_offset"], factor)],
        "size": [-(-s // f) for s, f in zip(base["size"], factor)],
        "chunk_sizes": [list(chunk)],
        "encoding": encoding,
    }
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = base.get("compressed_segmentation_block_size", [8, 8, 8])
    level_key = {"jpeg": "jpeg_quality", "jpegxl": "jxl_quality", "png": "png_level", "fpzip": "fpzip_precision"}
    if encoding_level is not None and encoding in level_key:
        scale[level_key[encoding]] = int(encoding_level)
    return scale


def put_scale(info: dict, index: int, scale: dict) -> None:
    """Place scale at index (replacing one of the same resolution, appending the next one)."""
    scales = info["scales"]
    if index < len(scales):
        if scales[index]["resolution"] != scale["resolution"]:
            raise UserError(
                f"mip {index} already exists with resolution {scales[index]['resolution']}, "
                f"not {scale['resolution']}: pick a --factor that matches the existing pyramid"
            )
        if scales[index].get("sharding") and not scale.get("sharding"):
            raise UserError(
                f"mip {index} already exists as a sharded scale: delete it first (image rm --mip {index}) "
                "to rebuild it unsharded"
            )
        scales[index] = scale
    elif index == len(scales):
        scales.append(scale)
    else:
        raise UserError(f"cannot add mip {index}: the layer has only {len(scales)} mips")


def add_mip_scales(info: dict, mip: int, num_mips: int, factor: Vec3, chunk: Vec3,
                   encoding: str | None = None, encoding_level: int | None = None) -> None:
    """Put into info the `num_mips` scales above `mip`, each `factor` coarser than the one below,
    with chunks `chunk` (encoding: mip's unless given)."""
    base = info["scales"][mip]
    for level in range(1, num_mips + 1):
        scale = make_scale(base, vec3(f**level for f in factor), chunk, encoding, encoding_level)
        put_scale(info, mip + level, scale)


def chunk_names(key: str, box: Box, bounds: Box, chunk: Vec3) -> Iterator[str]:
    """File names of the chunks (on the grid anchored at bounds.start) that box touches."""
    ranges = []
    for a, b, lo, hi, c in zip(box.start, box.stop, bounds.start, bounds.stop, chunk):
        first = lo + ((max(a, lo) - lo) // c) * c
        ranges.append([(s, min(s + c, hi)) for s in range(first, min(b, hi), c)])
    for z0, z1 in ranges[2]:
        for y0, y1 in ranges[1]:
            for x0, x1 in ranges[0]:
                yield f"{key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"
