"""NumPy .npy sources: memory-mapped when local; on object storage, the header and then the
byte spans of each task's box through ranged GETs. Taken as x,y,z(,c) like Igneous and
cloud-volume's `from_numpy`, unless the user says --axes zyx."""
from __future__ import annotations

from functools import partial

import numpy as np

from igneous_like.errors import UserError
from igneous_like.formats.base import ACCESS_XYZ, Source, check_dtype
from igneous_like.formats.byte_access import (
    HEADER_BLOCK, FileArray, check_size, is_remote, open_data, open_file, read_buffer,
)


def remote_npy(url: str) -> FileArray:
    """A lazy array over a .npy on object storage: its header read once, its data by range."""
    with open_file(url, HEADER_BLOCK) as f:
        version = np.lib.format.read_magic(f)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in reader:
            raise ValueError(f".npy format version {version[0]}.{version[1]} cannot be read by range")
        shape, fortran, dtype = reader[version](f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError("object arrays cannot be read by range")
    check_size(url, offset + int(np.prod(shape)) * dtype.itemsize)
    return FileArray(partial(open_data, url), offset, shape, dtype, "F" if fortran else "C", name=url)


def open_npy(path: str, axes: str | None = None) -> Source:
    try:
        arr = remote_npy(path) if is_remote(path) else np.load(path, mmap_mode="r")
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    dtype = check_dtype(arr.dtype, path)
    ndim = len(arr.shape)
    if ndim < 3:
        raise UserError(f"{path} is {ndim}D ({'x'.join(map(str, arr.shape))}); import takes a 3D volume")
    if ndim > 4:
        raise UserError(f"{path} is {ndim}D; import takes 3 axes plus an optional channel axis last")
    order = (axes or "xyz").lower()
    if sorted(order) != ["x", "y", "z"]:
        raise UserError(f"--axes {axes!r} must name x, y and z once each, e.g. xyz or zyx")
    order += "c" if ndim == 4 else ""
    note = "--axes" if axes else "default for .npy (as Igneous and cloud-volume's from_numpy)"
    kind = "NumPy .npy (ranged reads)" if is_remote(path) else "NumPy .npy (memory-mapped)"
    src = Source(path, kind, arr, order, dtype, access=ACCESS_XYZ,
                 read_buffer=read_buffer(path, None, FileArray.MAX_READ) if is_remote(path) else 0)
    src.notes.append(f"axis order {order} from {note}")
    spatial = order.replace("c", "")
    if is_remote(path) and (spatial[0] if arr.order == "C" else spatial[-1]) != "z":  # z is not slowest
        src.notes.append("z varies fastest on disk: each z-slab task reads spans across the whole file "
                         "(save the array as z,y,x and pass --axes zyx to read only each slab)")
    return src
