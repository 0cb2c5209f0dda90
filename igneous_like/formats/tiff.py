"""TIFF sources through tifffile: 2D slice stacks (TIFF or PNG, one file per z), multi-page
TIFF and BigTIFF, OME-TIFF (axes and physical sizes from its OME-XML), ImageJ hyperstacks.

Pages are read through tifffile's zarr view, which decodes only the strips or tiles a box
touches: tiled files split in x and y, strip files in full-width bands, others whole slices.
On object storage a stack is a prefix listing (a directory, or a glob in the last path part),
each task fetches only its own slices, and tifffile reads files through ranged GETs.
"""
from __future__ import annotations

import fnmatch
import glob
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from igneous_like.errors import UserError
from igneous_like.formats.byte_access import (
    HEADER_BLOCK, cloudfiles, get_bytes, is_remote, open_file, read_buffer, split_url,
)
from igneous_like.formats.base import (
    ACCESS_XYZ, ACCESS_YZ, ACCESS_Z, Source, axes_from_letters, check_axes, check_dtype, squeeze_axes, to_nm,
)

SLICE_EXTENSIONS = (".tif", ".tiff", ".png")


FILE_EXTENSIONS = (".tif", ".tiff", ".btf", ".tf8", ".png", ".h5", ".hdf5", ".hdf", ".nii", ".nii.gz", ".nrrd",
                   ".nhdr", ".npy", ".zarr", ".n5")  # Zarr and N5 last (open_source relies on it)
WILDCARDS = "*?["


def is_slice_stack(path: str) -> bool:
    """A glob, a local directory, or on object storage a prefix that names no single file."""
    if any(ch in path for ch in WILDCARDS):
        return True
    if is_remote(path):
        return not path.rstrip("/").lower().endswith(FILE_EXTENSIONS)
    return os.path.isdir(path)


def list_remote(path: str) -> list[str]:
    """Slice URLs under a storage prefix, or matching a glob in its last part (listed by the
    prefix before the first wildcard)."""
    if any(ch in path for ch in WILDCARDS):
        head, pattern = split_url(path)
        if any(ch in head for ch in WILDCARDS):
            raise UserError(f"{path}: on object storage a glob may use wildcards in its last part only")
        prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        names = [n for n in cloudfiles(head).list(prefix=prefix, flat=True) if fnmatch.fnmatchcase(n, pattern)]
    else:
        head = path.rstrip("/")
        names = list(cloudfiles(head).list(flat=True))
    return [f"{head}/{n}" for n in names if n.lower().endswith(SLICE_EXTENSIONS)]


def natural_key(name: str) -> list:
    """'z2' before 'z10': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_slices(path: str, order: str = "natural") -> list[str]:
    if is_remote(path):
        try:
            names = list_remote(path)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"cannot list {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    elif os.path.isdir(path):
        names = [os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(SLICE_EXTENSIONS)]
    else:
        names = [n for n in glob.glob(path) if n.lower().endswith(SLICE_EXTENSIONS)]
    if not names:
        raise UserError(f"no .tif, .tiff or .png slices in {path}")
    if order == "lexical":
        return sorted(names)
    return sorted(names, key=lambda n: natural_key(os.path.basename(n)))


def check_numbering(files: list[str]) -> None:
    """A gap in the slice numbers is a missing slice: name it rather than shift every z above."""
    numbers = []
    for f in files:
        found = re.findall(r"\d+", os.path.basename(f))
        if not found:
            return
        numbers.append(int(found[-1]))
    steps = {b - a for a, b in zip(numbers, numbers[1:])}
    if len(steps) > 1 and min(steps) > 0:
        step = min(steps)
        for a, b in zip(numbers, numbers[1:]):
            if b - a != step:
                raise UserError(f"slice number {a + step} is missing from the stack (between slices {a} and {b}); "
                                "fix the stack or name the slices explicitly with a glob")


class SliceStack:
    """z,y,x(,c) array over one 2D image file per z, read lazily per slice. Smaller slices
    (allowed with --pad) leave zeros beyond their own extent."""

    def __init__(self, files: list[str], shape: tuple, dtype: np.dtype):
        self.files, self.dtype = files, dtype
        self.shape = (len(files), *shape)

    def __getitem__(self, index: tuple) -> np.ndarray:
        zs, ys, xs = (s.indices(n) for s, n in zip(index[:3], self.shape))
        out = np.zeros((len(range(*zs)), len(range(*ys)), len(range(*xs)), *self.shape[3:]), self.dtype)
        whole = ys[0] == 0 and ys[1] >= self.shape[1]
        for i, z in enumerate(range(*zs)):
            got = read_slice(self.files[z], slice(ys[0], ys[1]), slice(xs[0], xs[1]), whole)
            out[i, : got.shape[0], : got.shape[1]] = got
        return out[(slice(None),) * 3 + tuple(index[3:])]


def read_slice(path: str, ys: slice, xs: slice, whole: bool = False) -> np.ndarray:
    """Rows ys, columns xs of one 2D image. TIFF decodes only the strips or tiles touched,
    through tifffile's own decoders (its zarr view costs ~8 ms a call; this, under 1 ms).
    On object storage a `whole`-height read fetches the file in one GET, others by range."""
    try:
        if path.lower().endswith(".png"):
            import pyspng

            return pyspng.load(whole_file(path))[ys, xs]
        import tifffile

        with tiff_file(path, whole) as tif:
            page = tif.pages[0]
            height = page.shape[0]
            if ys.start == 0 and ys.stop >= height:
                return page.asarray()[:, xs]
            if not page.is_tiled and page.planarconfig == 1 and page.rowsperstrip:
                return strip_rows(tif, page, ys.start, ys.stop)[:, xs]
            import zarr

            with tif.aszarr(key=0) as store:
                return np.asarray(zarr.open_array(store, mode="r")[ys, xs])
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read slice {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None


@contextmanager
def tiff_file(path: str, whole: bool = False, block: int = 1 << 20):
    """tifffile's TiffFile on a local path, or on a storage URL: fetched in one GET when the
    whole file is wanted, else read by ranges of `block` bytes."""
    import tifffile

    if not is_remote(path):
        with tifffile.TiffFile(path) as tif:
            yield tif
        return
    with (io.BytesIO(get_bytes(path)) if whole else open_file(path, block)) as fh, tifffile.TiffFile(fh) as tif:
        yield tif


def strip_rows(tif, page, y0: int, y1: int) -> np.ndarray:
    """Rows y0:y1 of a strip-organized, contiguous page: read and decode only their strips."""
    rps = page.rowsperstrip
    first, last = y0 // rps, (min(y1, page.shape[0]) - 1) // rps
    sel = slice(first, last + 1)
    parts = {}
    for data, index in tif.filehandle.read_segments(page.dataoffsets[sel], page.databytecounts[sel],
                                                    indices=range(first, last + 1), sort=True):
        segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        parts[index] = segment.reshape(-1, page.imagewidth, page.samplesperpixel)
    rows = np.concatenate([parts[i] for i in sorted(parts)], axis=0)[y0 - first * rps: y1 - first * rps]
    return rows if len(page.shape) == 3 else rows[..., 0]


def whole_file(path: str) -> bytes:
    if is_remote(path):
        return get_bytes(path)
    with open(path, "rb") as f:
        return f.read()


def slice_header(path: str) -> tuple[tuple, np.dtype, str]:
    """(shape, dtype, access) of one 2D slice, from its header only."""
    try:
        if path.lower().endswith(".png"):
            import pyspng

            with open_file(path, HEADER_BLOCK) as f:
                head = pyspng.header(f.read(64))
            channels = (head["channels"],) if head.get("channels", 1) > 1 else ()
            dtype = np.dtype("uint16" if head.get("bit_depth", 8) > 8 else "uint8")
            return (head["height"], head["width"], *channels), dtype, ACCESS_Z
        import tifffile

        with tiff_file(path, block=HEADER_BLOCK) as tif:
            page = tif.pages[0]
            return tuple(page.shape), page.dtype, page_access(page)
    except Exception as exc:
        raise UserError(f"cannot read slice {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def page_access(page: Any) -> str:
    if page.is_tiled:
        return ACCESS_XYZ
    if page.rowsperstrip and page.rowsperstrip < page.shape[0]:
        return ACCESS_YZ
    return ACCESS_Z


def open_slices(path: str, order: str = "natural", pad: bool = False, known: dict | None = None) -> Source:
    """A slice stack; planning lists it and reads every slice's header (shapes, dtype,
    readability); tasks get what planning found as `known`, with the names of their own
    slices, so they neither list the stack again nor read other slices."""
    if known is not None:
        files: list = [None] * known["count"]
        files[known["z0"]: known["z0"] + len(known["files"])] = known["files"]
        dtype = np.dtype(known["dtype"])
        stack = SliceStack(files, tuple(known["shape"]), dtype)
        return Source(path, known["format"], stack, known["axes"], dtype, access=known["access"])
    files = list_slices(path, order)
    check_numbering(files)
    if len(files) == 1:
        raise UserError(f"{path}: only one slice, a 2D image; import takes a 3D volume")
    if is_remote(path):  # one round trip each: overlap them
        with ThreadPoolExecutor(16) as pool:
            headers = list(pool.map(slice_header, files))
    else:
        headers = [slice_header(f) for f in files]
    shape0, dtype0, _ = headers[0]
    if len(shape0) not in (2, 3):
        raise UserError(f"{files[0]}: expected a 2D slice, found shape {shape0}")
    for f, (shape, dtype, _) in zip(files, headers):
        if dtype != dtype0 or shape[2:] != shape0[2:]:
            raise UserError(f"slice {f} is {dtype} {shape}, the first slice is {dtype0} {shape0}")
        if shape[:2] != shape0[:2] and not pad:
            raise UserError(f"slice {f} is {shape[1]}x{shape[0]}, the first slice is {shape0[1]}x{shape0[0]} "
                            "(pass --pad to pad smaller slices with zeros)")
    access = min((h[2] for h in headers), key=[ACCESS_Z, ACCESS_YZ, ACCESS_XYZ].index)
    dtype = check_dtype(dtype0, files[0])
    shape = (max(h[0][0] for h in headers), max(h[0][1] for h in headers), *shape0[2:])
    axes = "zyxc" if len(shape0) == 3 else "zyx"
    kind = f"{len(files)} 2D slices ({os.path.splitext(files[0])[1].lstrip('.').upper()})"
    return Source(path, kind, SliceStack(files, shape, dtype), axes, dtype, access=access,
                  read_buffer=read_buffer(path))


def known_stack(source: Source) -> dict:
    """What tasks need to reopen a slice stack without reading every header again."""
    return {"count": source.array.shape[0], "shape": list(source.array.shape[1:]), "dtype": source.dtype.name,
            "axes": source.axes, "access": source.access, "format": source.format}


def task_stack(source: Source, known: dict, z0: int, z1: int) -> dict:
    """`known` plus the names of slices z0:z1, for a task that reads only those."""
    return {**known, "z0": z0, "files": list(source.array.files[z0:z1])}


def open_tiff(path: str) -> Source:
    """A multi-page TIFF, BigTIFF or OME-TIFF file: its first series, level 0."""
    import tifffile

    try:
        with tiff_file(path) as tif:
            series = tif.series[0]
            letters, shape = series.axes, series.shape
            dtype = check_dtype(series.dtype, path)
            access = page_access(series.pages[0]) if series.pages else ACCESS_Z
            kind = "OME-TIFF" if tif.is_ome else ("BigTIFF" if tif.is_bigtiff else "multi-page TIFF")
            resolution, where = (ome_resolution(tif.ome_metadata) if tif.is_ome else imagej_resolution(tif))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    axes = axes_from_letters(letters, len(shape), path)
    if len(shape) == 2 or (len(shape) == 3 and "c" in axes):
        raise UserError(f"{path}: this is a 2D image ({'x'.join(map(str, shape))}); import takes a 3D volume")
    axes = check_axes(axes, shape, path)
    array, axes = squeeze_axes(TiffArray(path, shape, dtype), axes)
    return Source(path, kind, array, axes, dtype, resolution, where if resolution else "none", access=access,
                  read_buffer=read_buffer(path))


class TiffArray:
    """Lazy series 0 of a TIFF file; each read opens the file, so it pickles as a path."""

    def __init__(self, path: str, shape: tuple, dtype: np.dtype):
        self.path, self.shape, self.dtype = path, tuple(shape), dtype

    def __getitem__(self, index: tuple) -> np.ndarray:
        import tifffile
        import zarr

        with tiff_file(self.path) as tif, tif.aszarr(series=0, level=0) as store:
            return np.asarray(zarr.open_array(store, mode="r")[index])


def ome_resolution(xml: str | None) -> tuple[tuple[float, float, float] | None, str]:
    """PhysicalSize{X,Y,Z} and their units (OME's default: micrometres) from OME-XML."""
    import tifffile

    if not xml:
        return None, "none"
    try:
        pixels = tifffile.xml2dict(xml)["OME"]["Image"]
        pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
    except (KeyError, TypeError, IndexError):
        return None, "none"
    sizes = []
    for a in "XYZ":
        value = pixels.get(f"PhysicalSize{a}")
        if value is None:
            return None, "none"
        nm = to_nm([value], pixels.get(f"PhysicalSize{a}Unit", "µm"), "")
        if nm is None:
            return None, "none"
        sizes.append(nm[0])
    return tuple(sizes), "OME-XML PhysicalSizeX/Y/Z"  # type: ignore[return-value]


def imagej_resolution(tif: Any) -> tuple[tuple[float, float, float] | None, str]:
    """ImageJ hyperstacks: XResolution/YResolution tags (pixels per unit), 'spacing' and 'unit'."""
    meta = tif.imagej_metadata or {}
    if "spacing" not in meta or "unit" not in meta:
        return None, "none"
    tags = tif.pages[0].tags
    try:
        xr, yr = (tags[name].value for name in ("XResolution", "YResolution"))
        sizes = (xr[1] / xr[0], yr[1] / yr[0], float(meta["spacing"]))
    except (KeyError, ZeroDivisionError):
        return None, "none"
    unit = str(meta["unit"]).replace("\\u00B5", "µ")
    nm = to_nm(sizes, unit, "")
    return (nm, "ImageJ resolution tags and spacing") if nm else (None, "none")
