"""Zarr sources: v2 and v3 arrays and groups, OME-Zarr 0.4 (v2) and 0.5 (v3) multiscales with
their axes, scale and translation, and N5. Metadata is read as JSON through cloud-files and
voxels through tensorstore, so the same code reads local files, s3:// and gs://."""
from __future__ import annotations

import os

import numpy as np

from igneous_like.errors import UserError
from igneous_like.formats.base import ACCESS_XYZ, Source, check_axes, check_dtype, squeeze_axes, to_nm

METADATA = (".zarray", ".zgroup", "zarr.json", "attributes.json")


def as_url(path: str) -> str:
    return path if "://" in path else "file://" + path


def is_n5(path: str) -> bool:
    return path.rstrip("/").endswith(".n5") or (has(path, "attributes.json")
                                                 and not any(has(path, n) for n in METADATA[:3]))


def is_zarr(path: str) -> bool:
    return path.rstrip("/").endswith((".zarr", ".n5")) or any(has(path, n) for n in METADATA)


def has(path: str, name: str) -> bool:
    if "://" not in path:
        return os.path.exists(os.path.join(path, name))
    from cloudfiles import CloudFiles

    return CloudFiles(path).exists(name)


def get_json(url: str, name: str) -> dict | None:
    from cloudfiles import CloudFiles

    try:
        return CloudFiles(url).get_json(name)
    except Exception as exc:
        raise UserError(f"cannot read {url}/{name}: {type(exc).__name__}: {exc}".splitlines()[0]) from None


class TsArray:
    """Lazy tensorstore array (zarr, zarr3 or n5 driver) that reopens per read: tasks share nothing."""

    def __init__(self, url: str, driver: str, shape: tuple, dtype: np.dtype):
        self.url, self.driver, self.shape, self.dtype = url, driver, shape, dtype

    def __getitem__(self, index: tuple) -> np.ndarray:
        return np.asarray(open_store(self.url, self.driver)[index].read().result())


def open_store(url: str, driver: str):
    import tensorstore as ts

    from igneous_like.storage import tensorstore_kvstore

    return ts.open({"driver": driver, "kvstore": tensorstore_kvstore(url)}, read=True, open=True).result()


def node(url: str) -> tuple[int, str, dict, list | None]:
    """(zarr version, 'array' or 'group', attributes, v3 dimension names) of the node at url."""
    meta = get_json(url, "zarr.json")
    if meta is not None:
        return 3, meta.get("node_type", "array"), meta.get("attributes") or {}, meta.get("dimension_names")
    attrs = get_json(url, ".zattrs") or {}
    if get_json(url, ".zarray") is not None:
        return 2, "array", attrs, None
    if get_json(url, ".zgroup") is not None:
        return 2, "group", attrs, None
    raise UserError(f"{url} is not a Zarr array or group (no .zarray, .zgroup or zarr.json)")


def open_array(url: str, kind: str) -> tuple[Source, tuple[str, ...] | None]:
    """A Source over one array (axes to be filled in) and the axis names it declares."""
    version, node_type, attrs, names = node(url)
    if node_type != "array":
        raise UserError(f"{url} is a Zarr group, not an array")
    try:
        store = open_store(url, "zarr3" if version == 3 else "zarr")
    except Exception as exc:
        raise UserError(f"cannot read {url}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    shape = tuple(int(n) for n in store.shape)
    dtype = check_dtype(store.dtype.numpy_dtype, url)
    names = names or attrs.get("_ARRAY_DIMENSIONS")
    array = TsArray(url, "zarr3" if version == 3 else "zarr", shape, dtype)
    return Source(url, kind.format(v=version), array, "", dtype, access=ACCESS_XYZ), names


def multiscales(attrs: dict) -> list | None:
    """OME-Zarr 0.5 keeps metadata under 'ome'; 0.4 at the top level."""
    ome = attrs.get("ome", attrs)
    return ome.get("multiscales")


def ome_axes(axes: list) -> tuple[str, list[str | None]]:
    """OME axes (names or dicts) as our letters, and each axis's unit."""
    letters, units = "", []
    for ax in axes:
        name = (ax if isinstance(ax, str) else ax.get("name", "")).lower()
        kind = "" if isinstance(ax, str) else ax.get("type", "")
        letters += name if name in ("x", "y", "z") else ("c" if kind == "channel" or name == "c" else "t")
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


def with_axes(src: Source, axes: str) -> Source:
    axes = check_axes(axes, src.array.shape, src.path)
    src.array, src.axes = squeeze_axes(src.array, axes)
    return src


def open_ome(url: str, meta: dict, level: int | None, version: int) -> Source:
    datasets = meta.get("datasets", [])
    level = 0 if level is None else level
    if not 0 <= level < len(datasets):
        raise UserError(f"{url} has multiscales levels 0 to {len(datasets) - 1}, not --level {level}")
    dataset = datasets[level]
    label = "0.5" if version == 3 else meta.get("version", "0.4")
    src, _ = open_array(f"{url}/{dataset['path']}", f"OME-Zarr {label} (level {level}: {dataset['path']})")
    ndim = len(src.array.shape)
    axes, units = ome_axes(meta.get("axes") or ["t", "c", "z", "y", "x"][-ndim:])
    if len(axes) != ndim:
        raise UserError(f"{url}: multiscales axes {axes!r} do not match the array's {ndim} dimensions")
    scale, trans = transforms(meta, dataset, ndim)
    unit = next((u for a, u in zip(axes, units) if a in "xyz" and u), None)
    dims = {a: i for i, a in enumerate(axes)}
    if "x" in dims and unit:
        src.resolution = to_nm([scale[dims[a]] for a in "xyz"], unit, url)
    if src.resolution:
        src.resolution_source = f"OME-Zarr scale ({unit})"
        src.offset = tuple(int(round(trans[dims[a]] / scale[dims[a]])) for a in "xyz")  # type: ignore[assignment]
    src.path = url
    return with_axes(src, axes)


def plain_axes(names, shape: tuple, path: str) -> str:
    """Axis names a plain array declares (v3 dimension_names, xarray's _ARRAY_DIMENSIONS), else z,y,x."""
    if names and all(names):
        return ome_axes(list(names))[0]
    if len(shape) == 3:
        return "zyx"
    if len(shape) == 4:
        return "czyx"
    if len(shape) < 3:
        raise UserError(f"{path} is {len(shape)}D ({'x'.join(map(str, shape))}); import takes a 3D volume")
    raise UserError(f"{path} is {len(shape)}D without axis names; import takes z,y,x or c,z,y,x")


def plain(url: str, kind: str) -> Source:
    src, names = open_array(url, kind)
    return with_axes(src, plain_axes(names, src.array.shape, url))


def child_arrays(url: str) -> dict[str, tuple]:
    """{name: shape} of the arrays directly inside a group (lists one level, never the chunks)."""
    from cloudfiles import CloudFiles

    found = {}
    for entry in CloudFiles(url).list(flat=True):
        name = entry.rstrip("/")
        if not entry.endswith("/"):
            continue
        meta = get_json(f"{url}/{name}", "zarr.json") or get_json(f"{url}/{name}", ".zarray")
        if meta and meta.get("node_type", "array") == "array" and "shape" in meta:
            found[name] = tuple(meta["shape"])
    return found


def open_zarr(path: str, level: int | None = None, dataset: str | None = None) -> Source:
    url = as_url(path).rstrip("/")
    if is_n5(path):
        return open_n5(url)
    version, node_type, attrs, _ = node(url)
    if node_type == "array":
        return plain(url, "Zarr v{v} array")
    if dataset is None and multiscales(attrs):
        return open_ome(url, multiscales(attrs)[0], level, version)
    arrays = child_arrays(url)
    if dataset is not None:
        name = dataset.strip("/")
        if name not in arrays:
            raise UserError(f"{url} has no array {dataset!r}; it has: {', '.join(sorted(arrays)) or 'none'}")
        return plain(f"{url}/{name}", f"Zarr v{{v}} array /{name}")
    volumes = [n for n, s in arrays.items() if len(s) == 3]
    if len(volumes) != 1:
        listing = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in sorted(arrays.items())) or "none"
        raise UserError(f"{url} is a Zarr group without OME multiscales: pick an array with --dataset ({listing})")
    return plain(f"{url}/{volumes[0]}", f"Zarr v{{v}} array /{volumes[0]}")


def open_n5(url: str) -> Source:
    """N5 lists dimensions fastest first (x,y,z); tensorstore presents them in that order."""
    attrs = get_json(url, "attributes.json") or {}
    try:
        store = open_store(url, "n5")
    except Exception as exc:
        raise UserError(f"cannot read N5 {url}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    shape = tuple(int(n) for n in store.shape)
    dtype = check_dtype(store.dtype.numpy_dtype, url)
    if len(shape) != 3:
        raise UserError(f"{url} is a {len(shape)}D N5 dataset; import takes a 3D volume")
    res = attrs.get("resolution") or (attrs.get("pixelResolution") or {}).get("dimensions")
    unit = attrs.get("unit") or (attrs.get("pixelResolution") or {}).get("unit") or ("nm" if res else None)
    resolution = to_nm(res, unit, url) if res else None
    return Source(url, "N5 dataset", TsArray(url, "n5", shape, dtype), "xyz", dtype, resolution,
                  f"N5 attributes ({unit})" if resolution else "none", access=ACCESS_XYZ)
