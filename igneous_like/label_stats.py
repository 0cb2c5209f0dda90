"""Per-label shape and intensity statistics as mergeable sufficient statistics (pure numpy).

`block_partial` turns one task's block into one row per label: voxel count, exact integer
coordinate sums and second sums, bounding box, voxel-face counts per axis (all in task-local
coordinates, each column in the narrowest integer dtype that holds it: what a map task stores)
and, with an image, intensity sum, second moment, min and max. `widen` turns those rows into
merge's form (global coordinates, int64, second moments about the task's own mean). `merge` combines rows
of the same label from many tasks (Chan's parallel formula for the moments, so nothing is
lost to cancellation); `columns` turns merged rows into the published table.

Faces: a task owns the faces whose low voxel lies inside it. It sees one extra voxel past its
high faces (or the outside, as background, at the edge of the bounds) and, at the low edge of
the bounds, the outside before its first voxel; so each face is counted exactly once.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from igneous_like.mapreduce import Table, group, group_max, group_min, group_sum

AXES = "xyz"
PAIRS = ("xx", "yy", "zz", "xy", "xz", "yz")
SLAB_VOXELS = 1 << 22  # voxels per z slab: bounds the temporaries of a large task

SHAPE_COLUMNS = (
    "label", "voxel_count", "bbox_min_x", "bbox_min_y", "bbox_min_z", "bbox_max_x", "bbox_max_y", "bbox_max_z",
    "centroid_x", "centroid_y", "centroid_z", "volume_nm3", "surface_area_nm2", "touches_border",
    "axis_major_nm", "axis_minor_nm",
)
INTENSITY_COLUMNS = ("intensity_mean", "intensity_std", "intensity_min", "intensity_max")

PARTIAL_COLUMNS = (
    "label", "n", "sx", "sy", "sz", *(f"c{p}" for p in PAIRS), *(f"min_{a}" for a in AXES),
    *(f"max_{a}" for a in AXES), *(f"faces_{a}" for a in AXES), "i_sum", "i_m2", "i_min", "i_max",
)
INT_MAX = np.iinfo(np.int64).max
INT_MIN = np.iinfo(np.int64).min
LOCAL_MAX = np.iinfo(np.int32).max


class Accumulator:
    """Per-id running sums over the slabs of one block (ids are the block's renumbered labels)."""

    def __init__(self, ids: int, with_image: bool):
        zeros = lambda: np.zeros(ids, dtype=np.int64)  # noqa: E731
        self.n = zeros()
        self.s = {a: zeros() for a in AXES}
        self.ss = {p: zeros() for p in PAIRS}  # raw second sums, local coordinates: exact int64
        # local coordinates fit int32: half the memory traffic of int64
        self.lo = {a: np.full(ids, LOCAL_MAX, dtype=np.int32) for a in AXES}
        self.hi = {a: np.full(ids, -1, dtype=np.int32) for a in AXES}
        self.faces = {a: zeros() for a in AXES}
        self.image = with_image
        if with_image:
            self.i_sum = np.zeros(ids, dtype=np.float64)
            self.i_sq = np.zeros(ids, dtype=np.float64)
            self.i_min = np.full(ids, np.inf)
            self.i_max = np.full(ids, -np.inf)

    def add_runs(self, seg: np.ndarray, z0: int) -> Runs:
        """Runs of equal ids along x give counts, sums and second sums in closed form: far
        fewer updates than voxels for real objects; and the x-faces inside the rows, one at
        each end of a run (not before a row's first voxel or after its last: those face
        other layers, counted by _add_faces). Returns the runs, for add_run_faces.
        Every per-run value is made in as few passes as it can be (4M labels in 2x2x2 cubes:
        16M runs, where each pass over them costs ~0.03 s): one divmod for both parts of a
        quotient, products reused, in-place updates, no copy where no run is background."""
        sx, sy = seg.shape[:2]
        flat = seg.ravel(order="F")
        starts = _run_starts(flat, row=sx)  # every row starts a run
        ids = flat[starts].astype(np.intp)
        length = _run_lengths(starts, flat.size)
        keep = ids != 0
        every_start = starts
        if not keep.all():  # background runs: not counted
            ids, starts, length = ids[keep], starts[keep], length[keep]
        runs = (every_start, keep, ids)
        row, x = np.divmod(starts, sx)
        z, y = np.divmod(row, sy)
        del row
        if z0:
            z += z0
        half = length * (length - 1)  # L(L-1), then L(L-1)/2
        half >>= 1
        sum_x = length * x  # x + (x+1) + ... + (x+L-1) = Lx + L(L-1)/2
        sum_x += half
        # x^2 + ... + (x+L-1)^2 = x (sum_x + L(L-1)/2) + (L-1)L(2L-1)/6, and L(L-1)(2L-1)/6 = half (2L-1) / 3
        sum_xx = sum_x + half
        sum_xx *= x
        tail = length * 2
        tail -= 1
        tail *= half
        tail //= 3
        sum_xx += tail
        del half, tail
        y_len, z_len = y * length, z * length
        add = np.add.at
        add(self.n, ids, length)
        add(self.s["x"], ids, sum_x)
        add(self.s["y"], ids, y_len)
        add(self.s["z"], ids, z_len)
        add(self.ss["xx"], ids, sum_xx)
        del sum_xx
        for pair, a, b in (("yy", y, y_len), ("zz", z, z_len), ("xy", y, sum_x), ("xz", z, sum_x), ("yz", y, z_len)):
            values = a * b
            add(self.ss[pair], ids, values)
        del values, y_len, z_len, sum_x
        end = x + length  # one past each run
        faces = (x > 0).astype(np.int64)  # a face before the run, inside the row
        faces += end < sx  # and one after it
        add(self.faces["x"], ids, faces)
        del faces
        # boxes: max of y and z are the last voxel's (+1 in _rows), so neither needs an add here
        for axis, lo, hi in (("x", x, end), ("y", y, y), ("z", z, z)):
            np.minimum.at(self.lo[axis], ids, lo.astype(np.int32))
            np.maximum.at(self.hi[axis], ids, hi.astype(np.int32))
        return runs

    def add_run_faces(self, axis: str, counts: np.ndarray, runs: Runs) -> None:
        """Per-voxel face counts of a slab (Fortran order, as add_runs saw it), summed per
        run, added to each run's id: one update per run, not one per face."""
        starts, keep, ids = runs
        per_run = np.add.reduceat(counts.ravel(order="F"), starts, dtype=np.int64)[keep]
        np.add.at(self.faces[axis], ids, per_run)

    def add_faces(self, axis: str, low: np.ndarray, high: np.ndarray,
                  low_counts: np.ndarray | None = None, high_counts: np.ndarray | None = None) -> None:
        """Faces between each voxel of `low` and its neighbour in `high`, one on each side: into
        that side's per-voxel counts where given (for add_run_faces), else straight to its ids."""
        differ = low != high
        for side, counts in ((low, low_counts), (high, high_counts)):
            if counts is not None:
                counts += differ
            else:
                np.add.at(self.faces[axis], side[differ], 1)  # background's (id 0) are dropped at the end

    def add_image(self, seg: np.ndarray, img: np.ndarray) -> None:
        ids = seg.ravel(order="F").astype(np.intp)
        values = img.ravel(order="F").astype(np.float64)
        keep = ids != 0
        ids, values = ids[keep], values[keep]
        np.add.at(self.i_sum, ids, values)
        np.add.at(self.i_sq, ids, values * values)
        np.minimum.at(self.i_min, ids, values)
        np.maximum.at(self.i_max, ids, values)


Runs = tuple  # (start of every run in the slab's flat order, which are labels (not background), their ids)


def dense_ids(raw: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A block's labels (x, y, z, Fortran order) as dense ids numbered in order of first
    appearance, x fastest (0 = background), with original[id] = label and by_label (the ids in
    increasing label order). Numbered so, the ids that one slab's runs and faces touch lie in
    a narrow window of the per-id sums, which stays in cache; ids in label order scatter at
    random over all of them (4M labels: ~10x slower ufunc.at, most of a map task's time).
    Given as a one-element list (and referenced nowhere else), the block is taken out of it:
    an unsigned block whose labels span no more values than it has voxels is renumbered in
    its own memory through a table indexed by label - min (_dense_ids_by_table); any other is
    numbered per run of equal labels, and freed once its runs are found."""
    import fastremap

    owned = isinstance(raw, list)
    if owned:
        raw = raw.pop()
    if owned and raw.size and raw.dtype.kind == "u" and raw.flags.f_contiguous and raw.flags.writeable:
        lo, hi = fastremap.minmax(raw)
        if int(hi) - int(lo) < raw.size:
            return _dense_ids_by_table(raw, lo, int(hi) - int(lo) + 1)
    # any other block: its labels are found per run of equal labels along x (the block's memory
    # order), not per voxel (_number_runs), and the ids spread back over the runs' voxels.
    shape = raw.shape
    flat = raw.T.reshape(-1)  # x fastest: the block's own memory when it is Fortran-ordered
    starts = _run_starts(flat)
    run_labels = flat[starts]
    lengths = _run_lengths(starts, flat.size)
    del raw, flat, starts
    labels, rank, run_ids = _number_runs(run_labels)
    del run_labels
    ids = np.repeat(run_ids, lengths).reshape(shape, order="F")
    original = np.empty(len(labels), dtype=np.uint64)
    original[rank] = labels
    return ids, original, rank


def _number_runs(run_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dense_ids for a sequence of run labels (in voxel order): labels (sorted, 0 first: added
    if absent), rank (labels[i]'s id) and each run's id, numbered by first appearance, 0 for
    background. One argsort of the runs gives all three: each label's first run is the least
    run index in its group, its id the order of that run, and the ids go back to the runs in
    one scatter. 16M runs of 4M sparse uint64 labels: ~2 s, where np.unique's inverse (an
    argsort, then a cumsum and a scatter of its own) and a remap took ~3.5 s, and
    fastremap.unique over the 33M voxels ~6 s."""
    runs = len(run_labels)
    order = np.argsort(run_labels)
    in_order = run_labels[order]
    new = np.empty(runs, dtype=bool)
    new[:1] = True
    np.not_equal(in_order[1:], in_order[:-1], out=new[1:])
    group_starts = np.flatnonzero(new)
    labels = in_order[group_starts].astype(np.uint64)
    del in_order, new
    count = len(labels)
    first = np.minimum.reduceat(order, group_starts) if runs else np.zeros(0, dtype=np.intp)
    seen = np.zeros(runs, dtype=bool)
    seen[first] = True
    owner = np.empty(runs, dtype=np.intp)
    owner[first] = np.arange(count)
    rank = np.empty(count, dtype=np.intp)
    rank[owner[np.flatnonzero(seen)]] = np.arange(1, count + 1)  # groups by first run: ids 1, 2, ...
    del seen, owner, first
    background = bool(count and labels[0] == 0)
    if background:  # the background takes id 0, the labels after it close up
        rank -= rank > rank[0]
        rank[0] = 0
    dtype = np.min_scalar_type(count + (not background))
    run_ids = np.empty(runs, dtype=dtype)
    run_ids[order] = np.repeat(rank.astype(dtype), np.diff(np.append(group_starts, runs)))
    if not background:  # no background voxel: id 0 still means background
        labels = np.concatenate([np.zeros(1, dtype=np.uint64), labels])
        rank = np.concatenate([np.zeros(1, dtype=np.intp), rank])
    return labels, rank, run_ids


def _dense_ids_by_table(raw: np.ndarray, lo, span: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dense_ids for an unsigned, Fortran-ordered block of labels lo .. lo + span - 1 (span at
    most its voxel count), in place: label - min indexes a table of ids, so there is no sort,
    no hash and no inverse beside the block (4M labels in 512x512x128: ~0.5 s instead of
    ~1 s, and ~200 MB less at the peak). The block's memory is overwritten."""
    import fastremap

    size = raw.size
    flat = raw.T.reshape(-1)  # the block's own memory, x fastest
    np.subtract(flat, flat.dtype.type(lo), out=flat)
    first = _first_positions(flat, span)  # size where a value is absent
    offsets = np.flatnonzero(first < size)  # label - lo of every label present, increasing
    background = int(lo) == 0 and first[0] < size
    table = _appearance_ranks(flat, first[offsets], span, background)
    del first
    fastremap.remap_from_array(flat, table, in_place=True)
    rank = table[offsets].astype(np.intp)
    del table
    labels = offsets.astype(np.uint64) + np.uint64(lo)
    if not background:
        labels = np.concatenate([np.zeros(1, dtype=np.uint64), labels])
        rank = np.concatenate([np.zeros(1, dtype=np.intp), rank])
    ids = raw.astype(np.min_scalar_type(len(labels)), order="F")
    del raw, flat
    original = np.empty(len(labels), dtype=np.uint64)
    original[rank] = labels
    return ids, original, rank


def _appearance_ranks(flat: np.ndarray, first: np.ndarray, count: int, background: bool) -> np.ndarray:
    """rank[v] for the values v of `flat` (0 <= v < count; those present first seen at the flat
    indices `first`): ids in order of first appearance, 1, 2, ...; 0 for values absent. With
    `background` (value 0 is present and is the background), that one is 0 and the ids after it
    close up. Ranked from the first positions in increasing order (a bool mark per voxel), not
    a running count over every voxel (4M labels: a 134 MB temporary)."""
    seen = np.zeros(flat.size, dtype=bool)
    seen[first] = True
    positions = np.flatnonzero(seen)  # the first positions, in increasing order
    del seen
    rank = np.zeros(count, dtype=flat.dtype)
    rank[flat[positions]] = np.arange(1, len(positions) + 1, dtype=flat.dtype)
    if background:
        rank -= rank > rank[0]
        rank[0] = 0
    return rank


def _first_positions(flat: np.ndarray, count: int, step: int = 1 << 22) -> np.ndarray:
    """The flat index of each id's first voxel (ids 0..count-1, each present), found from the
    starts of runs of equal ids: what fastremap.unique's return_index gives, for a fraction of
    its cost (4M labels: ~0.3 s instead of ~0.6-1 s on top of the inverse). `step` voxels at a
    time, so the run starts of a whole block (4M labels: 134 MB) are never held at once."""
    first = np.full(count, flat.size, dtype=np.int64)
    for at in range(0, flat.size, step):
        part = flat[max(at - 1, 0):at + step]  # with the voxel before: a run that goes on does not restart
        starts = _run_starts(part)
        if at:
            starts = starts[1:]  # the voxel before always starts the part's first run: not ours
        ids = part[starts]
        np.minimum.at(first, ids.view(np.int64) if ids.dtype == np.uint64 else ids.astype(np.intp),
                      starts + (at - 1 if at else 0))
    return first


def _run_starts(flat: np.ndarray, row: int = 0) -> np.ndarray:
    """Where each run of equal values in `flat` starts; with `row`, every row of that length
    also starts one."""
    change = np.empty(flat.size, dtype=bool)
    change[:1] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    if row:
        change[::row] = True
    return np.flatnonzero(change)


def _run_lengths(starts: np.ndarray, size: int) -> np.ndarray:
    """The length of each run, from _run_starts' starts in a sequence of `size` values."""
    lengths = np.empty_like(starts)
    np.subtract(starts[1:], starts[:-1], out=lengths[:-1])
    lengths[-1:] = size - starts[-1:]
    return lengths


def block_stats(
    seg: np.ndarray,
    original: np.ndarray,
    shape: Sequence[int],
    origin: Sequence[int],
    low_edge: Sequence[bool],
    high_edge: Sequence[bool],
    image: np.ndarray | None = None,
    by_label: np.ndarray | None = None,
) -> Table:
    """Sufficient statistics of one task in merge's form: `widen` of `block_partial`, with
    `origin` the task's first voxel in global coordinates."""
    return widen(block_partial(seg, original, shape, low_edge, high_edge, image, by_label), origin)


def block_partial(
    seg: np.ndarray,
    original: np.ndarray,
    shape: Sequence[int],
    low_edge: Sequence[bool],
    high_edge: Sequence[bool],
    image: np.ndarray | None = None,
    by_label: np.ndarray | None = None,
) -> Table:
    """Sufficient statistics of one task, one row per label, sorted by label, as a map task
    stores them (task-local and narrow: `widen` with the task's origin gives merge's form).
    `seg` (x, y, z; ids with 0 = background, original[id] = label, in any order: `dense_ids`
    gives the fast one) covers the task's `shape` plus one voxel past each high face that is
    not a high edge; `image`, if given, covers `shape` exactly; `by_label`, if given, lists the
    ids in increasing label order (else it is sorted out of `original`)."""
    sx, sy, sz = (int(s) for s in shape)
    acc = Accumulator(len(original), image is not None)
    step = max(1, SLAB_VOXELS // max(sx * sy, 1))
    for z0 in range(0, sz, step):
        z1 = min(z0 + step, sz)
        own = np.asfortranarray(seg[:sx, :sy, z0:z1])
        runs = acc.add_runs(own, z0)
        _add_faces(acc, seg, own, (sx, sy, sz), 0, (z0, z1), low_edge[0], high_edge[0])
        for axis in (1, 2):
            counts = np.zeros(own.shape, dtype=np.uint8, order="F")  # faces per voxel of the slab
            _add_faces(acc, seg, own, (sx, sy, sz), axis, (z0, z1), low_edge[axis], high_edge[axis], counts)
            acc.add_run_faces(AXES[axis], counts, runs)
        if image is not None:
            acc.add_image(own, image[:sx, :sy, z0:z1])
    return _rows(acc, original, by_label)


def _add_faces(acc: Accumulator, seg, own, shape, axis: int, zs: tuple[int, int], low_edge: bool, high_edge: bool,
               counts: np.ndarray | None = None) -> None:
    """The faces along `axis` owned by one slab, in place (no extended copy of the slab):
    between its own layers (along x the runs counted those), between its last layer and the
    next one (of `seg`; the outside, 0, at a high edge) and, at a low edge, between the
    outside and its first layer. With `counts` (the slab's shape, zeros), the faces of the
    slab's own voxels are counted there per voxel, for add_run_faces; only those of voxels
    past the slab go to the accumulator directly."""
    start, stop = (0, shape[axis]) if axis < 2 else zs
    name = AXES[axis]
    if axis > 0:
        acc.add_faces(name, _layers(own, axis, 0, -1), _layers(own, axis, 1, None),
                      _layers(counts, axis, 0, -1) if counts is not None else None,
                      _layers(counts, axis, 1, None) if counts is not None else None)
    last = _layers(own, axis, -1, None)
    last_counts = _layers(counts, axis, -1, None) if counts is not None else None
    if high_edge and stop == shape[axis]:
        acc.add_faces(name, last, np.zeros_like(last), last_counts, None)
    else:
        idx = [slice(0, shape[0]), slice(0, shape[1]), slice(*zs)]
        idx[axis] = slice(stop, stop + 1)
        acc.add_faces(name, last, seg[tuple(idx)], last_counts, None)
    if low_edge and start == 0:
        first = _layers(own, axis, 0, 1)
        acc.add_faces(name, np.zeros_like(first), first, None,
                      _layers(counts, axis, 0, 1) if counts is not None else None)


def _layers(arr: np.ndarray, axis: int, start: int, stop: int | None) -> np.ndarray:
    idx = [slice(None)] * 3
    idx[axis] = slice(start, stop)
    return arr[tuple(idx)]


def _rows(acc: Accumulator, original: np.ndarray, by_label: np.ndarray | None) -> Table:
    """One row per label present (voxels or owned faces), in the stored form: merge's columns
    with raw second sums q.. in place of c.., task-local integers, each in the narrowest dtype
    its values fit (see `widen`). Each accumulator is narrowed before its rows are gathered in
    label order, so the gather reads a few MB that stay in cache, not a 32 MB column at random,
    and the partial is a fraction of the int64 size to encode, store and decode. Accumulators
    are released as their columns are made."""
    present = (acc.n > 0) | (acc.faces["x"] > 0) | (acc.faces["y"] > 0) | (acc.faces["z"] > 0)
    present[0] = False  # background
    if by_label is None:
        by_label = np.argsort(original, kind="stable")
    keep = by_label[present[by_label]]  # rows in label order, as merge's input must be
    del present
    empty = acc.n == 0  # ids with owned faces but no voxel: store 0 as their box, widen restores the sentinels

    def take(values: np.ndarray) -> np.ndarray:  # np.take: ~1.5x faster than values[keep]
        return np.take(narrowest(values, skip_first=True), keep)  # id 0 (background) is never kept

    cols: Table = {"label": np.take(original, keep).astype(np.uint64, copy=False), "n": take(acc.n)}
    for axis in AXES:
        cols[f"s{axis}"] = take(acc.s.pop(axis))
    for pair in PAIRS:
        cols[f"q{pair}"] = take(acc.ss.pop(pair))
    for axis in AXES:
        for name, store in (("min", acc.lo), ("max", acc.hi)):
            values = store.pop(axis)
            if name == "max" and axis != "x":
                values += 1  # add_runs keeps the last y and z, the box ends one past them
            values[empty] = 0
            cols[f"{name}_{axis}"] = take(values)
    for axis in AXES:
        cols[f"faces_{axis}"] = take(acc.faces.pop(axis))
    if acc.image:
        n = np.take(acc.n, keep)
        safe = np.maximum(n, 1).astype(np.float64)
        i_sum = np.take(acc.i_sum, keep)
        cols["i_sum"] = i_sum
        cols["i_m2"] = np.maximum(np.take(acc.i_sq, keep) - i_sum * i_sum / safe, 0.0)
        cols["i_min"] = np.take(acc.i_min, keep)
        cols["i_max"] = np.take(acc.i_max, keep)
    return cols


def narrowest(values: np.ndarray, skip_first: bool = False) -> np.ndarray:
    """An integer array in the smallest (unsigned if it can be) dtype that holds its values
    exactly (all but the first with skip_first: that one may wrap); `widen` reads any of them
    back as int64."""
    fit = values[1:] if skip_first else values
    if not len(fit):
        return values
    lo, hi = int(fit.min()), int(fit.max())
    for dtype in ((np.uint8, np.uint16, np.uint32, np.uint64) if lo >= 0 else (np.int8, np.int16, np.int32, np.int64)):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return values.astype(dtype, copy=False)
    return values


def widen(stored: Table, origin: Sequence[int]) -> Table:
    """A map task's stored rows -> merge's form (PARTIAL_COLUMNS), in global coordinates:
    int64 counts, sums and boxes (INT_MAX / INT_MIN boxes for rows without voxels), float
    second moments about the task's own mean. The same arithmetic, on the same integer values,
    as the map once did before storing, so the merged table is bit for bit what it was.
    Consumes `stored` (its columns are released as they are used)."""
    n = stored.pop("n").astype(np.int64)
    safe = np.maximum(n, 1).astype(np.float64)
    out: Table = {"label": stored.pop("label"), "n": n}
    local = {a: stored.pop(f"s{a}").astype(np.int64) for a in AXES}
    mean = {a: local[a].astype(np.float64) for a in AXES}
    for pair in PAIRS:
        a, b = pair
        out[f"c{pair}"] = stored.pop(f"q{pair}").astype(np.float64) - mean[a] * mean[b] / safe
    del mean
    voxels = n > 0
    for axis, o in zip(AXES, origin):
        out[f"s{axis}"] = local.pop(axis) + n * int(o)
        out[f"min_{axis}"] = np.where(voxels, stored.pop(f"min_{axis}").astype(np.int64) + np.int64(o), INT_MAX)
        out[f"max_{axis}"] = np.where(voxels, stored.pop(f"max_{axis}").astype(np.int64) + np.int64(o), INT_MIN)
        out[f"faces_{axis}"] = stored.pop(f"faces_{axis}").astype(np.int64)
    out.update(stored)  # intensity columns: already in merge's form
    return {name: out[name] for name in PARTIAL_COLUMNS if name in out}


def merge(table: Table) -> Table:
    """Rows with repeated labels -> one row per label, sorted (associative: its output merges
    again). Moments combine about the merged mean, as in Chan et al.'s parallel variance."""
    keys, inv = group(table["label"])
    g = len(keys)
    n_rows = table["n"]
    n = group_sum(inv, n_rows, g)
    out: Table = {"label": keys, "n": n}
    for axis in AXES:
        out[f"s{axis}"] = group_sum(inv, table[f"s{axis}"], g)
    rows_safe = np.maximum(n_rows, 1).astype(np.float64)
    safe = np.maximum(n, 1).astype(np.float64)
    # each row's mean minus its label's merged mean (0 for rows without voxels)
    delta = {a: np.where(n_rows > 0, table[f"s{a}"] / rows_safe - (out[f"s{a}"] / safe)[inv], 0.0) for a in AXES}
    for pair in PAIRS:
        a, b = pair
        out[f"c{pair}"] = group_sum(inv, table[f"c{pair}"] + n_rows * delta[a] * delta[b], g)
    for axis in AXES:
        out[f"min_{axis}"] = group_min(inv, table[f"min_{axis}"], g)
        out[f"max_{axis}"] = group_max(inv, table[f"max_{axis}"], g)
    for axis in AXES:
        out[f"faces_{axis}"] = group_sum(inv, table[f"faces_{axis}"], g)
    if "i_sum" in table:
        i_sum = group_sum(inv, table["i_sum"], g)
        d = np.where(n_rows > 0, table["i_sum"] / rows_safe - (i_sum / safe)[inv], 0.0)
        out["i_sum"] = i_sum
        out["i_m2"] = group_sum(inv, table["i_m2"] + n_rows * d * d, g)
        out["i_min"] = group_min(inv, table["i_min"], g)
        out["i_max"] = group_max(inv, table["i_max"], g)
    return out


def columns(merged: Table, resolution: Sequence[float], start: Sequence[int], stop: Sequence[int]) -> Table:
    """The published table from merged rows: labels with voxels only, columns as documented.
    `start`/`stop` are the dataset's bounds (for touches_border). Consumes `merged` (its
    columns are released as they are used)."""
    keep = merged["n"] > 0
    m = merged if keep.all() else {k: v[keep] for k, v in merged.items()}
    n = m["n"]
    nf = n.astype(np.float64)
    res = [float(r) for r in resolution]
    # counts are never negative: int64 read as uint64 is the same numbers, without a copy
    count = n.view(np.uint64) if n.dtype == np.int64 else n.astype(np.uint64)
    out: Table = {"label": m["label"].astype(np.uint64, copy=False), "voxel_count": count}
    for axis in AXES:
        out[f"bbox_min_{axis}"] = m[f"min_{axis}"]
    for axis in AXES:
        out[f"bbox_max_{axis}"] = m[f"max_{axis}"]
    for axis in AXES:
        out[f"centroid_{axis}"] = m.pop(f"s{axis}") / nf + 0.5
    out["volume_nm3"] = nf * (res[0] * res[1] * res[2])
    out["surface_area_nm2"] = (m.pop("faces_x") * (res[1] * res[2]) + m.pop("faces_y") * (res[0] * res[2])
                               + m.pop("faces_z") * (res[0] * res[1]))
    border = np.zeros(len(n), dtype=bool)
    for i, axis in enumerate(AXES):
        border |= (m[f"min_{axis}"] <= start[i]) | (m[f"max_{axis}"] >= stop[i])
    out["touches_border"] = border
    major, minor = _axes(m, nf, res)
    out["axis_major_nm"], out["axis_minor_nm"] = major, minor
    if "i_sum" in m:
        out["intensity_mean"] = m.pop("i_sum") / nf
        out["intensity_std"] = np.sqrt(np.maximum(m.pop("i_m2") / nf, 0.0))
        out["intensity_min"] = m["i_min"]
        out["intensity_max"] = m["i_max"]
    return out


def _axes(m: Table, nf: np.ndarray, res: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """4 sqrt(largest, smallest eigenvalue) of the population covariance of voxel centres, nm."""
    scale = {p: res[AXES.index(p[0])] * res[AXES.index(p[1])] for p in PAIRS}
    c = {p: m.pop(f"c{p}") * (scale[p] / nf) for p in PAIRS}
    hi, lo = symmetric_eig_extremes(c["xx"], c["yy"], c["zz"], c["xy"], c["xz"], c["yz"])
    return 4 * np.sqrt(np.maximum(hi, 0.0)), 4 * np.sqrt(np.maximum(lo, 0.0))


def symmetric_eig_extremes(a, b, c, d, e, f) -> tuple[np.ndarray, np.ndarray]:
    """Largest and smallest eigenvalues of the symmetric 3x3 matrices [[a,d,e],[d,b,f],[e,f,c]],
    vectorized in closed form: no (n, 3, 3) stack and no LAPACK call per matrix. Diagonal
    matrices take their extreme diagonal entries; a matrix with one axis decoupled (two zero
    off-diagonals: an axis-aligned or one-plane object) splits into that axis and a 2x2 block,
    so exact zeros stay exact; the others take the trigonometric solution of the
    characteristic cubic, and the rare ones whose smallest eigenvalue is tiny against the
    largest (where that formula cancels) numpy's eigvalsh."""
    a, b, c, d, e, f = (np.asarray(v, dtype=np.float64) for v in (a, b, c, d, e, f))
    hi, lo = np.maximum(np.maximum(a, b), c), np.minimum(np.minimum(a, b), c)
    zd, ze, zf = d == 0, e == 0, f == 0
    for alone, x, y, z, rows in ((c, a, b, d, ze & zf & ~zd), (b, a, c, e, zd & zf & ~ze), (a, b, c, f, zd & ze & ~zf)):
        i = np.flatnonzero(rows)
        if len(i):
            mid, half = (x[i] + y[i]) / 2, np.hypot((x[i] - y[i]) / 2, z[i])
            hi[i], lo[i] = np.maximum(alone[i], mid + half), np.minimum(alone[i], mid - half)
    i = np.flatnonzero(~((zd & ze) | (zd & zf) | (ze & zf)))
    if len(i):
        hi[i], lo[i] = _cubic_extremes(a[i], b[i], c[i], d[i], e[i], f[i])
        tiny = i[~(np.abs(lo[i]) > 1e-6 * np.abs(hi[i]))]
        if len(tiny):
            rows = [a[tiny], d[tiny], e[tiny], d[tiny], b[tiny], f[tiny], e[tiny], f[tiny], c[tiny]]
            eig = np.linalg.eigvalsh(np.stack(rows, axis=-1).reshape(len(tiny), 3, 3))
            hi[tiny], lo[tiny] = eig[:, -1], eig[:, 0]
    return hi, lo


def _cubic_extremes(a, b, c, d, e, f) -> tuple[np.ndarray, np.ndarray]:
    """The trigonometric solution (Smith 1961) for matrices with nonzero off-diagonals."""
    q = (a + b + c) / 3
    a, b, c = a - q, b - q, c - q
    p = np.sqrt((a * a + b * b + c * c + 2 * (d * d + e * e + f * f)) / 6)
    det = a * (b * c - f * f) - d * (d * c - f * e) + e * (d * f - b * e)
    phi = np.arccos(np.clip(det / (2 * p ** 3), -1.0, 1.0)) / 3
    return q + 2 * p * np.cos(phi), q + 2 * p * np.cos(phi + 2 * np.pi / 3)
