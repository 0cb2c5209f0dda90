"""image ccl: connected components of a segmentation (each connected piece of each label) or of
a thresholded image, over the whole volume, labelled 1..N.

Passes (each a queueable command; `auto` runs them here or chains them through a queue,
ops/image/ccl_phases.py):
  faces   per task: cc3d of the box; write its component sizes, source values and face planes
  links   per task: pair its high faces with the neighbours' low faces (diagonals included for
          18/26), write equivalence edges of provisional ids (task << 32 | local id) by leaf of
          the union-find tree (ops/image/ccl_links.py, ops/image/ccl_tree.py)
  calc-labels  the hierarchical union-find and the numbering (ops/image/ccl_labels.py)
  relabel per task: cc3d again, map local ids to final ids, write DEST (ops/image/ccl_relabel.py)
This module holds the job (its options, task grid and tree), the faces pass and the file
helpers the others share. Intermediate files live in DEST/_ccl/KEY, KEY a hash of the options
that shape them, so a run with other options never reads stale ones.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from igneous_like import layers, mapreduce, volume_io
from igneous_like.errors import UserError
from igneous_like.grid import Box, Vec3, vec3
from igneous_like.ops.image.ccl_tree import LeafTree
from igneous_like.plan import PROCESS_OVERHEAD, fmt_vec

DEFAULT_SHAPE = (512, 512, 512)
CHUNK_CAP = (128, 128, 64)  # the default DEST chunk: the largest divisor of --shape below these
BYTES_PER_VOXEL = 30  # source (<= 8 B), mask, cc3d's uint32 output and its working copies
EDGE_ROW_BYTES = 24
LOCAL_BITS = np.uint64(32)
NOT_IN_KEY = ("encoding", "chunk_size")  # options that only shape DEST, not the intermediates
JOB_FILE = "job.json"
MARK_GROUP = 512  # done markers per listing (see phase_complete)
CONNECTIVITIES = (6, 18, 26)


@dataclass(frozen=True)
class CclJob:
    """The options every pass and task agree on (JSON-serializable)."""

    src: str
    dest: str
    mip: int
    bounds: list[int]
    shape: list[int]
    connectivity: int
    threshold_gte: float | None
    threshold_lte: float | None
    dust: int
    fill_missing: bool
    partitions: int
    encoding: str
    chunk_size: list[int]

    @cached_property
    def key(self) -> str:
        keyed = {k: v for k, v in asdict(self).items() if k not in NOT_IN_KEY}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def root(self) -> str:
        return f"{self.dest}/_ccl/{self.key}"

    def layout(self, name: str) -> mapreduce.Layout:
        return mapreduce.Layout(f"{self.root}/{name}", self.partitions)

    @property
    def grid(self) -> Vec3:
        b = Box.from_list(self.bounds)
        return vec3(-(-s // t) for s, t in zip(b.shape, self.shape))

    @property
    def tasks(self) -> int:
        return math.prod(self.grid)

    def box(self, t: int) -> Box:
        gx, gy, _ = self.grid
        idx = (t % gx, (t // gx) % gy, t // (gx * gy))
        b = Box.from_list(self.bounds)
        start = vec3(a + i * s for a, i, s in zip(b.start, idx, self.shape))
        return Box(start, vec3(s + n for s, n in zip(start, self.shape))).intersect(b)

    def index(self, cell: tuple[int, int, int]) -> int | None:
        """Task index of a grid cell, None outside the grid."""
        if any(c < 0 or c >= g for c, g in zip(cell, self.grid)):
            return None
        return cell[0] + self.grid[0] * (cell[1] + self.grid[1] * cell[2])

    @property
    def tree(self) -> LeafTree:
        """The spatial tree of the union-find: the task grid split into `partitions` leaves."""
        return LeafTree(self.grid, tuple(self.shape), self.partitions)

    def cells(self, tasks: np.ndarray) -> np.ndarray:
        """(n, 3) grid cells of task indices."""
        t = np.asarray(tasks, np.int64)
        gx, gy, _ = self.grid
        return np.stack([t % gx, (t // gx) % gy, t // (gx * gy)], axis=1)

    def leaf_of(self, ids: np.ndarray) -> np.ndarray:
        """The union-find leaf of each provisional id's task."""
        tasks = (np.asarray(ids, np.uint64) >> LOCAL_BITS).astype(np.int64)
        if not len(tasks):
            return np.zeros(0, np.int64)
        uniq, inverse = np.unique(tasks, return_inverse=True)
        return self.tree.leaf_of(self.cells(uniq))[inverse]

    def cell(self, t: int) -> tuple[int, int, int]:
        gx, gy, _ = self.grid
        return (t % gx, (t // gx) % gy, t // (gx * gy))


def default_chunk(shape: Vec3) -> Vec3:
    """Per axis, the largest divisor of the task shape not above CHUNK_CAP (or the shape itself)."""
    return vec3(s if s <= c else max(d for d in range(1, c + 1) if s % d == 0) for s, c in zip(shape, CHUNK_CAP))


def open_job(src: str, dest: str, mip: int = 0, shape: Vec3 | None = None, connectivity: int = 6,
             threshold_gte: float | None = None, threshold_lte: float | None = None, dust: int = 0,
             fill_missing: bool = False, encoding: str | None = None, chunk_size: Vec3 | None = None,
             partitions: int | None = None, memory: float = 3.5e9, xrange=None, yrange=None, zrange=None) -> CclJob:
    """Validate every input (nothing is written) and fix the job's parameters."""
    src, dest = layers.normalize_url(src), layers.normalize_url(dest)
    if src == dest:
        raise UserError("SRC and DEST are the same layer: ccl writes a new layer")
    info = layers.read_info(src)
    layers.check_mip(info, mip, src)
    if info["num_channels"] != 1:
        raise UserError(f"{src} has {info['num_channels']} channels: ccl needs one")
    thresholded = threshold_gte is not None or threshold_lte is not None
    if info["type"] == "segmentation" and thresholded:
        raise UserError(f"{src} is a segmentation: --threshold-gte/--threshold-lte apply to images only")
    if info["type"] != "segmentation" and not thresholded:
        raise UserError(f"{src} is an image: give --threshold-gte and/or --threshold-lte to choose the foreground")
    if connectivity not in CONNECTIVITIES:
        raise UserError(f"--connectivity must be 6, 18 or 26, got {connectivity}")
    if dust < 0:
        raise UserError(f"--dust must not be negative, got {dust}")
    if partitions is not None and not 1 <= partitions <= mapreduce.MAX_PARTITIONS:
        raise UserError(f"--partitions must be 1 to {mapreduce.MAX_PARTITIONS}, got {partitions}")
    bounds = layers.bounds_from_ranges(layers.scale_bounds(info, mip), xrange, yrange, zrange, src, mip)
    shape = vec3(min(s, b) for s, b in zip(shape or DEFAULT_SHAPE, bounds.shape))
    if any(s <= 0 for s in shape) or math.prod(shape) >= 2**32:
        raise UserError(f"--shape {fmt_vec(shape)} must be positive and under 2^32 voxels")
    chunk = layers.check_chunk_size(chunk_size) or default_chunk(shape)
    if any(s % c for s, c in zip(shape, chunk)):
        raise UserError(f"--chunk-size {fmt_vec(chunk)} must divide --shape {fmt_vec(shape)}")
    enc = layers.normalize_encoding(encoding or "compresso", "uint64", "segmentation")
    layers.check_writable(dest)
    volume_io.check_opens(src, info, mip)
    if partitions is None:
        faces = sum(bounds.voxels / s for s in shape) * 2  # face voxels over all task borders
        partitions = mapreduce.choose_partitions(faces / 4, EDGE_ROW_BYTES * 4, memory)
    return CclJob(src, dest, mip, bounds.to_list(), list(shape), connectivity,
                  None if threshold_gte is None else float(threshold_gte),
                  None if threshold_lte is None else float(threshold_lte),
                  int(dust), bool(fill_missing), int(partitions), enc, list(chunk))


def load_job(job: CclJob, after: str) -> CclJob:
    """The job as the faces pass recorded it; an error naming the options that differ when
    `after` (the pass being planned) finds no intermediates made with these options."""
    from cloudfiles import CloudFiles

    made = CloudFiles(job.root).get_json(JOB_FILE)
    if made is not None:
        return job
    cf = CloudFiles(f"{job.dest}/_ccl")
    others = [cf.get_json(name) for name in list_names(cf, "jobs/")]  # one small record per job
    mine = asdict(job)
    for other in others:
        if other:
            differ = [f"--{k.replace('_', '-')} {other[k]} (now {mine[k]})" for k in mine
                      if k not in NOT_IN_KEY and other.get(k) != mine[k]]
            raise UserError(f"{after}: the faces pass for {job.dest} ran with other options: {', '.join(differ)}")
    raise UserError(f"{after}: no faces output for {job.dest} with these options: run `image ccl faces` first")


def list_names(cf, prefix: str) -> list[str]:
    """Names under prefix; none when the prefix does not exist yet (file:// raises then)."""
    try:
        return sorted(cf.list(prefix=prefix, flat=True))
    except FileNotFoundError:
        return []


def task_memory(job: CclJob) -> float:
    return PROCESS_OVERHEAD + math.prod(job.shape) * BYTES_PER_VOXEL


def components(job: CclJob, box: Box) -> tuple[np.ndarray, int, np.ndarray]:
    """cc3d of one box: local ids (uint32, 0 = background), their count, and each id's
    source value (the label; 1 for a thresholded image)."""
    import cc3d

    info = layers.read_info(job.src)
    img = volume_io.read(job.src, info, job.mip, box, job.fill_missing)[..., 0]
    if job.threshold_gte is not None or job.threshold_lte is not None:
        mask = np.ones(img.shape, dtype=bool)
        if job.threshold_gte is not None:
            mask &= img >= job.threshold_gte
        if job.threshold_lte is not None:
            mask &= img <= job.threshold_lte
        img = mask.view(np.uint8)
    cc, n = cc3d.connected_components(img, connectivity=job.connectivity, return_N=True, out_dtype=np.uint32)
    values = np.zeros(n + 1, dtype=np.uint64)
    values[cc.ravel(order="F")] = img.ravel(order="F").astype(np.uint64)
    return cc, int(n), values


def planes_of(cc: np.ndarray) -> list[np.ndarray]:
    """The six face planes: x low/high (y, z), y low/high (x, z), z low/high (x, y)."""
    return [cc[0], cc[-1], cc[:, 0], cc[:, -1], cc[:, :, 0], cc[:, :, -1]]


def plane_shapes(shape: Vec3) -> list[tuple[int, int]]:
    sx, sy, sz = shape
    return [(sy, sz)] * 2 + [(sx, sz)] * 2 + [(sx, sy)] * 2


def faces_work(spec: CclJob, t: int) -> None:
    """Label one box; write its faces, component sizes and source values (one Arrow column)."""
    from cloudfiles import CloudFiles

    cc, n, values = components(spec, spec.box(t))
    sizes = np.bincount(cc.ravel(order="K"), minlength=n + 1).astype(np.uint64)
    column = np.concatenate([*(p.ravel(order="F").astype(np.uint64) for p in planes_of(cc)), sizes, values])
    CloudFiles(spec.root).put(f"faces/{t}.arrow", mapreduce.encode_table({"v": column}), compress=None)


def read_faces(job: CclJob, t: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """A faces file back: planes (local ids), sizes and values (indexed by local id)."""
    from cloudfiles import CloudFiles

    from igneous_like.errors import TaskError

    data = CloudFiles(job.root).get(f"faces/{t}.arrow")
    if data is None:
        raise TaskError(f"faces output missing: {job.root}/faces/{t}.arrow; run the faces pass first")
    return parse_faces(job, t, data)


def parse_faces(job: CclJob, t: int, data: bytes) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    column = mapreduce.decode_table(data)["v"]
    planes, at = [], 0
    for shape in plane_shapes(job.box(t).shape):
        planes.append(column[at:at + shape[0] * shape[1]].reshape(shape, order="F"))
        at += shape[0] * shape[1]
    rest = column[at:]
    half = len(rest) // 2
    return planes, rest[:half], rest[half:]


def write_job(job: CclJob) -> None:
    """The faces pass's preparation: record the job (later passes check their options against it)."""
    from cloudfiles import CloudFiles

    CloudFiles(job.root).put_json(JOB_FILE, asdict(job))
    CloudFiles(f"{job.dest}/_ccl").put_json(f"jobs/{job.key}.json", asdict(job))


def mark_done(job: CclJob, phase: str, i: int, group: int = MARK_GROUP) -> None:
    """A task of `phase` finished (written last, after its outputs): done/PHASE/GROUP/I, GROUP =
    I // MARK_GROUP, so the task checking whether its phase is complete lists one group."""
    from cloudfiles import CloudFiles

    CloudFiles(job.root).put(f"done/{phase}/{i // group}/{i}", b"", compress=None)


def phase_complete(job: CclJob, phase: str, total: int, i: int, group: int = MARK_GROUP) -> bool:
    """Whether every task of `phase` has finished, as task i sees it right after its marker: it
    lists its group; if that is whole, marks the group and lists the groups. Two listings of at
    most MARK_GROUP and total / MARK_GROUP names, not one of every task."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(job.root)
    g = i // group
    if len(list_names(cf, f"done/{phase}/{g}/")) < min(group, total - g * group):
        return False
    cf.put(f"groups/{phase}/{g}", b"", compress=None)
    return len(list_names(cf, f"groups/{phase}/")) >= -(-total // group)


def done_count(job: CclJob, phase: str) -> int:
    """How many tasks of `phase` have finished (one recursive listing of its markers)."""
    from cloudfiles import CloudFiles

    try:
        return sum(1 for _ in CloudFiles(job.root).list(prefix=f"done/{phase}/"))
    except FileNotFoundError:
        return 0


def require(job: CclJob, phase: str, total: int, after: str) -> None:
    """Refuse to plan `after` while tasks of `phase` have not finished."""
    done = done_count(job, phase)
    if done < total:
        raise UserError(f"{after}: {total - done} of {total} {phase} tasks have not run: run them first")
