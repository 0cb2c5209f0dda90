"""skeleton forge: TEASAR skeletons (kimimaro) over a grid of tasks that overlap by one voxel.

With --fix-borders, kimimaro traces every object to targets at the centres of its contacts
with the task's faces; the neighbouring task sees the same shared voxel plane and picks the
same targets, so fragments meet at identical vertices and merge into one tree.
Each task writes one `{task}.frags` MapBuffer (label -> Precomputed skeleton bytes with float32
attributes) and a spatial index.
"""
from __future__ import annotations

import json
import math
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import allocator, layers, segmentation, skeletons
from igneous_like.errors import UserError
from igneous_like.grid import Vec3, grid_boxes, vec3
from igneous_like.meshing import physical_name
from igneous_like.plan import PROCESS_OVERHEAD, Plan, fmt_vec, human_bytes

DEFAULT_SHAPE = (512, 512, 512)


def task_memory(shape: Vec3, width: int) -> float:
    """Labels (read renumbered), kimimaro's per-object crops, distance transforms and graphs."""
    return PROCESS_OVERHEAD + math.prod(s + 1 for s in shape) * (min(width, 4) + 40)


def plan_skeleton_forge(
    layer: str, mip: int = 0, shape: Vec3 | None = None, scale: float = 4, const: float = 10,
    soma_detect: float = 1100, soma_accept: float = 3500, soma_scale: float = 1.0, soma_const: float = 300,
    max_paths: int | None = None, dust_threshold: int = 1000, dust_global: bool = False, fill_holes: int = 0,
    fix_branching: bool = True, fix_borders: bool = True, fix_avocados: bool = False, cross_section: int = 0,
    labels: list[int] | None = None, sharded: bool = False, spatial_index: bool = True, fill_missing: bool = False,
    skel_dir: str | None = None, memory: float = 3.5e9, xrange=None, yrange=None, zrange=None,
) -> Plan:
    url, info, full = segmentation.open_for_forge(layer, mip, fill_holes, "skeletons")
    if cross_section < 0 or dust_threshold < 0:
        raise UserError("--cross-section and --dust-threshold must not be negative")
    if scale <= 0 and const <= 0:
        raise UserError("--scale and --const are both 0: TEASAR needs a positive invalidation radius")
    bounds = layers.bounds_from_ranges(full, xrange, yrange, zrange, url, mip)
    width = np.dtype(info["data_type"]).itemsize
    if shape is None:
        shape = DEFAULT_SHAPE
        while task_memory(shape, width) > memory and max(shape) > 32:
            shape = vec3(max(s // 2, 32) for s in shape)
        shape = vec3(min(s, b) for s, b in zip(shape, full.shape))
    elif any(s <= 0 for s in shape):
        raise UserError(f"--shape {fmt_vec(shape)} must be positive")
    layers.check_writable(url)
    sdir = skel_dir or info.get("skeletons") or "skeletons"
    resolution = info["scales"][mip]["resolution"]
    origin = full.start
    peak = task_memory(shape, width)
    bounds, total = segmentation.forge_grid(bounds, shape, full, peak, memory)
    teasar = {
        "scale": scale, "const": const, "pdrf_scale": 100000, "pdrf_exponent": 4,
        "soma_detection_threshold": soma_detect, "soma_acceptance_threshold": soma_accept,
        "soma_invalidation_scale": soma_scale, "soma_invalidation_const": soma_const,
        "max_paths": max_paths,
    }
    options = {
        # --dust-global: kimimaro keeps every piece (a small piece of a large object at a task
        # corner would otherwise go, and its skeleton fall in two); each task counts its own voxels
        # and the merge drops the labels whose total is below the threshold
        "teasar": teasar, "dust_threshold": 0 if dust_global else dust_threshold,
        "count_voxels": bool(dust_global and dust_threshold), "fill_holes": fill_holes,
        "fix_branching": fix_branching, "fix_borders": fix_borders, "fix_avocados": fix_avocados,
        "cross_section": cross_section, "labels": labels, "spatial_index": spatial_index, "fill_missing": fill_missing,
    }
    attributes = ["radius"] + (["cross_sectional_area"] if cross_section else [])

    def tasks() -> Iterator:
        for box in grid_boxes(bounds, shape, origin):
            yield partial(skeleton_forge_task, url, mip, box.to_list(), sdir, options)

    def prepare() -> None:
        from cloudfiles import CloudFiles

        layers.write_info(url, {**info, "skeletons": sdir})
        sinfo = skeletons.skeleton_info(attributes, mip, resolution, shape)
        sinfo["fragments"] = "frags"
        if dust_global and dust_threshold:
            sinfo["dust_global_threshold"] = dust_threshold
        CloudFiles(url).put_json(f"{sdir}/info", sinfo)

    details = {
        "layer": url, "skeleton directory": f"{url}/{sdir}", "mip": mip,
        "task shape": fmt_vec(shape) + " (+1 voxel overlap on positive faces)", "bounds": str(bounds),
        "teasar": f"scale {scale}, const {const}, soma detect {soma_detect}, accept {soma_accept}",
        "fixes": f"branching {fix_branching}, borders {fix_borders}, avocados {fix_avocados}",
        "dust": f"{dust_threshold} voxels " + ("over the whole volume (--dust-global)" if dust_global else "per task"),
        "sharded merge": sharded, "peak memory per task": f"~{human_bytes(peak)} (limit {human_bytes(memory)})",
    }
    return Plan("skeleton forge", total, tasks, prepare, details)


@queueable
def skeleton_forge_task(layer: str, mip: int, box: list[int], skel_dir: str, options: dict) -> None:
    """Skeletonize every object in `box` (+1 voxel overlap) into the task's .frags file."""
    # kimimaro allocates and frees crop-sized fields for every path it traces (dijkstra3d's
    # distances and parents, ~8 bytes per voxel of the object's bounding box): from reused
    # heap pages they cost no page faults (see allocator.py)
    allocator.keep_freed_memory()
    try:
        _skeleton_forge(layer, mip, box, skel_dir, options)
    finally:
        allocator.release_freed_memory()


def _skeleton_forge(layer: str, mip: int, box: list[int], skel_dir: str, options: dict) -> None:
    import kimimaro
    from cloudfiles import CloudFiles
    from mapbuffer import MapBuffer

    block = segmentation.read_with_overlap(layer, mip, box, options.get("fill_missing", False))
    info, region, read_box, original = block.info, block.region, block.read_box, block.original
    res = np.asarray(info["scales"][mip]["resolution"], dtype=np.float32)
    keep = block.new_ids(options["labels"]) if options.get("labels") else None
    seg = segmentation.select_labels(block.labels, keep, None, 0)
    del block
    voxel_counts = segmentation.own_voxel_counts(seg, region, original) if options.get("count_voxels") else None
    seg = segmentation.fill_holes(seg, options.get("fill_holes", 0))
    teasar = {k: v for k, v in options["teasar"].items() if v is not None}
    skels = kimimaro.skeletonize(
        seg, teasar_params=teasar, anisotropy=tuple(res.tolist()), dust_threshold=options.get("dust_threshold", 1000),
        fix_branching=options.get("fix_branching", True), fix_borders=options.get("fix_borders", True),
        fix_avocados=options.get("fix_avocados", False), progress=False, parallel=1,
        in_place=not options.get("cross_section"),  # the cross sections need the labels afterwards
    )
    attributes = ["radius"]
    if options.get("cross_section"):
        skels = kimimaro.cross_sectional_area(seg, skels, anisotropy=res, smoothing_window=options["cross_section"])
        attributes.append("cross_sectional_area")
    offset = np.asarray(read_box.start, dtype=np.float64) * res
    frags: dict[int, bytes] = {}
    bboxes: dict[str, list[int]] = {}
    for small_id in sorted(skels):
        sk, label = skels[small_id], int(original[small_id])
        if len(sk.vertices) == 0:
            continue
        sk.vertices = (sk.vertices.astype(np.float64) + offset).astype(np.float32)
        frags[int(label)] = skeletons.encode(skeletons.from_osteoid(sk, attributes), attributes)
        bboxes[str(int(label))] = ([int(math.floor(v)) for v in sk.vertices.min(0)] +
                                   [int(math.ceil(v)) for v in sk.vertices.max(0)])
    name = physical_name(region, res)
    cf = CloudFiles(f"{layer}/{skel_dir}")
    cf.put(f"{name}.frags", MapBuffer(frags).tobytes(), compress=None)
    if options.get("spatial_index", True):
        cf.put(f"{name}.spatial", json.dumps(bboxes, sort_keys=True).encode(), compress=None)
    if voxel_counts is not None:
        cf.put(f"{name}.voxels", json.dumps(voxel_counts, sort_keys=True).encode(), compress=None)
