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
    returns {(i, j, k): (vertices, faces)}. Triangles are split by trimesh's plane slicer; both
    sides of a cut compute the same intersection points, so the pieces still fit together."""
    import trimesh
    from trimesh.intersections import slice_mesh_plane

    lo = np.floor((vertices.min(axis=0) - origin) / cell).astype(int)
    hi = np.floor((vertices.max(axis=0) - origin) / cell).astype(int)
    if (lo == hi).all():  # inside one cell (most small objects): nothing to cut
        return {tuple(int(i) for i in lo): (np.asarray(vertices), np.asarray(faces))}
    pieces = {(): trimesh.Trimesh(vertices, faces, process=False)}
    for axis in range(3):
        normal = np.zeros(3)
        normal[axis] = 1.0
        cut: dict = {}
        for key, mesh in pieces.items():
            rest = mesh
            for index in range(lo[axis], hi[axis] + 1):
                if len(rest.faces) == 0:
                    break
                if index == hi[axis]:
                    cut[key + (index,)] = rest
                    break
                point = np.zeros(3)
                point[axis] = origin[axis] + (index + 1) * cell[axis]
                below = slice_mesh_plane(rest, -normal, point)
                rest = slice_mesh_plane(rest, normal, point)
                if len(below.faces):
                    cut[key + (index,)] = below
        pieces = {k: m for k, m in cut.items() if len(m.faces)}
    return {k: (np.asarray(m.vertices), np.asarray(m.faces)) for k, m in pieces.items()}


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
    tris = faces.astype(np.int64)
    positions, sizes, blobs = [], [], []
    for lod in range(num_lods):
        if lod > 0 and len(tris) > 8:
            simple = zmesh.simplify_fqmr(zmesh.Mesh(verts.astype(np.float32), tris.astype(np.uint32), None),
                                         target_count=max(len(tris) // 4, 4))
            verts, tris = simple.vertices.astype(np.float64), simple.faces.astype(np.int64)
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
