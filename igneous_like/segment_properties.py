"""Neuroglancer segment properties (inline format) from a table of per-label numbers.

Spec: neuroglancer src/datasource/precomputed/segment_properties.md. Numbers may only be
(u)int8/16/32 or float32, so each column takes the 32-bit integer type that holds it, else
float32 (and its description says so when a count or coordinate lost integer precision). A
float column whose values are all whole numbers that fit (volumes and areas at integer
resolutions) is written as integers too: the same numbers, exactly, and integers are ~3x
faster to format than float32's shortest form, and shorter.
Values are written without NaN or infinity: the file is strict JSON."""
from __future__ import annotations

import json

import numpy as np

from igneous_like.mapreduce import Table

INTEGER_TYPES = ("uint32", "int32")
DESCRIPTIONS = {
    "voxel_count": "voxels",
    "volume_nm3": "volume (nm^3)",
    "surface_area_nm2": "voxel-face surface area (nm^2)",
    "axis_major_nm": "major axis of the equivalent ellipsoid (nm)",
    "axis_minor_nm": "minor axis of the equivalent ellipsoid (nm)",
}


def select(table: Table, top: int | None, min_voxels: int | None) -> np.ndarray:
    """Row indices to publish: at least min_voxels, then the `top` largest (ties by label),
    returned in label order."""
    rows = np.arange(len(table["label"]))
    if min_voxels:
        rows = rows[table["voxel_count"][rows] >= min_voxels]
    if top is not None and len(rows) > top:
        order = np.lexsort((table["label"][rows], -table["voxel_count"][rows].astype(np.float64)))
        rows = np.sort(rows[order[:top]])
    return rows


def number_type(values: np.ndarray) -> str:
    """The spec's data_type for a column: uint32/int32 when its values are integers (or whole
    floats) that fit, else float32."""
    integers = values.dtype.kind in "ui"
    if not len(values):
        return "uint32" if integers else "float32"
    if not integers and not _whole(values):
        return "float32"
    lo, hi = values.min().item(), values.max().item()  # Python ints, or whole floats: compared exactly
    if 0 <= lo and hi < 2**32:
        return "uint32"
    if -(2**31) <= lo and hi < 2**31:
        return "int32"
    return "float32"


def _whole(values: np.ndarray) -> bool:
    """Every value finite and a whole number (chunked: no full-size temporaries)."""
    step = 1 << 20
    for i in range(0, len(values), step):
        part = values[i:i + step]
        if not np.isfinite(part).all() or not (np.trunc(part) == part).all():
            return False
    return True


def _dumps(values: np.ndarray) -> bytes:
    """A JSON array of a numeric column, formatted by orjson in Rust (shortest round-trip repr
    for float32): millions of values in a fraction of a second, no Python object per value."""
    import orjson

    return orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY)


def _json_numbers(values: np.ndarray, data_type: str) -> bytes:
    if data_type != "float32":  # integers (or whole floats) that fit: written as integers
        return _dumps(values if values.dtype.kind in "ui" else values.astype(data_type))
    with np.errstate(over="ignore"):
        single = values.astype(np.float32)
    if not np.isfinite(single).all():  # strict JSON: NaN as 0, beyond float32 as its limits
        big = float(np.finfo(np.float32).max)
        single = np.nan_to_num(single, nan=0.0, posinf=big, neginf=-big)
    return _dumps(single)


def _json_ids(ids: np.ndarray) -> bytes:
    """Ids are JSON strings (uint64 does not fit a JSON number): quote orjson's integers."""
    return b'["' + _dumps(ids.astype(np.uint64))[1:-1].replace(b",", b'","') + b'"]' if len(ids) else b"[]"


def _json_tags(flags: np.ndarray) -> bytes:
    """Per id, the increasing indices of its tags."""
    if flags.shape[1] == 1:  # one tag: 0/1 digits become [] / [0]
        return _dumps(flags[:, 0].astype(np.uint8)).replace(b"0", b"[]").replace(b"1", b"[0]")
    return json.dumps([[i for i in range(flags.shape[1]) if row[i]] for row in flags.tolist()]).encode()


def _description(name: str, values: np.ndarray, data_type: str) -> str:
    text = DESCRIPTIONS.get(name, name.replace("_", " "))
    if values.dtype.kind in "ui" and data_type == "float32":
        text += " (stored as float32: some values exceed 32-bit integers)"
    return text


def encode(table: Table, rows: np.ndarray, number_columns: list[str], tag_columns: list[str]) -> bytes:
    """encode_pieces' bytes, joined."""
    return b"".join(encode_pieces(table, rows, number_columns, tag_columns))


def encode_pieces(table: Table, rows: np.ndarray, number_columns: list[str], tag_columns: list[str]) -> list[bytes]:
    """The segment_properties/info bytes for `rows` of the table, as pieces to concatenate. Built column by column as
    text, so a million segments need no million-element Python structures at once. Consumes
    the table: each column is released once written, so the text grows as the columns go (4M
    labels: the table is ~500 MB, the text ~280 MB; held together they set the reduce's peak)."""
    whole = len(rows) == len(table["label"])  # `rows` are sorted and unique: all of them, in order
    pick = (lambda values: values) if whole else (lambda values: values[rows])  # noqa: E731
    # pieces, not a growing BytesIO that re-allocates and copies as it grows (4M labels: ~0.5 s
    # more CPU, most of it system time for fresh pages); storage.put_pieces writes them
    out = [b'{"@type":"neuroglancer_segment_properties","inline":{"ids":', _json_ids(pick(table.pop("label"))),
           b',"properties":[']
    written = 0

    def prop(head: dict, values: bytes) -> None:  # {head..., "values": values}
        nonlocal written
        out.append((b"," if written else b"") + json.dumps(head)[:-1].encode() + b',"values":')
        out.append(values)
        out.append(b"}")
        written += 1

    for name in number_columns:
        values = pick(table.pop(name))
        dtype = number_type(values)
        prop({"id": name, "type": "number", "data_type": dtype, "description": _description(name, values, dtype)},
             _json_numbers(values, dtype))
        del values
    if tag_columns:
        flags = np.stack([pick(table.pop(c)).astype(bool) for c in tag_columns], axis=1)
        prop({"id": "tags", "type": "tags", "tags": tag_columns,
              "tag_descriptions": [c.replace("_", " ") for c in tag_columns]}, _json_tags(flags))
    out.append(b"]}}")
    return out
