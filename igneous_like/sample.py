"""Deterministic sample volumes: an EM-like uint8 image and a dense neuron-like uint64
segmentation of the same field, for the demo, the tests and the benchmark."""
from __future__ import annotations

import numpy as np

from igneous_like.grid import Vec3

LABEL_BASE = np.uint64(2**32)  # labels above 2^32 catch 32-bit truncation


def segmentation(shape: Vec3, seed: int = 0, cells: int = 60) -> np.ndarray:
    """Voronoi cells elongated in z (like neurites) with wavy borders; uint64, Fortran order."""
    rng = np.random.default_rng(seed)
    sx, sy, sz = shape
    coarse = (max(sx // 8, 1), max(sy // 8, 1), max(sz // 16, 1))
    seeds = rng.random((cells, 3)) * np.array(coarse)
    gx, gy, gz = np.meshgrid(*(np.arange(c) + 0.5 for c in coarse), indexing="ij")
    pts = np.stack([gx, gy, gz * 0.35], axis=-1)[..., np.newaxis, :]
    dist = ((pts - seeds * np.array([1, 1, 0.35])) ** 2).sum(-1)
    low = dist.argmin(-1)
    x, y, z = np.meshgrid(np.arange(sx), np.arange(sy), np.arange(sz), indexing="ij", sparse=True)
    wx = x + 3.0 * np.sin(y / 9.0 + z / 23.0)
    wy = y + 3.0 * np.cos(x / 11.0 + z / 17.0)
    ix = np.clip((wx / 8).astype(np.int64), 0, coarse[0] - 1)
    iy = np.clip((wy / 8).astype(np.int64), 0, coarse[1] - 1)
    iz = np.clip((z / 16).astype(np.int64), 0, coarse[2] - 1)
    labels = low[ix, iy, iz].astype(np.uint64)
    ids = LABEL_BASE + rng.choice(10**6, size=cells, replace=False).astype(np.uint64)
    ids[0] = 0  # one cell is background
    return np.asfortranarray(ids[labels])


def image_from(seg: np.ndarray, seed: int = 1) -> np.ndarray:
    """Grey cell interiors, dark membranes on label borders, noise: uint8, Fortran order."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(seg, return_inverse=True)
    base = rng.integers(110, 200, size=uniq.size).astype(np.float32)
    img = base[inverse.reshape(seg.shape)]
    border = np.zeros(seg.shape, dtype=bool)
    for axis in range(3):
        diff = np.diff(seg, axis=axis) != 0
        lo = [slice(None)] * 3
        lo[axis] = slice(0, -1)
        border[tuple(lo)] |= diff
        hi = [slice(None)] * 3
        hi[axis] = slice(1, None)
        border[tuple(hi)] |= diff
    img[border] = 40
    img += rng.normal(0, 12, size=seg.shape).astype(np.float32)
    return np.asfortranarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))


def write_layer(url: str, data: np.ndarray, layer_type: str, resolution=(8, 8, 40), chunk=(64, 64, 64),
                encoding: str = "raw", voxel_offset=(0, 0, 0)) -> None:
    """Write `data` (x,y,z) as mip 0 of a new Precomputed layer, uncompressed file names."""
    from cloudvolume import CloudVolume

    info = CloudVolume.create_new_info(
        num_channels=1, layer_type=layer_type, data_type=str(data.dtype), encoding=encoding,
        resolution=list(resolution), voxel_offset=list(voxel_offset), volume_size=list(data.shape[:3]),
        chunk_size=list(chunk),
    )
    vol = CloudVolume(url, info=info, compress=False, progress=False, provenance={})
    vol.commit_info()
    vol[:, :, :] = data


def make_sample(root_url: str, shape: Vec3 = (256, 256, 128), seed: int = 0) -> tuple[str, str]:
    """Write `image` and `segmentation` layers under root_url; returns their URLs."""
    seg = segmentation(shape, seed)
    img = image_from(seg, seed + 1)
    img_url, seg_url = f"{root_url}/image", f"{root_url}/segmentation"
    write_layer(img_url, img, "image")
    write_layer(seg_url, seg, "segmentation")
    return img_url, seg_url


if __name__ == "__main__":
    import sys

    from igneous_like.layers import normalize_url

    dest = normalize_url(sys.argv[1] if len(sys.argv) > 1 else "./sample")
    shape = tuple(int(v) for v in sys.argv[2].split(",")) if len(sys.argv) > 2 else (256, 256, 128)
    for url in make_sample(dest, shape):  # type: ignore[arg-type]
        print(url)
