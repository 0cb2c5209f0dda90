"""One small interface over every outside volume format: what the source is (shape, dtype,
axes, physical size) and `read(box)` of any sub-box as a Precomputed-ordered x,y,z,c array.

A reader wraps an array-like that slices lazily in the source's own axis order; the axis
letters say how that order maps to x, y, z and channels, so no reader reorders by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from igneous_like.errors import UserError
from igneous_like.grid import Box, Vec3, vec3

# how far a task may split the source without reading a byte twice
ACCESS_XYZ = "xyz"  # random access in every axis (tiled TIFF, Zarr, HDF5 chunks, .npy)
ACCESS_YZ = "yz"  # full-width bands of rows (strip TIFF)
ACCESS_Z = "z"  # whole slices only (compressed pages, gzip streams)

SUPPORTED_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64")
UNIT_TO_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometers": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "micrometers": 1e3,
    "mm": 1e6, "millimeter": 1e6, "millimeters": 1e6,
    "cm": 1e7, "centimeter": 1e7, "m": 1e9, "meter": 1e9,
    "angstrom": 0.1, "å": 0.1, "pm": 1e-3, "picometer": 1e-3,
}


@dataclass
class Source:
    """An opened outside volume. `array` slices lazily in `axes` order (letters x, y, z, c)."""

    path: str
    format: str
    array: Any
    axes: str
    dtype: np.dtype
    resolution: tuple[float, float, float] | None = None  # nm, x,y,z
    resolution_source: str = "none"
    offset: Vec3 = (0, 0, 0)  # voxels
    access: str = ACCESS_XYZ
    read_buffer: int = 0  # bytes a read holds besides its result (staging spans, decode buffers, caches)
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> Vec3:
        """x, y, z voxel counts."""
        sizes = dict(zip(self.axes, self.array.shape))
        return vec3(sizes[a] for a in "xyz")

    @property
    def channels(self) -> int:
        return int(dict(zip(self.axes, self.array.shape)).get("c", 1))

    def read(self, box: Box) -> np.ndarray:
        """The voxels of `box` (source voxel coordinates, offset not applied) as x,y,z,c."""
        rng = {a: slice(s, e) for a, s, e in zip("xyz", box.start, box.stop)}
        index = tuple(rng.get(a, slice(None)) for a in self.axes)
        block = np.asarray(self.array[index]).astype(self.dtype, copy=False)  # native byte order
        axes = self.axes
        if "c" not in axes:
            block, axes = block[..., np.newaxis], axes + "c"
        return block.transpose([axes.index(a) for a in "xyzc"])


def reorder_note(axes: str) -> str:
    """How the source's axes map to x,y,z,c, e.g. 'zyx -> x,y,z,c (transposed)'."""
    kind = "as stored" if axes.rstrip("c") == "xyz" else "transposed"
    return f"{','.join(axes)} -> x,y,z,c ({kind})"


def check_dtype(dtype: np.dtype, path: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype.name not in SUPPORTED_DTYPES:
        raise UserError(f"{path}: unsupported data type {dtype.name} (Precomputed takes {', '.join(SUPPORTED_DTYPES)})")
    return dtype


def to_nm(values, unit: str | None, path: str) -> tuple[float, float, float] | None:
    """Physical sizes in `unit` converted to nanometres (None when the unit is unknown)."""
    if unit is None:
        return None
    factor = UNIT_TO_NM.get(str(unit).strip().lower())
    if factor is None:
        return None
    return tuple(float(v) * factor for v in values)  # type: ignore[return-value]


def axes_from_letters(letters: str, ndim: int, path: str) -> str:
    """Map a format's axis letters (e.g. tifffile's 'ZYXS', 'QYX') to ours (x, y, z, c)."""
    mapping = {"X": "x", "Y": "y", "Z": "z", "C": "c", "S": "c", "Q": "z", "I": "z", "T": "t"}
    out = "".join(mapping.get(ch.upper(), "?") for ch in letters)
    if len(out) != ndim or "?" in out:
        raise UserError(f"{path}: cannot interpret axes {letters!r} as x, y, z and channels")
    return out


def fixed_axes(shape: tuple[int, ...], where: str, axes3: str, axes4: str) -> str:
    """The axes of a source whose format fixes them: axes3 for 3D data, axes4 (with a channel
    axis) for 4D; anything else is a one-line error."""
    if len(shape) < 3:
        raise UserError(f"{where} is {len(shape)}D ({'x'.join(map(str, shape))}); import takes a 3D volume")
    if len(shape) > 4:
        raise UserError(f"{where} is {len(shape)}D; import takes {','.join(axes3)} or {','.join(axes4)}")
    return axes3 if len(shape) == 3 else axes4


def check_axes(axes: str, shape: tuple[int, ...], path: str) -> str:
    """Drop singleton extra axes (t); require x, y and z exactly once and at most one channel axis."""
    if "z" not in axes and len(axes) == 2:
        raise UserError(f"{path}: this is a 2D image ({'x'.join(map(str, shape))}); import takes a 3D volume "
                        "(give a directory or glob of slices for a stack)")
    for a in "xyz":
        if axes.count(a) != 1:
            raise UserError(f"{path}: needs one x, one y and one z axis, found axes {axes!r} of shape {shape}")
    if axes.count("c") > 1:
        raise UserError(f"{path}: more than one channel axis in {axes!r}")
    for a, n in zip(axes, shape):
        if a not in "xyzc" and n != 1:
            raise UserError(f"{path}: axis {a!r} has {n} entries; only x, y, z and channels can be imported")
    return axes


class Squeeze:
    """A lazy view that drops singleton axes the importer does not use (e.g. OME-Zarr's t)."""

    def __init__(self, array: Any, keep: list[bool]):
        self.array, self.keep = array, keep
        self.shape = tuple(n for n, k in zip(array.shape, keep) if k)
        self.dtype = array.dtype

    def __getitem__(self, index: tuple) -> np.ndarray:
        it = iter(index)
        full = tuple(next(it) if k else 0 for k in self.keep)
        return np.asarray(self.array[full])


def squeeze_axes(array: Any, axes: str) -> tuple[Any, str]:
    keep = [a in "xyzc" for a in axes]
    if all(keep):
        return array, axes
    return Squeeze(array, keep), "".join(a for a in axes if a in "xyzc")
