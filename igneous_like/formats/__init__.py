"""Readers of outside volume formats, each behind `formats.base.Source`; `open_source` picks
the reader from the path and the options a task carries (so workers reopen it the same way)."""
from __future__ import annotations

import os

from igneous_like.errors import UserError
from igneous_like.formats.base import Source


def local_source_path(src: str) -> str:
    """A plain path or file:// URL, made absolute so workers elsewhere agree; s3:// and gs://
    URLs (Zarr and N5 only) stay as they are."""
    if src.startswith(("s3://", "gs://")):
        return src.rstrip("/")
    if src.startswith("file://"):
        src = src[len("file://"):]
    elif "://" in src:
        raise UserError(f"import reads a path, file://, or (Zarr, N5) s3:// and gs:// URLs, not {src!r}")
    return os.path.abspath(os.path.expanduser(src))


def open_source(spec: dict) -> Source:
    """Open the volume a spec names: {'path', 'dataset', 'level', 'axes', 'order', 'pad'}, plus
    'stack' (what planning found in a slice stack) in the specs tasks carry."""
    from igneous_like.formats import tiff, zarr

    path = spec["path"]
    lower = path.lower().rstrip("/")
    if path.startswith(("s3://", "gs://")):
        if not zarr.is_zarr(path):
            raise UserError(f"{path}: only Zarr and N5 sources are read from object storage (no .zarray, .zgroup, "
                            "zarr.json or attributes.json there); copy other formats to a local path")
        return zarr.open_zarr(path, spec.get("level"), spec.get("dataset"))
    if tiff.is_slice_stack(path) and not zarr.is_zarr(path):
        return tiff.open_slices(path, spec.get("order") or "natural", bool(spec.get("pad")), spec.get("stack"))
    if not os.path.exists(path):
        raise UserError(f"source {path} does not exist")
    if zarr.is_zarr(path):
        return zarr.open_zarr(path, spec.get("level"), spec.get("dataset"))
    if lower.endswith((".tif", ".tiff", ".btf", ".tf8")):
        return tiff.open_tiff(path)
    if lower.endswith((".h5", ".hdf5", ".hdf")):
        from igneous_like.formats.hdf5 import open_hdf5

        return open_hdf5(path, spec.get("dataset"))
    if lower.endswith((".nii", ".nii.gz")):
        from igneous_like.formats.nifti import open_nifti

        return open_nifti(path)
    if lower.endswith(".nrrd"):
        from igneous_like.formats.nrrd import open_nrrd

        return open_nrrd(path)
    if lower.endswith(".npy"):
        from igneous_like.formats.npy import open_npy

        return open_npy(path, spec.get("axes"))
    raise UserError(f"cannot tell the format of {path}: expected a directory or glob of slices, .tif/.tiff, "
                    ".h5/.hdf5, .zarr/.n5 (or a Zarr directory), .nii/.nii.gz, .nrrd or .npy")
