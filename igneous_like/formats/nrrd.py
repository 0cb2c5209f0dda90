"""NRRD sources, local or on object storage; pynrrd parses the header. NRRD lists sizes
fastest axis first, so its arrays are x,y,z. Raw data is read by byte span; gzip and bzip2
data is decoded as a stream from the start, skipping to each task's slab (z is slowest, so a
z-slab is one contiguous run of the decoded stream) and keeping only that, so memory per task
stays bounded by the slab. ASCII/hex encodings, file lists and line skips fall back to pynrrd
reading the whole (local) file."""
from __future__ import annotations

from functools import partial

import numpy as np

from igneous_like.errors import UserError
from igneous_like.formats.base import ACCESS_YZ, ACCESS_Z, Source, check_dtype, fixed_axes, to_nm
from igneous_like.formats.byte_access import (
    HEADER_BLOCK, FileArray, check_size, file_size, is_remote, join, open_data, open_file, read_buffer,
)

COMPRESSION = {"raw": None, "gzip": "gzip", "gz": "gzip", "bzip2": "bz2", "bz2": "bz2"}


class WholeNrrd:
    """pynrrd decoding the whole file per read: encodings with no byte positions (text, hex)."""

    def __init__(self, path: str, shape: tuple, dtype: np.dtype):
        self.path, self.shape, self.dtype = path, shape, dtype

    def __getitem__(self, index: tuple) -> np.ndarray:
        import nrrd

        data, _ = nrrd.read(self.path, index_order="F")
        return np.asarray(data[index])


def read_header(path: str) -> tuple[dict, int]:
    """The header and the byte offset where attached data starts."""
    import nrrd

    with open_file(path, HEADER_BLOCK) as f:  # buffered: pynrrd iterates lines, tell() is where they stopped
        header = nrrd.read_header(f)
        return header, f.tell()


def data_layout(header: dict, path: str, header_end: int, nbytes: int) -> tuple[str, int, int, str | None] | None:
    """(data file, where its compressed stream starts, the voxels' offset in the file or in the
    decoded stream, compression) or None where only a whole-file decode can find them."""
    encoding = str(header.get("encoding", "raw")).lower()
    detached = header.get("data file") or header.get("datafile")
    if encoding not in COMPRESSION or int(header.get("line skip", header.get("lineskip", 0)) or 0):
        return None
    if detached and (str(detached).startswith("LIST") or len(str(detached).split()) > 1):
        return None
    data_path = join(path, str(detached)) if detached else path
    start = 0 if detached else header_end
    skip = int(header.get("byte skip", header.get("byteskip", 0)) or 0)
    compression = COMPRESSION[encoding]
    if skip == -1:  # the data are the file's last bytes (raw only, per the spec)
        if compression:
            return None
        return data_path, 0, file_size(data_path) - nbytes, None
    if compression:
        return data_path, start, skip, compression
    return data_path, 0, start + skip, None


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
    import nrrd

    try:
        header, header_end = read_header(path)
        shape = tuple(int(n) for n in header["sizes"])
        file_dtype = np.dtype(nrrd.reader._determine_datatype(header))
        dtype = check_dtype(file_dtype, path)
        layout = data_layout(header, path, header_end, int(np.prod(shape)) * file_dtype.itemsize)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    axes = fixed_axes(shape, path, "xyz", "cxyz")
    resolution, where = physical_size(header, path)
    encoding = header.get("encoding")
    if layout is None:
        if is_remote(path):
            raise UserError(f"{path}: NRRD with encoding {encoding!r}, a data file list or line skips cannot be "
                            "read in parts from object storage; copy it to a local path")
        src = Source(path, f"NRRD ({encoding})", WholeNrrd(path, shape, file_dtype), axes, dtype, resolution,
                     where, access=ACCESS_Z)
        src.notes.append(f"NRRD ({encoding}): each task decodes the whole file (no byte positions to skip to)")
        return src
    data_path, stream_start, offset, compression = layout
    if not compression:
        check_size(data_path, offset + int(np.prod(shape)) * file_dtype.itemsize)
    array = FileArray(partial(open_data, data_path, stream_start, compression), offset, shape, file_dtype, "F",
                      name=data_path)
    src = Source(path, f"NRRD ({encoding})", array, axes, dtype, resolution, where,
                 access=ACCESS_Z if compression else ACCESS_YZ,  # x fastest on disk: full-width bands
                 read_buffer=read_buffer(data_path, compression, FileArray.MAX_READ))
    if compression:
        src.notes.append(f"{encoding} NRRD: each task decodes the stream up to its slab and keeps only the slab")
    return src
