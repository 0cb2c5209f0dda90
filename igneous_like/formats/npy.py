"""NumPy .npy sources, memory-mapped. Taken as x,y,z(,c) like Igneous and cloud-volume's
`from_numpy`, unless the user says --axes zyx."""
from __future__ import annotations

import numpy as np

from igneous_like.errors import UserError
from igneous_like.formats.base import ACCESS_XYZ, Source, check_dtype


def open_npy(path: str, axes: str | None = None) -> Source:
    try:
        arr = np.load(path, mmap_mode="r")
    except Exception as exc:
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    dtype = check_dtype(arr.dtype, path)
    if arr.ndim < 3:
        raise UserError(f"{path} is {arr.ndim}D ({'x'.join(map(str, arr.shape))}); import takes a 3D volume")
    if arr.ndim > 4:
        raise UserError(f"{path} is {arr.ndim}D; import takes 3 axes plus an optional channel axis last")
    order = (axes or "xyz").lower()
    if sorted(order) != ["x", "y", "z"]:
        raise UserError(f"--axes {axes!r} must name x, y and z once each, e.g. xyz or zyx")
    order += "c" if arr.ndim == 4 else ""
    note = "--axes" if axes else "default for .npy (as Igneous and cloud-volume's from_numpy)"
    src = Source(path, "NumPy .npy (memory-mapped)", arr, order, dtype, access=ACCESS_XYZ)
    src.notes.append(f"axis order {order} from {note}")
    return src
