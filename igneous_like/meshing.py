"""Mesh helpers shared by mesh forge, merge and transfer: the mesh directory's info, fragment
names, the legacy binary format, and stitching fragments into one watertight mesh."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from igneous_like.grid import Box

LEGACY_TYPE = "neuroglancer_legacy_mesh"
MERGED = "merged"  # name part of the stitched fragment a merge writes: `{label}:0:merged`


def mesh_dir_of(info: dict, override: str | None) -> str:
    return override or info.get("mesh") or "mesh"


def physical_name(box: Box, resolution) -> str:
    """cloud-volume's spatial index names a task by its physical bounding box."""
    lo = [int(a * r) for a, r in zip(box.start, resolution)]
    hi = [int(b * r) for b, r in zip(box.stop, resolution)]
    return "_".join(f"{a}-{b}" for a, b in zip(lo, hi))


def forge_info(mip: int, shape, resolution, sharded_fragments: bool) -> dict[str, Any]:
    """The mesh directory's info while fragments are forged (legacy type until a multires merge)."""
    return {
        "@type": LEGACY_TYPE,
        "mip": mip,
        "chunk_size": list(shape),
        "spatial_index": {"resolution": list(resolution), "chunk_size": [s * r for s, r in zip(shape, resolution)]},
        "fragments": "frags" if sharded_fragments else "files",
    }


def encode_legacy(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """Legacy single-resolution format: uint32 n, float32 xyz * n, uint32 triangles."""
    v = np.ascontiguousarray(vertices, dtype="<f4")
    f = np.ascontiguousarray(faces, dtype="<u4")
    return np.uint32(len(v)).astype("<u4").tobytes() + v.tobytes() + f.tobytes()


def decode_legacy(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    n = int(np.frombuffer(data[:4], dtype="<u4")[0])
    vertices = np.frombuffer(data[4 : 4 + 12 * n], dtype="<f4").reshape(-1, 3)
    faces = np.frombuffer(data[4 + 12 * n :], dtype="<u4").reshape(-1, 3)
    return vertices, faces


def stitch(parts: list[tuple[np.ndarray, np.ndarray]], forged: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate fragments and weld the vertices they share on task borders.

    Fragments meet on grid planes where both tasks computed identical coordinates, so exact
    equality finds the shared vertices; the result keeps first-seen vertex order (stable bytes).
    forged: the fragments come from our forge, which leaves none with cancelling faces (see
    simplify.drop_cancelling_faces); False (meshes from elsewhere) checks every face."""
    if not parts:
        return np.zeros((0, 3), "<f4"), np.zeros((0, 3), "<u4")
    verts, faces = concat(parts)
    new_verts, new_faces, index = weld(verts.astype("<f4", copy=False), faces)
    from igneous_like.simplify import drop_cancelling_faces

    if not forged:
        return new_verts, drop_cancelling_faces(new_faces).astype("<u4")
    # Each fragment is free of cancelling faces already (forge drops them), so a pair can only
    # form between fragments: on three vertices that two or more fragments share. Other faces
    # only lose those made degenerate by the weld.
    part = np.repeat(np.arange(len(parts), dtype=np.int32), [len(v) for v, _ in parts])
    shared = in_several(index, part, len(new_verts))[new_faces].all(axis=1)
    rest = new_faces[~shared]
    rest = rest[(rest[:, 0] != rest[:, 1]) & (rest[:, 1] != rest[:, 2]) & (rest[:, 0] != rest[:, 2])]
    seams = drop_cancelling_faces(new_faces[shared])
    return new_verts, np.concatenate([rest, seams]).astype("<u4")


def concat(parts: list[tuple[np.ndarray, np.ndarray]], index=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """One mesh of several (vertices, faces) parts, vertices not yet shared; faces as `index`."""
    verts = np.concatenate([v for v, _ in parts])
    faces = np.empty((sum(len(f) for _, f in parts), 3), dtype=index)
    row = base = 0
    for v, f in parts:
        np.add(f, base, out=faces[row:row + len(f)], casting="unsafe")
        row, base = row + len(f), base + len(v)
    return verts, faces


def in_several(vertex: np.ndarray, part: np.ndarray, n: int) -> np.ndarray:
    """Which of n vertices occur in two or more parts, given each occurrence's vertex and part."""
    lowest = np.full(n, np.iinfo(np.int32).max, dtype=np.int32)
    highest = np.full(n, -1, dtype=np.int32)
    np.minimum.at(lowest, vertex, part)
    np.maximum.at(highest, vertex, part)
    return highest > lowest


def compact(v: np.ndarray, f: np.ndarray, return_used: bool = False):
    """Drop unreferenced vertices (the others keep their order) and renumber the faces."""
    used = np.zeros(len(v), dtype=bool)
    used[f] = True
    remap = np.cumsum(used) - 1
    if return_used:
        return v[used], remap[f], used
    return v[used], remap[f]


def weld(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Join bit-identical vertices; vertices keep the order of their first appearance.
    Returns the vertices, the faces and each old vertex's new index."""
    first, inverse = unique_rows(verts)
    order = np.argsort(first, kind="stable")  # unique rows in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    index = rank[inverse]
    return verts[first[order]], index[faces], index


def unique_rows(verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(verts, axis=0, return_index=True, return_inverse=True) for float32 or float64
    (n, 3) rows, without the values: a stable lexsort of the rows' bit patterns (-0.0 made 0.0
    first) is several times faster than numpy's row-wise unique."""
    wide = verts.dtype == np.float64
    zero = np.float64(0) if wide else np.float32(0)
    bits = np.ascontiguousarray(verts + zero).view("<u8" if wide else "<u4").reshape(-1, 3)
    order = np.lexsort((bits[:, 2], bits[:, 1], bits[:, 0]))
    ranked = bits[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (ranked[1:] != ranked[:-1]).any(axis=1)
    group = np.cumsum(new) - 1
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = group
    return order[new], inverse  # a stable sort puts each row's first occurrence first


def manifest(fragments: list[str]) -> bytes:
    return json.dumps({"fragments": fragments}).encode()
