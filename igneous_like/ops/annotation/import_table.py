"""annotation import: a table (CSV or Parquet) of points, lines, boxes or ellipsoids into a
Neuroglancer precomputed annotation layer (igneous_like/annotations.py has the format).

Phases, over the map -> reduce-by-partition machinery (igneous_like/mapreduce.py):
  scan    (here, before anything is written) parse and check every row: coordinates, bounds,
          property values; count rows, segments and enum labels.
  map     (one task per row range) encode each annotation once and write partials: per-level
          cell counts; ids with their row numbers keyed by id; spatial rows keyed by their
          cell at the task level K; by_id rows keyed by id (or shard); relationship rows keyed
          by segment (or shard).
  counts  (one task per partition) the fullest cell of every level within the partition, and
          the partition's duplicate ids (an example is recorded: the job stops there, before
          any layer file is written).
  coarse  (here, with --merge) the per-level thresholds, and levels 0..K-1 from the few
          annotations that can appear there (priority under the level K-1 threshold); an
          earlier layer at DEST is removed first.
  finish  (here, with --merge once the emit tasks have run) DEST/info, last; working files removed.
  emit    (one task per partition) spatial levels K.. of each task cell, by_id, relationships.
A worker holds one row range or one partition, never the whole table. Rows are parsed and
checked by rows.py; the format and the sampling are igneous_like/annotations.py.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import annotations as ann
from igneous_like import mapreduce
from igneous_like.errors import UserError
from igneous_like.formats import tables
from igneous_like.plan import PROCESS_OVERHEAD, Plan, human_bytes
from igneous_like.ops.annotation.rows import ROLES, Rows, concat_rows, parse_batch, parse_columns, scan_rows, settle_type

DEFAULT_LIMIT = 1000
ROW_BYTES = 400  # one annotation in a partial, with Arrow and numpy working copies
MAP_ROW_BYTES = 120  # per annotation and level in a map task (cell ids, count keys)
# Parallelism: enough tasks per phase to keep a pool of workers busy, each still a few seconds
# of work; memory (--memory) may ask for more partitions, never for fewer.
ROWS_PER_PARTITION = 50_000
ROWS_PER_MAP = 25_000
MAX_ROWS_PER_MAP = 200_000  # a map task of a minute or so at most, whatever the memory
PARALLEL_TASKS = 64  # tasks per phase that parallelism alone asks for, at most
ROWS_PER_SHARD = ROWS_PER_PARTITION // 2  # by_id and relationship shards: ~2 per partition
MAX_CELL_SPAN = 64  # levels stop where the largest line/box/ellipsoid would touch more cells
WORK = "_work"


@dataclass(frozen=True)
class ImportJob:
    """Everything every phase and task agrees on (JSON-serializable)."""

    dest: str
    kind: str
    files: list  # [url, format, rows, number of its first row in the table, map tasks]
    columns: dict  # role (x, y, z, x1, ..., rx, id) -> column name
    properties: list  # info property dicts, plus "column" and "source" (number, enum, rgb)
    relationships: list  # [name, column]
    resolution: list
    lower: list
    upper: list
    clip: bool
    limit: int
    rows_per_task: int
    partitions: int
    task_level: int
    levels: int
    count: int
    shard_above: int = ann.SHARD_ABOVE
    by_id_sharding: dict | None = None
    rel_sharding: list = field(default_factory=list)
    maps: list = field(default_factory=list)  # [file index, lo, hi, first row in file]: the planner's only

    def spec(self) -> dict:
        """The job as tasks and job.json carry it: without the map parts (their count per file
        names the partials; each map task gets its own part as arguments)."""
        return {k: v for k, v in asdict(self).items() if k != "maps"}

    def layout(self, name: str) -> mapreduce.Layout:
        return mapreduce.Layout(f"{self.dest}/{WORK}/{name}", self.partitions)

    def map_tasks(self) -> Iterator[tuple[str, int, int, int, int]]:
        """(name, file index, lo, hi, first row in the file) of every map task (planner only)."""
        names = iter(self.map_names())
        for i, lo, hi, first in self.maps:
            yield next(names), i, lo, hi, first

    def map_names(self) -> list[str]:
        return [f"f{i:04d}_m{k:06d}" for i, f in enumerate(self.files) for k in range(f[4])]

    def spatial_levels(self) -> list[ann.Level]:
        return ann.spatial_levels(self.lower, self.upper, self.levels)

    def read_types(self) -> dict:
        import pyarrow as pa

        types = {c: pa.float64() for r, c in self.columns.items() if r != "id"}
        if "id" in self.columns:
            types[self.columns["id"]] = pa.uint64()
        for p in self.properties:
            types[p["column"]] = pa.float64() if p["source"] == "number" else pa.string()
        for _, col in self.relationships:
            types[col] = pa.uint64()
        return types


def open_job(table: str, dest: str, kind: str = "point", columns: str | dict | None = None,
             properties: list[dict] | None = None, relationships: list[list[str]] | None = None,
             resolution=(1, 1, 1), bounds=None, clip: bool = False, limit: int = DEFAULT_LIMIT,
             fmt: str = "auto", memory: float = 3.5e9, partitions: int | None = None,
             rows_per_task: int | None = None, shard_above: int = ann.SHARD_ABOVE) -> ImportJob:
    """Check every option and every row (nothing is written), and fix the job's parameters."""
    from igneous_like import layers

    if kind not in ROLES:
        raise UserError(f"--type must be one of {', '.join(ROLES)}, not {kind!r}")
    if limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if any(float(r) <= 0 for r in resolution):
        raise UserError(f"--resolution must be positive, got {list(resolution)}")
    if partitions is not None and not 1 <= partitions <= mapreduce.MAX_PARTITIONS:
        raise UserError(f"--partitions must be 1 to {mapreduce.MAX_PARTITIONS}, got {partitions}")
    if rows_per_task is not None and rows_per_task < 1:
        raise UserError(f"--rows-per-task must be at least 1, got {rows_per_task}")
    if shard_above < 0:
        raise UserError(f"--shard-above must not be negative, got {shard_above}")
    if memory <= PROCESS_OVERHEAD + 100e6:
        raise UserError(f"--memory {human_bytes(memory)} is too small: a worker needs "
                        f"{human_bytes(PROCESS_OVERHEAD + 100e6)} or more")
    cols = columns if isinstance(columns, dict) else parse_columns(columns, kind)
    props = [dict(p) for p in properties or []]
    rels = [list(r) for r in relationships or []]
    for names, what in (([p["id"] for p in props], "property"), ([r[0] for r in rels], "relationship")):
        if len(set(names)) != len(names):
            raise UserError(f"a {what} name is given twice: {names}")
    dest = layers.normalize_url(dest)
    files = tables.table_files(table, fmt)
    if "id" not in cols and "id" in tables.schema(*files[0]):
        cols["id"] = "id"  # the convention: an id column when there is one, else row numbers
    needed = [*cols.values(), *(p["column"] for p in props), *(c for _, c in rels)]
    for url, f in files:
        have = list(tables.schema(url, f))
        missing = [c for c in needed if c not in have]
        if missing:
            raise UserError(f"{url} has no column {missing[0]!r} (columns: {', '.join(have)}); map it with --columns")
    if bounds is not None:
        lower, upper = [float(v) for v in bounds[:3]], [float(v) for v in bounds[3:]]
        if any(u <= l for l, u in zip(lower, upper)):
            raise UserError(f"--bounds {list(bounds)}: each upper bound must exceed its lower bound")
    else:
        lower, upper = [-np.inf] * 3, [np.inf] * 3
    draft = ImportJob(dest, kind, [[u, f, 0, 0, 0] for u, f in files], cols, props, rels, [float(r) for r in resolution],
                      lower, upper, clip, limit, 1, 1, 0, ann.MAX_LEVELS, 0)
    scan = scan_rows(draft)
    if scan.count == 0:
        raise UserError(f"{table}: no annotations to import (empty table{', or every row clipped' if clip else ''})")
    if bounds is None:
        lower = np.floor(scan.lo).tolist()
        upper = (np.floor(scan.hi) + 1).tolist()
    props = [settle_type(p, scan.ranges[p["id"]]) for p in props]
    # listed in encoding order (4-, 2-, then 1-byte types): Neuroglancer's Python reader and
    # writer keep the info's order where the spec and the viewer sort by size; so both agree
    props = [props[i] for i in ann.encoded_order(props)]
    layers.check_writable(dest)
    if partitions is None:
        partitions = choose_partitions(scan.count, memory)
    levels = _level_count(kind, lower, upper, scan.span)
    all_levels = ann.spatial_levels(lower, upper, levels)
    task_level = next((i for i, lv in enumerate(all_levels) if math.prod(lv.grid) >= 8 * partitions), len(all_levels) - 1)
    if rows_per_task is None:
        rows_per_task = choose_rows_per_task(scan.count, levels, memory)
    shards = math.ceil(scan.count / ROWS_PER_SHARD)  # rows, not keys: what an emit task holds
    rel_sharding = [ann.index_sharding(scan.ranges[f"rel:{name}"], shard_above, shards) for name, _ in rels]
    job_files, maps = [], []
    for i, ((u, f), (n, first), pieces) in enumerate(zip(files, scan.rows, scan.pieces)):
        parts = split_parts(pieces, rows_per_task, tables.by_rows(u, f))
        job_files.append([u, f, n, first, len(parts)])
        maps.extend([i, *part] for part in parts)
    return ImportJob(dest, kind, job_files, cols, props, rels, [float(r) for r in resolution], lower, upper, clip,
                     limit, rows_per_task, partitions, task_level, levels, scan.count, shard_above,
                     ann.index_sharding(scan.count, shard_above, shards), rel_sharding, maps)


def split_parts(pieces: np.ndarray, rows_per_task: int, by_rows: bool) -> list[list[int]]:
    """One file's map parts [lo, hi, first row] from its pieces [lo, hi, rows]: consecutive
    whole pieces up to `rows_per_task` rows; a larger piece is cut into equal row ranges where
    the file is addressed by row (Parquet row group, gzip), else it is a part of its own."""
    parts: list[list[int]] = []
    current: list[int] | None = None  # [lo, hi, first row, rows]
    row = 0
    for lo, hi, n in pieces.tolist():
        if current and current[3] + n > rows_per_task:
            parts.append(current[:3])
            current = None
        if by_rows and n > rows_per_task:
            cuts = lo + (n * np.arange(math.ceil(n / rows_per_task) + 1)) // math.ceil(n / rows_per_task)
            parts.extend([int(a), int(b), row + int(a - lo)] for a, b in zip(cuts[:-1], cuts[1:]))
        elif current:
            current[1], current[3] = hi, current[3] + n
        else:
            current = [lo, hi, row, n]
        row += n
    if current:
        parts.append(current[:3])
    return parts


def choose_partitions(count: int, memory: float) -> int:
    """Partitions of the counts and emit phases: as many as one reduce's memory needs, and at
    least one per ROWS_PER_PARTITION rows (up to PARALLEL_TASKS) so that a pool is kept busy."""
    need = mapreduce.choose_partitions(count, ROW_BYTES, memory - PROCESS_OVERHEAD)
    return int(min(max(need, min(PARALLEL_TASKS, math.ceil(count / ROWS_PER_PARTITION))), mapreduce.MAX_PARTITIONS))


def choose_rows_per_task(count: int, levels: int, memory: float) -> int:
    """Rows per map task: what a worker's memory holds, no more than an equal share of
    PARALLEL_TASKS tasks, no fewer than ROWS_PER_MAP (a task's fixed costs stay small)."""
    fits = (memory - PROCESS_OVERHEAD) / (MAP_ROW_BYTES * levels + ROW_BYTES)
    return int(max(1000, min(fits, MAX_ROWS_PER_MAP, max(ROWS_PER_MAP, math.ceil(count / PARALLEL_TASKS)))))


def _level_count(kind: str, lower, upper, span) -> int:
    """Levels until cells are one unit long; for lines, boxes and ellipsoids, only while the
    largest one touches at most MAX_CELL_SPAN cells of a level."""
    levels = ann.spatial_levels(lower, upper)
    if kind == "point":
        return len(levels)
    for i, lv in enumerate(levels):
        if math.prod(int(s // c) + 2 for s, c in zip(span, lv.chunk)) > MAX_CELL_SPAN:
            return max(i, 1)
    return len(levels)


# ---- map ---------------------------------------------------------------------------------


def plan_map(job: ImportJob, memory: float = 3.5e9) -> Plan:
    """Phase 1: one task per row range."""
    tasks_all = list(job.map_tasks())
    spec = job.spec()

    def tasks() -> Iterator:
        for name, i, lo, hi, first in tasks_all:
            yield partial(annotation_map_task, spec, name, i, lo, hi, first)

    def prepare() -> None:
        from cloudfiles import CloudFiles

        clear_outputs(job.dest, layer=False)
        CloudFiles(f"{job.dest}/{WORK}").put_json("job.json", spec)

    details = {"table": ", ".join(f[0] for f in job.files[:3]) + (" ..." if len(job.files) > 3 else ""),
               "annotations": f"{job.count} {job.kind}s", "bounds": f"{job.lower} - {job.upper}",
               "destination": job.dest, "rows per task": job.rows_per_task, "partitions": job.partitions,
               "spatial levels": f"up to {job.levels}, task cells at level {job.task_level}, limit {job.limit}",
               "by_id": "sharded" if job.by_id_sharding else "one file per id",
               "peak memory per map task": "~" + human_bytes(PROCESS_OVERHEAD + job.rows_per_task
                                                             * (MAP_ROW_BYTES * job.levels + ROW_BYTES)),
               "next": "when the map tasks have run: the same command with --merge (counts, then emit, then done)"}
    return Plan("annotation import (map)", len(tasks_all), tasks, prepare, details)


def clear_outputs(dest: str, layer: bool = True, work: bool = True) -> None:
    """Delete an earlier import at DEST: its layer (info first, then indexes) when this run's
    layer is about to be written, its working files when this run's map starts; a stale cell
    or count file would otherwise join this run's output. A table that fails the counts
    phase's checks leaves an earlier layer in place."""
    import re

    from cloudfiles import CloudFiles

    cf = CloudFiles(dest)
    kinds = [*(["info$", r"by_id/", r"rel_[^/]+/", r"spatial\d+/"] if layer else []), *([WORK + "/"] if work else [])]
    ours = re.compile(r"^(" + "|".join(kinds) + ")")
    stale = sorted((name for name in cf.list() if ours.match(name)), key=lambda n: n != "info")
    if stale:
        cf.delete(stale)


@queueable
def annotation_map_task(job: dict, name: str, file_index: int, lo: int, hi: int, first_row: int) -> None:
    """Encode one part of a file once (rows [lo, hi), or line-aligned bytes [lo, hi) of a
    CSV file, its first row being number `first_row` of the file); write its partials for
    every index."""
    spec = ImportJob(**job)
    url, fmt, _, first, _ = spec.files[file_index]
    rows = concat_rows([parse_batch(spec, b, first + first_row + offset, url)
                        for offset, b in _offsets(tables.read_part(url, fmt, spec.read_types(), lo, hi))])
    records = ann.encode_records(spec.kind, spec.properties, rows.geometry, rows.values)
    size = records.dtype.itemsize
    raw = records.tobytes()
    recs = np.array([raw[i * size:(i + 1) * size] for i in range(len(records))], dtype=object)
    levels = spec.spatial_levels()
    mapreduce.write_partials(spec.layout("counts"), name, _counts(spec, levels, rows))
    mapreduce.write_partials(spec.layout("ids"), name, {"label": rows.ids, "row": rows.numbers})
    mapreduce.write_partials(spec.layout("spatial"), name, _spatial(spec, levels, rows, recs))
    tails = ann.relationship_bytes(rows.related)
    by_id = np.array([r + t for r, t in zip(recs.tolist(), tails)], dtype=object) if tails else recs
    key = ann.shard_numbers(rows.ids, spec.by_id_sharding) if spec.by_id_sharding else rows.ids
    mapreduce.write_partials(spec.layout("by_id"), name, {"label": key, "id": rows.ids, "data": by_id})
    for i, segs in enumerate(rows.related):
        has = np.flatnonzero(segs)
        sharding = spec.rel_sharding[i]
        key = ann.shard_numbers(segs[has], sharding) if sharding else segs[has]
        mapreduce.write_partials(spec.layout(f"rel{i}"), name,
                                 {"label": key, "segment": segs[has], "id": rows.ids[has], "data": recs[has]})


def _offsets(batches) -> Iterator:
    offset = 0
    for b in batches:
        yield offset, b
        offset += b.num_rows


def _counts(job: ImportJob, levels: list[ann.Level], rows: Rows) -> mapreduce.Table:
    """Annotations per (level, cell) of this row range: keys level << 59 | morton code."""
    keys, counts = [], []
    for i, level in enumerate(levels):
        a, b = ann.cell_range(level, job.lower, rows.lo, rows.hi)
        _, cells = ann.expand_ranges(a, b)
        k, n = np.unique(ann.morton(cells, level.bits) | np.uint64(i << ann.LEVEL_SHIFT), return_counts=True)
        keys.append(k)
        counts.append(n.astype(np.int64))
    return {"label": np.concatenate(keys), "n": np.concatenate(counts)}


def _spatial(job: ImportJob, levels: list[ann.Level], rows: Rows, recs: np.ndarray) -> mapreduce.Table:
    """One row per (annotation, task cell it touches), keyed by the task cell's morton code."""
    level = levels[job.task_level]
    a, b = ann.cell_range(level, job.lower, rows.lo, rows.hi)
    idx, cells = ann.expand_ranges(a, b)
    table = {"label": ann.morton(cells, level.bits), "id": rows.ids[idx], "prio": ann.priority(rows.ids[idx]),
             "data": recs[idx]}
    for d, axis in enumerate("xyz"):
        table[f"c{axis}"] = cells[:, d]
        table[f"lo{axis}"] = rows.lo[idx, d]
        table[f"hi{axis}"] = rows.hi[idx, d]
    return table


# ---- counts ------------------------------------------------------------------------------


def _sum_counts(table: mapreduce.Table) -> mapreduce.Table:
    keys, inv = mapreduce.group(table["label"])
    return {"label": keys, "n": mapreduce.group_sum(inv, table["n"], len(keys))}


def plan_counts(job: ImportJob) -> Plan:
    """Phase 2: per partition, the fullest cell of each level."""
    spec = job.spec()

    def tasks() -> Iterator:
        for p in range(job.partitions):
            yield partial(annotation_counts_task, spec, p)

    return Plan("annotation import (counts)", job.partitions, tasks, details={"partitions": job.partitions})


@queueable
def annotation_counts_task(job: dict, partition: int) -> None:
    """The fullest cell of each level within one partition, and whether the partition's ids
    repeat: recorded with an example (the next --merge stops with it), not raised, since a
    retry would find the same duplicate and the queue would never drain."""
    from cloudfiles import CloudFiles

    spec = ImportJob(**job)
    duplicate = None
    try:
        mapreduce.reduce_partition(spec.layout("ids"), spec.map_names(), partition, _unique_ids)
    except DuplicateId as exc:
        duplicate = {"id": exc.id, "rows": exc.rows}
    merged = mapreduce.reduce_partition(spec.layout("counts"), spec.map_names(), partition, _sum_counts)
    fullest = np.zeros(spec.levels, dtype=np.int64)
    if merged:
        level = (merged["label"] >> np.uint64(ann.LEVEL_SHIFT)).astype(np.int64)
        np.maximum.at(fullest, level, merged["n"])
    CloudFiles(f"{spec.dest}/{WORK}/fullest").put_json(f"p{partition:05d}.json",
                                                       {"fullest": fullest.tolist(), "duplicate": duplicate})


class DuplicateId(Exception):
    """An annotation id found on more than one row (rows: 0-based numbers in the table)."""

    def __init__(self, aid: int, rows: list[int]):
        super().__init__(aid, rows)
        self.id, self.rows = aid, rows


def _unique_ids(table: mapreduce.Table) -> mapreduce.Table:
    """The merge of the ids partials: rows sorted by id; a repeated id raises DuplicateId."""
    order = np.argsort(table["label"], kind="stable")
    ids = table["label"][order]
    same = np.flatnonzero(ids[1:] == ids[:-1])
    if len(same):
        aid = ids[same[0]]
        raise DuplicateId(int(aid), sorted(int(r) for r in table["row"][table["label"] == aid])[:5])
    return {"label": ids, "row": table["row"][order]}


def duplicate_message(job: ImportJob, duplicate: dict) -> str:
    """duplicate annotation id 4 (rows 1 and 2 of URL): ..., rows numbered from 1 in each file."""
    places = []
    for number in duplicate["rows"]:
        url, _, _, first, _ = next(f for f in reversed(job.files) if f[3] <= number)
        places.append((url, number - first + 1))
    urls = {url for url, _ in places}
    if len(urls) == 1:
        nums = [str(n) for _, n in places]
        where = f"rows {', '.join(nums[:-1])} and {nums[-1]} of {urls.pop()}"
    else:
        where = ", ".join(f"{url} row {n}" for url, n in places)
    return f"duplicate annotation id {duplicate['id']} ({where}): ids must be unique"


def read_counts(job: ImportJob) -> tuple[list[int], dict | None] | None:
    """maxCount per level over all partitions and the first partition's duplicate id (or
    None), or None while a counts task has not run."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{job.dest}/{WORK}/fullest")
    got = cf.get_json([f"p{p:05d}.json" for p in range(job.partitions)])
    if any(g is None for g in got):
        return None
    duplicate = next((g["duplicate"] for g in got if g.get("duplicate")), None)
    return np.max([g["fullest"] for g in got], axis=0).tolist(), duplicate


# ---- coarse and emit ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    thresholds: list
    last: int
    first_task_level: int  # levels below this were written by the coarse step
    shardings: list  # per spatial level: its sharding spec or None


def plan_emit(job: ImportJob, fullest: list[int]) -> Plan:
    """Phase 3: the coarse levels here (few annotations), then emit tasks per partition."""
    thresholds, last = ann.thresholds_from_counts(fullest, job.limit)
    levels = job.spatial_levels()[:last + 1]
    first = min(job.task_level, last + 1)
    shardings = [ann.spatial_sharding(levels, first, i, job.shard_above) if first <= last else None
                 for i in range(len(levels))]
    sampling = Sampling(thresholds, last, first, shardings)
    spec, smp = job.spec(), asdict(sampling)
    kinds = emit_kinds(job, sampling)

    def tasks() -> Iterator:
        for kind in kinds:
            for p in range(job.partitions):
                yield partial(annotation_emit_task, spec, smp, kind, p)

    def prepare() -> None:
        import sys

        from cloudfiles import CloudFiles

        clear_outputs(job.dest, work=False)
        if fullest[last] > job.limit:
            print(f"WARNING: {details['warning']}: more annotations than that in one finest cell are written "
                  "together", file=sys.stderr)
        CloudFiles(f"{job.dest}/{WORK}").put_json("sampling.json", smp)
        write_coarse(job, sampling)
        rels = [{"id": name, "key": f"rel_{name}", **({"sharding": s} if s else {})}
                for (name, _), s in zip(job.relationships, job.rel_sharding)]
        info = ann.info(job.kind, job.resolution, job.lower, job.upper, job.properties, rels, job.by_id_sharding,
                        levels, job.limit, sampling.shardings)
        # staged: DEST/info is written last, by `finish`, once every emit task has run
        CloudFiles(f"{job.dest}/{WORK}").put("info", json.dumps(info, indent=1).encode(), compress=None)

    details = {"spatial levels": f"{last + 1} (fullest cells: {fullest[:last + 1]}, limit {job.limit})",
               "coarse levels (here)": sampling.first_task_level, "emit tasks": len(kinds) * job.partitions,
               "relationships": ", ".join(r[0] for r in job.relationships) or "none"}
    if fullest[last] > job.limit:
        details["warning"] = f"the finest level still has a cell with {fullest[last]} annotations (> --limit)"
    return Plan("annotation import (emit)", len(kinds) * job.partitions, tasks, prepare, details)


def write_coarse(job: ImportJob, sampling: Sampling) -> None:
    """Levels 0..K-1 from the annotations whose priority can place them there, read from every
    spatial partial (one batch of files at a time); records which (annotation, level K-1 cell)
    pairs remain for the emit tasks."""
    from cloudfiles import CloudFiles

    k = sampling.first_task_level
    if k == 0:
        return
    cutoff = ann.threshold_value(sampling.thresholds[k - 1])
    parts = []
    for p in range(job.partitions):
        for batch in mapreduce.read_partials(job.layout("spatial"), job.map_names(), p):
            for t in batch:
                keep = t["prio"] < cutoff if sampling.thresholds[k - 1] < 1 else np.ones(len(t["id"]), bool)
                parts.append({c: v[keep] for c, v in t.items()})
    table = mapreduce.concat(parts)
    _, first = np.unique(table["id"], return_index=True) if table else (None, np.zeros(0, np.int64))
    table = {c: v[np.sort(first)] for c, v in table.items()} if table else {}
    levels = job.spatial_levels()
    n = len(table.get("id", []))
    lo, hi = _bounds_of(table, n)
    emitted, (rows, cells) = ann.sample_levels(levels, job.lower, sampling.thresholds, job.limit, 0, k - 1,
                                               table.get("prio", np.zeros(0, np.uint64)), lo, hi,
                                               np.arange(n), np.zeros((n, 3), np.int64))
    cf = CloudFiles(job.dest)
    write_cells(cf, levels, emitted, table.get("data", np.zeros(0, object)), table.get("id", np.zeros(0, np.uint64)),
                sampling.shardings)
    survivors = {"label": table["id"][rows] if n else np.zeros(0, np.uint64),
                 "cell": ann.morton(cells, levels[k - 1].bits)}
    cf.put(f"{WORK}/survivors.arrow", mapreduce.encode_table(survivors), compress=None)


def _bounds_of(table: mapreduce.Table, n: int) -> tuple[np.ndarray, np.ndarray]:
    if not n:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return (np.stack([table[f"lo{a}"] for a in "xyz"], axis=1), np.stack([table[f"hi{a}"] for a in "xyz"], axis=1))


def write_cells(cf, levels: list[ann.Level], emitted: list[ann.Emitted], data: np.ndarray, ids: np.ndarray,
                shardings: list) -> None:
    """The non-empty cells, annotations in priority order: one file per cell
    (spatial{L}/x_y_z), or whole shards keyed by compressed morton code."""
    from igneous_like.storage import put_many

    files = []
    for e in emitted:
        key = ann.morton(e.cells, levels[e.level].bits)
        starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else []
        cells = {}
        for a, b in zip(starts, [*starts[1:], len(key)]):
            rows = e.rows[a:b]
            cells[int(key[a])] = (e.cells[a], ann.encode_list(list(data[rows]), ids[rows]))
        if shardings[e.level]:
            ann.write_uint64_index(cf, f"spatial{e.level}", {k: v for k, (_, v) in cells.items()}, shardings[e.level])
            continue
        for cell, value in cells.values():
            files.append((f"spatial{e.level}/{'_'.join(str(int(c)) for c in cell)}", value))
    put_many(cf, files, compress=None)


@queueable
def annotation_emit_task(job: dict, sampling: dict, kind: str, partition: int) -> None:
    """Write one partition of the spatial levels from the task level down, of by_id, or of
    one relationship index."""
    from cloudfiles import CloudFiles

    spec, smp = ImportJob(**job), Sampling(**sampling)
    table = mapreduce.concat([t for batch in mapreduce.read_partials(spec.layout(kind), spec.map_names(), partition)
                              for t in batch])
    cf = CloudFiles(spec.dest)
    if table and len(table["id"]):
        _emit(spec, smp, kind, table, cf)
    cf.put(f"{WORK}/emitted/{kind}-{partition:05d}", b"{}", compress=None)  # last: this task finished


def emit_kinds(job: ImportJob, sampling: Sampling) -> list[str]:
    """The indexes emit tasks write: spatial levels below the coarse ones (if any), by_id, each
    relationship."""
    spatial = ["spatial"] if sampling.first_task_level <= sampling.last else []
    return [*spatial, "by_id", *(f"rel{i}" for i in range(len(job.relationships)))]


def _emit(spec: ImportJob, smp: Sampling, kind: str, table: mapreduce.Table, cf) -> None:
    if kind == "spatial":
        _emit_spatial(spec, smp, table, cf)
    elif kind == "by_id":
        values = dict(zip(table["id"].tolist(), table["data"].tolist()))
        ann.write_uint64_index(cf, "by_id", values, spec.by_id_sharding)
    else:
        i = int(kind[3:])
        order = np.lexsort((table["id"], table["segment"]))
        seg, ids, data = table["segment"][order], table["id"][order], table["data"][order]
        starts = np.flatnonzero(np.concatenate([[True], seg[1:] != seg[:-1]]))
        values = {int(seg[a]): ann.encode_list(list(data[a:b]), ids[a:b]) for a, b in zip(starts, [*starts[1:], len(seg)])}
        ann.write_uint64_index(cf, f"rel_{spec.relationships[i][0]}", values, spec.rel_sharding[i])


def _emit_spatial(spec: ImportJob, smp: Sampling, table: mapreduce.Table, cf) -> None:
    k = smp.first_task_level
    levels = spec.spatial_levels()
    n = len(table["id"])
    cells = np.stack([table[f"c{a}"] for a in "xyz"], axis=1).astype(np.int64)
    remaining = np.ones(n, bool)
    if k > 0:
        remaining = table["prio"] >= ann.threshold_value(smp.thresholds[k - 1]) if smp.thresholds[k - 1] < 1 \
            else np.zeros(n, bool)
        got = _required(cf, f"{WORK}/survivors.arrow")
        surv = mapreduce.decode_table(got)
        shift = np.asarray(levels[k].bits) - np.asarray(levels[k - 1].bits)
        parent = ann.morton(cells >> shift, levels[k - 1].bits)
        pairs = set(zip(surv["label"].tolist(), surv["cell"].tolist()))
        cand = np.flatnonzero(~remaining)
        remaining[cand] = [(i, c) in pairs for i, c in zip(table["id"][cand].tolist(), parent[cand].tolist())]
    lo, hi = _bounds_of(table, n)
    rows = np.flatnonzero(remaining)
    emitted, _ = ann.sample_levels(levels, spec.lower, smp.thresholds, spec.limit, k, smp.last, table["prio"], lo, hi,
                                   rows, cells[rows])
    write_cells(cf, levels, emitted, table["data"], table["id"], smp.shardings)


def _required(cf, path: str) -> bytes:
    from igneous_like.errors import TaskError

    data = cf.get(path)
    if data is None:
        raise TaskError(f"{cf.cloudpath}/{path} is missing: plan the emit phase again (--merge)")
    return data


def load_job(dest: str) -> ImportJob:
    """The job the map phase ran with (for --merge)."""
    from cloudfiles import CloudFiles

    from igneous_like import layers

    dest = layers.normalize_url(dest)
    spec = CloudFiles(f"{dest}/{WORK}").get_json("job.json")
    if spec is None:
        raise UserError(f"no map output at {dest}/{WORK}: run `annotation import` without --merge first")
    return ImportJob(**spec)


def next_phase(job: ImportJob) -> Plan | None:
    """For --merge: the counts phase if it has not run, else the emit phase, or None once
    every emit task has run."""
    missing = mapreduce.missing_maps(job.layout("spatial"), job.map_names())
    if missing:
        raise UserError(f"map output incomplete: {len(missing)} of {len(job.map_names())} tasks have not run "
                        f"(e.g. {missing[0]}); run the queue to the end, then --merge again")
    counted = read_counts(job)
    if counted is None:
        return plan_counts(job)
    fullest, duplicate = counted
    if duplicate:
        raise UserError(duplicate_message(job, duplicate))
    return None if emit_done(job) else plan_emit(job, fullest)


def emit_done(job: ImportJob) -> bool:
    """Whether every emit task of the planned emit phase has finished."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{job.dest}/{WORK}")
    sampling = cf.get_json("sampling.json")
    if sampling is None:
        return False
    names = [f"emitted/{k}-{p:05d}" for k in emit_kinds(job, Sampling(**sampling)) for p in range(job.partitions)]
    return all(cf.exists(names).values())


def finish(job: ImportJob) -> None:
    """The last step: DEST/info (staged by the emit planning) is written once every other
    layer file is, so a viewer never opens a half-written layer; then the working files go."""
    from cloudfiles import CloudFiles

    info = _required(CloudFiles(job.dest), f"{WORK}/info")
    CloudFiles(job.dest).put("info", info, compress=None, content_type="application/json", cache_control="no-cache")
    remove_work(job)


def remove_work(job: ImportJob) -> None:
    """Delete the working files (partials, counts, markers) of a finished or failed import;
    on file:// also the directories they leave, and DEST itself when nothing else is there."""
    import os

    from cloudfiles import CloudFiles

    from igneous_like.layers import local_path

    cf = CloudFiles(f"{job.dest}/{WORK}")
    cf.delete(list(cf.list()))
    local = local_path(job.dest)
    if local is None or not os.path.isdir(local):
        return
    for root, _, _ in sorted(os.walk(os.path.join(local, WORK)), key=lambda w: -len(w[0])):
        if not os.listdir(root):
            os.rmdir(root)
    if not os.listdir(local):
        os.rmdir(local)
