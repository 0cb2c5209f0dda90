"""HDF5 sources through h5py: one 3D (or 4D with channels last) dataset, stored z,y,x. On
object storage h5py reads through a file object over ranged GETs with a block cache, so a task
fetches the file's metadata and the chunks its box touches, not the file."""
from __future__ import annotations

import numpy as np

from igneous_like.errors import UserError
from igneous_like.formats.base import ACCESS_XYZ, Source, check_dtype, fixed_axes, to_nm
from igneous_like.formats.byte_access import is_remote, open_file, read_buffer


def h5_file(path: str):
    """h5py's read-only File on a local path, or on a storage URL through ranged reads."""
    import h5py

    return h5py.File(open_file(path) if is_remote(path) else path, "r")


def list_datasets(path: str) -> dict[str, tuple]:
    """{name: shape} of every dataset in the file."""
    import h5py

    found: dict[str, tuple] = {}
    with h5_file(path) as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj.shape) if isinstance(obj, h5py.Dataset) else None)
    return found


def pick_dataset(path: str, dataset: str | None) -> str:
    found = list_datasets(path)
    listing = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in sorted(found.items())) or "none"
    if dataset is not None:
        if dataset.strip("/") not in found:
            raise UserError(f"{path} has no dataset {dataset!r}; it has: {listing}")
        return dataset.strip("/")
    volumes = [n for n, s in found.items() if len(s) == 3]
    if len(volumes) != 1:
        why = "no 3D dataset" if not volumes else "several 3D datasets"
        raise UserError(f"{path} has {why}: pick one with --dataset (datasets: {listing})")
    return volumes[0]


class H5Array:
    """Lazy dataset slicing that reopens the file per read (tasks share nothing)."""

    def __init__(self, path: str, name: str, shape: tuple, dtype: np.dtype):
        self.path, self.name, self.shape, self.dtype = path, name, shape, dtype

    def __getitem__(self, index: tuple) -> np.ndarray:
        with h5_file(self.path) as f:
            return f[self.name][index]


def element_size(attrs) -> tuple[tuple[float, float, float] | None, str]:
    """Fiji/ilastik's element_size_um (z,y,x) or a 'resolution' attribute in nm (z,y,x)."""
    if "element_size_um" in attrs:
        z, y, x = (float(v) for v in attrs["element_size_um"])
        return to_nm((x, y, z), "um", ""), "HDF5 attribute element_size_um"
    if "resolution" in attrs and len(attrs["resolution"]) == 3:
        z, y, x = (float(v) for v in attrs["resolution"])
        return (x, y, z), "HDF5 attribute resolution (nm, z,y,x)"
    return None, "none"


def open_hdf5(path: str, dataset: str | None = None) -> Source:
    try:
        name = pick_dataset(path, dataset)
        with h5_file(path) as f:
            ds = f[name]
            shape, attrs = ds.shape, dict(ds.attrs)
            dtype = check_dtype(ds.dtype, f"{path}:{name}")
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    axes = fixed_axes(shape, f"{path}:{name}", "zyx", "zyxc")
    resolution, where = element_size(attrs)
    # chunked or contiguous, HDF5 reads any hyperslab without decoding the rest
    return Source(path, f"HDF5 dataset /{name}", H5Array(path, name, shape, dtype), axes, dtype, resolution, where,
                  access=ACCESS_XYZ, read_buffer=read_buffer(path))
