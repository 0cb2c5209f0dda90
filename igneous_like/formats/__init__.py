"""Readers of outside volume formats, each behind `formats.base.Source`; `open_source` picks
the reader from the path and the options a task carries (so workers reopen it the same way)."""
from __future__ import annotations

import os

from igneous_like.errors import UserError
from igneous_like.formats.base import Source
from igneous_like.formats.byte_access import is_remote


def local_source_path(src: str) -> str:
    """A plain path or file:// URL, made absolute so workers elsewhere agree; storage URLs
    (s3://, gs://, ... anything cloud-files reads) stay as they are."""
    if is_remote(src):
        return src.rstrip("/")
    if src.startswith("file://"):
        src = src[len("file://"):]
    return os.path.abspath(os.path.expanduser(src))


def open_source(spec: dict) -> Source:
    """Open the volume a spec names: {'path', 'dataset', 'level', 'axes', 'order', 'pad'}, plus
    'stack' (what planning found in a slice stack) in the specs tasks carry."""
    from igneous_like.formats import tiff, zarr

    path = spec["path"]
    lower = path.lower().rstrip("/")
    remote = is_remote(path)
    if spec.get("stack"):  # a task's slices, as planning listed them
        return tiff.open_slices(path, spec.get("order") or "natural", bool(spec.get("pad")), spec["stack"])
    named = lower.endswith(tiff.FILE_EXTENSIONS[:-2]) or any(ch in path for ch in tiff.WILDCARDS)  # not Zarr/N5
    if not named and (remote or os.path.exists(path)) and zarr.is_zarr(path):
        return zarr.open_zarr(path, spec.get("level"), spec.get("dataset"))
    if tiff.is_slice_stack(path):
        return tiff.open_slices(path, spec.get("order") or "natural", bool(spec.get("pad")))
    if not remote and not os.path.exists(path):
        raise UserError(f"source {path} does not exist")
    if lower.endswith((".tif", ".tiff", ".btf", ".tf8")):
        return tiff.open_tiff(path)
    if lower.endswith((".h5", ".hdf5", ".hdf")):
        from igneous_like.formats.hdf5 import open_hdf5

        return open_hdf5(path, spec.get("dataset"))
    if lower.endswith((".nii", ".nii.gz")):
        from igneous_like.formats.nifti import open_nifti

        return open_nifti(path)
    if lower.endswith((".nrrd", ".nhdr")):
        from igneous_like.formats.nrrd import open_nrrd

        return open_nrrd(path)
    if lower.endswith(".npy"):
        from igneous_like.formats.npy import open_npy

        return open_npy(path, spec.get("axes"))
    raise UserError(f"cannot tell the format of {path}: expected a directory or glob of slices, .tif/.tiff, "
                    ".h5/.hdf5, .zarr/.n5 (or a Zarr directory), .nii/.nii.gz, .nrrd/.nhdr or .npy")
