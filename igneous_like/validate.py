"""One validation layer: the ranges of every numeric and enumerated option (declared once, as
click types), encoding levels per encoding, and the shape of info files.

Everything here runs before a command writes anything; a refusal is a UserError (one line)."""
from __future__ import annotations

import math
import numbers
from typing import Any

import click

from igneous_like.errors import UserError

# ---------------------------------------------------------------- option ranges

NONNEG_INT = click.IntRange(min=0)
POSITIVE_INT = click.IntRange(min=1)
NONNEG_FLOAT = click.FloatRange(min=0)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)
FILL_HOLES = click.IntRange(0, 3)
DRACO_LEVEL = click.IntRange(0, 10)
MAGNITUDE = click.IntRange(1, 6)  # work split into up to 10^magnitude tasks by label digits
TASK_COUNT = click.IntRange(min=-1)  # -1: no limit
RUN_SECONDS = click.FloatRange(min=-1)  # -1: forever


class IntChoice(click.ParamType):
    """An integer from a fixed set, e.g. Draco's vertex quantization bits 10 or 16."""

    name = "INT"

    def __init__(self, *choices: int):
        self.choices = choices

    def convert(self, value, param, ctx):
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not an integer", param, ctx)
        if number not in self.choices:
            self.fail(f"{number} is not one of {', '.join(map(str, self.choices))}", param, ctx)
        return number


VQB = IntChoice(10, 16)

# quality or level an encoding takes, and its range (fpzip: bits of precision, 0 lossless)
ENCODING_LEVELS = {
    "jpeg": ("quality", 0, 100),
    "jpegxl": ("quality", 0, 100),
    "png": ("compression level", 0, 9),
    "fpzip": ("precision", 0, 64),
}


def check_encoding_level(encoding: str, level: int | None, dtype: str) -> None:
    """Refuse a level the encoding does not take, or one outside its range."""
    if level is None:
        return
    if encoding not in ENCODING_LEVELS:
        takes = ", ".join(ENCODING_LEVELS)
        raise UserError(f"--encoding-level {level} has no meaning for {encoding} (only {takes} take a level)")
    what, low, high = ENCODING_LEVELS[encoding]
    if encoding == "fpzip":
        import numpy as np

        high = 8 * np.dtype(dtype).itemsize
    if not low <= level <= high:
        raise UserError(f"--encoding-level {level} is out of range: {encoding} {what} must be {low} to {high}")


def check_fits_dtype(value: int, dtype: str, name: str) -> None:
    """An option holding a voxel value (e.g. --bg-color) must be representable in the layer's dtype."""
    import numpy as np

    kind = np.dtype(dtype)
    limits = np.iinfo(kind) if kind.kind in "iu" else np.finfo(kind)
    if not limits.min <= value <= limits.max:
        raise UserError(f"{name} {value} does not fit the layer's {dtype} values ({limits.min} to {limits.max})")


# ---------------------------------------------------------------- info files

INTS = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")
FLOATS = ("float32", "float64")


def check_info(info: Any, url: str, encodings: dict[str, tuple[str, ...]]) -> None:
    """A layer's info: known type and dtype, channels >= 1, and every scale well formed, in an
    encoding that can hold the dtype (`encodings`: encoding -> dtypes it takes)."""
    where = f"malformed info file at {url}/info"
    if not isinstance(info, dict):
        raise UserError(f"{where}: expected a JSON object")
    for key in ("type", "data_type", "num_channels", "scales"):
        if key not in info:
            raise UserError(f"{where}: missing {key!r}")
    if info["type"] not in ("image", "segmentation"):
        raise UserError(f"{where}: type must be 'image' or 'segmentation', not {info['type']!r}")
    if info["data_type"] not in INTS + FLOATS:
        raise UserError(f"{where}: unsupported data_type {info['data_type']!r}")
    if not _is_int(info["num_channels"]) or info["num_channels"] < 1:
        raise UserError(f"{where}: num_channels must be a whole number of at least 1, not {info['num_channels']!r}")
    if not isinstance(info["scales"], list) or not info["scales"]:
        raise UserError(f"{where}: 'scales' must be a non-empty list")
    for i, scale in enumerate(info["scales"]):
        _check_scale(scale, f"{where}: scale {i}", info["data_type"], encodings)


def _check_scale(scale: Any, where: str, dtype: str, encodings: dict[str, tuple[str, ...]]) -> None:
    from igneous_like.layers import SCALE_KEYS

    if not isinstance(scale, dict):
        raise UserError(f"{where} is not a JSON object")
    missing = [k for k in SCALE_KEYS if k not in scale]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")
    if not isinstance(scale["key"], str) or not scale["key"].strip("/"):
        raise UserError(f"{where} key must be a non-empty path")
    _vector(scale["size"], f"{where} size", integer=True, positive=True)
    _vector(scale["resolution"], f"{where} resolution", integer=False, positive=True)
    _vector(scale["voxel_offset"], f"{where} voxel_offset", integer=True, positive=False)
    chunks = scale["chunk_sizes"]
    if not isinstance(chunks, list) or not chunks:
        raise UserError(f"{where} chunk_sizes must be a non-empty list")
    for chunk in chunks:
        _vector(chunk, f"{where} chunk_sizes", integer=True, positive=True)
    if scale["encoding"] not in encodings:
        raise UserError(f"{where} has unknown encoding {scale['encoding']!r}")
    if dtype not in encodings[scale["encoding"]]:
        raise UserError(f"{where} encoding {scale['encoding']} cannot hold {dtype} data")
    if scale.get("sharding") is not None:
        _check_sharding(scale["sharding"], f"{where} sharding")
    block = scale.get("compressed_segmentation_block_size")
    if scale["encoding"] == "compressed_segmentation" and block is not None:
        _vector(block, f"{where} compressed_segmentation_block_size", integer=True, positive=True)


def _check_sharding(spec: Any, where: str) -> None:
    """The fields of a neuroglancer_uint64_sharded_v1 spec that shard readers depend on."""
    ok = isinstance(spec, dict) and spec.get("@type") == "neuroglancer_uint64_sharded_v1"
    ok = ok and all(_is_int(spec.get(k)) and 0 <= spec[k] <= 64 for k in ("preshift_bits", "minishard_bits", "shard_bits"))
    ok = ok and spec.get("hash") in ("identity", "murmurhash3_x86_128")
    ok = ok and all(spec.get(k, "raw") in ("raw", "gzip") for k in ("minishard_index_encoding", "data_encoding"))
    if not ok:
        raise UserError(f"{where} is not a valid neuroglancer_uint64_sharded_v1 spec: {spec!r}")


def _vector(value: Any, what: str, integer: bool, positive: bool) -> None:
    ok = isinstance(value, list) and len(value) == 3 and all(
        (_is_int(v) if integer else _is_number(v)) and (v > 0 if positive else True) for v in value
    )
    if not ok:
        kind = ("positive " if positive else "") + ("whole numbers" if integer else "numbers")
        raise UserError(f"{what} must have 3 values, all {kind}; got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
