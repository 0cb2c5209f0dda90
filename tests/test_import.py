"""image import / create end to end: each format written by its own library, imported by the
real CLI, read back with tensorstore and compared voxel for voxel (x,y,z,c). Every volume has
three different axis sizes, none a chunk multiple, and a marker voxel that pins the axis order."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli, tree_digest, ts_read
from reference import average_pyramid, mode_violations

XYZ = (23, 17, 11)
MARK = (20, 3, 9)  # x, y, z
CHUNK = "8,8,4"


def volume(dtype="uint16", channels=0, seed=1) -> np.ndarray:
    """x,y,z(,c) test volume with a marker voxel at MARK holding the dtype's largest value."""
    rng = np.random.default_rng(seed)
    shape = XYZ + ((channels,) if channels else ())
    dt = np.dtype(dtype)
    top = np.iinfo(dt).max if dt.kind in "ui" else 1000.0
    vol = rng.integers(0, min(int(top), 200), shape).astype(dt)
    vol[MARK] = top
    return vol


def zyx(vol: np.ndarray) -> np.ndarray:
    """x,y,z(,c) -> z,y,x(,c): the C order TIFF, HDF5 and Zarr hold."""
    return np.ascontiguousarray(vol.transpose(2, 1, 0, *range(3, vol.ndim)))


def imported(tmp_path, src, *args, name="layer") -> tuple[np.ndarray, dict]:
    dest = tmp_path / name
    run_cli("image", "import", src, f"file://{dest}", "--chunk-size", CHUNK, *args)
    return ts_read(dest, 0), json.loads((dest / "info").read_text())


def assert_same(got: np.ndarray, vol: np.ndarray) -> None:
    want = vol if vol.ndim == 4 else vol[..., np.newaxis]
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    assert np.array_equal(got, want)
    assert got[MARK][0] == want[MARK][0] == want.max()  # the marker is where x,y,z say


def test_tiff_slice_stack_natural_order_offset_pyramid_via_queue(tmp_path):
    import tifffile

    vol = volume("uint16")
    stack = tmp_path / "slices"
    stack.mkdir()
    for z in range(XYZ[2]):  # z0..z10: lexical order would put z10 second
        tifffile.imwrite(stack / f"z{z}.tif", zyx(vol)[z], rowsperstrip=3)
    dest, q = tmp_path / "layer", tmp_path / "q"
    # a tiny budget splits each slab into bands, so the slab-completing task builds the upper mips
    out = run_cli("image", "import", f"file://{stack}", f"file://{dest}", "--chunk-size", CHUNK,
                  "--resolution", "4,5,40", "--offset", "3,2,1", "--memory", "1KB", "--queue", f"fq://{q}")
    assert "strips: full-width bands" in out.stderr and "by the task that completes each z-slab" in out.stderr
    run_cli("execute", f"fq://{q}", "-p", "2", "-x", "-q")
    info = json.loads((dest / "info").read_text())
    assert info["scales"][0]["voxel_offset"] == [3, 2, 1] and info["scales"][0]["resolution"] == [4, 5, 40]
    assert_same(ts_read(dest, 0), vol)
    assert len(info["scales"]) == 3  # up to one chunk in x and y
    for level, ref in enumerate(average_pyramid(vol, (2, 2, 1), 2), 1):
        got = ts_read(dest, level)[..., 0].astype(float)
        # mip 2 is built from the rounded mip 1 (as `image downsample --mip 1` would): two roundings
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 0.5 * level + 1e-9
    assert not (dest / "import-markers").exists()
    before = tree_digest(dest)  # same inputs, same bytes: a rerun rewrites identical files
    run_cli("image", "import", str(stack), f"file://{dest}", "--chunk-size", CHUNK, "--resolution", "4,5,40",
            "--offset", "3,2,1", "--memory", "1KB", "--force")
    assert tree_digest(dest) == before


def test_png_slices_and_lexical_order(tmp_path):
    import pyspng

    vol = volume("uint8")
    stack = tmp_path / "png"
    stack.mkdir()
    for z in range(XYZ[2]):
        (stack / f"s{z:03d}.png").write_bytes(pyspng.encode(zyx(vol)[z]))
    got, _ = imported(tmp_path, str(stack / "s*.png"), "--resolution", "1,1,1", "--order", "lexical")
    assert_same(got, vol)


def test_bigtiff_tiled_rgb(tmp_path):
    import tifffile

    vol = volume("uint8", channels=3)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, zyx(vol), photometric="rgb", tile=(16, 16), bigtiff=True)
    out = run_cli("image", "import", str(path), f"file://{tmp_path}/layer", "--chunk-size", CHUNK,
                  "--resolution", "8,8,8", "--dry-run")
    assert "BigTIFF" in out.stdout and "random access" in out.stdout and "3 channel(s)" in out.stdout
    got, info = imported(tmp_path, str(path), "--resolution", "8,8,8")
    assert info["num_channels"] == 3
    assert_same(got, vol)


def test_ome_tiff_physical_size_float32(tmp_path):
    import tifffile

    vol = volume("float32")
    path = tmp_path / "v.ome.tif"
    tifffile.imwrite(path, zyx(vol), metadata={"axes": "ZYX", "PhysicalSizeX": 0.004, "PhysicalSizeY": 0.005,
                                               "PhysicalSizeZ": 0.04, "PhysicalSizeXUnit": "µm",
                                               "PhysicalSizeYUnit": "µm", "PhysicalSizeZUnit": "µm"})
    got, info = imported(tmp_path, f"file://{path}")
    assert np.allclose(info["scales"][0]["resolution"], [4, 5, 40])
    assert_same(got, vol)


def test_hdf5_segmentation_picks_the_3d_dataset(tmp_path):
    import h5py

    vol = volume("uint64")
    vol[0, 0, 0] = 2**40 + 7  # ids above 2^32 survive
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("volumes/labels", data=zyx(vol), chunks=(4, 8, 8))
        ds.attrs["element_size_um"] = (0.04, 0.008, 0.008)
        f.create_dataset("meta/table", data=np.arange(5))
    out = run_cli("image", "import", str(path), f"file://{tmp_path}/layer", "--seg", "--dry-run")
    assert "largest id" in out.stdout and "z,y,x -> x,y,z,c (transposed)" in out.stdout
    got, info = imported(tmp_path, str(path), "--seg")
    assert info["type"] == "segmentation" and info["scales"][0]["encoding"] == "compressed_segmentation"
    assert info["scales"][0]["resolution"] == [8, 8, 40]
    assert got[0, 0, 0, 0] == 2**40 + 7
    assert_same(got, vol)
    not_mode, _ = mode_violations(vol, ts_read(tmp_path / "layer", 1)[..., 0], (2, 2, 1))
    assert not_mode == 0  # segmentation mips take the mode, never an average



def test_image_create_keeps_igneous_names(tmp_path):
    import h5py

    vol = volume("uint32")
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=zyx(vol))
        f.create_dataset("b", data=zyx(vol)[:5])
    dest = tmp_path / "created"
    run_cli("image", "create", str(path), f"file://{dest}", "--h5-dataset", "a", "--seg",
            "--resolution", "4,4,40", "--chunk-size", CHUNK, "--encoding", "raw", "--offset", "1,1,1")
    info = json.loads((dest / "info").read_text())
    assert info["type"] == "segmentation" and info["scales"][0]["encoding"] == "raw"
    assert info["scales"][0]["voxel_offset"] == [1, 1, 1]
    assert_same(ts_read(dest, 0), vol)


@pytest.mark.parametrize("version", [2, 3])
def test_zarr_array(tmp_path, version):
    import zarr

    vol = volume("uint32")
    path = tmp_path / f"v{version}.zarr"
    arr = zarr.create_array(str(path), shape=zyx(vol).shape, chunks=(4, 8, 8), dtype="uint32",
                            zarr_format=version)
    arr[:] = zyx(vol)
    # a tiny budget: tiles in x and y (Zarr reads any sub-box), the slab's last task builds mip 1+
    out = run_cli("image", "import", str(path), f"file://{tmp_path}/layer", "--chunk-size", CHUNK,
                  "--resolution", "4,4,40", "--memory", "2KB")
    assert "random access: tiles in x and y" in out.stderr
    assert_same(ts_read(tmp_path / "layer", 0), vol)
    ref = average_pyramid(vol, (2, 2, 1), 1)[0]
    assert np.abs(ts_read(tmp_path / "layer", 1)[..., 0] - ref).max() <= 0.5


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_level_scale_translation(tmp_path, version):
    import zarr

    vol = volume("uint8")
    path = tmp_path / "v.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    levels = [zyx(vol), zyx(vol)[:, ::2, ::2]]
    datasets = []
    for i, data in enumerate(levels):
        group.create_array(str(i), shape=data.shape, chunks=(4, 8, 8), dtype="uint8")[:] = data
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [40.0, 5.0 * 2**i, 4.0 * 2**i]},
            {"type": "translation", "translation": [80.0, 0.0, 4.0 * 2**i * 6]}]})
    meta = {"axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"], "datasets": datasets}
    if version == "0.4":
        group.attrs["multiscales"] = [{"version": "0.4", **meta}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [meta]}
    got, info = imported(tmp_path, str(path))
    assert info["scales"][0]["resolution"] == [4, 5, 40] and info["scales"][0]["voxel_offset"] == [6, 0, 2]
    assert_same(got, vol)
    got1, info1 = imported(tmp_path, str(path), "--level", "1", name="l1")
    assert info1["scales"][0]["resolution"] == [8, 10, 40] and info1["scales"][0]["voxel_offset"] == [6, 0, 2]
    assert np.array_equal(got1[..., 0], vol[::2, ::2])


def test_n5(tmp_path):
    import tensorstore as ts

    vol = volume("uint16")
    path = tmp_path / "v.n5"
    store = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(path)},
                     "metadata": {"dimensions": list(XYZ), "blockSize": [8, 8, 4], "dataType": "uint16",
                                  "compression": {"type": "gzip"}}}, create=True).result()
    store.write(vol).result()
    attrs = json.loads((path / "attributes.json").read_text())
    (path / "attributes.json").write_text(json.dumps({**attrs, "resolution": [4, 5, 40], "unit": "nm"}))
    got, info = imported(tmp_path, str(path))
    assert info["scales"][0]["resolution"] == [4, 5, 40]
    assert_same(got, vol)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti_is_xyz(tmp_path, name):
    import nibabel

    vol = volume("int16")
    img = nibabel.Nifti1Image(vol, np.diag([0.004, 0.005, 0.04, 1.0]))
    img.header.set_xyzt_units("mm")
    img.header.set_zooms((0.000004, 0.000005, 0.00004))
    nibabel.save(img, tmp_path / name)
    got, info = imported(tmp_path, str(tmp_path / name))
    assert np.allclose(info["scales"][0]["resolution"], [4, 5, 40])
    assert_same(got, vol)


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_nrrd_is_xyz(tmp_path, encoding):
    import nrrd

    vol = volume("uint16")
    path = tmp_path / "v.nrrd"
    nrrd.write(str(path), vol, {"encoding": encoding, "spacings": [4, 5, 40], "units": ["nm", "nm", "nm"]},
               index_order="F")
    got, info = imported(tmp_path, str(path))
    assert info["scales"][0]["resolution"] == [4, 5, 40]
    assert_same(got, vol)


def test_npy_default_xyz_and_axes_zyx(tmp_path):
    vol = volume("float32")
    np.save(tmp_path / "xyz.npy", vol)
    np.save(tmp_path / "zyx.npy", zyx(vol))
    got, _ = imported(tmp_path, str(tmp_path / "xyz.npy"), "--resolution", "1,1,1", name="a")
    assert_same(got, vol)
    got, _ = imported(tmp_path, str(tmp_path / "zyx.npy"), "--resolution", "1,1,1", "--axes", "zyx", name="b")
    assert_same(got, vol)


def s3_env(moto) -> dict:
    """cloud-files reads AWS_SESSION_TOKEN whenever it takes keys from the environment."""
    return {**moto, "AWS_SESSION_TOKEN": "testing"}


def test_import_into_s3(tmp_path, moto, s3_bucket):
    import tensorstore as ts
    import tifffile

    moto = s3_env(moto)
    vol = volume("uint8")
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, zyx(vol))
    url = f"{s3_bucket}/em"
    q = tmp_path / "q"
    run_cli("image", "import", str(path), url, "--resolution", "4,4,40", "--chunk-size", CHUNK,
            "--compress", "gzip", "--queue", f"fq://{q}", env=moto)
    run_cli("execute", f"fq://{q}", "-x", "-q", env=moto)
    bucket = s3_bucket[len("s3://"):]
    spec = {"driver": "neuroglancer_precomputed", "fill_missing_data_reads": False, "scale_index": 0,
            "kvstore": {"driver": "s3", "bucket": bucket, "path": "em/", "endpoint": moto["AWS_ENDPOINT_URL"],
                        "aws_region": "us-east-1"}}
    got = ts.open(spec).result().read().result()
    assert_same(np.asarray(got), vol)
    again = run_cli("image", "import", str(path), url, "--resolution", "4,4,40", check=False, env=moto)
    assert again.returncode == 1 and "not empty" in again.stderr


def test_sharded_import_one_task_per_shard(tmp_path):
    import h5py

    vol = volume("uint32")
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("seg", data=zyx(vol), chunks=(4, 8, 8))
    dest, q = tmp_path / "sharded", tmp_path / "q"
    out = run_cli("image", "import", str(tmp_path / "v.h5"), f"file://{dest}", "--seg", "--sharded",
                  "--resolution", "4,4,40", "--chunk-size", CHUNK, "--memory", "4KB", "--queue", f"fq://{q}")
    tasks = int(out.stderr.split(" tasks queued")[0].split()[-1])
    run_cli("execute", f"fq://{q}", "-p", "2", "-x", "-q")
    info = json.loads((dest / "info").read_text())
    assert info["scales"][0]["sharding"]["@type"] == "neuroglancer_uint64_sharded_v1"
    shards = list((dest / info["scales"][0]["key"]).glob("*.shard"))
    assert len(shards) == tasks > 1  # one task per shard file
    assert_same(ts_read(dest, 0), vol)
    # the last shard task queued the sharded pyramid into the same queue: one execute built it
    assert len(info["scales"]) > 1 and all(s.get("sharding") for s in info["scales"])
    not_mode, _ = mode_violations(vol, ts_read(dest, 1)[..., 0], (2, 2, 1))
    assert not_mode == 0
    assert not (dest / "import-markers").exists()
