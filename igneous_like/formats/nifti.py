"""NIfTI sources (.nii, .nii.gz) through nibabel. NIfTI arrays are x,y,z; voxel sizes come
from the header's zooms in its spatial unit."""
from __future__ import annotations

import numpy as np

from igneous_like.errors import UserError
from igneous_like.formats.base import ACCESS_YZ, ACCESS_Z, Source, check_dtype, fixed_axes, to_nm


class NiftiArray:
    """Lazy slicing of the image's data; values scaled by scl_slope/scl_inter where set."""

    def __init__(self, path: str, shape: tuple, dtype: np.dtype):
        self.path, self.shape, self.dtype = path, shape, dtype

    def __getitem__(self, index: tuple) -> np.ndarray:
        import nibabel

        img = nibabel.load(self.path)
        return np.asarray(img.dataobj[index]).astype(self.dtype, copy=False)


def is_scaled(img) -> bool:
    """A header slope or intercept other than 1 and 0 turns stored integers into floats."""
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    return not (slope in (1.0, 0.0) or np.isnan(slope)) or not (inter == 0.0 or np.isnan(inter))


def open_nifti(path: str) -> Source:
    import nibabel

    try:
        img = nibabel.load(path)
        header = img.header
        shape = tuple(int(n) for n in img.shape)
        dtype = check_dtype(np.float32 if is_scaled(img) else header.get_data_dtype(), path)
        unit = header.get_xyzt_units()[0]
        zooms = header.get_zooms()[:3]
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    axes = fixed_axes(shape, path, "xyz", "xyzc")
    unit = {"meter": "m", "mm": "mm", "micron": "um"}.get(unit, unit)
    resolution = to_nm(zooms, unit, path) if unit and unit != "unknown" else None
    where = f"NIfTI header pixdim ({unit})" if resolution else "none"
    # x varies fastest on disk: full-width bands are contiguous runs, x tiles would be scattered
    access = ACCESS_Z if path.endswith(".gz") else ACCESS_YZ
    return Source(path, "NIfTI", NiftiArray(path, shape, dtype), axes, dtype, resolution, where, access=access)
