"""image ccl links: the equivalences across each task's three high faces, from the faces files
of the task and its (up to seven) high neighbours, written split by union-find leaf.

Task t writes one file per leaf among its own and its high neighbours' leaves (empty ones too),
edges/LEAF/t.arrow, so leaf p reads exactly the tasks of its box grown by one task on its low
sides (ccl_labels.up_leaf): names from the grid, never from a listing."""
from __future__ import annotations

import itertools

import numpy as np

from igneous_like import mapreduce
from igneous_like.grid import Box
from igneous_like.ops.image.ccl import LOCAL_BITS, CclJob, read_faces

# in-plane offsets (other two axes) of the voxel pairs across a face, per connectivity
OFFSETS = {6: [(0, 0)], 18: [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)],
           26: [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]}
COLUMNS = ("label", "other", "size")


def _assemble(job: CclJob, faces: dict, t: int, axis: int, high: bool) -> tuple[np.ndarray, ...]:
    """Global ids, values and sizes on one plane at task t's high `axis` face: t's last layer
    (high=False) or the next tasks' first layer (high=True), over t's extent in the other two
    axes grown by one voxel, so diagonal neighbours (18/26) are seen too."""
    others = [a for a in range(3) if a != axis]
    box, bounds = job.box(t), Box.from_list(job.bounds)
    lo = [box.start[a] for a in others]
    hi = [min(box.stop[a] + 1, bounds.stop[a]) for a in others]
    shape = (hi[0] - lo[0], hi[1] - lo[1])
    ids = np.zeros(shape, np.uint64)
    vals, sizes = np.zeros(shape, np.uint64), np.zeros(shape, np.uint64)
    base = list(job.cell(t))
    base[axis] += 1 if high else 0
    for db in (0, 1):
        for dc in (0, 1):
            cell = list(base)
            cell[others[0]] += db
            cell[others[1]] += dc
            n = job.index(tuple(cell))
            if n is None:
                continue
            if n not in faces:
                faces[n] = read_faces(job, n)
            planes, size, value = faces[n]
            local = planes[2 * axis + (0 if high else 1)]
            nb = job.box(n)
            a0, a1 = max(nb.start[others[0]], lo[0]), min(nb.stop[others[0]], hi[0])
            b0, b1 = max(nb.start[others[1]], lo[1]), min(nb.stop[others[1]], hi[1])
            part = local[a0 - nb.start[others[0]]:a1 - nb.start[others[0]], b0 - nb.start[others[1]]:b1 - nb.start[others[1]]]
            where = (slice(a0 - lo[0], a1 - lo[0]), slice(b0 - lo[1], b1 - lo[1]))
            ids[where] = np.where(part > 0, (np.uint64(n) << LOCAL_BITS) | part, 0)
            vals[where], sizes[where] = value[part], size[part]
    return ids, vals, sizes


def face_edges(job: CclJob, t: int, faces: dict) -> mapreduce.Table:
    """Equivalences across task t's three high faces, both directions, with each row's size
    (the task-local size of `label`), sorted and without repeats."""
    us, vs, ss = [], [], []
    box, bounds = job.box(t), Box.from_list(job.bounds)
    for axis in range(3):
        if box.stop[axis] >= bounds.stop[axis]:
            continue
        li, lv, ls = _assemble(job, faces, t, axis, high=False)
        ri, rv, rs = _assemble(job, faces, t, axis, high=True)
        for db, dc in OFFSETS[job.connectivity]:
            sl = (slice(max(0, -db), li.shape[0] - max(0, db)), slice(max(0, -dc), li.shape[1] - max(0, dc)))
            sr = (slice(max(0, db), li.shape[0] - max(0, -db)), slice(max(0, dc), li.shape[1] - max(0, -dc)))
            ok = (li[sl] > 0) & (ri[sr] > 0) & (lv[sl] == rv[sr])
            a, b = li[sl][ok], ri[sr][ok]
            us += [a, b]
            vs += [b, a]
            ss += [ls[sl][ok], rs[sr][ok]]
    if not us:
        return {k: np.zeros(0, np.uint64) for k in COLUMNS}
    u, v, s = np.concatenate(us), np.concatenate(vs), np.concatenate(ss)
    order = np.lexsort((v, u))
    u, v, s = u[order], v[order], s[order]
    keep = np.ones(len(u), bool)
    keep[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    return {"label": u[keep], "other": v[keep], "size": s[keep]}


def target_leaves(job: CclJob, t: int) -> list[int]:
    """The leaves task t writes edges for: its own and its high neighbours' (diagonals too)."""
    cells = [c for c in (tuple(a + d for a, d in zip(job.cell(t), o)) for o in itertools.product((0, 1), repeat=3))
             if job.index(c) is not None]
    return sorted({int(p) for p in job.tree.leaf_of(np.asarray(cells))})


def edges_path(leaf: int, t: int) -> str:
    return f"edges/{leaf:05d}/{t}.arrow"


def links_work(spec: CclJob, t: int) -> None:
    """Equivalence edges across task t's high faces, one file per leaf of their first id."""
    from cloudfiles import CloudFiles

    from igneous_like.storage import put_many

    edges = face_edges(spec, t, {})
    leaf = spec.leaf_of(edges["label"])
    files = []
    for p in target_leaves(spec, t):
        rows = leaf == p
        files.append((edges_path(p, t), mapreduce.encode_table({k: v[rows] for k, v in edges.items()}, compression=None)))
    put_many(CloudFiles(spec.root), files, compress=None)
