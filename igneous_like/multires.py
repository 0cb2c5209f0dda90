"""Multi-resolution Draco meshes (Neuroglancer's neuroglancer_multilod_draco format).

Stored model coordinates are voxels at the mesh mip; the info's transform scales them to
physical units. Each level of detail halves the face count and doubles the octree node;
nodes of lod > 0 are cut on their 2x2x2 sub-grid so no triangle crosses it, as the spec asks.
Fragments are Draco-encoded with Draco's own quantization in node-grid units (origin 0,
range 2^bits - 1): Neuroglancer reads those integers directly and draws nothing otherwise.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MULTILOD_TYPE = "neuroglancer_multilod_draco"
DEFAULT_MIN_CHUNK = (256, 256, 256)  # voxels: the finest octree node is never smaller (as in Igneous)


def multires_info(resolution, vqb: int, base: dict | None = None, sharding: dict | None = None) -> dict:
    """The mesh directory's info; forge keys (mip, chunk_size, spatial_index) are kept."""
    keep = {k: v for k, v in (base or {}).items() if k in ("mip", "chunk_size", "spatial_index", "fragments")}
    rx, ry, rz = (float(r) for r in resolution)
    info = {
        **keep,
        "@type": MULTILOD_TYPE,
        "vertex_quantization_bits": vqb,
        "transform": [rx, 0, 0, 0, 0, ry, 0, 0, 0, 0, rz, 0],
        "lod_scale_multiplier": 1.0,
    }
    if sharding is not None:
        info["sharding"] = sharding
    return info


@dataclass
class Multires:
    manifest: bytes
    fragments: bytes  # all lods' fragments, concatenated in manifest order


def _morton(pos: np.ndarray) -> np.ndarray:
    """Z-curve keys of (n, 3) non-negative grid positions (x varies fastest)."""
    code = np.zeros(len(pos), dtype=np.uint64)
    bits = int(pos.max()).bit_length() if len(pos) else 0  # higher bits are all zero
    for bit in range(min(bits, 21)):
        for axis in range(3):
            b = (pos[:, axis].astype(np.uint64) >> np.uint64(bit)) & np.uint64(1)
            code |= b << np.uint64(3 * bit + axis)
    return code


def split_grid(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, cell: np.ndarray) -> dict:
    """Cut a mesh on the planes of a grid (origin + k * cell) so no triangle crosses one;
    returns {(i, j, k): (vertices, faces)}.

    zmesh's chunk_mesh cuts the triangles whose corners lie in different cells (in coordinates
    relative to `origin`, so float32 keeps its precision far from 0); the others, nearly all of
    them, keep their shared vertices. Two things are put right after it: it files a few triangles that
    only touch a plane in the cell beside theirs (one voxel over: about 1 in 15,000 on the hard
    benchmark volume), so every triangle is filed again by the cell of its centroid (none crosses a
    plane after the cut); and it computes a cut point in float32 from each side of the edge, so the
    two copies can differ in the last bits and then quantize apart, opening a crack between nodes,
    so the points on cut planes are welded within a few float32 steps."""
    import zmesh

    lo = np.floor((vertices.min(axis=0) - origin) / cell).astype(int)
    hi = np.floor((vertices.max(axis=0) - origin) / cell).astype(int)
    if (lo == hi).all():  # inside one cell (most small objects): nothing to cut
        return {tuple(int(i) for i in lo): (np.asarray(vertices), np.asarray(faces))}
    from igneous_like.meshing import compact, concat, unique_rows

    local = (vertices - origin).astype(np.float32)
    faces = np.asarray(faces, dtype=np.int32)  # int32 indices throughout: a large object's
    # faces and their per-face temporaries are most of a merge task's memory
    # Only triangles whose corners lie in different cells go through chunk_mesh (most lie inside
    # one: cells are hundreds of voxels, triangles a few); it returns them as triangle soup
    # (three vertices per face), welded back here on bit-identical float32 corners.
    span = hi - lo + 1

    def cell_keys(scaled):  # points / cell (overwritten) -> one int64 per point: its cell, x-major
        k = np.floor(scaled, out=scaled).astype(np.int64)
        k -= lo
        np.clip(k, 0, span - 1, out=k)
        return (k[:, 0] * span[1] + k[:, 1]) * span[2] + k[:, 2]

    corner = cell_keys(local.astype(np.float64) / cell)
    first_corner = corner[faces[:, 0]]
    crossing = first_corner != corner[faces[:, 1]]
    crossing |= first_corner != corner[faces[:, 2]]
    del first_corner, corner
    parts = [(local, faces[~crossing])]
    if crossing.any():
        cut, cut_faces = compact(local, faces[crossing])
        chunks = zmesh.chunk_mesh(zmesh.Mesh(cut, cut_faces.astype(np.uint32), None),
                                  [float(c) for c in cell], (0.0, 0.0, 0.0))
        parts += [(m.vertices, m.faces) for m in chunks.values() if len(m.faces)]
        del chunks
    verts, tris = concat(parts, np.int32)
    del parts
    first, inverse = unique_rows(verts)
    verts, tris = verts[first], inverse.astype(np.int32)[tris]
    verts = verts.astype(np.float64)
    rel = verts / cell
    on_plane = np.flatnonzero((rel == np.floor(rel)).any(axis=1))
    if len(on_plane):
        tol = 64 * float(np.spacing(np.float32(np.abs(verts).max())))
        verts[on_plane] = verts[on_plane][_weld(verts[on_plane], tol)]
    centre = verts[tris[:, 0]]  # summed one corner at a time: no (faces, 3, 3) temporary
    centre += verts[tris[:, 1]]
    centre += verts[tris[:, 2]]
    keys = cell_keys(np.divide(centre, 3 * cell, out=centre))
    del centre
    order = np.argsort(keys, kind="stable")
    keys, tris = keys[order], tris[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    out = {}
    mark = np.zeros(len(verts), dtype=bool)  # reused by every cell: no per-cell sort
    remap = np.empty(len(verts), dtype=np.int32)
    for begin, stop in zip(starts, np.r_[starts[1:], len(tris)]):
        cell_tris = tris[begin:stop]
        mark[cell_tris] = True
        used = np.flatnonzero(mark)
        mark[used] = False
        remap[used] = np.arange(len(used), dtype=np.int32)
        k = int(keys[begin])
        cell_index = (k // (span[1] * span[2]) + lo[0], k // span[2] % span[1] + lo[1], k % span[2] + lo[2])
        out[tuple(int(i) for i in cell_index)] = (verts[used] + origin, remap[cell_tris])
    return out


def _weld(points: np.ndarray, tol: float) -> np.ndarray:
    """For each point, the index of the one it is welded to: points within tol/4 of each other
    per axis always share a cell of one of eight grids of step tol offset by half steps, and
    points sharing a cell are joined (transitively); each group takes its lowest index."""
    import itertools

    group = np.arange(len(points))
    pairs = []
    for shift in itertools.product((0.0, 0.5), repeat=3):
        keys = np.floor(points / tol + np.asarray(shift)).astype(np.int64)
        order = np.lexsort(keys.T[::-1])
        same = (keys[order[1:]] == keys[order[:-1]]).all(axis=1)
        pairs.append(np.stack([order[:-1][same], order[1:][same]], axis=1))
    pairs = np.concatenate(pairs)
    while len(pairs):
        low = np.minimum(group[pairs[:, 0]], group[pairs[:, 1]])
        before = group.copy()
        np.minimum.at(group, pairs[:, 0], low)
        np.minimum.at(group, pairs[:, 1], low)
        group = group[group]
        if (group == before).all():
            break
    return group


def _levels(extent: np.ndarray, nlod: int, min_chunk: np.ndarray) -> int:
    """One more level for each halving of the object's longest extent (in min_chunk units)."""
    lods = 1
    while lods <= nlod and np.max(extent / 2**lods / min_chunk) >= 1:
        lods += 1
    return lods


def build(vertices_vx: np.ndarray, faces: np.ndarray, nlod: int, vqb: int,
          min_chunk=DEFAULT_MIN_CHUNK, compression_level: int = 7) -> Multires:
    """Encode one object (vertices in voxel units) as a multires manifest + fragment data."""
    import DracoPy
    import zmesh

    lo = np.floor(vertices_vx.min(axis=0)) - 1
    hi = np.ceil(vertices_vx.max(axis=0)) + 1
    extent = hi - lo
    min_chunk = np.asarray(min_chunk, dtype=np.float64)
    num_lods = _levels(extent, nlod, min_chunk)
    # the coarsest node covers the object; thin axes keep nodes of at least min_chunk
    chunk_shape = np.maximum(np.ceil(extent / 2 ** (num_lods - 1)), np.minimum(min_chunk, extent))
    top = 2**vqb - 1
    verts = vertices_vx.astype(np.float64)
    tris = faces.astype(np.int32)
    positions, sizes, blobs = [], [], []
    for lod in range(num_lods):
        if lod > 0 and len(tris) > 8:
            simple = zmesh.simplify_fqmr(zmesh.Mesh(verts.astype(np.float32), tris.astype(np.uint32), None),
                                         target_count=max(len(tris) // 4, 4))
            verts, tris = simple.vertices.astype(np.float64), simple.faces.astype(np.int32)
        node = chunk_shape * 2**lod
        cut = node / 2 if lod > 0 else node  # lod > 0: no triangle may cross the 2x2x2 sub-grid
        pieces = split_grid(verts, tris, lo, cut) if len(tris) else {}
        nodes: dict[tuple, list] = {}
        for key, piece in pieces.items():
            parent = tuple(k // 2 for k in key) if lod > 0 else key
            nodes.setdefault(parent, []).append(piece)
        keys = np.array(sorted(nodes), dtype=np.int64).reshape(-1, 3)
        if len(keys):
            keys = keys[np.argsort(_morton(keys), kind="stable")]
        lod_sizes = []
        for key in keys:
            parts = nodes[tuple(key)]
            offsets = np.cumsum([0] + [len(v) for v, _ in parts[:-1]])
            pv = np.concatenate([v for v, _ in parts])
            pf = np.concatenate([f + o for (_, f), o in zip(parts, offsets)])
            # Snap to the lod's global lattice (node / top steps from lo): adjacent nodes' lattices
            # coincide, so a vertex shared across a cut gets the same integers on both sides.
            lattice = np.rint((pv - lo) / node * top)
            local = np.clip(lattice - key * top, 0, top)
            blob = DracoPy.encode(
                local.astype(np.float32), pf.astype(np.uint32), quantization_bits=vqb,
                quantization_range=float(top), quantization_origin=[0.0, 0.0, 0.0],
                compression_level=compression_level,
            )
            blobs.append(blob)
            lod_sizes.append(len(blob))
        positions.append(keys.astype(np.uint32))
        sizes.append(np.asarray(lod_sizes, dtype=np.uint32))
    manifest = encode_manifest(chunk_shape, lo, [2.0**i for i in range(num_lods)], positions, sizes)
    return Multires(manifest, b"".join(blobs))


def encode_manifest(chunk_shape, grid_origin, lod_scales, positions, sizes) -> bytes:
    num_lods = len(lod_scales)
    out = [
        np.asarray(chunk_shape, dtype="<f4").tobytes(),
        np.asarray(grid_origin, dtype="<f4").tobytes(),
        struct.pack("<I", num_lods),
        np.asarray(lod_scales, dtype="<f4").tobytes(),
        np.zeros((num_lods, 3), dtype="<f4").tobytes(),  # vertex_offsets
        np.asarray([len(p) for p in positions], dtype="<u4").tobytes(),
    ]
    for pos, size in zip(positions, sizes):
        out.append(np.ascontiguousarray(np.asarray(pos, dtype="<u4").reshape(-1, 3).T).tobytes())  # [3, n] C order
        out.append(np.asarray(size, dtype="<u4").tobytes())
    return b"".join(out)
