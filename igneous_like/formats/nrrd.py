"""NRRD sources through pynrrd. NRRD lists sizes fastest axis first, so its arrays are x,y,z.
Raw-encoded attached data is memory-mapped; compressed data is decoded whole by pynrrd."""
from __future__ import annotations

import numpy as np

from igneous_like.errors import UserError
from igneous_like.formats.base import ACCESS_YZ, ACCESS_Z, Source, check_dtype, fixed_axes, to_nm


class NrrdArray:
    def __init__(self, path: str, shape: tuple, dtype: np.dtype, offset: int | None):
        self.path, self.shape, self.dtype, self.offset = path, shape, dtype, offset

    def __getitem__(self, index: tuple) -> np.ndarray:
        if self.offset is not None:
            data = np.memmap(self.path, self.dtype, "r", self.offset, self.shape, order="F")
            return np.array(data[index])
        import nrrd

        data, _ = nrrd.read(self.path, index_order="F")
        return np.asarray(data[index])


def read_header(path: str) -> tuple[dict, int]:
    """The header and the byte offset where attached data starts."""
    import nrrd

    with open(path, "rb") as f:
        header = nrrd.read_header(f)
        return header, f.tell()


def physical_size(header: dict, path: str) -> tuple[tuple[float, float, float] | None, str]:
    units = header.get("space units")
    if "space directions" in header:
        dirs = np.asarray(header["space directions"], dtype=float)[-3:]
        sizes = np.linalg.norm(dirs, axis=1)
    elif "spacings" in header:
        sizes = np.asarray(header["spacings"], dtype=float)[-3:]
        units = header.get("units", units)
    else:
        return None, "none"
    if units is None or len(units) < 3 or len(set(units[-3:])) != 1:
        return None, "none"
    nm = to_nm(sizes, units[-1], path)
    return (nm, f"NRRD spacing ({units[-1]})") if nm else (None, "none")


def open_nrrd(path: str) -> Source:
    try:
        header, offset = read_header(path)
        shape = tuple(int(n) for n in header["sizes"])
        import nrrd

        file_dtype = np.dtype(nrrd.reader._determine_datatype(header))
        dtype = check_dtype(file_dtype, path)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    axes = fixed_axes(shape, path, "xyz", "cxyz")
    raw = header.get("encoding") == "raw" and "data file" not in header and "datafile" not in header
    resolution, where = physical_size(header, path)
    array = NrrdArray(path, shape, file_dtype, offset if raw else None)
    src = Source(path, f"NRRD ({header.get('encoding')})", array, axes, dtype, resolution, where,
                 access=ACCESS_YZ if raw else ACCESS_Z)  # x fastest on disk: full-width bands
    if not raw:
        src.notes.append("compressed NRRD: each task decodes the whole file (pynrrd has no partial reads)")
    return src
