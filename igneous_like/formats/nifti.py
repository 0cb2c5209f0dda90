"""NIfTI sources (.nii, .nii.gz), local or on object storage. The header is parsed by nibabel;
the voxels (x,y,z, x fastest) are read straight from the file's data offset: a full-width band
of an uncompressed file is one contiguous run, and a .nii.gz is decoded as a stream up to the
slab a task needs, never whole. Voxel sizes come from the header's zooms in its spatial unit."""
from __future__ import annotations

import io
from functools import partial

import numpy as np

from igneous_like.errors import UserError
from igneous_like.formats.base import ACCESS_YZ, ACCESS_Z, Source, check_dtype, fixed_axes, to_nm
from igneous_like.formats.byte_access import HEADER_BLOCK, FileArray, check_size, open_data, read_buffer


class ScaledArray:
    """Stored values times scl_slope plus scl_inter, as nibabel's dataobj gives them."""

    def __init__(self, array: FileArray, slope: float, inter: float, dtype: np.dtype):
        self.array, self.slope, self.inter, self.dtype = array, slope, inter, dtype
        self.shape = array.shape

    def __getitem__(self, index: tuple) -> np.ndarray:
        from nibabel.volumeutils import apply_read_scaling

        return np.asarray(apply_read_scaling(self.array[index], self.slope, self.inter)).astype(self.dtype, copy=False)


def read_header(path: str):
    """nibabel's NIfTI-1 or NIfTI-2 header from the first bytes of the (decoded) file."""
    import nibabel

    compression = "gzip" if path.lower().endswith(".gz") else None
    with open_data(path, 0, compression, HEADER_BLOCK) as f:
        head = f.read(540)
    if len(head) < 348:
        raise UserError(f"{path} is too short for a NIfTI header")
    sizes = {int.from_bytes(head[:4], order) for order in ("little", "big")}
    klass = nibabel.Nifti2Header if 540 in sizes else nibabel.Nifti1Header
    return klass.from_fileobj(io.BytesIO(head)), compression


def open_nifti(path: str) -> Source:
    try:
        header, compression = read_header(path)
        shape = tuple(int(n) for n in header.get_data_shape())
        stored = header.get_data_dtype()
        slope, inter = header.get_slope_inter()
        scaled = not (slope in (None, 1.0) and inter in (None, 0.0))
        dtype = check_dtype(np.float32 if scaled else stored, path)
        unit = header.get_xyzt_units()[0]
        zooms = header.get_zooms()[:3]
        offset = int(header.get_data_offset())
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    axes = fixed_axes(shape, path, "xyz", "xyzc")
    if not compression:
        check_size(path, offset + int(np.prod(shape)) * stored.itemsize)
    unit = {"meter": "m", "mm": "mm", "micron": "um"}.get(unit, unit)
    resolution = to_nm(zooms, unit, path) if unit and unit != "unknown" else None
    where = f"NIfTI header pixdim ({unit})" if resolution else "none"
    array = FileArray(partial(open_data, path, 0, compression), offset, shape, stored, "F", name=path)
    if scaled:
        array = ScaledArray(array, 1.0 if slope is None else slope, 0.0 if inter is None else inter, dtype)
    # x varies fastest on disk: full-width bands are contiguous runs, x tiles would be scattered
    src = Source(path, "NIfTI", array, axes, dtype, resolution, where, access=ACCESS_Z if compression else ACCESS_YZ,
                 read_buffer=read_buffer(path, compression, FileArray.MAX_READ))
    if compression:
        src.notes.append("gzip-compressed: each task decodes the stream up to its slab and keeps only the slab")
    return src
