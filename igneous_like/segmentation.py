"""Segmentation blocks for the forge operations: reading a task's box with its one-voxel
overlap, keeping or dropping labels, and hole filling (fastmorph)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from igneous_like import layers, volume_io
from igneous_like.grid import Box, vec3


def open_for_forge(layer: str, mip: int, fill_holes: int, what: str) -> tuple[str, dict, Box]:
    """Validate a forge's input: a one-channel segmentation, a mip it has, a hole-fill level."""
    from igneous_like.errors import UserError

    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    if info["type"] != "segmentation":
        raise UserError(f"{url} is an image layer: {what} are made from segmentations")
    layers.check_mip(info, mip, url)
    if info["num_channels"] != 1:
        raise UserError(f"{url} has {info['num_channels']} channels: {what} need one")
    if not 0 <= fill_holes <= 3:
        raise UserError(f"--fill-holes must be 0, 1, 2 or 3, got {fill_holes}")
    volume_io.check_opens(url, info, mip)
    return url, info, layers.scale_bounds(info, mip)


def forge_grid(bounds: Box, shape, full: Box, peak: float, memory: float) -> tuple[Box, int]:
    """The task grid over bounds (grown to whole tasks), with a warning when a task overflows."""
    import sys

    from igneous_like.grid import expand_to_grid, grid_count
    from igneous_like.plan import human_bytes

    bounds = expand_to_grid(bounds, shape, full.start, full)
    if peak > memory:
        print(f"WARNING: one task needs about {human_bytes(peak)}, above --memory {human_bytes(memory)}", file=sys.stderr)
    return bounds, grid_count(bounds, shape, full.start)


@dataclass
class Block:
    """A task's labels, renumbered to the smallest dtype while read (a quarter of the memory
    of uint64 labels): `original[new]` gives back the dataset's label."""

    info: dict
    region: Box  # the task's own box
    read_box: Box  # region + one voxel on the positive faces, inside the volume
    labels: np.ndarray
    original: np.ndarray
    forward: dict

    def new_ids(self, labels) -> list[int]:
        return [int(self.forward[int(x)]) for x in labels or [] if int(x) in self.forward]


def read_with_overlap(layer: str, mip: int, box: list[int], fill_missing: bool) -> Block:
    """The task's box plus one voxel on its positive faces, so neighbouring tasks share a plane."""
    info = layers.read_info(layer)
    full = layers.scale_bounds(info, mip)
    region = Box.from_list(box)
    read_box = Box(region.start, vec3(min(b + 1, f) for b, f in zip(region.stop, full.stop)))
    seg, forward = volume_io.read(layer, info, mip, read_box, fill_missing, renumber=True)
    seg = np.asfortranarray(seg[..., 0])
    if not seg.flags.writeable:  # label filters work in place
        seg = seg.copy(order="F")
    original = np.zeros(max(forward.values(), default=0) + 1, dtype=np.uint64)
    for orig, new in forward.items():
        original[new] = orig
    return Block(info, region, read_box, seg, original, forward)


def select_labels(seg: np.ndarray, labels, exclude, dust: int) -> np.ndarray:
    """Keep only `labels`, drop `exclude`, and drop labels with fewer than `dust` voxels here.
    (`labels` and `exclude` are ids of this array: see Block.new_ids.)"""
    import fastremap

    if labels is not None:
        seg = fastremap.mask_except(seg, [int(x) for x in labels], in_place=True) if labels else seg * 0
    if exclude:
        seg = fastremap.mask(seg, [int(x) for x in exclude], in_place=True)
    if dust > 0:
        uniq, counts = fastremap.unique(seg, return_counts=True)
        small = [int(u) for u, c in zip(uniq, counts) if c < dust and u != 0]
        if small:
            seg = fastremap.mask(seg, small, in_place=True)
    return seg


def own_voxel_counts(seg: np.ndarray, region: Box, original: np.ndarray) -> dict[str, int]:
    """{dataset label: voxels} over the task's own box (the overlap plane counts in the task that
    owns it), for --dust-global: forges write it as {task}.voxels, merges sum them
    (fragments.global_dust)."""
    import fastremap

    uniq, counts = fastremap.unique(seg[tuple(slice(0, s) for s in region.shape)], return_counts=True)
    return {str(int(original[u])): int(c) for u, c in zip(uniq, counts) if u != 0}


def fill_holes(seg: np.ndarray, level: int) -> np.ndarray:
    """0 none, 1 fill enclosed holes, 2 also fix borders, 3 also morphological closing."""
    if level == 0:
        return seg
    import fastmorph

    return fastmorph.fill_holes(
        seg, remove_enclosed=True, fix_borders=level >= 2, morphological_closing=level >= 3, in_place=True
    )
