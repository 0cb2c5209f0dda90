"""image stats: one row of shape (and intensity) statistics per label, as a Parquet or CSV table
and as Neuroglancer segment properties, computed by map tasks over the grid and reduce tasks
over label partitions (igneous_like/mapreduce.py).

Phases: map (`stats_map_task`, per box: sufficient statistics split by partition), reduce
(`stats_reduce_task`, per partition: merge, then one part file of the table), and properties
(the last reduce to finish sees every part and writes segment_properties/info, linked from the
layer's info). Queued runs plan the map, then with --merge the reduce; unqueued runs do both.
With --auto-merge (`follow`), the map task that finds the map complete plans the reduce into
the same queue, so one `execute -x` runs both phases.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import allocator, label_stats, layers, mapreduce, segment_properties, storage, tables
from igneous_like.errors import TaskError, UserError
from igneous_like.grid import Box, Vec3, expand_to_grid, grid_boxes, grid_count, vec3
from igneous_like.plan import PROCESS_OVERHEAD, Plan, fmt_vec, human_bytes

DEFAULT_SHAPE = (512, 512, 256)
BYTES_PER_VOXEL = 40  # labels as read (8 B) and as ids, decode buffers, per-id accumulators
ROW_BYTES = 200  # one partial row: ~25 eight-byte columns
VOXELS_PER_LABEL = 512  # label-count guess for choosing partitions (override: --partitions)
SHAPE_COLUMNS = list(label_stats.SHAPE_COLUMNS)
NOT_PROPERTIES = ("label", "touches_border")
JOB_FILE = "job.json"
SAME_MAP = ("layer", "image", "mip", "bounds", "shape", "partitions", "fill_missing")


@dataclass(frozen=True)
class StatsJob:
    """Everything both phases and every task agree on (JSON-serializable)."""

    layer: str
    image: str | None
    mip: int
    bounds: list[int]
    shape: list[int]
    partitions: int
    out: str
    fmt: str
    fill_missing: bool
    properties: bool
    top: int | None
    min_voxels: int

    @property
    def partials(self) -> mapreduce.Layout:
        return mapreduce.Layout(f"{self.out}/_partials", self.partitions)

    def boxes(self) -> Iterator[Box]:
        bounds = Box.from_list(self.bounds)
        return grid_boxes(bounds, vec3(self.shape), bounds.start)

    def task_count(self) -> int:
        bounds = Box.from_list(self.bounds)
        return grid_count(bounds, vec3(self.shape), bounds.start)

    def part_names(self) -> list[str]:
        return [tables.part_name(p, self.partitions, self.fmt) for p in range(self.partitions)]


def task_memory(shape: Vec3, image_bytes: int) -> float:
    return PROCESS_OVERHEAD + math.prod(shape) * (BYTES_PER_VOXEL + image_bytes) + label_stats.SLAB_VOXELS * 64


def default_shape(memory: float, image_bytes: int, chunk: Vec3, bounds: Box) -> Vec3:
    """The largest shape from DEFAULT_SHAPE down (halving the longest axis, whole chunks)
    whose task fits --memory."""
    shape = list(DEFAULT_SHAPE)
    while task_memory(vec3(shape), image_bytes) > memory and max(shape) > min(chunk):
        i = shape.index(max(shape))
        shape[i] = max(shape[i] // 2, chunk[i])
    return vec3(min(s, b) for s, b in zip(shape, bounds.shape))


def open_job(layer: str, image: str | None = None, mip: int = 0, shape: Vec3 | None = None,
             memory: float = 3.5e9, xrange=None, yrange=None, zrange=None, fill_missing: bool = False,
             out: str | None = None, fmt: str = "parquet", properties: bool = True, top: int | None = None,
             min_voxels: int = 0, partitions: int | None = None) -> StatsJob:
    """Validate every input (nothing is written) and fix the job's parameters."""
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    layers.check_mip(info, mip, url)
    if info["type"] != "segmentation" or np.dtype(info["data_type"]).kind not in "ui":
        raise UserError(f"{url} is not a segmentation (type {info['type']}, {info['data_type']}): stats are per label")
    if info["num_channels"] != 1:
        raise UserError(f"{url} has {info['num_channels']} channels: stats need one")
    full = layers.scale_bounds(info, mip)
    image_bytes = 0
    if image is not None:
        image = layers.normalize_url(image)
        image_bytes = _check_image(image, info, mip, url)
    if fmt not in tables.FORMATS:
        raise UserError(f"--format must be parquet or csv, not {fmt!r}")
    if top is not None and top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    if min_voxels < 0:
        raise UserError(f"--min-voxels must not be negative, got {min_voxels}")
    if partitions is not None and not 1 <= partitions <= mapreduce.MAX_PARTITIONS:
        raise UserError(f"--partitions must be 1 to {mapreduce.MAX_PARTITIONS}, got {partitions}")
    chunk = layers.scale_chunk(info, mip)
    if shape is None:
        shape = default_shape(memory, image_bytes, chunk, full)
    elif any(s <= 0 for s in shape):
        raise UserError(f"--shape {fmt_vec(shape)} must be positive")
    bounds = layers.bounds_from_ranges(full, xrange, yrange, zrange, url, mip)
    bounds = expand_to_grid(bounds, shape, full.start, full)
    out = layers.normalize_url(out) if out else f"{url}/stats"
    layers.check_writable(out)
    layers.check_writable(url)
    if partitions is None:
        partitions = mapreduce.choose_partitions(bounds.voxels / VOXELS_PER_LABEL, ROW_BYTES, memory)
    return StatsJob(url, image, mip, bounds.to_list(), list(shape), partitions, out, fmt, fill_missing,
                    properties, top, min_voxels)


def _check_image(image: str, info: dict, mip: int, url: str) -> int:
    """The paired image must have the segmentation's geometry at --mip."""
    img_info = layers.read_info(image)
    layers.check_mip(img_info, mip, image)
    if img_info["num_channels"] != 1:
        raise UserError(f"--image {image} has {img_info['num_channels']} channels: intensity stats need one")
    for key in ("size", "voxel_offset", "resolution"):
        a, b = img_info["scales"][mip][key], info["scales"][mip][key]
        if [float(v) for v in a] != [float(v) for v in b]:
            raise UserError(f"--image {image} does not match {url} at mip {mip}: {key} {a} vs {b}")
    return np.dtype(img_info["data_type"]).itemsize


def plan_stats_map(job: StatsJob, memory: float = 3.5e9, follow_queue: str | None = None) -> Plan:
    """Phase 1: one map task per box of the grid. With `follow_queue`, the map task that
    completes the map plans the reduce into that queue (see queue_reduce_when_done)."""
    total = job.task_count()
    peak = task_memory(vec3(job.shape), 8 if job.image else 0)

    def tasks() -> Iterator:
        spec = asdict(job)
        for i, box in enumerate(job.boxes()):
            follow = {"queue": follow_queue, "memory": memory, "task": i, "tasks": total} if follow_queue else None
            yield partial(stats_map_task, spec, box.to_list(), follow)

    def prepare() -> None:
        from cloudfiles import CloudFiles

        CloudFiles(job.partials.root).put_json(JOB_FILE, asdict(job))
        if follow_queue:
            mapreduce.clear_chain(job.partials)  # an earlier run's markers would end the map early

    details = {
        "layer": job.layer, "image": job.image or "none", "mip": job.mip, "bounds": str(Box.from_list(job.bounds)),
        "task shape": fmt_vec(job.shape) + " (+1 voxel on high faces for surface area)",
        "partitions": job.partitions, "partials": job.partials.root,
        "table": f"{job.out}/part-*.{job.fmt}",
        "peak memory per task": f"~{human_bytes(peak)} (limit {human_bytes(memory)})",
        "next": (f"the last map task queues the reduce into {follow_queue}" if follow_queue
                 else "when the map tasks have run: the same command with --merge"),
    }
    return Plan("image stats (map)", total, tasks, prepare, details)


def plan_stats_reduce(job: StatsJob, memory: float = 3.5e9) -> Plan:
    """Phase 2: one reduce task per partition, after checking every map task finished with
    the same parameters."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(job.partials.root)
    made = cf.get_json(JOB_FILE)
    if made is None:
        raise UserError(f"no map output at {job.partials.root}: run `image stats` without --merge first")
    differ = [k for k in SAME_MAP if made.get(k) != asdict(job).get(k)]
    if differ:
        shown = ", ".join(f"{k}={made.get(k)!r}" for k in differ)
        raise UserError(f"the map phase ran with other parameters ({shown}): pass the same options with --merge")
    missing = mapreduce.missing_maps(job.partials, job.boxes())
    if missing:
        shown = ", ".join(mapreduce.box_name(b) for b in missing[:5])
        raise UserError(f"map output incomplete: {len(missing)} of {job.task_count()} tasks have not run "
                        f"(e.g. {shown}); run the queue to the end, then --merge again")
    rows = mapreduce.partition_rows(job.partials, job.boxes())
    largest = int(rows.max()) if len(rows) else 0
    need = PROCESS_OVERHEAD + 3 * largest * ROW_BYTES
    if need > memory:
        import sys

        print(f"WARNING: the largest partition has {largest} partial rows (~{human_bytes(need)} to merge), above "
              f"--memory {human_bytes(memory)}: re-run the map with more --partitions", file=sys.stderr)

    def tasks() -> Iterator:
        spec = asdict(job)
        for p in range(job.partitions):
            yield partial(stats_reduce_task, spec, p)

    def prepare() -> None:
        """Part files of an earlier run with other partitions or format would join the table."""
        out = CloudFiles(job.out)
        keep = set(job.part_names())
        stale = [n for n in out.list(prefix="part-", flat=True) if n not in keep]
        if stale:
            out.delete(stale)

    details = {"table": f"{job.out}/part-*-of-{job.partitions:05d}.{job.fmt}", "partitions": job.partitions,
               "largest partition": f"{largest} partial rows (~{human_bytes(need)})",
               "segment properties": f"{job.layer}/segment_properties/info" if job.properties else "off"}
    return Plan("image stats (reduce)", job.partitions, tasks, prepare, details)


def _read_block(job: StatsJob, region: Box):
    """The task's labels as dense ids (label_stats.dense_ids: 0 = background, labels[id] gives
    the label back, by_label the ids in label order), with one voxel past its high faces inside
    the dataset; edge flags against the bounds; the image."""
    from igneous_like import volume_io

    info = layers.read_info(job.layer)
    full = layers.scale_bounds(info, job.mip)
    read_box = Box(region.start, vec3(min(b + 1, f) for b, f in zip(region.stop, full.stop)))
    block = [np.asfortranarray(volume_io.read(job.layer, info, job.mip, read_box, job.fill_missing)[..., 0])]
    ids, labels, by_label = label_stats.dense_ids(block)  # frees the block once its labels are found
    bounds = Box.from_list(job.bounds)
    low = tuple(a == b for a, b in zip(region.start, bounds.start))
    high = tuple(a == b for a, b in zip(region.stop, bounds.stop))
    img = None
    if job.image:
        img_info = layers.read_info(job.image)
        img = volume_io.read(job.image, img_info, job.mip, region, job.fill_missing)[..., 0]
    return ids, labels, by_label, low, high, img


@queueable
def stats_map_task(job: dict, box: list[int], follow: dict | None = None) -> None:
    """Sufficient statistics of one box, written as one partial per partition; with `follow`
    ({"queue", "memory", "task", "tasks"}), the task that completes the map queues the reduce."""
    allocator.keep_freed_memory()  # large temporaries reuse mapped pages (see allocator.py)
    spec = StatsJob(**job)
    with allocator.small_pages():  # fresh huge pages cost more than they save here (see allocator.py)
        _map(spec, Box.from_list(box))
    allocator.release_freed_memory()  # even before a chained reduce: keeping the heap for it peaked at
    # ~1.9 GB instead of ~1.5 GB on the 4M-label benchmark, for no CPU saved
    if follow:
        queue_reduce_when_done(spec, follow)


def _map(spec: StatsJob, region: Box) -> None:
    ids, labels, by_label, low, high, img = _read_block(spec, region)
    table = label_stats.block_partial(ids, labels, region.shape, low, high, img, by_label)
    del ids, img
    mapreduce.write_partials(spec.partials, region, table)


def queue_reduce_when_done(spec: StatsJob, follow: dict) -> bool:
    """If the map is complete, plan the reduce into follow["queue"], once: of the tasks that
    find it complete, the one that creates chain/claim (storage.create_once) queues it, then
    writes chain/queued (a re-run of it after that does nothing).
    True if this task queued it."""
    from cloudfiles import CloudFiles

    from igneous_like import queues, storage

    if not mapreduce.maps_complete(spec.partials, follow["task"], follow["tasks"]):
        return False
    cf = CloudFiles(spec.partials.root)
    if cf.exists("chain/queued"):  # queued already (this task is running again)
        return False
    if not storage.create_once(cf, "chain/claim", str(follow["task"])):
        return False
    try:
        plan = plan_stats_reduce(spec, follow["memory"])
    except UserError as exc:
        raise TaskError(f"image stats: the map is complete, but the reduce cannot be planned: {exc}") from None
    plan.prepare()
    queues.insert_tasks(follow["queue"], plan.tasks(), plan.total)
    cf.put("chain/queued", b"", compress=None)
    return True


@queueable
def stats_reduce_task(job: dict, partition: int) -> None:
    """Merge one partition's partials into one part file of the table; the last part written
    also writes the segment properties."""
    allocator.keep_freed_memory()
    with allocator.small_pages():
        _reduce(StatsJob(**job), partition)
    allocator.release_freed_memory()


def _reduce(spec: StatsJob, partition: int) -> None:
    from cloudfiles import CloudFiles

    merged = mapreduce.reduce_partition(spec.partials, spec.boxes(), partition, label_stats.merge,
                                        load=lambda stored, box: label_stats.widen(stored, box.start))
    info = layers.read_info(spec.layer)
    full = layers.scale_bounds(info, spec.mip)
    table = label_stats.columns(merged, info["scales"][spec.mip]["resolution"], full.start, full.stop)
    del merged
    out = CloudFiles(spec.out)
    out.put(tables.part_name(partition, spec.partitions, spec.fmt), tables.encode(table, spec.fmt), compress=None)
    if spec.properties and spec.partitions == 1:
        write_segment_properties(spec, table)  # this task holds the whole table (and is done with it)
    elif spec.properties and all(out.exists(spec.part_names()).values()):
        write_segment_properties(spec, chosen_table(spec))


def read_table(spec: StatsJob, columns: list[str] | None = None,
               labels: np.ndarray | None = None) -> mapreduce.Table:
    """The table from its part files, one part at a time: only `columns`, and only the rows of
    `labels` (sorted) if given, so a --top selection never holds the whole table."""
    from cloudfiles import CloudFiles

    out = CloudFiles(spec.out)
    parts = []
    for name in spec.part_names():
        data = out.get(name)
        if data is None:
            raise TaskError(f"table part missing: {spec.out}/{name}")
        part = tables.decode(data, spec.fmt, columns)
        if labels is not None:
            rows = np.isin(part["label"], labels)
            part = {k: v[rows] for k, v in part.items()}
        parts.append(part)
    table = mapreduce.concat(parts)
    order = np.argsort(table["label"], kind="stable")
    return {k: v[order] for k, v in table.items()}


def chosen_table(spec: StatsJob) -> mapreduce.Table:
    """The rows the segment properties publish, read from every part."""
    if spec.top is None and not spec.min_voxels:
        return read_table(spec)
    sizes = read_table(spec, ["label", "voxel_count"])
    chosen = sizes["label"][segment_properties.select(sizes, spec.top, spec.min_voxels)]
    del sizes
    return read_table(spec, labels=chosen)


def write_segment_properties(spec: StatsJob, table: mapreduce.Table) -> None:
    """segment_properties/info (inline) for the chosen labels, linked from the layer's info.
    Consumes the table (its columns are released as they are written)."""
    from cloudfiles import CloudFiles

    numbers = [c for c in table if c not in NOT_PROPERTIES]
    rows = segment_properties.select(table, spec.top, spec.min_voxels)
    pieces = segment_properties.encode_pieces(table, rows, numbers, ["touches_border"])
    cf = CloudFiles(spec.layer)
    storage.put_pieces(cf, "segment_properties/info", pieces, compress=None, content_type="application/json",
                       cache_control="no-cache")
    del pieces
    info = layers.read_info(spec.layer)
    if info.get("segment_properties") != "segment_properties":
        layers.write_info(spec.layer, {**info, "segment_properties": "segment_properties"})


def describe_both(job: StatsJob, memory: float) -> str:
    """--dry-run without --queue: the map plan and the reduce that follows it."""
    text = plan_stats_map(job, memory).describe()
    return text + f"\nimage stats (reduce): {job.partitions} tasks after the map\n  table: {job.out}/part-*.{job.fmt}"
