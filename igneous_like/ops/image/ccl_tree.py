"""The spatial tree of the ccl union-find: the task grid split into P leaves (boxes of tasks) by
recursive bisection, leaves numbered so that the group of leaf p at level L is p >> L.

Level 0 has P leaves; level L has ceil(P / 2^L) groups, each the union of groups 2g and 2g+1 of
level L-1; level depth(P) = ceil(log2 P) is the whole grid. Two leaves p, q first share a group at
level bit_length(p ^ q). Splitting space (not hashing ids) keeps each group's boundary small: the
vertices a group passes up are those on its outer faces only.

Bisection: the node covering leaves [lo, hi) at depth d splits at leaf mid = lo + 2^(D-d-1)
(so that subtrees stay aligned to p >> L), cutting its longest side (in voxels) in proportion to
the leaves on each side. A box one task thick along that side cannot be cut: its right leaves are
then empty (they own no tasks and run as empty tasks).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Cells = tuple[tuple[int, int, int], tuple[int, int, int]]  # (start, stop) in task-grid cells


@dataclass(frozen=True)
class LeafTree:
    grid: tuple[int, int, int]  # tasks per axis
    shape: tuple[int, int, int]  # task shape in voxels (to find a box's longest side)
    leaves: int  # P

    @property
    def depth(self) -> int:
        """The top level (one group: the whole grid)."""
        return (self.leaves - 1).bit_length()

    def groups(self, level: int) -> int:
        return -(-self.leaves // (1 << level))

    def children(self, level: int, g: int) -> list[int]:
        """The groups of level-1 that group g of `level` joins."""
        return [c for c in (2 * g, 2 * g + 1) if c < self.groups(level - 1)]

    def _split(self, lo: np.ndarray, hi: np.ndarray, start: np.ndarray, stop: np.ndarray, d: int):
        """Vectorized: the cut (axis, cell) of each node, and its mid leaf; cut = stop when the
        node does not split at this depth (all its leaves lie left of mid) or cannot (one cell)."""
        mid = lo + (1 << (self.depth - d - 1))
        ext = stop - start
        axis = np.argmax(ext * np.asarray(self.shape, np.int64), axis=1)
        rows = np.arange(len(lo))
        e, s = ext[rows, axis], start[rows, axis]
        cut = s + np.rint(e * (mid - lo) / np.maximum(hi - lo, 1)).astype(np.int64)
        cut = np.clip(cut, s + 1, np.maximum(s + e - 1, s + 1))
        cut = np.where((mid >= hi) | (e < 2), s + e, cut)
        return axis, cut, mid

    def leaf_of(self, cells: np.ndarray) -> np.ndarray:
        """The leaf of each task-grid cell (an (n, 3) array)."""
        cells = np.asarray(cells, np.int64).reshape(-1, 3)
        n = len(cells)
        lo, hi = np.zeros(n, np.int64), np.full(n, self.leaves, np.int64)
        start, stop = np.zeros((n, 3), np.int64), np.tile(np.asarray(self.grid, np.int64), (n, 1))
        rows = np.arange(n)
        for d in range(self.depth):
            axis, cut, mid = self._split(lo, hi, start, stop, d)
            right = cells[rows, axis] >= cut
            lo, hi = np.where(right, mid, lo), np.where(right, hi, np.minimum(hi, mid))
            start[rows[right], axis[right]] = cut[right]
            stop[rows[~right], axis[~right]] = cut[~right]
        return lo

    def leaf_cells(self, p: int) -> Cells:
        """The box of task-grid cells of leaf p (empty when the bisection gave it none)."""
        lo, hi = np.array([0]), np.array([self.leaves])
        start, stop = np.zeros((1, 3), np.int64), np.asarray([self.grid], np.int64)
        for d in range(self.depth):
            axis, cut, mid = self._split(lo, hi, start, stop, d)
            a = int(axis[0])
            if p >= mid[0]:
                lo, start[0, a] = mid, cut[0]
            else:
                hi, stop[0, a] = np.minimum(hi, mid), cut[0]
        return tuple(int(v) for v in start[0]), tuple(int(v) for v in np.maximum(stop[0], start[0]))


def merge_level(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The level at which leaves p and q first share a group: bit_length(p ^ q)."""
    x = np.asarray(p, np.int64) ^ np.asarray(q, np.int64)
    return np.where(x > 0, np.floor(np.log2(np.maximum(x, 1))).astype(np.int64) + 1, 0)


def cells_in(box: Cells, grid: tuple[int, int, int]) -> np.ndarray:
    """Task indices (x fastest) of the cells of a box, clipped to the grid, ascending."""
    (x0, y0, z0), (x1, y1, z1) = box
    x0, y0, z0 = max(x0, 0), max(y0, 0), max(z0, 0)
    x1, y1, z1 = min(x1, grid[0]), min(y1, grid[1]), min(z1, grid[2])
    if x1 <= x0 or y1 <= y0 or z1 <= z0:
        return np.zeros(0, np.int64)
    z, y, x = np.meshgrid(np.arange(z0, z1), np.arange(y0, y1), np.arange(x0, x1), indexing="ij")
    return (x + grid[0] * (y + grid[1] * z)).ravel()
