"""Annotation rows of a table: the column conventions, option parsing (--columns,
--property, --relationship), parsing and checking one batch of rows, and the check of a whole
table before anything is written (values, extent, property ranges and enum labels, segments;
duplicate ids are found later, partition by partition, by the import's counts phase).
Used by annotation import (import_table.py); errors are one-line UserErrors naming the row."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from igneous_like import annotations as ann
from igneous_like.errors import UserError
from igneous_like.formats import tables
from igneous_like.mapreduce import mix64
from igneous_like.progress import Progress

if TYPE_CHECKING:
    from igneous_like.ops.annotation.import_table import ImportJob

ROLES = {"point": ("x", "y", "z"), "line": ("x1", "y1", "z1", "x2", "y2", "z2"),
         "box": ("x1", "y1", "z1", "x2", "y2", "z2"), "ellipsoid": ("x", "y", "z", "rx", "ry", "rz")}


@dataclass
class Rows:
    """One batch of annotations, parsed and checked."""

    ids: np.ndarray
    numbers: np.ndarray  # each row's number in the whole table (0-based), for error messages
    geometry: np.ndarray  # (n, 3 or 6) float32
    values: list  # per property, in info order
    related: list  # per relationship, uint64 (0: none)
    lo: np.ndarray
    hi: np.ndarray


def parse_batch(job: ImportJob, batch, first_row: int, url: str, enums: bool = True) -> Rows:
    """Typed arrays of one RecordBatch; bad values are one-line errors naming row and column.
    Rows outside the bounds are dropped with --clip, refused without."""
    n = batch.num_rows
    cols = {name: batch.column(name) for name in batch.schema.names}
    roles = ROLES[job.kind]
    geometry = np.stack([_floats(cols[job.columns[r]], job.columns[r], first_row, url) for r in roles], axis=1)
    geometry = geometry.astype(np.float32)
    numbers = np.arange(first_row, first_row + n, dtype=np.uint64)
    if "id" in job.columns:
        ids = _no_nulls(cols[job.columns["id"]], job.columns["id"], first_row, url).astype(np.uint64)
    else:
        ids = numbers
    lo, hi = ann.extents(job.kind, geometry)
    inside = (lo >= np.asarray(job.lower)).all(axis=1) & (hi <= np.asarray(job.upper)).all(axis=1)
    if not inside.all() and not job.clip:
        i = int(np.flatnonzero(~inside)[0])
        raise UserError(f"{url} row {first_row + i + 1}: {geometry[i].tolist()} is outside the bounds "
                        f"{job.lower}-{job.upper}; pass --clip to drop such rows")
    values = [_property(p, cols[p["column"]], first_row, url, enums) for p in job.properties]
    related = [_segments(cols[c]) for _, c in job.relationships]
    if not inside.all():
        keep = np.flatnonzero(inside)
        ids, numbers, geometry, lo, hi = ids[keep], numbers[keep], geometry[keep], lo[keep], hi[keep]
        values = [v[keep] for v in values]
        related = [r[keep] for r in related]
    return Rows(ids, numbers, geometry, values, related, lo, hi)


def _segments(column) -> np.ndarray:
    """Related segment ids; an empty cell (or 0) means none."""
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(column, 0).to_numpy(zero_copy_only=False), dtype=np.uint64)


def _no_nulls(column, name: str, first_row: int, url: str) -> np.ndarray:
    if column.null_count:
        i = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise UserError(f"{url} row {first_row + i + 1}: column {name!r} is empty")
    return column.to_numpy(zero_copy_only=False)


def _floats(column, name: str, first_row: int, url: str) -> np.ndarray:
    values = _no_nulls(column, name, first_row, url).astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{url} row {first_row + i + 1}: column {name!r} is {values[i]}, not a finite number")
    return values


def _property(spec: dict, column, first_row: int, url: str, enums: bool) -> np.ndarray:
    """A property column as its spec type: numbers range-checked, enum labels as their values,
    rgb(a) from #rrggbb(aa) strings."""
    name = spec["column"]
    if spec["source"] == "enum":
        labels = _no_nulls(column, name, first_row, url).astype(str)
        if not enums:
            return labels
        index = {label: v for label, v in zip(spec["enum_labels"], spec["enum_values"])}
        return np.array([index[label] for label in labels.tolist()], dtype=ann.PROPERTY_TYPES[spec["type"]])
    if spec["source"] == "rgb":
        width = 3 if spec["type"] == "rgb" else 4
        text = _no_nulls(column, name, first_row, url).astype(str)
        try:
            return np.array([[int(s.lstrip("#")[2 * k:2 * k + 2], 16) for k in range(width)] if len(s.lstrip("#")) == 2 * width
                             else [int("x")] for s in text.tolist()], dtype=np.uint8)
        except ValueError:
            raise UserError(f"{url}: column {name!r} ({spec['type']}) needs #{'rr gg bb aa'[:3 * width - 1].replace(' ', '')} "
                            "hex colours") from None
    values = _floats(column, name, first_row, url)
    if spec["type"] == "auto":  # the scan: the type is chosen from the range it finds
        return values
    dtype = np.dtype(ann.PROPERTY_TYPES[spec["type"]])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        bad = (values < info.min) | (values > info.max) | (values != np.round(values))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"{url} row {first_row + i + 1}: property {spec['id']!r} value {values[i]} does not fit {spec['type']}")
    return values.astype(dtype)


def parse_columns(text: str | None, kind: str) -> dict:
    """--columns x=cx,y=cy: role -> column, defaults the conventional names."""
    columns = {r: r for r in ROLES[kind]}
    for item in filter(None, (text or "").split(",")):
        role, sep, col = item.partition("=")
        if not sep or role.strip() not in (*ROLES[kind], "id"):
            raise UserError(f"--columns {item!r}: expected ROLE=COLUMN with ROLE one of {', '.join((*ROLES[kind], 'id'))}")
        columns[role.strip()] = col.strip()
    return columns


def parse_property(text: str) -> dict:
    """--property NAME:TYPE[:COLUMN] -> a property spec (enum values filled by the scan)."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise UserError(f"--property {text!r}: expected NAME:TYPE or NAME:TYPE:COLUMN")
    name, ptype = parts[0], parts[1]
    if not ann.PROPERTY_ID.match(name):
        raise UserError(f"--property {text!r}: the name must match ^[a-z][a-zA-Z0-9_]*$ (Neuroglancer's rule)")
    allowed = (*ann.PROPERTY_TYPES, "enum")
    if ptype not in allowed:
        raise UserError(f"--property {text!r}: type {ptype!r} is not one the annotation spec allows "
                        f"({', '.join(allowed)})")
    source = "enum" if ptype == "enum" else "rgb" if ptype in ("rgb", "rgba") else "number"
    return {"id": name, "type": ptype, "column": parts[2] if len(parts) == 3 else name, "source": source}


def parse_relationship(text: str) -> list[str]:
    name, sep, col = text.partition(":")
    if not sep or not name or not col:
        raise UserError(f"--relationship {text!r}: expected NAME:COLUMN")
    return [name, col]


@dataclass
class Scan:
    """What one pass over the table found."""

    rows: list  # per file: (rows, number of its first row in the table)
    pieces: list = field(default_factory=list)  # per file: int64 (k, 3) of piece lo, hi, rows
    count: int = 0
    lo: np.ndarray = field(default_factory=lambda: np.full(3, np.inf))
    hi: np.ndarray = field(default_factory=lambda: np.full(3, -np.inf))
    span: np.ndarray = field(default_factory=lambda: np.zeros(3))
    ranges: dict = field(default_factory=dict)


def scan_rows(job: ImportJob) -> Scan:
    """One streaming pass: every row parsed and checked; the row count; the data's extent;
    per property its value range or labels; per relationship the number of distinct segments
    (a bounded sketch). Ids are not kept: duplicates are found by the partitioned counts
    phase, so no process holds every id."""
    scan = Scan(rows=[])
    segments = [DistinctCount() for _ in job.relationships]
    ranges: dict = {p["id"]: set() if p["source"] == "enum" else [np.inf, -np.inf] for p in job.properties}
    types = job.read_types()
    first = 0
    with Progress("Checking the table (row batches)", None) as progress:
        for entry in job.files:
            first = _scan_file(job, entry[0], entry[1], types, first, scan, segments, ranges, progress)
    scan.ranges = {**ranges, **{f"rel:{name}": s.count() for (name, _), s in zip(job.relationships, segments)}}
    return scan


def _scan_file(job: ImportJob, url: str, fmt: str, types: dict, first: int, scan: Scan, segments: list,
               ranges: dict, progress: Progress) -> int:
    """Check one file's rows into `scan`; returns the next file's first row number."""
    n = 0
    found = []
    for lo, hi, got in tables.pieces(url, fmt, types):
        found.append([lo, hi, sum(b.num_rows for b in got)])
        for batch in got:
            _scan_batch(job, parse_batch(job, batch, first + n, url, enums=False), scan, segments, ranges)
            n += batch.num_rows
            progress.update()
    scan.rows.append((n, first))
    scan.pieces.append(np.array(found, dtype=np.int64).reshape(-1, 3))
    return first + n


def _scan_batch(job: ImportJob, rows: Rows, scan: Scan, segments: list, ranges: dict) -> None:
    """Fold one checked batch into the scan: count, segments, extent, property ranges."""
    scan.count += len(rows.ids)
    for seg, col in zip(segments, rows.related):
        seg.add(col[col != 0])
    if len(rows.ids):
        scan.lo = np.minimum(scan.lo, rows.lo.min(axis=0))
        scan.hi = np.maximum(scan.hi, rows.hi.max(axis=0))
        scan.span = np.maximum(scan.span, (rows.hi - rows.lo).max(axis=0))
    for p, v in zip(job.properties, rows.values):
        r = ranges[p["id"]]
        if isinstance(r, set):
            r.update(np.unique(v).tolist())
        elif len(v) and v.ndim == 1:
            r[0], r[1] = min(r[0], float(v.min())), max(r[1], float(v.max()))


class DistinctCount:
    """The number of distinct uint64 keys of a stream in bounded memory: exact up to KEEP
    keys, beyond that the k-minimum-values estimate from the KEEP smallest splitmix64 hashes
    (relative error about 1/sqrt(KEEP)); enough to size a relationship index's shards.
    Hashes are folded KEEP at a time (one sort: np.union1d per batch costs 40 ms)."""

    KEEP = 1 << 16

    def __init__(self) -> None:
        self.smallest = np.zeros(0, np.uint64)
        self.pending: list[np.ndarray] = []
        self.waiting = 0
        self.truncated = False

    def add(self, keys: np.ndarray) -> None:
        self.pending.append(mix64(keys))  # a bijection: distinct keys, distinct hashes
        self.waiting += len(keys)
        if self.waiting >= self.KEEP:
            self._fold()

    def _fold(self) -> None:
        merged = np.sort(np.concatenate([self.smallest, *self.pending]))
        merged = merged[np.concatenate([[True], merged[1:] != merged[:-1]])] if len(merged) else merged
        if len(merged) > self.KEEP:
            merged, self.truncated = merged[:self.KEEP], True
        self.smallest, self.pending, self.waiting = merged, [], 0

    def count(self) -> int:
        self._fold()
        if not self.truncated:
            return len(self.smallest)
        return int((self.KEEP - 1) / (float(self.smallest[-1]) / 2.0**64))


def settle_type(spec: dict, found) -> dict:
    """Enum labels (sorted) as the smallest unsigned type; `auto` numbers as the smallest of
    uint32/int32 that holds them, else float32."""
    spec = dict(spec)
    if spec["source"] == "enum":
        labels = sorted(found)
        spec["type"] = "uint8" if len(labels) <= 256 else "uint16" if len(labels) <= 65536 else "uint32"
        spec["enum_labels"], spec["enum_values"] = labels, list(range(len(labels)))
    elif spec["type"] == "auto":
        lo, hi = found
        whole = spec.pop("integers", True)
        spec["type"] = ("uint32" if lo >= 0 and hi < 2**32 else "int32" if -2**31 <= lo and hi < 2**31 else "float32") \
            if whole else "float32"
    return spec


def concat_rows(parts: list[Rows]) -> Rows:
    def cat(arrays):
        return np.concatenate(arrays)

    return Rows(cat([p.ids for p in parts]), cat([p.numbers for p in parts]), cat([p.geometry for p in parts]),
                [cat([p.values[i] for p in parts]) for i in range(len(parts[0].values))],
                [cat([p.related[i] for p in parts]) for i in range(len(parts[0].related))],
                cat([p.lo for p in parts]), cat([p.hi for p in parts]))
