"""Compute several mips of a block in memory: averaging, mode, min, max, striding.

Averages accumulate exact integer sums across mips and divide once per mip with
round-to-nearest, so there is no truncation drift up the pyramid (tinybrain floors).
Odd-sized edges are padded by replicating the last plane, which makes an edge value
the mean of the real voxels under it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from igneous_like.grid import Vec3

METHODS = ("avg", "mode", "min", "max", "striding")


def resolve_method(method: str, layer_type: str) -> str:
    if method == "auto":
        return "mode" if layer_type == "segmentation" else "avg"
    return method


def make_pyramid(
    img: np.ndarray, factor: Vec3, num_mips: int, method: str, sparse: bool = False
) -> list[np.ndarray]:
    """Return num_mips arrays, each `factor` smaller than the one before (img is x,y,z,c)."""
    if num_mips <= 0:
        return []
    if img.ndim == 3:
        img = img[..., np.newaxis]
    if method == "avg":
        return _average(img, factor, num_mips, sparse)
    if method == "mode":
        import tinybrain

        return list(tinybrain.downsample_segmentation(img, factor, num_mips=num_mips, sparse=sparse))
    if method == "striding":
        return [_as_f(img[:: f0**k, :: f1**k, :: f2**k]) for k in range(1, num_mips + 1) for f0, f1, f2 in [factor]]
    if method in ("min", "max"):
        out, cur = [], img
        reduce = np.minimum if method == "min" else np.maximum
        for _ in range(num_mips):
            cur = _pool(cur, factor, reduce)
            out.append(cur)
        return out
    raise ValueError(f"unknown downsample method: {method}")


def read_pyramid(url: str, info: dict, mip: int, box, factor: Vec3, num_mips: int, method: str,
                 sparse: bool, fill_missing: bool) -> list[np.ndarray]:
    """Read a block and build its mips. Mode and striding do not depend on label values, so
    wide labels are read renumbered to the smallest dtype (cloud-volume renumbers while it
    decodes) and mapped back mip by mip: a quarter of the memory for uint64 segmentations."""
    from igneous_like.volume_io import read

    dtype = np.dtype(info["data_type"])
    if method not in ("mode", "striding") or dtype.itemsize < 4:
        return make_pyramid(read(url, info, mip, box, fill_missing), factor, num_mips, method, sparse)
    small, forward = read(url, info, mip, box, fill_missing, renumber=True)
    original = np.zeros(max(forward.values(), default=0) + 1, dtype=dtype)
    for label, new in forward.items():
        original[new] = label
    return [original[level] for level in make_pyramid(small, factor, num_mips, method, sparse)]


def _as_f(a: np.ndarray) -> np.ndarray:
    return np.asfortranarray(a)


def _pad_to_multiple(a: np.ndarray, factor: Vec3) -> np.ndarray:
    pad = [(0, (-n) % f) for n, f in zip(a.shape[:3], factor)] + [(0, 0)]
    if any(p[1] for p in pad):
        a = np.pad(a, pad, mode="edge")
    return a


def _offsets(factor: Vec3):
    return itertools.product(*(range(f) for f in factor))


def _pool(a: np.ndarray, factor: Vec3, reduce) -> np.ndarray:
    a = _pad_to_multiple(a, factor)
    views = [a[ox :: factor[0], oy :: factor[1], oz :: factor[2]] for ox, oy, oz in _offsets(factor)]
    out = np.array(views[0], order="F")
    for v in views[1:]:
        reduce(out, v, out=out)
    return out


def _sum_pool(a: np.ndarray, factor: Vec3, acc_dtype) -> np.ndarray:
    a = _pad_to_multiple(a, factor)
    views = [a[ox :: factor[0], oy :: factor[1], oz :: factor[2]] for ox, oy, oz in _offsets(factor)]
    out = np.asfortranarray(views[0], dtype=acc_dtype)
    for v in views[1:]:
        np.add(out, v, out=out, casting="unsafe")
    return out


def _accumulator(dtype: np.dtype, max_sum: float) -> np.dtype:
    if np.issubdtype(dtype, np.floating):
        return np.dtype(np.float64)
    for cand in (np.uint16, np.uint32, np.uint64) if np.issubdtype(dtype, np.unsignedinteger) else (np.int32, np.int64):
        if max_sum <= np.iinfo(cand).max:
            return np.dtype(cand)
    return np.dtype(np.float64)


def _average(img: np.ndarray, factor: Vec3, num_mips: int, sparse: bool) -> list[np.ndarray]:
    dtype = img.dtype
    block = math.prod(factor)
    if np.issubdtype(dtype, np.floating):
        peak = float(np.finfo(dtype).max)
    else:
        info = np.iinfo(dtype)
        peak = float(max(abs(info.min), info.max))
    out: list[np.ndarray] = []
    acc, count = img, None
    if sparse:
        count = (img != 0).astype(np.uint8)
    for level in range(1, num_mips + 1):
        n = block**level
        acc_dtype = _accumulator(dtype, peak * n + n)
        acc = _sum_pool(acc, factor, acc_dtype)
        if sparse:
            count = _sum_pool(count, factor, _accumulator(np.dtype(np.uint8), float(n)))
            out.append(_divide(acc, count, dtype))
        else:
            out.append(_divide_const(acc, n, dtype))
    return out


def _divide_const(acc: np.ndarray, n: int, dtype: np.dtype) -> np.ndarray:
    """acc / n rounded to nearest, ties to even (unbiased: half-up would add n/2/n^2 per mip)."""
    if np.issubdtype(dtype, np.floating):
        return np.asfortranarray(acc / n, dtype=dtype)
    if np.issubdtype(acc.dtype, np.floating):
        return np.asfortranarray(np.rint(acc / n), dtype=dtype)
    t = acc.dtype.type
    if n & (n - 1) == 0:
        shift = t(n.bit_length() - 1)
        q = np.right_shift(acc + t(n // 2), shift)
        tie = np.bitwise_and(acc, t(n - 1)) == t(n // 2)
    else:
        q = np.floor_divide(acc + t(n // 2), t(n))
        tie = np.remainder(acc, t(n)) * 2 == t(n)
    tie &= np.bitwise_and(q, t(1)).astype(bool)
    q -= tie.astype(acc.dtype)
    return np.asfortranarray(q, dtype=dtype)


def _divide(acc: np.ndarray, count: np.ndarray, dtype: np.dtype) -> np.ndarray:
    safe = np.maximum(count, 1).astype(acc.dtype)
    if np.issubdtype(dtype, np.floating) or np.issubdtype(acc.dtype, np.floating):
        res = acc / safe
        if not np.issubdtype(dtype, np.floating):
            res = np.rint(res)
    else:
        res = (acc + safe // 2) // safe
    res[count == 0] = 0
    return np.asfortranarray(res, dtype=dtype)
