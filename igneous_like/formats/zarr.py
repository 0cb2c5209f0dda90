"""Zarr sources: v2 and v3 arrays and groups through zarr-python, OME-Zarr 0.4 (v2) and 0.5
(v3) multiscales with their axes, scale and translation, and N5 through tensorstore."""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from igneous_like.errors import UserError
from igneous_like.formats.base import ACCESS_XYZ, Source, check_axes, check_dtype, squeeze_axes, to_nm


def is_n5(path: str) -> bool:
    return path.rstrip("/").endswith(".n5") or (
        os.path.isfile(os.path.join(path, "attributes.json"))
        and not any(os.path.exists(os.path.join(path, n)) for n in (".zarray", ".zgroup", "zarr.json")))


def is_zarr(path: str) -> bool:
    return path.rstrip("/").endswith((".zarr", ".n5")) or any(
        os.path.exists(os.path.join(path, n)) for n in (".zarray", ".zgroup", "zarr.json", "attributes.json"))


class ZarrArray:
    """Lazy zarr-python array that reopens per read, so tasks share nothing."""

    def __init__(self, path: str, name: str | None, shape: tuple, dtype: np.dtype):
        self.path, self.name, self.shape, self.dtype = path, name, shape, dtype

    def __getitem__(self, index: tuple) -> np.ndarray:
        import zarr

        store = os.path.join(self.path, self.name) if self.name else self.path
        return np.asarray(zarr.open_array(store, mode="r")[index])


class N5Array:
    def __init__(self, path: str, shape: tuple, dtype: np.dtype):
        self.path, self.shape, self.dtype = path, shape, dtype

    def __getitem__(self, index: tuple) -> np.ndarray:
        return np.asarray(open_n5_store(self.path)[index].read().result())


def open_n5_store(path: str):
    import tensorstore as ts

    return ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": path}}, read=True).result()


def multiscales(attrs: dict) -> list | None:
    """OME-Zarr 0.5 keeps metadata under 'ome'; 0.4 at the top level."""
    ome = attrs.get("ome", attrs)
    return ome.get("multiscales")


def ome_axes(axes: list) -> tuple[str, list[str | None]]:
    """OME axes (names or dicts) as our letters, and each axis's unit."""
    letters, units = "", []
    for ax in axes:
        name = ax if isinstance(ax, str) else ax.get("name", "")
        kind = "" if isinstance(ax, str) else ax.get("type", "")
        letter = name.lower() if name.lower() in "xyz" and name else ("c" if kind == "channel" or name.lower() == "c"
                                                                     else "t")
        letters += letter
        units.append(None if isinstance(ax, str) else ax.get("unit"))
    return letters, units


def transforms(meta: dict, dataset: dict, ndim: int) -> tuple[list[float], list[float]]:
    """Scale and translation of one level: the dataset's, then the multiscale's global ones."""
    scale, trans = [1.0] * ndim, [0.0] * ndim
    for entry in [*dataset.get("coordinateTransformations", []), *meta.get("coordinateTransformations", [])]:
        if entry.get("type") == "scale":
            s = entry["scale"]
            trans = [t * f for t, f in zip(trans, s)]
            scale = [a * f for a, f in zip(scale, s)]
        elif entry.get("type") == "translation":
            trans = [t + d for t, d in zip(trans, entry["translation"])]
    return scale, trans


def open_ome(path: str, meta: dict, level: int | None) -> Source:
    import zarr

    datasets = meta.get("datasets", [])
    level = 0 if level is None else level
    if not 0 <= level < len(datasets):
        raise UserError(f"{path} has multiscales levels 0 to {len(datasets) - 1}, not --level {level}")
    dataset = datasets[level]
    arr = zarr.open_array(os.path.join(path, dataset["path"]), mode="r")
    axes, units = ome_axes(meta.get("axes") or ["t", "c", "z", "y", "x"][-arr.ndim:])
    if len(axes) != arr.ndim:
        raise UserError(f"{path}: multiscales axes {axes!r} do not match the array's {arr.ndim} dimensions")
    scale, trans = transforms(meta, dataset, arr.ndim)
    unit = next((u for a, u in zip(axes, units) if a in "xyz" and u), None)
    dims = {a: i for i, a in enumerate(axes)}
    resolution = to_nm([scale[dims[a]] for a in "xyz"], unit, path) if "x" in dims and unit else None
    offset = (0, 0, 0)
    if resolution:
        offset = tuple(int(round(trans[dims[a]] / scale[dims[a]])) for a in "xyz")
    version = "0.5" if arr.metadata.zarr_format == 3 else meta.get("version", "0.4")
    src = from_array(path, f"OME-Zarr {version} (level {level}: {dataset['path']})", dataset["path"], arr, axes)
    src.resolution = resolution
    src.resolution_source = f"OME-Zarr scale ({unit})" if resolution else "none"
    src.offset = offset  # type: ignore[assignment]
    return src


def from_array(path: str, kind: str, name: str | None, arr: Any, axes: str) -> Source:
    dtype = check_dtype(arr.dtype, path)
    axes = check_axes(axes, arr.shape, path)
    lazy, axes = squeeze_axes(ZarrArray(path, name, tuple(arr.shape), dtype), axes)
    return Source(path, kind, lazy, axes, dtype, access=ACCESS_XYZ)


def plain_axes(arr: Any, path: str) -> str:
    """Axis names a plain array declares (v3 dimension_names, xarray's _ARRAY_DIMENSIONS), else z,y,x."""
    names = getattr(arr.metadata, "dimension_names", None) or arr.attrs.get("_ARRAY_DIMENSIONS")
    if names and all(n for n in names):
        letters, _ = ome_axes(list(names))
        return letters
    if arr.ndim == 3:
        return "zyx"
    if arr.ndim == 4:
        return "czyx"
    if arr.ndim < 3:
        raise UserError(f"{path} is {arr.ndim}D ({'x'.join(map(str, arr.shape))}); import takes a 3D volume")
    raise UserError(f"{path} is {arr.ndim}D without axis names; import takes z,y,x or c,z,y,x")


def open_zarr(path: str, level: int | None = None, dataset: str | None = None) -> Source:
    import zarr

    if is_n5(path):
        return open_n5(path)
    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    version = node.metadata.zarr_format
    if isinstance(node, zarr.Array):
        return from_array(path, f"Zarr v{version} array", None, node, plain_axes(node, path))
    attrs = dict(node.attrs)
    if dataset is None and multiscales(attrs):
        return open_ome(path, multiscales(attrs)[0], level)
    arrays = {name: arr for name, arr in node.arrays()}
    if dataset is not None:
        if dataset.strip("/") not in arrays:
            raise UserError(f"{path} has no array {dataset!r}; it has: {', '.join(sorted(arrays)) or 'none'}")
        arr = arrays[dataset.strip("/")]
        return from_array(path, f"Zarr v{version} array /{dataset}", dataset.strip("/"), arr, plain_axes(arr, path))
    volumes = [n for n, a in arrays.items() if a.ndim == 3]
    if len(volumes) != 1:
        listing = ", ".join(f"{n} {'x'.join(map(str, a.shape))}" for n, a in sorted(arrays.items())) or "none"
        raise UserError(f"{path} is a Zarr group without OME multiscales: pick an array with --dataset ({listing})")
    arr = arrays[volumes[0]]
    return from_array(path, f"Zarr v{version} array /{volumes[0]}", volumes[0], arr, plain_axes(arr, path))


def open_n5(path: str) -> Source:
    """N5 lists dimensions fastest first (x,y,z); tensorstore presents them in that order."""
    try:
        store = open_n5_store(path)
        with open(os.path.join(path, "attributes.json")) as f:
            attrs = json.load(f)
    except Exception as exc:
        raise UserError(f"cannot read N5 {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    shape = tuple(store.shape)
    dtype = check_dtype(store.dtype.numpy_dtype, path)
    if len(shape) != 3:
        raise UserError(f"{path} is a {len(shape)}D N5 dataset; import takes a 3D volume")
    res = attrs.get("resolution") or (attrs.get("pixelResolution") or {}).get("dimensions")
    unit = attrs.get("unit") or (attrs.get("pixelResolution") or {}).get("unit") or ("nm" if res else None)
    resolution = to_nm(res, unit, path) if res else None
    return Source(path, "N5 dataset", N5Array(path, shape, dtype), "xyz", dtype, resolution,
                  f"N5 attributes ({unit})" if resolution else "none", access=ACCESS_XYZ)
