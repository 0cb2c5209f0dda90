"""Reading and writing blocks of a Precomputed volume through cloud-volume, with errors that
name the layer, mip and chunk at fault."""
from __future__ import annotations

import numpy as np

from igneous_like import layers
from igneous_like.errors import TaskError
from igneous_like.grid import Box, Vec3, downsampled


def open_volume(url: str, info: dict, mip: int, **kwargs):
    from cloudvolume import CloudVolume

    from igneous_like.urls import volume_path

    return CloudVolume(volume_path(url), mip=mip, info=info, provenance={}, progress=False, **kwargs)


def check_opens(url: str, info: dict, mip: int) -> None:
    """Construct the layer at plan time exactly as the tasks will, so a layer they could not
    open is refused before anything is queued."""
    from igneous_like.errors import UserError

    try:
        open_volume(url, info, mip)
    except Exception as exc:
        raise UserError(f"cloud-volume cannot open {url}: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def read(url: str, info: dict, mip: int, box: Box, fill_missing: bool, renumber: bool = False):
    """The block as an (x, y, z, channel) Fortran-ordered array; with renumber, labels come
    renumbered to the smallest dtype while chunks are decoded, plus {original: new}."""
    from cloudvolume.exceptions import EmptyVolumeException
    from cloudvolume.lib import Bbox

    vol = open_volume(url, info, mip, fill_missing=fill_missing)
    try:
        img = vol.download(Bbox(box.start, box.stop), mip=mip, renumber=renumber)
    except EmptyVolumeException as exc:
        raise TaskError(
            f"missing chunk in {url} at mip {mip} within {box}: {exc} "
            "(pass --fill-missing to read missing chunks as background)".replace("\n", " ")
        ) from None
    except Exception as exc:
        from igneous_like.retries import is_transient

        if is_transient(exc):  # a storage hiccup, not a corrupt chunk: let run_task retry it
            raise
        bad = find_bad_chunk(url, info, mip, box)
        where = f"chunk {bad}" if bad else f"block {box}"
        raise TaskError(f"cannot decode {where} of {url} at mip {mip}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if renumber:
        img, mapping = img
        return np.asarray(img), mapping
    return np.asarray(img)


def find_bad_chunk(url: str, info: dict, mip: int, box: Box) -> str | None:
    """Decode chunks one by one to name the one that fails (only on the error path)."""
    from cloudfiles import CloudFiles
    from cloudvolume import chunks

    scale = info["scales"][mip]
    bounds = layers.scale_bounds(info, mip)
    cf = CloudFiles(url)
    for name in layers.chunk_names(scale["key"], box, bounds, layers.scale_chunk(info, mip)):
        data = cf.get(name)
        if data is None:
            continue
        x, y, z = (tuple(int(v) for v in part.split("-")) for part in name.split("/")[-1].split("_"))
        shape = (x[1] - x[0], y[1] - y[0], z[1] - z[0], info["num_channels"])
        try:
            chunks.decode(
                data, scale["encoding"], shape=shape, dtype=np.dtype(info["data_type"]),
                block_size=scale.get("compressed_segmentation_block_size"),
            )
        except Exception:
            return f"{url}/{name}"
    return None


def write(
    url: str, info: dict, mip: int, box: Box, img: np.ndarray, compress, delete_bg: bool, bg_color: int
) -> None:
    vol = open_volume(
        url, info, mip, compress=compress, delete_black_uploads=delete_bg, background_color=bg_color
    )
    vol[box.slices()] = img


def write_pyramid(
    url: str,
    info: dict,
    mip: int,
    region: Box,
    factor: Vec3,
    pyramid: list[np.ndarray],
    compress,
    delete_bg: bool,
    bg_color: int,
) -> None:
    """Write pyramid[k] as mip + k + 1; `region` is the block at `mip` they came from."""
    origin = layers.scale_bounds(info, mip).start
    for level, img in enumerate(pyramid, 1):
        bounds = layers.scale_bounds(info, mip + level)
        out = downsampled(region, factor, level, origin, bounds.start).intersect(bounds)
        if out.empty():
            continue
        sx, sy, sz = out.shape
        write(url, info, mip + level, out, img[:sx, :sy, :sz], compress, delete_bg, bg_color)
