"""mesh forge: marching cubes (zmesh) over a grid of tasks, one fragment per label per task.

Each task reads its box plus one voxel on the positive faces, so neighbouring fragments meet
on shared grid planes and a merge can weld them into one watertight mesh. Faces that lie on
the dataset's edge are closed (zero padding) unless --open-edge is asked for.
"""
from __future__ import annotations

import json
import math
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import layers, meshing, segmentation
from igneous_like.errors import UserError
from igneous_like.grid import Box, Vec3, grid_boxes, vec3
from igneous_like.plan import PROCESS_OVERHEAD, Plan, fmt_vec, human_bytes
from igneous_like.simplify import simplify_fragment
from igneous_like.storage import put_many

ZMESH_32BIT_LIMIT = (1023, 1023, 511)  # larger task axes force zmesh's slower 64-bit mesher
DEFAULT_SHAPE = (448, 448, 448)
REDUCTION_FACTOR = 100


def task_memory(shape: Vec3, width: int) -> float:
    """Labels (read renumbered: at most 4 B/voxel), mesher working set (~24 B/voxel), meshes."""
    voxels = math.prod(s + 2 for s in shape)
    return PROCESS_OVERHEAD + voxels * (min(width, 4) + 4 + 24)


def default_shape(memory: float, width: int, bounds: Box) -> Vec3:
    shape = DEFAULT_SHAPE
    while task_memory(shape, width) > memory and max(shape) > 32:
        shape = vec3(max(s // 2, 32) for s in shape)
    return vec3(min(s, b) for s, b in zip(shape, bounds.shape))


def plan_mesh_forge(
    layer: str,
    mip: int = 0,
    shape: Vec3 | None = None,
    simplify: bool = True,
    max_error: float = 40,
    dust_threshold: int = 0,
    dust_global: bool = False,
    fill_missing: bool = False,
    fill_holes: int = 0,
    labels: list[int] | None = None,
    exclude_labels: list[int] | None = None,
    closed_edge: bool = True,
    mesh_dir: str | None = None,
    spatial_index: bool = True,
    sharded: bool = False,
    memory: float = 3.5e9,
    xrange=None,
    yrange=None,
    zrange=None,
) -> Plan:
    url, info, full = segmentation.open_for_forge(layer, mip, fill_holes, "meshes")
    if max_error < 0 or dust_threshold < 0:
        raise UserError("--max-error and --dust-threshold must not be negative")
    bounds = layers.bounds_from_ranges(full, xrange, yrange, zrange, url, mip)
    width = np.dtype(info["data_type"]).itemsize
    if shape is None:
        shape = default_shape(memory, width, full)
    elif any(s <= 0 for s in shape):
        raise UserError(f"--shape {fmt_vec(shape)} must be positive")
    if any(s + 1 > lim for s, lim in zip(shape, ZMESH_32BIT_LIMIT)):
        raise UserError(f"--shape {fmt_vec(shape)} is over zmesh's limit: at most {fmt_vec(v - 1 for v in ZMESH_32BIT_LIMIT)} (one voxel is added for overlap)")
    layers.check_writable(url)
    mdir = meshing.mesh_dir_of(info, mesh_dir)
    resolution = info["scales"][mip]["resolution"]
    origin = full.start
    peak = task_memory(shape, width)
    bounds, total = segmentation.forge_grid(bounds, shape, full, peak, memory)
    options = {
        "simplify": simplify, "max_error": max_error,
        # global dust: mesh everything, count voxels per task; the merge drops small labels
        "dust_threshold": 0 if dust_global else dust_threshold, "count_voxels": bool(dust_global and dust_threshold),
        "fill_missing": fill_missing, "fill_holes": fill_holes, "labels": labels, "exclude_labels": exclude_labels,
        "closed_edge": closed_edge, "spatial_index": spatial_index, "sharded": sharded,
    }

    def tasks() -> Iterator:
        for box in grid_boxes(bounds, shape, origin):
            yield partial(mesh_forge_task, url, mip, box.to_list(), mdir, options)

    def prepare() -> None:
        from cloudfiles import CloudFiles

        new_info = {**info, "mesh": mdir}
        layers.write_info(url, new_info)
        minfo = meshing.forge_info(mip, shape, resolution, sharded)
        if dust_global and dust_threshold:
            minfo["dust_global_threshold"] = dust_threshold
        CloudFiles(url).put_json(f"{mdir}/info", minfo)

    details = {
        "layer": url,
        "mesh directory": f"{url}/{mdir}",
        "mip": mip,
        "task shape": fmt_vec(shape) + " (+1 voxel overlap on positive faces)",
        "bounds": str(bounds),
        "simplification": (f"fast quadric simplification to 1/{REDUCTION_FACTOR} of the faces within max error "
                           f"{max_error}, open borders kept; zmesh's mesher where it leaves a defect") if simplify else "off",
        "fragments": "one file per task (--sharded)" if sharded else "one file per label per task",
        "peak memory per task": f"~{human_bytes(peak)} (limit {human_bytes(memory)})",
    }
    return Plan("mesh forge", total, tasks, prepare, details)


def open_planes(shape, pad_lo, pad_hi, origin, res) -> list[tuple[int, float]]:
    """Planes where a fragment is legitimately open: the unpadded faces of the task block.
    With voxel-centred marching cubes the surface stops at the centre of the outer voxels."""
    planes = []
    for axis in range(3):
        extent = shape[axis] + pad_lo[axis] + pad_hi[axis]
        if not pad_lo[axis]:
            planes.append((axis, float(origin[axis] + 0.5 * res[axis])))
        if not pad_hi[axis]:
            planes.append((axis, float(origin[axis] + (extent - 0.5) * res[axis])))
    return planes


@queueable
def mesh_forge_task(layer: str, mip: int, box: list[int], mesh_dir: str, options: dict) -> None:
    """Mesh every label in `box` (+1 voxel overlap) and write its fragments and spatial index."""
    import zmesh
    from cloudfiles import CloudFiles

    block = segmentation.read_with_overlap(layer, mip, box, options.get("fill_missing", False))
    info, region, read_box, original = block.info, block.region, block.read_box, block.original
    full = layers.scale_bounds(info, mip)
    res = np.asarray(info["scales"][mip]["resolution"], dtype=np.float64)
    keep = block.new_ids(options["labels"]) if options.get("labels") else None
    seg = segmentation.select_labels(block.labels, keep, block.new_ids(options.get("exclude_labels")),
                                     options.get("dust_threshold", 0))
    del block
    voxel_counts = segmentation.own_voxel_counts(seg, region, original) if options.get("count_voxels") else None
    seg = segmentation.fill_holes(seg, options.get("fill_holes", 0))
    pad_lo = [1 if options.get("closed_edge", True) and a == f else 0 for a, f in zip(read_box.start, full.start)]
    pad_hi = [1 if options.get("closed_edge", True) and b == f else 0 for b, f in zip(read_box.stop, full.stop)]
    if any(pad_lo) or any(pad_hi):
        seg = np.pad(seg, list(zip(pad_lo, pad_hi)))
    seg = np.asfortranarray(seg)
    mesher = zmesh.Mesher(tuple(res))
    mesher.mesh(seg, close=False)
    del seg
    origin = (np.asarray(read_box.start) - np.asarray(pad_lo)) * res
    planes = open_planes(read_box.shape, pad_lo, pad_hi, origin, res)
    simplify = options.get("simplify", True)
    max_error = options.get("max_error", 40)
    fragments: dict[int, bytes] = {}
    bboxes: dict[str, list[int]] = {}
    for small_id in sorted(mesher.ids()):
        raw = mesher.get(small_id, normals=False, voxel_centered=True, reduction_factor=0, max_error=0)
        verts, faces = raw.vertices.astype(np.float64) + origin, raw.faces
        if simplify:
            def fallback(sid=small_id):
                m = mesher.get(sid, normals=False, voxel_centered=True,
                               reduction_factor=REDUCTION_FACTOR, max_error=max_error)
                return m.vertices.astype(np.float64) + origin, m.faces

            verts, faces = simplify_fragment(verts, faces, planes, REDUCTION_FACTOR, max_error, fallback=fallback)
        mesher.erase(small_id)
        if len(faces) == 0:
            continue
        verts = verts.astype("<f4")
        label = int(original[small_id])
        fragments[label] = meshing.encode_legacy(verts, faces)
        bboxes[str(label)] = [int(math.floor(v)) for v in verts.min(0)] + [int(math.ceil(v)) for v in verts.max(0)]
    name = meshing.physical_name(region, res)
    cf = CloudFiles(layer)
    if options.get("sharded"):
        from mapbuffer import MapBuffer

        cf.put(f"{mesh_dir}/{name}.frags", MapBuffer(fragments).tobytes(), compress=None)
    else:
        put_many(cf, ((f"{mesh_dir}/{label}:0:{name}", data) for label, data in fragments.items()), compress=None)
    if options.get("spatial_index", True):
        cf.put(f"{mesh_dir}/{name}.spatial", json.dumps(bboxes, sort_keys=True).encode(), compress=None)
    if voxel_counts is not None:
        cf.put(f"{mesh_dir}/{name}.voxels", json.dumps(voxel_counts, sort_keys=True).encode(), compress=None)
