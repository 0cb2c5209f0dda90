"""Neuroglancer precomputed annotations, as google/neuroglancer's
src/datasource/precomputed/annotations.md defines them: record encoding, the info, the levels
of the spatial index with their deterministic sampling, and uint64 indexes (plain or sharded).

No I/O beyond `write_uint64_index`; the import operation (ops/annotation/import_table.py)
decides what runs where.

Sampling: each annotation has a priority, a bijective 64-bit mix of its id (so ties never
happen and re-runs pick the same annotations). Level L has a threshold t_L (a fraction of the
priority range) that grows by limit / maxCount(L) per level, maxCount(L) being the most
annotations any level-L cell intersects: every level is the same uniform subsample everywhere.
In each cell the remaining annotations under t_L are emitted in priority order, at most `limit`
(the spec's sampling may overshoot; this one never does); the rest stay for the children."""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np

from igneous_like.mapreduce import mix64

KINDS = {  # --type -> (info annotation_type, float32 values per annotation)
    "point": ("POINT", 3),
    "line": ("LINE", 6),
    "box": ("AXIS_ALIGNED_BOUNDING_BOX", 6),
    "ellipsoid": ("ELLIPSOID", 6),
}
PROPERTY_TYPES = {"uint32": "<u4", "int32": "<i4", "float32": "<f4", "uint16": "<u2", "int16": "<i2",
                  "uint8": "u1", "int8": "i1", "rgb": ("u1", 3), "rgba": ("u1", 4)}
PROPERTY_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
MAX_LEVELS = 20  # 2^20 cells along the longest axis: morton codes fit 64 bits with the level
LEVEL_SHIFT = 59  # count keys: level << 59 | compressed morton code
SHARD_ABOVE = 4096  # keys in a uint64 index beyond which it is sharded
FULL = np.uint64(2**64 - 1)


def property_group(ptype: str) -> int:
    """The spec's order: 4-byte types, then 2-byte, then 1-byte (uint8, int8, rgb, rgba)."""
    return {4: 0, 2: 1}.get(np.dtype(PROPERTY_TYPES[ptype] if ptype not in ("rgb", "rgba") else "u1").itemsize, 2)


def encoded_order(properties: list[dict]) -> list[int]:
    """Indexes of the info's properties in encoding order (stable within a size group)."""
    return sorted(range(len(properties)), key=lambda i: property_group(properties[i]["type"]))


def record_dtype(kind: str, properties: list[dict]) -> np.dtype:
    """One annotation's geometry and properties, padded to a multiple of 4 bytes."""
    fields: list = [("geometry", "<f4", (KINDS[kind][1],))]
    for i in encoded_order(properties):
        t = PROPERTY_TYPES[properties[i]["type"]]
        fields.append((f"p{i}", *t) if isinstance(t, tuple) else (f"p{i}", t))
    size = np.dtype(fields).itemsize
    if size % 4:
        fields.append(("padding", "u1", (4 - size % 4,)))
    return np.dtype(fields)


def encode_records(kind: str, properties: list[dict], geometry: np.ndarray, values: list[np.ndarray]) -> np.ndarray:
    """Structured records (geometry float32, properties in encoding order, zero padding)."""
    out = np.zeros(len(geometry), dtype=record_dtype(kind, properties))
    out["geometry"] = geometry
    for i, col in enumerate(values):
        out[f"p{i}"] = col
    return out


def relationship_bytes(related: list[np.ndarray]) -> list[bytes]:
    """Per annotation, the by_id tail: for each relationship a uint32 count and the uint64 ids
    (0 means no related segment)."""
    n = len(related[0]) if related else 0
    tails = [b""] * n
    one, none = (1).to_bytes(4, "little"), (0).to_bytes(4, "little")
    for col in related:  # Python ints: about 10x faster than numpy scalars' tobytes per row
        tails = [t + (one + seg.to_bytes(8, "little") if seg else none) for t, seg in zip(tails, col.tolist())]
    return tails


def encode_list(records: list[bytes] | np.ndarray, ids: np.ndarray) -> bytes:
    """The multiple-annotation encoding: uint64 count, the records, then the uint64 ids."""
    ids = np.asarray(ids, dtype="<u8")
    body = records.tobytes() if isinstance(records, np.ndarray) else b"".join(records)
    return np.uint64(len(ids)).astype("<u8").tobytes() + body + ids.tobytes()


def priority(ids: np.ndarray) -> np.ndarray:
    """A bijective mix of each id: the sampling order, unique per annotation."""
    with np.errstate(over="ignore"):
        return mix64(np.asarray(ids, dtype=np.uint64) ^ np.uint64(0x5DEECE66D))


def threshold_value(fraction: float) -> np.uint64:
    """Priorities below this value are candidates (fraction 1: every annotation)."""
    return FULL if fraction >= 1 else np.uint64(int(fraction * 2**64))


def extents(kind: str, geometry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each annotation's bounding box (low, high), as float64 of its float32 geometry."""
    g = np.asarray(geometry, dtype=np.float32).astype(np.float64)
    if kind == "point":
        return g, g
    if kind == "ellipsoid":
        return g[:, :3] - np.abs(g[:, 3:]), g[:, :3] + np.abs(g[:, 3:])
    return np.minimum(g[:, :3], g[:, 3:]), np.maximum(g[:, :3], g[:, 3:])


@dataclass(frozen=True)
class Level:
    """One spatial index level: 2^bits cells per axis of size chunk."""

    bits: tuple[int, int, int]
    chunk: tuple[float, float, float]

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(2**b for b in self.bits)  # type: ignore[return-value]


def spatial_levels(lower, upper, max_levels: int = MAX_LEVELS) -> list[Level]:
    """Level 0 is one cell; each next level halves the axes within sqrt(2) of the longest
    (whichever of keeping or halving is more isotropic), until cells are one unit long."""
    extent = [float(u - l) for l, u in zip(lower, upper)]
    bits = [0, 0, 0]
    levels = []
    for _ in range(max_levels):
        chunk = tuple(e / 2**b for e, b in zip(extent, bits))
        levels.append(Level(tuple(bits), chunk))  # type: ignore[arg-type]
        longest = max(chunk)
        if longest <= 1:
            break
        bits = [b + 1 if c * math.sqrt(2) > longest and c > 1 else b for b, c in zip(bits, chunk)]
    return levels


def cell_range(level: Level, lower, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last cell (inclusive) each box touches at one level, clipped to the grid."""
    lower = np.asarray(lower, dtype=np.float64)
    chunk = np.asarray(level.chunk, dtype=np.float64)
    top = np.asarray(level.grid, dtype=np.int64) - 1
    a = np.clip(np.floor((lo - lower) / chunk).astype(np.int64), 0, top)
    b = np.clip(np.floor((hi - lower) / chunk).astype(np.int64), 0, top)
    return a, b


def expand_ranges(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, cell) pair of inclusive cell ranges, row-major per row."""
    ext = b - a + 1
    sizes = ext.prod(axis=1)
    rows = np.repeat(np.arange(len(a)), sizes)
    offs = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    e = ext[rows]
    cells = a[rows] + np.stack([offs % e[:, 0], (offs // e[:, 0]) % e[:, 1], offs // (e[:, 0] * e[:, 1])], axis=1)
    return rows, cells


def morton(cells: np.ndarray, bits) -> np.ndarray:
    """Compressed morton code of cells in a grid of 2^bits (the sharded spatial index key)."""
    cells = np.asarray(cells, dtype=np.uint64).reshape(-1, 3)
    out = np.zeros(len(cells), dtype=np.uint64)
    pos = 0
    for b in range(max(bits, default=0)):
        for d in range(3):
            if b < bits[d]:
                out |= ((cells[:, d] >> np.uint64(b)) & np.uint64(1)) << np.uint64(pos)
                pos += 1
    return out


def children(parent: Level, child: Level, lower, rows: np.ndarray, cells: np.ndarray, lo: np.ndarray,
             hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (row, child cell) pairs under each (row, cell) pair that the row's box touches."""
    shift = np.asarray(child.bits) - np.asarray(parent.bits)
    a, b = cell_range(child, lower, lo[rows], hi[rows])
    out_rows, out_cells = [], []
    for off in itertools.product(*[(0, 1) if s else (0,) for s in shift]):
        c = (cells << shift) + np.asarray(off)
        ok = ((c >= a) & (c <= b)).all(axis=1)
        out_rows.append(rows[ok])
        out_cells.append(c[ok])
    rows, cells = np.concatenate(out_rows), np.concatenate(out_cells)
    order = np.lexsort((morton(cells, child.bits), rows))
    return rows[order], cells[order]


@dataclass
class Emitted:
    """The annotations one level writes: rows (indexes into the caller's arrays), grouped by
    cell, in priority order within each cell."""

    level: int
    rows: np.ndarray
    cells: np.ndarray


def sample_levels(levels: list[Level], lower, thresholds: list[float], limit: int, first: int, last: int,
                  prio: np.ndarray, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray,
                  cells: np.ndarray) -> tuple[list[Emitted], tuple[np.ndarray, np.ndarray]]:
    """Emit levels first..last from the (row, cell) pairs remaining at level `first`; returns
    what each level emits and the pairs still remaining after `last`. The finest level
    (the last threshold) emits everything left: only annotations crowded into one finest cell
    (e.g. many at one point) can exceed `limit` there, and none is lost."""
    out = []
    for level in range(first, last + 1):
        cap = limit if level < len(thresholds) - 1 else len(rows)
        bits = levels[level].bits
        key = morton(cells, bits)
        cand = np.flatnonzero(prio[rows] < threshold_value(thresholds[level]) if thresholds[level] < 1
                              else np.ones(len(rows), bool))
        order = cand[np.lexsort((prio[rows[cand]], key[cand]))]
        k = key[order]
        starts = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]])) if len(k) else np.zeros(0, np.int64)
        rank = np.arange(len(k)) - np.repeat(starts, np.diff(np.append(starts, len(k))))
        emit = order[rank < cap]
        out.append(Emitted(level, rows[emit], cells[emit]))
        keep = np.ones(len(rows), bool)
        keep[emit] = False
        rows, cells = rows[keep], cells[keep]
        if level < last and len(rows):
            rows, cells = children(levels[level], levels[level + 1], lower, rows, cells, lo, hi)
    return out, (rows, cells)


def thresholds_from_counts(max_counts: list[int], limit: int) -> tuple[list[float], int]:
    """Per-level candidate fractions and the last level: the first whose fullest cell holds at
    most `limit` annotations (or the finest level there is)."""
    fractions: list[float] = []
    t = 0.0
    last = len(max_counts) - 1
    for level, m in enumerate(max_counts):
        t = 1.0 if m <= limit else min(1.0, t + limit / m)
        fractions.append(t)
        if m <= limit:
            last = level
            break
    fractions[-1] = 1.0
    return fractions, last


def info(kind: str, resolution, lower, upper, properties: list[dict], relationships: list[dict],
         by_id_sharding: dict | None, levels: list[Level], limit: int, shardings: list | None = None) -> dict:
    """The annotation info file."""
    by_id = {"key": "by_id", **({"sharding": by_id_sharding} if by_id_sharding else {})}
    return {
        "@type": "neuroglancer_annotations_v1",
        "dimensions": {axis: [float(r) * 1e-9, "m"] for axis, r in zip("xyz", resolution)},
        "lower_bound": [float(v) for v in lower],
        "upper_bound": [float(v) for v in upper],
        "annotation_type": KINDS[kind][0],
        "properties": [{k: v for k, v in p.items() if k in ("id", "type", "description", "enum_values", "enum_labels")}
                       for p in properties],
        "relationships": relationships,
        "by_id": by_id,
        "spatial": [{"key": f"spatial{i}", "grid_shape": list(lv.grid), "chunk_size": list(lv.chunk), "limit": limit,
                     **({"sharding": shardings[i]} if shardings and shardings[i] else {})}
                    for i, lv in enumerate(levels)],
    }


def index_sharding(keys: int, shard_above: int = SHARD_ABOVE, min_shards: int = 1) -> dict | None:
    """A uint64 index with more than `shard_above` keys is sharded (hashed ids, cloud-volume's
    sizing rule, as for meshes, with at least `min_shards` shards: one task writes a shard
    whole, so shards bound an emit task's memory and share the work); a smaller one is one
    file per key."""
    from igneous_like.ops.mesh.merge_sharded import sharding_spec

    if keys <= shard_above:
        return None
    return sharding_spec(keys, 2**13, 2**15, max(min_shards, 1), None)


def sharding_object(sharding: dict):
    """cloud-volume's ShardingSpecification, hashing with the mmh3 C extension instead of
    cloud-volume's pure-Python port of the same MurmurHash3 (40x faster: millions of ids)."""
    import mmh3
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    spec = ShardingSpecification.from_dict(sharding)
    if sharding["hash"] == "murmurhash3_x86_128":
        spec.hashfn = lambda x: np.uint64(mmh3.hash64(np.uint64(x).tobytes(), x64arch=False, signed=False)[0])
    return spec


def shard_numbers(keys: np.ndarray, sharding: dict) -> np.ndarray:
    """The shard each uint64 key lands in."""
    return shard_locations(keys, sharding)[0]


def shard_locations(keys: np.ndarray, sharding: dict) -> tuple[np.ndarray, np.ndarray]:
    """(shard, minishard) of each uint64 key, as the sharded format defines them and
    cloud-volume's compute_shard_location computes them, vectorized (that one builds an object
    per key, 20-30 us each): h = hash(key >> preshift_bits); minishard = its low minishard_bits,
    shard = the shard_bits above them."""
    import mmh3

    keys = np.asarray(keys, dtype=np.uint64) >> np.uint64(sharding["preshift_bits"])
    if sharding["hash"] == "identity":
        hashed = keys
    else:  # murmurhash3_x86_128 of the 8 little-endian bytes, its low 64 bits
        raw = keys.astype("<u8").tobytes()
        hashed = np.fromiter((mmh3.hash64(raw[i:i + 8], x64arch=False, signed=False)[0] for i in range(0, len(raw), 8)),
                             dtype=np.uint64, count=len(keys))
    minishard = hashed & np.uint64((1 << sharding["minishard_bits"]) - 1)
    shard = (hashed >> np.uint64(sharding["minishard_bits"])) & np.uint64((1 << sharding["shard_bits"]) - 1)
    return shard, minishard


def spatial_sharding(levels: list[Level], task_level: int, level: int, shard_above: int = SHARD_ABOVE) -> dict | None:
    """Shards for a spatial level at or below the task level with more than `shard_above`
    cells: one shard per task cell (identity hash; the compressed morton code's bits below
    the task cell's are the minishard and preshift bits), so the one emit task that holds a
    task cell writes its shard whole. None where the codes of a task cell's descendants are
    not one contiguous range (axes halving out of step), or for small levels."""
    if level <= task_level or math.prod(levels[level].grid) <= shard_above:
        return None
    parent, child = levels[task_level].bits, levels[level].bits
    order = [(j, d) for j in range(max(child, default=0)) for d in range(3) if j < child[d]]
    low = [i for i, (j, d) in enumerate(order) if j < child[d] - parent[d]]
    if low and low[-1] != len(low) - 1:
        return None
    minishard_bits = min(len(low), max(0, len(low) - 6))  # ~64 cells per minishard
    return {"@type": "neuroglancer_uint64_sharded_v1", "hash": "identity",
            "preshift_bits": len(low) - minishard_bits, "minishard_bits": minishard_bits,
            "shard_bits": sum(parent), "minishard_index_encoding": "gzip", "data_encoding": "raw"}


def write_uint64_index(cf, key: str, values: dict[int, bytes], sharding: dict | None) -> None:
    """Write values under key/: one file per id, or whole shard files built by cloud-volume."""
    from igneous_like.storage import put_many

    if sharding is None:
        put_many(cf, ((f"{key}/{k}", values[k]) for k in sorted(values)), compress=None)
        return
    files = shard_files(values, sharding)
    put_many(cf, ((f"{key}/{name}", data) for name, data in sorted(files.items())), compress=None)


def shard_files(values: dict[int, bytes], sharding: dict) -> dict[str, bytes]:
    """{name.shard: bytes} holding `values` (whole shards): cloud-volume's synthesize_shard_file
    writes each shard from the keys' shard and minishard numbers, which are computed here for
    all keys at once (cloud-volume's synthesize_shard_files computes them one key at a time,
    two thirds of an emit task's time). Minishards are in order of first appearance, as there."""
    from collections import defaultdict

    from cloudvolume.datasource.precomputed.sharding import synthesize_shard_file

    keys = list(values)
    shard, minishard = shard_locations(np.array(keys, dtype=np.uint64), sharding)
    groups: dict = defaultdict(lambda: defaultdict(dict))
    for k, s, m in zip(keys, shard.tolist(), minishard.tolist()):
        groups[s][m][k] = values[k]
    spec, width = sharding_object(sharding), math.ceil(sharding["shard_bits"] / 4)
    return {f"{format(s, 'x').zfill(width)}.shard": synthesize_shard_file(spec, group, presorted=True)
            for s, group in groups.items()}
