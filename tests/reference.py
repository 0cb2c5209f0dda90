"""Numpy references the tests compare against, written from the definitions, not from our code."""
from __future__ import annotations

import numpy as np


def _blocks(a: np.ndarray, factor) -> np.ndarray:
    """(x, y, z) -> (X, Y, Z, fx*fy*fz) with the last plane repeated on odd edges."""
    pad = [(0, (-n) % f) for n, f in zip(a.shape, factor)]
    a = np.pad(a, pad, mode="edge")
    sx, sy, sz = (n // f for n, f in zip(a.shape, factor))
    b = a.reshape(sx, factor[0], sy, factor[1], sz, factor[2]).transpose(0, 2, 4, 1, 3, 5)
    return b.reshape(sx, sy, sz, -1)


def average_pyramid(img: np.ndarray, factor, levels: int) -> list[np.ndarray]:
    """Exact float means, each mip from the previous one (an edge value is the mean of real voxels)."""
    out, cur = [], img.astype(np.float64)
    for _ in range(levels):
        cur = _blocks(cur, factor).mean(axis=-1)
        out.append(cur)
    return out


def mode_violations(prev: np.ndarray, cur: np.ndarray, factor) -> tuple[int, int]:
    """(voxels whose value is not a most frequent value of their block,
        voxels with a unique mode that differ from it)."""
    blocks = _blocks(prev, factor)
    counts = (blocks[..., :, None] == blocks[..., None, :]).sum(-1)  # count of each member
    best = counts.max(-1)
    mine = (blocks == cur[..., None]).sum(-1)
    not_mode = int((mine != best).sum())
    unique = (counts == best[..., None]).sum(-1) == best  # exactly one value reaches best
    winner = np.take_along_axis(blocks, counts.argmax(-1)[..., None], -1)[..., 0]
    wrong_unique = int(((cur != winner) & unique).sum())
    return not_mode, wrong_unique
