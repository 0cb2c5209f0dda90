"""Simplifying forge fragments so that they still weld into watertight meshes.

Fast quadric simplification (zmesh.simplify_fqmr, see fqmr) keeps every vertex on a task's open
cut planes exactly where marching cubes put it, so neighbouring fragments still share those
vertices bit for bit. It can however leave non-manifold edges (it has no manifold check on
collapses): each fragment is checked, repaired by splitting non-manifold vertices, retried at
smaller error bounds, and as a last resort simplified by zmesh's mesher instead (which also
keeps open borders in place).

zmesh's simplifier sometimes leaves a zero-volume "pillow" (two faces on the same three
vertices with opposite winding); dropping both faces keeps the surface closed, while keeping
one of them (as a sorted-index face dedup does) opens a hole.
"""
from __future__ import annotations

import numpy as np

from igneous_like.meshing import compact as _compact


def _edge_keys(f, nv):
    """Each face edge (one row per face side) and its undirected key."""
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).astype(np.int64)
    und = np.minimum(e[:, 0], e[:, 1]) * nv + np.maximum(e[:, 0], e[:, 1])
    return e, und


def drop_cancelling_faces(f):
    """Drop degenerate faces, same-orientation duplicates (keep one) and opposite-orientation
    pairs on the same three vertices (drop both: a zero-volume 'pillow' that cancels out).
    NB: zmesh.Mesh.consolidate()/merge_close_vertices() keeps ONE face of such a pair,
    which is what opens holes after zmesh simplification."""
    f = np.asarray(f, dtype=np.int64)
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    if len(f) == 0:
        return f
    r = np.argmin(f, axis=1)
    f = np.take_along_axis(f, (r[:, None] + np.arange(3)) % 3, axis=1)  # rotate, keep winding
    n = int(f.max()) + 1
    if n > 2**21:  # row keys would overflow int64: slower row-wise unique
        f = np.unique(f, axis=0)
        _, inv, cnt = np.unique(np.sort(f, axis=1), axis=0, return_inverse=True, return_counts=True)
        return f[cnt[inv.ravel()] == 1]
    # one int64 key per row sorts like the rows themselves (every index < n): same result as a
    # row-wise np.unique, several times faster
    _, first = np.unique((f[:, 0] * n + f[:, 1]) * n + f[:, 2], return_index=True)
    f = f[first]
    s = np.sort(f, axis=1)
    _, inv, cnt = np.unique((s[:, 0] * n + s[:, 1]) * n + s[:, 2], return_inverse=True, return_counts=True)
    return f[cnt[inv] == 1]


def fragment_is_sound(v, f, open_planes, tol=1e-3, pinned=None):
    """True if every edge has <=2 faces, winding is consistent, and every open edge lies on
    one of the task's open planes (so it will be closed by the neighbouring fragment) or, with
    `pinned` (sorted position keys, see _position_keys), joins two pinned vertices (a piece's
    seam, closed by the piece beside it)."""
    if len(f) == 0:
        return True
    e, inv, cnt, forward = _edge_use(f, np.int64(len(v)))
    if (cnt > 2).any() or ((cnt == 2) & (forward != 1)).any():
        return False
    open_e = e[cnt[inv] == 1]
    if len(open_e) == 0:
        return True
    ok = _on_planes(v, open_e, open_planes, tol)
    if pinned is not None and not ok.all():
        rest = open_e[~ok]
        ok[~ok] = (np.isin(_position_keys(v[rest[:, 0]]), pinned, assume_unique=False)
                   & np.isin(_position_keys(v[rest[:, 1]]), pinned, assume_unique=False))
    return bool(ok.all())


def _position_keys(points, dtype=np.float64) -> np.ndarray:
    """One comparable key per xyz row (its bytes as `dtype`), for exact position lookups."""
    rows = np.ascontiguousarray(points, dtype=dtype)
    return rows.view(np.dtype((np.void, 3 * rows.itemsize))).ravel()


def sheet_pairs(v, f, e, und, bad) -> dict[int, list[tuple[int, int]]]:
    """Where simplification pinched two sheets of surface together along an edge (an edge with
    4, 6, ... faces), pair the faces around it into manifold pairs: sorted by angle around the
    edge, neighbours of opposite direction along it. Joining fans through these pairs keeps each
    sheet one fan at both ends of the edge (and along chains of such edges), so splitting the
    vertices separates the sheets without opening holes."""
    m = len(f)
    out: dict[int, list[tuple[int, int]]] = {}
    idx = np.flatnonzero(bad)
    order = np.argsort(und[idx], kind="stable")
    idx = idx[order]
    keys = und[idx]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    for s0, s1 in zip(starts, np.r_[starts[1:], len(idx)]):
        ks = idx[s0:s1]
        if len(ks) % 2:
            continue
        faces = ks % m
        a, b = e[ks[0]]
        forward = e[ks, 0] == a
        axis = v[b] - v[a]
        axis = axis / (np.linalg.norm(axis) or 1.0)
        third = f[faces].sum(axis=1) - a - b
        w = v[third] - v[a]
        w = w - np.outer(w @ axis, axis)
        ref = w[0] / (np.linalg.norm(w[0]) or 1.0)
        angle = np.arctan2(np.cross(ref, w) @ axis, w @ ref)
        ring = np.argsort(angle, kind="stable")
        tri = v[f[faces]]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        # a face whose outward normal turns clockwise (around the edge) opens a solid wedge
        # that runs counter-clockwise to the next face: pair the faces that bound solid wedges
        opens = np.einsum("ij,ij->i", normal, np.cross(axis, w)) < 0
        n = len(ring)
        for shift in (0, 1):
            pairs = [(ring[(i + shift) % n], ring[(i + shift + 1) % n]) for i in range(0, n, 2)]
            if all(opens[p] and not opens[q] and forward[p] != forward[q] for p, q in pairs):
                out[int(keys[s0])] = [(int(faces[p]), int(faces[q])) for p, q in pairs]
                break
    return out


def split_nonmanifold_vertices(v, f, nudge=0.05, pair_sheets=False):
    """For each vertex on an edge shared by >2 faces, group its faces into fans joined through
    manifold edges (and with pair_sheets, through the sheet pairs of non-manifold edges); every
    extra fan gets its own copy of the vertex, moved `nudge` (physical units, << voxel) toward
    the fan so that position-based welding keeps the copies apart."""
    nv = np.int64(len(v))
    e, und = _edge_keys(f, nv)
    uk, inv, cnt = np.unique(und, return_inverse=True, return_counts=True)
    bad = cnt[inv] > 2
    if not bad.any():
        return v, f
    manifold = set(uk[cnt == 2].tolist())
    paired = sheet_pairs(v, f, e, und, bad) if pair_sheets else {}
    bad_verts = np.unique(e[bad])
    vert_of = f.T.ravel()
    face_of = np.tile(np.arange(len(f)), 3)
    sel = np.isin(vert_of, bad_verts)
    order = np.argsort(vert_of[sel], kind="stable")
    vs, fs = vert_of[sel][order], face_of[sel][order]
    lo, hi = np.searchsorted(vs, bad_verts), np.searchsorted(vs, bad_verts, side="right")
    f = f.copy()
    n0 = len(v)
    v = np.concatenate([v, np.empty((len(vs), 3))])  # at most one copy per incidence
    n_new = 0
    for a, s, t in zip(bad_verts.tolist(), lo, hi):
        faces = fs[s:t].tolist()
        parent = {x: x for x in faces}

        def root(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        across = {}
        for fi in faces:
            for b in f[fi].tolist():
                if b != a:
                    across.setdefault(b, []).append(fi)
        for b, fl in across.items():
            key = min(a, b) * nv + max(a, b)
            if len(fl) == 2 and key in manifold:
                parent[root(fl[0])] = root(fl[1])
            for f0, f1 in paired.get(key, ()):
                parent[root(f0)] = root(f1)
        fans = {}
        for fi in faces:
            fans.setdefault(root(fi), []).append(fi)
        for fl in sorted(fans.values(), key=len)[:-1]:  # largest fan keeps the original vertex
            fl = np.array(fl)
            d = v[f[fl]].reshape(-1, 3).mean(axis=0) - v[a]
            n = np.linalg.norm(d)
            new_id = n0 + n_new
            v[new_id] = v[a] + (d * (nudge / n) if n > 0 else 0.0)
            n_new += 1
            rows = f[fl]
            rows[rows == a] = new_id
            f[fl] = rows
    return v[:n0 + n_new], f


# fast quadric simplification collapses, at iteration i, every edge whose quadric error is below
# ALPHA * (i + K) ** AGGRESSIVENESS. The quadric error of a vertex is the sum of its squared
# distances to the (unweighted, unit-normal) planes of every original face merged into it, so
# stopping before that threshold passes max_error**2 keeps each simplified vertex within
# max_error of the planes of the faces it replaces.
ALPHA, K, AGGRESSIVENESS = 1e-9, 3, 7.0


def iterations_for(max_error: float) -> int:
    """Iterations whose collapse threshold stays within max_error**2."""
    if max_error <= 0:
        return 0
    return max(int((max_error * max_error / ALPHA) ** (1 / AGGRESSIVENESS)) - K + 1, 0)


def simplify_fragment(vertices, faces, open_planes, reduction_factor=100, max_error=40.0, fallback=None):
    """Simplify one forge fragment so that it still stitches exactly with its neighbours, no
    vertex moving farther than max_error (physical units) from the planes of the faces it
    replaces.

    vertices: (N,3) float physical coords; faces: (M,3) int.
    open_planes: list of (axis, coordinate) for task faces that are NOT on the dataset edge
                 (coordinate = physical position of the shared voxel plane).
    fallback: callable () -> (vertices, faces) used when no simplified result is sound,
              e.g. lambda: zmesh mesher.get(label, reduction_factor=100, max_error=40)
              (then offset the same way as the input vertices).
    Returns (vertices float64, faces int64).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if len(f) < 8:
        return v, f
    if len(f) > PIECE_FACES:
        result = _simplify_in_pieces(v, f, open_planes, reduction_factor, max_error)
        if result is not None:
            return result
    # Where collapsing pinched two sheets of surface together beyond repair, a smaller error
    # bound usually avoids the pinch; it costs a fraction of the zmesh fallback.
    for scale in RETRY_SCALES:
        result = _fqmr_sound(v, f, open_planes, max(len(f) // reduction_factor, 4), max_error * scale)
        if result is not None:
            return _compact(*result)
    if fallback is not None:
        v2, f2 = fallback()
        f2 = drop_cancelling_faces(f2)
        if len(f2):
            return _compact(np.asarray(v2, dtype=np.float64), f2)
    return v, f  # keep the unsimplified fragment


# Fragments above this many faces are simplified in pieces of at most this many. The bigger a
# mesh, the likelier that a collapse somewhere pinches it beyond repair, and simplification costs more
# than linearly in faces: whole, a 1.3M-face fragment of the 1024 hard benchmark volume failed
# at 1.0 and 0.75 of the error bound (three passes, 15 s CPU); in 32 pieces of 41k faces, 7 took
# a second pass and the whole took 7 s, with 20 % fewer faces. Over the 30k+-face fragments of
# two tasks, pieces of 25k-50k cost about the same; 100k saved little.
PIECE_FACES = 40_000


def _pieces(centres: np.ndarray, idx: np.ndarray, limit: int) -> list[np.ndarray]:
    """Halve the faces at the median of their longest axis until each piece holds <= limit."""
    if len(idx) <= limit:
        return [idx]
    c = centres[idx]
    axis = int(np.argmax(c.max(axis=0) - c.min(axis=0)))
    order = idx[np.argsort(c[:, axis], kind="stable")]
    half = len(order) // 2
    return _pieces(centres, order[:half], limit) + _pieces(centres, order[half:], limit)


def _simplify_in_pieces(v, f, open_planes, reduction_factor, max_error):
    """Simplify a large fragment in spatial pieces that meet along seams of unmoved vertices.

    Each piece keeps its open edges in place (preserve_border), as a whole fragment keeps the
    task's cut planes, so the pieces weld back on bit-identical seam vertices. A piece that
    cannot be made sound is retried alone at smaller error bounds, and in the end kept
    unsimplified (exact, so it always fits its seams); a defect that only shows once the pieces
    are welded sends the pieces around it one bound down. None if the welded whole is unsound."""
    from igneous_like.meshing import concat, in_several, weld

    groups = _pieces(v[f].mean(axis=1), np.arange(len(f)), PIECE_FACES)
    piece = np.empty(len(f), dtype=np.int32)
    for i, group in enumerate(groups):
        piece[group] = i
    seam = in_several(f.ravel(), np.repeat(piece, 3), len(v))  # vertices of two or more pieces
    originals, pins = [], []
    for group in groups:
        pv, pf, used = _compact(v, f[group], return_used=True)
        originals.append((pv, pf))
        pins.append(np.unique(_position_keys(v[used & seam])))
    level = [0] * len(groups)  # index into RETRY_SCALES; len(RETRY_SCALES): unsimplified
    results: list = [None] * len(groups)
    todo = range(len(groups))
    for _ in range(len(groups) * (len(RETRY_SCALES) + 1)):
        for i in todo:
            pv, pf = originals[i]
            while results[i] is None:
                if level[i] == len(RETRY_SCALES):
                    results[i] = (pv, pf)
                    break
                results[i] = _fqmr_sound(pv, pf, open_planes, max(len(pf) // reduction_factor, 4),
                                           max_error * RETRY_SCALES[level[i]], pinned=pins[i])
                if results[i] is None:
                    level[i] += 1
        verts, faces = concat(results)
        owner = np.repeat(np.arange(len(groups)), [len(r[0]) for r in results])
        wv, wf, index = weld(verts, faces)
        wf = drop_cancelling_faces(wf)
        if fragment_is_sound(wv, wf, open_planes):
            return _compact(wv, wf)
        hit = np.isin(index, _unsound_vertices(wv, wf, open_planes))
        todo = [i for i in np.unique(owner[hit]).tolist() if level[i] < len(RETRY_SCALES)]
        if not todo:
            return None
        for i in todo:
            level[i] += 1
            results[i] = None
    return None


def _unsound_vertices(v, f, open_planes, tol=1e-3) -> np.ndarray:
    """Vertices of the edges that make a mesh unsound (see fragment_is_sound)."""
    e, inv, cnt, forward = _edge_use(f, np.int64(len(v)))
    bad = ((cnt > 2) | ((cnt == 2) & (forward != 1)))[inv]
    bad |= (cnt[inv] == 1) & ~_on_planes(v, e, open_planes, tol)
    return np.unique(e[bad])


def _edge_use(f, nv):
    """Each face edge (e, one row per face side), its undirected edge's group (inv), how many
    faces share each undirected edge (cnt) and how many of them run it low -> high (forward):
    consistent winding is forward == 1 on every edge of two faces (one bincount, not a second
    unique of directed edges)."""
    e, und = _edge_keys(f, nv)
    _, inv, cnt = np.unique(und, return_inverse=True, return_counts=True)
    forward = np.bincount(inv[e[:, 0] < e[:, 1]], minlength=len(cnt))
    return e, inv, cnt, forward


def _on_planes(v, edges, open_planes, tol) -> np.ndarray:
    """Which edges lie on one of the task's open planes (both ends within tol of it)."""
    ok = np.zeros(len(edges), dtype=bool)
    for near in _near_planes(v, open_planes, tol):
        ok |= near[edges[:, 0]] & near[edges[:, 1]]
    return ok


def _on_any_plane(v, open_planes, tol=1e-3) -> np.ndarray:
    """Which vertices lie on one of the task's open planes: a superset of a fragment's open-edge
    vertices (every open edge of a forge fragment lies on one; see fragment_is_sound)."""
    on = np.zeros(len(v), dtype=bool)
    for near in _near_planes(v, open_planes, tol):
        on |= near
    return on


def _near_planes(v, open_planes, tol):
    """For each open plane, which vertices lie within tol of it."""
    for axis, coord in open_planes:
        yield np.abs(v[:, axis] - coord) < tol


RETRY_SCALES = (1.0, 0.75, 0.5, 0.25)


def _fqmr_sound(v, f, open_planes, target: int, max_error: float, pinned=None):
    """Fast quadric simplification within max_error, repaired where it left non-manifold edges;
    None if unsound (open edges must lie on open_planes or join two `pinned` positions)."""
    fixed = _on_any_plane(v, open_planes)
    if pinned is not None and len(pinned):
        fixed |= np.isin(_position_keys(v), pinned)
    v2, f2 = fqmr(v, f, target, max_error, fixed)
    f2 = drop_cancelling_faces(f2)
    if len(f2) == 0:  # a thin object squashed flat: its cancelling faces took all of it
        return None
    if fragment_is_sound(v2, f2, open_planes, pinned=pinned):
        return v2, f2
    for pair_sheets in (False, True):  # pinched at single edges; along chains of edges
        v3, f3 = split_nonmanifold_vertices(v2, f2, pair_sheets=pair_sheets)
        if fragment_is_sound(v3, f3, open_planes, pinned=pinned):
            return v3, f3
    return None


# zmesh.simplify_fqmr is pyfqmr's algorithm without pyfqmr's element-by-element copies in and
# out (a fifth of pyfqmr's time on forge fragments); it keeps positions and quadrics in float32,
# so it is run on coordinates centred on the mesh and unmoved vertices get their float64
# positions back. Its preserve_border has a flaw (zmesh 1.15, fqmr.hpp update_mesh): each
# vertex's border flag is overwritten by every neighbour that looks at it, and ends as the
# highest-numbered neighbour saw it, so a third of the open-edge vertices of a forge piece lost
# the flag and moved. A stub triangle per vertex to keep, on two new vertices numbered after all
# others, makes that last look one that sees the vertex once: a border. The stubs share no edge
# with the mesh, so no collapse touches them, and compaction keeps them last, where they are cut
# off. Measured on thirty 20k-40k-face pieces of the 1024 hard volume: 10,788 open-edge vertices,
# 3,492 moved without stubs, none with them.
_STUB = np.asarray([[0.01, 0.0, 0.0], [0.0, 0.01, 0.0]], dtype=np.float32)


def fqmr(v, f, target: int, max_error: float, fixed: np.ndarray):
    """Simplify (v float64, f int) toward `target` faces with collapses within max_error; every
    vertex marked `fixed` stays, bit for bit. Returns (vertices float64, faces int64)."""
    import zmesh

    n = len(v)
    centre = (v.min(axis=0) + v.max(axis=0)) / 2
    local = (v - centre).astype(np.float32)
    keep = np.flatnonzero(fixed)
    k = len(keep)
    verts = np.concatenate([local, local[keep] + _STUB[0], local[keep] + _STUB[1]])
    stubs = np.stack([keep, n + np.arange(k), n + k + np.arange(k)], axis=1)
    faces = np.concatenate([np.asarray(f), stubs]).astype(np.uint32)
    out = zmesh.simplify_fqmr(zmesh.Mesh(verts, faces, None), target + k, aggressiveness=AGGRESSIVENESS,
                              max_iterations=iterations_for(max_error), alpha=ALPHA, K=K, preserve_border=True)
    ov, of = out.vertices, out.faces
    nv, nf = len(ov) - 2 * k, len(of) - k
    if nf < 0 or (k and (of[nf:, 1:] < nv).any()):
        raise RuntimeError("zmesh.simplify_fqmr did not keep the border stubs last")
    ov, of = ov[:nv], of[:nf].astype(np.int64)
    result = ov.astype(np.float64) + centre
    if k:  # the fixed vertices take their exact float64 positions back (others: within 1e-3 nm)
        keys = _position_keys(local[keep], np.float32)
        order = np.argsort(keys)
        got = _position_keys(ov, np.float32)
        at = np.minimum(np.searchsorted(keys[order], got), k - 1)
        same = keys[order][at] == got
        result[same] = v[keep[order[at[same]]]]
    return result, of
