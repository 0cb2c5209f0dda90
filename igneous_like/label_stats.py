"""Per-label shape and intensity statistics as mergeable sufficient statistics (pure numpy).

`block_stats` turns one task's block into one row per label: voxel count, exact integer
coordinate sums, second moments about the task's own mean, bounding box, voxel-face counts
per axis and, with an image, intensity sum, second moment, min and max. `merge` combines rows
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


EXACT_FLOAT = 2**53  # integers below this add exactly in float64 (np.bincount's weights)


class Accumulator:
    """Per-id running sums over the slabs of one block (ids are the block's renumbered
    labels). Sums of integers are kept in float64, as np.bincount adds weights: exact while
    they stay below 2^53, which `block_stats` checks for its task shape."""

    def __init__(self, ids: int, with_image: bool):
        zeros = lambda: np.zeros(ids, dtype=np.float64)  # noqa: E731
        self.size = ids
        self.n = zeros()
        self.s = {a: zeros() for a in AXES}
        self.ss = {p: zeros() for p in PAIRS}  # raw second sums, local coordinates
        self.lo = {a: np.full(ids, INT_MAX, dtype=np.int64) for a in AXES}
        self.hi = {a: np.full(ids, INT_MIN, dtype=np.int64) for a in AXES}
        self.faces = {a: zeros() for a in AXES}
        self.image = with_image
        if with_image:
            self.i_sum = zeros()
            self.i_sq = zeros()
            self.i_min = np.full(ids, np.inf)
            self.i_max = np.full(ids, -np.inf)

    def _window(self, ids: np.ndarray) -> tuple[slice, np.ndarray, int]:
        """The span of block ids in `ids` and each element's offset in it: with ids numbered
        in order of appearance (`dense_ids`), a slab's ids are a narrow span, so its
        bincounts and updates stay in cache instead of sweeping every id of the block."""
        lo, hi = (int(ids.min()), int(ids.max()) + 1) if len(ids) else (0, 0)
        return slice(lo, hi), ids.astype(np.intp) - lo, hi - lo

    def add_slab(self, seg: np.ndarray, z0: int, face_counts: dict[str, np.ndarray]) -> None:
        """Runs of equal ids along x give counts, sums and second sums in closed form (far
        fewer updates than voxels for real objects); each run also sums its voxels' owned
        faces per axis (`face_counts`: per voxel, its differing neighbours along that axis)."""
        sx, sy = seg.shape[:2]
        flat = seg.ravel(order="F")
        change = np.empty(flat.size, dtype=bool)
        change[0] = True
        np.not_equal(flat[1:], flat[:-1], out=change[1:])
        change[::sx] = True  # every row starts a run
        starts = np.flatnonzero(change)
        del change
        ids = flat[starts]
        length = np.diff(np.append(starts, flat.size))
        faces = {a: _run_sums(c.ravel(order="F"), starts, length) for a, c in face_counts.items()}
        keep = np.flatnonzero(ids)
        starts, ids, length = starts[keep], ids[keep], length[keep]
        span, local, width = self._window(ids)
        row, x = np.divmod(starts, sx)
        z, y = np.divmod(row, sy)
        z += z0
        n, xf, yf, zf = (v.astype(np.float64) for v in (length, x, y, z))
        sum_x = n * xf + n * (n - 1) / 2
        sum_xx = n * xf * xf + xf * n * (n - 1) + (n - 1) * n * (2 * n - 1) / 6
        yn, zn = yf * n, zf * n
        sums = [(self.n, n), (self.s["x"], sum_x), (self.s["y"], yn), (self.s["z"], zn),
                (self.ss["xx"], sum_xx), (self.ss["yy"], yf * yn), (self.ss["zz"], zf * zn),
                (self.ss["xy"], yf * sum_x), (self.ss["xz"], zf * sum_x), (self.ss["yz"], yf * zn)]
        sums += [(self.faces[a], f[keep]) for a, f in faces.items()]
        for into, weights in sums:
            into[span] += np.bincount(local, weights=weights, minlength=width)
        for axis, lo, hi in (("x", x, x + length), ("y", y, y + 1), ("z", z, z + 1)):
            np.minimum.at(self.lo[axis][span], local, lo)
            np.maximum.at(self.hi[axis][span], local, hi)

    def add_neighbour_faces(self, axis: str, ids: np.ndarray) -> None:
        """Faces owned by this task whose voxel on the far side lies past it (one per id)."""
        np.add.at(self.faces[axis], ids.astype(np.intp), 1.0)

    def add_image(self, seg: np.ndarray, img: np.ndarray) -> None:
        ids = seg.ravel(order="F")
        keep = np.flatnonzero(ids)
        span, local, width = self._window(ids[keep])
        values = img.ravel(order="F")[keep].astype(np.float64)
        self.i_sum[span] += np.bincount(local, weights=values, minlength=width)
        self.i_sq[span] += np.bincount(local, weights=values * values, minlength=width)
        np.minimum.at(self.i_min[span], local, values)
        np.maximum.at(self.i_max[span], local, values)


def _run_sums(values: np.ndarray, starts: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Sum of `values` over each run (a cumulative sum read at run ends: one pass)."""
    total = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=total[1:])
    return (total[starts + length] - total[starts]).astype(np.float64)


def face_counts(own: np.ndarray, nxt: np.ndarray, axis: int, low_edge: bool) -> tuple[np.ndarray, np.ndarray]:
    """Faces along `axis` owned by the slab `own`: per voxel, how many of its neighbours along
    the axis differ (the next layer `nxt` past its last one: zeros outside the bounds; at a low
    edge, the outside before its first layer); and the ids of `nxt` voxels that face a
    different voxel of `own` (their side of those faces)."""
    count = np.zeros(own.shape, dtype=np.uint8, order="F")
    first, rest = _split(own.shape, axis, 1)
    head, last = _split(own.shape, axis, own.shape[axis] - 1)
    differ = own[rest] != own[head]
    count[rest] += differ
    count[head] += differ
    del differ
    at_end = own[last] != nxt
    count[last] += at_end
    if low_edge:
        count[first] += 1  # the outside is background: a face for every voxel (id 0's is dropped)
    return count, nxt[at_end]


def _split(shape: Sequence[int], axis: int, at: int) -> tuple[tuple, tuple]:
    """Index tuples of [:at] and [at:] along `axis`."""
    lo, hi = [slice(None)] * 3, [slice(None)] * 3
    lo[axis], hi[axis] = slice(0, at), slice(at, None)
    return tuple(lo), tuple(hi)


def block_stats(
    seg: np.ndarray,
    original: np.ndarray,
    shape: Sequence[int],
    origin: Sequence[int],
    low_edge: Sequence[bool],
    high_edge: Sequence[bool],
    image: np.ndarray | None = None,
) -> Table:
    """Sufficient statistics of one task. `seg` (x, y, z; ids with 0 = background,
    original[id] = label) covers the task's `shape` plus one voxel past each high face that is
    not a high edge; `origin` is the task's first voxel in global coordinates; `image`, if
    given, covers `shape` exactly. Ids numbered in order of appearance (`dense_ids`) keep the
    per-id sums cache-friendly."""
    sx, sy, sz = (int(s) for s in shape)
    if sx * sy * sz * max(sx, sy, sz) ** 2 >= EXACT_FLOAT:
        raise ValueError(f"task shape {sx}x{sy}x{sz} is too large for exact coordinate moments")
    acc = Accumulator(len(original), image is not None)
    step = max(1, SLAB_VOXELS // max(sx * sy, 1))
    for z0 in range(0, sz, step):
        z1 = min(z0 + step, sz)
        own = np.asfortranarray(seg[:sx, :sy, z0:z1])
        counts = {}
        for axis in range(3):
            nxt = _next_layer(seg, own, (sx, sy, sz), axis, z1, high_edge[axis])
            counts[AXES[axis]], beyond = face_counts(own, nxt, axis, low_edge[axis] and (axis < 2 or z0 == 0))
            acc.add_neighbour_faces(AXES[axis], beyond)
        acc.add_slab(own, z0, counts)
        del counts
        if image is not None:
            acc.add_image(own, image[:sx, :sy, z0:z1])
    return _rows(acc, original, origin)


def _next_layer(seg, own, shape, axis, z1, high_edge):
    """The layer after the slab `own` along `axis` (from the voxel past the task, or the next
    slab), zeros where that is outside the bounds."""
    sx, sy, sz = shape
    stop = z1 if axis == 2 else shape[axis]
    if high_edge and stop == shape[axis]:
        return np.zeros_like(own[_split(own.shape, axis, 1)[0]])
    idx = [slice(0, sx), slice(0, sy), slice(z1 - own.shape[2], z1)]
    idx[axis] = slice(stop, stop + 1)
    return seg[tuple(idx)]


def dense_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (x, y, z) as small ids in Fortran order: 0 for background, then 1, 2, ... in
    order of first appearance along x, y, z, so objects near in space get ids near in memory
    (see Accumulator._window); and original[id] = label. The unique/inverse (fastremap, C++)
    runs over runs of equal labels along x, not voxels: far fewer for real objects."""
    import fastremap

    flat = labels.ravel(order="F")
    if flat.size == 0:
        return np.zeros(labels.shape, dtype=np.uint8, order="F"), np.zeros(1, dtype=np.uint64)
    change = np.empty(flat.size, dtype=bool)
    change[0] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    del change
    uniq, first, inverse = fastremap.unique(flat[starts], return_index=True, return_inverse=True)
    order = np.argsort(first)
    if uniq[0] == 0:
        order = order[order != 0]
    rank = np.zeros(len(uniq), dtype=np.min_scalar_type(len(order) + 1))
    rank[order] = np.arange(1, len(order) + 1, dtype=rank.dtype)
    lengths = np.diff(np.append(starts, flat.size))
    ids = np.repeat(rank[inverse], lengths).reshape(labels.shape, order="F")
    return ids, np.concatenate([np.zeros(1, dtype=np.uint64), uniq[order].astype(np.uint64)])


def _rows(acc: Accumulator, original: np.ndarray, origin: Sequence[int]) -> Table:
    """One row per label present (voxels or owned faces), in global coordinates. Accumulators
    are released as their columns are made: a million-label task holds one copy, not two."""
    faces = acc.faces["x"] + acc.faces["y"] + acc.faces["z"]
    keep = np.flatnonzero((acc.n > 0) | (faces > 0))
    del faces
    keep = keep[keep != 0]
    n = acc.n[keep].astype(np.int64)
    safe = np.maximum(n, 1).astype(np.float64)
    cols: Table = {"label": original[keep].astype(np.uint64), "n": n}
    mean = {a: acc.s[a][keep] for a in AXES}
    for pair in PAIRS:
        a, b = pair
        cols[f"c{pair}"] = acc.ss.pop(pair)[keep] - mean[a] * mean[b] / safe
    del mean
    for axis, o in zip(AXES, origin):
        cols[f"s{axis}"] = acc.s.pop(axis)[keep].astype(np.int64) + n * int(o)
        cols[f"min_{axis}"] = np.where(n > 0, acc.lo.pop(axis)[keep] + int(o), INT_MAX)
        cols[f"max_{axis}"] = np.where(n > 0, acc.hi.pop(axis)[keep] + int(o), INT_MIN)
        cols[f"faces_{axis}"] = acc.faces.pop(axis)[keep].astype(np.int64)
    if acc.image:
        i_sum = acc.i_sum[keep]
        cols["i_sum"] = i_sum
        cols["i_m2"] = np.maximum(acc.i_sq[keep] - i_sum * i_sum / safe, 0.0)
        cols["i_min"] = acc.i_min[keep]
        cols["i_max"] = acc.i_max[keep]
    return {name: cols[name] for name in PARTIAL_COLUMNS if name in cols}


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
    out: Table = {"label": m["label"].astype(np.uint64), "voxel_count": n.astype(np.uint64)}
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
