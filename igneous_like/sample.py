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
    scaled = seeds * np.array([1, 1, 0.35])
    low = np.empty(coarse, dtype=np.intp)
    for i in range(coarse[0]):  # one x slab at a time: points x seeds distances stay small
        low[i] = ((pts[i] - scaled) ** 2).sum(-1).argmin(-1)
    x, y, z = np.meshgrid(np.arange(sx), np.arange(sy), np.arange(sz), indexing="ij", sparse=True)
    ids = LABEL_BASE + rng.choice(10**6, size=cells, replace=False).astype(np.uint64)
    ids[0] = 0  # one cell is background
    out = np.empty((sx, sy, sz), dtype=np.uint64, order="F")
    for z0 in range(0, sz, 16):  # z slabs bound the temporaries of large volumes
        zs = z[:, :, z0:z0 + 16]
        wx = x + 3.0 * np.sin(y / 9.0 + zs / 23.0)
        wy = y + 3.0 * np.cos(x / 11.0 + zs / 17.0)
        ix = np.clip((wx / 8).astype(np.int64), 0, coarse[0] - 1)
        iy = np.clip((wy / 8).astype(np.int64), 0, coarse[1] - 1)
        iz = np.clip((zs / 16).astype(np.int64), 0, coarse[2] - 1)
        out[:, :, z0:z0 + 16] = ids[low[ix, iy, iz]]
    return out


def neurons(shape: Vec3, seed: int = 0, resolution=(16, 16, 40)) -> np.ndarray:
    """A segmentation as hard as real connectomics: somata with branching dendrites, many thin
    branching axons crossing the volume (so they cross many tasks), a dense fill of neurite-like
    cells, a sprinkle of tiny fragments, uint64 ids above 2^32, and drawn at `resolution` (nm,
    anisotropic by default) so processes are round in physical space. Deterministic per seed.

    Densities are per 256x256x128 block, so larger volumes hold proportionally more objects:
    ~150 filler cells, ~40 axons, ~1 soma with dendrites, ~120 fragments under 100 voxels."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    blocks = max(np.prod(shape) / (256 * 256 * 128), 1 / 64)
    seg = segmentation(shape, seed=seed + 1000, cells=max(int(150 * blocks), 8))
    res = np.asarray(resolution, dtype=np.float64)
    ids = iter(LABEL_BASE * np.uint64(3) + rng.choice(2**40, size=100_000, replace=False).astype(np.uint64))
    painter = _Painter(seg, res)
    extent = np.asarray(shape, dtype=np.float64) * res  # physical size, nm

    for _ in range(max(int(round(blocks)), 1)):  # somata with dendritic trees
        centre = rng.random(3) * extent
        radius = rng.uniform(1500, 2500)
        label = next(ids)
        painter.ellipsoid(centre, radius, label)
        for _ in range(int(rng.integers(4, 7))):
            direction = _unit(rng.normal(size=3) * [1, 1, 0.5])
            start = centre + direction * radius * 0.9
            _branching_walk(painter, rng, start, direction, label, radius=rng.uniform(250, 400),
                            length=extent[:2].max() * 0.6, taper=0.8, branch_p=0.06, depth=3)
    for _ in range(int(40 * blocks)):  # thin axons entering on one side, branching
        start = rng.random(3) * extent
        axis = int(rng.integers(0, 2))
        start[axis] = 0.0
        direction = np.zeros(3)
        direction[axis] = 1.0
        direction = _unit(direction + rng.normal(size=3) * [0.3, 0.3, 0.15])
        _branching_walk(painter, rng, start, direction, next(ids), radius=rng.uniform(30, 70),
                        length=extent[:2].max() * 1.5, taper=1.0, branch_p=0.01, depth=2)
    for _ in range(int(120 * blocks)):  # tiny fragments (dust)
        painter.ellipsoid(rng.random(3) * extent, rng.uniform(20, 60), next(ids))
    return np.asfortranarray(seg)


class _Painter:
    """Paints physical-space balls into a voxel label array (x,y,z) at a given resolution."""

    def __init__(self, seg: np.ndarray, res: np.ndarray):
        self.seg, self.res = seg, res

    def ellipsoid(self, centre: np.ndarray, radius: float, label: np.uint64) -> None:
        lo = np.maximum(np.floor((centre - radius) / self.res), 0).astype(int)
        hi = np.minimum(np.ceil((centre + radius) / self.res) + 1, self.seg.shape).astype(int)
        if (hi <= lo).any():
            return
        axes = [(np.arange(a, b) + 0.5) * r - c for a, b, r, c in zip(lo, hi, self.res, centre)]
        d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
        view = self.seg[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        view[d2 <= radius * radius] = label


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) or 1.0)


def _branching_walk(painter: _Painter, rng, start, direction, label, radius: float, length: float,
                    taper: float, branch_p: float, depth: int) -> None:
    """A smooth random walk of balls; at each step it may spawn a thinner branch."""
    extent = np.asarray(painter.seg.shape) * painter.res
    pos, heading, travelled = np.asarray(start, dtype=np.float64), direction, 0.0
    step = max(radius * 0.6, 12.0)
    r = radius
    while travelled < length:
        painter.ellipsoid(pos, r, label)
        heading = _unit(heading + rng.normal(size=3) * [0.12, 0.12, 0.05])
        pos = pos + heading * step
        travelled += step
        r = max(r * (1 - (1 - taper) * step / length), 25.0)
        if ((pos < -radius) | (pos > extent + radius)).any():
            return
        if depth > 0 and rng.random() < branch_p:
            side = _unit(np.cross(heading, rng.normal(size=3)))
            _branching_walk(painter, rng, pos, _unit(heading + side), label, r * 0.7,
                            (length - travelled) * 0.6, taper, branch_p, depth - 1)


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


def make_sample(root_url: str, shape: Vec3 = (256, 256, 128), seed: int = 0, kind: str = "easy") -> tuple[str, str]:
    """Write `image` and `segmentation` layers under root_url; returns their URLs.
    kind "easy": z-elongated Voronoi cells at 8x8x40 nm; "hard": `neurons` at 16x16x40 nm."""
    if kind == "hard":
        seg, res = neurons(shape, seed), (16, 16, 40)
    else:
        seg, res = segmentation(shape, seed), (8, 8, 40)
    img = image_from(seg, seed + 1)
    img_url, seg_url = f"{root_url}/image", f"{root_url}/segmentation"
    write_layer(img_url, img, "image", resolution=res)
    write_layer(seg_url, seg, "segmentation", resolution=res)
    return img_url, seg_url


if __name__ == "__main__":
    import sys

    from igneous_like.layers import normalize_url

    dest = normalize_url(sys.argv[1] if len(sys.argv) > 1 else "./sample")
    shape = tuple(int(v) for v in sys.argv[2].split(",")) if len(sys.argv) > 2 else (256, 256, 128)
    for url in make_sample(dest, shape):  # type: ignore[arg-type]
        print(url)
