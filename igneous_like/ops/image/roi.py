"""image roi: bounding boxes of the tissue in an image, found at a low mip and written into the
info as `scales[0].rois` (mip 0 voxels, [x0, y0, z0, x1, y1, z1]), as Igneous does.

It reads the coarsest mip (or --mip) in z slabs, shrinks large sections further in memory,
keeps voxels brighter than --suppress-faint, drops connected components smaller than --dust
voxels (cc3d), and maps each remaining component's box back to mip 0, grown to whole voxels.
"""
from __future__ import annotations

import math

import numpy as np

from igneous_like import layers, volume_io
from igneous_like.errors import UserError
from igneous_like.grid import Box, vec3

MAX_VOXELS = int(8e9)  # a mip larger than this is no "low mip": downsample first


def check_roi_input(url: str, info: dict, mip: int | None) -> int:
    if info["type"] != "image":
        raise UserError(f"{url} is a segmentation: image roi finds tissue in images")
    mip = len(info["scales"]) - 1 if mip is None else mip
    layers.check_mip(info, mip, url)
    voxels = layers.scale_bounds(info, mip).voxels
    if voxels > MAX_VOXELS:
        raise UserError(f"mip {mip} of {url} has {voxels:.3g} voxels: build a smaller mip with "
                        f"`igneous-like image downsample` and run roi there")
    return mip


def slab_rois(img: np.ndarray, suppress_faint: int, dust: int) -> list[tuple[slice, slice, slice]]:
    """Boxes (as slices) of the connected foreground components of one slab."""
    import cc3d

    labels = cc3d.connected_components(np.asfortranarray(img > suppress_faint))
    labels = cc3d.dust(labels, threshold=dust, in_place=True)
    stats = cc3d.statistics(labels)
    counts = stats["voxel_counts"]  # labels emptied by dust keep a placeholder box: skip them
    return [slc for label, slc in enumerate(stats["bounding_boxes"]) if label != 0 and counts[label] > 0]


def compute_rois(layer: str, mip: int | None = None, suppress_faint: int = 0, dust: int = 10,
                 max_axial_len: int = 512, z_step: int | None = None) -> tuple[str, dict, list[Box]]:
    """(URL, info, tissue boxes in mip 0 voxels)."""
    import tinybrain

    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    mip = check_roi_input(url, info, mip)
    if z_step is not None and z_step <= 0 or max_axial_len <= 0 or dust < 0:
        raise UserError("--z-step and --max-axial-len must be positive, --dust not negative")
    bounds = layers.scale_bounds(info, mip)
    step = z_step or bounds.shape[2]
    res, res0 = info["scales"][mip]["resolution"], info["scales"][0]["resolution"]
    full0 = layers.scale_bounds(info, 0)
    boxes: list[Box] = []
    for z in range(bounds.start[2], bounds.stop[2], step):
        slab = Box((bounds.start[0], bounds.start[1], z), (bounds.stop[0], bounds.stop[1], min(z + step, bounds.stop[2])))
        img = volume_io.read(url, info, mip, slab, fill_missing=True)
        img = img.max(axis=3) if img.ndim == 4 else img  # any bright channel counts
        shrink = max(0, math.ceil(math.log2(img.shape[0] * img.shape[1] / max_axial_len**2))) \
            if img.shape[0] * img.shape[1] > max_axial_len**2 else 0
        if shrink:
            img = tinybrain.downsample_with_averaging(img, factor=(2, 2, 1), num_mips=shrink)[-1]
        scale = [r * (2**shrink if axis < 2 else 1) / r0 for axis, (r, r0) in enumerate(zip(res, res0))]
        origin = [(s * r / r0) for s, r, r0 in zip(slab.start, res, res0)]
        for slc in slab_rois(img, suppress_faint, dust):
            lo = vec3(math.floor(o + s.start * f) for o, s, f in zip(origin, slc, scale))
            hi = vec3(math.ceil(o + s.stop * f) for o, s, f in zip(origin, slc, scale))
            boxes.append(Box(lo, hi).intersect(full0))
    return url, info, boxes


def write_rois(url: str, info: dict, boxes: list[Box]) -> None:
    """Record the boxes in the info (scale 0's `rois`), as Igneous does."""
    scales = [dict(s) for s in info["scales"]]
    scales[0]["rois"] = [b.to_list() for b in boxes]
    layers.write_info(url, {**info, "scales": scales})
