"""image export end to end: OME-Zarr 0.4 (v2), 0.5 (v3, sharded) and TIFF directories, read
back with independent readers (tensorstore's zarr drivers, tifffile), metadata checked
against the layer's info, and export -> re-import giving identical voxels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli, ts_read
from test_import import CHUNK, MARK, XYZ, assert_same, s3_env, volume, zyx


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    """A 2-channel uint16 layer with an offset and a 3-mip pyramid, from a .npy (exports only
    read it, so the tests share one)."""
    tmp_path = tmp_path_factory.mktemp("export-src")
    vol = volume("uint16", channels=2)
    np.save(tmp_path / "v.npy", vol)
    dest = tmp_path / "layer"
    run_cli("image", "import", str(tmp_path / "v.npy"), f"file://{dest}", "--chunk-size", CHUNK,
            "--resolution", "4,5,40", "--offset", "5,6,7")
    return dest, vol


def zarr_read(path, driver: str) -> np.ndarray:
    """Read one level with zarr-python (the export writes through tensorstore)."""
    import zarr

    arr = zarr.open_array(str(path), mode="r")
    assert arr.metadata.zarr_format == (3 if driver == "zarr3" else 2)
    return np.asarray(arr[...])


@pytest.mark.parametrize("fmt", ["ome-zarr", "ome-zarr-v3"])
def test_ome_zarr_levels_metadata_and_reimport(tmp_path, layer, fmt):
    src, vol = layer
    out = tmp_path / "out.zarr"
    q = tmp_path / "q"
    args = ["--shard-shape", "16,16,8"] if fmt == "ome-zarr-v3" else []
    run_cli("image", "export", f"file://{src}", str(out), "--format", fmt, *args, "--queue", f"fq://{q}")
    run_cli("execute", f"fq://{q}", "-p", "2", "-x", "-q")
    info = json.loads((src / "info").read_text())
    if fmt == "ome-zarr":
        meta = json.loads((out / ".zattrs").read_text())["multiscales"][0]
        assert meta["version"] == "0.4"
        driver = "zarr"
    else:
        meta = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]
        assert meta["version"] == "0.5"
        meta = meta["multiscales"][0]
        driver = "zarr3"
        shard_index = json.loads((out / "0" / "zarr.json").read_text())["codecs"][0]
        assert shard_index["name"] == "sharding_indexed"
    import zarr
    from ome_zarr_models import open_ome_zarr

    model = open_ome_zarr(zarr.open_group(str(out), mode="r"))  # validated against the spec's models
    assert type(model).__module__ == f"ome_zarr_models.{'v04' if fmt == 'ome-zarr' else 'v05'}.image"
    assert [a["name"] for a in meta["axes"]] == ["c", "z", "y", "x"]
    assert all(a.get("unit") == "nanometer" for a in meta["axes"][1:])
    assert len(meta["datasets"]) == len(info["scales"]) == 3
    for level, (ds, scale) in enumerate(zip(meta["datasets"], info["scales"])):
        (sc,), (tr,) = ([t[k] for t in ds["coordinateTransformations"] if t["type"] == k] for k in ("scale", "translation"))
        assert sc == [1.0, *map(float, reversed(scale["resolution"]))]
        assert tr == [0.0, *(float(o * r) for o, r in zip(reversed(scale["voxel_offset"]), reversed(scale["resolution"])))]
        got = zarr_read(out / str(level), driver)  # c,z,y,x
        want = ts_read(src, level)  # x,y,z,c
        assert np.array_equal(got, want.transpose(3, 2, 1, 0))
    assert zarr_read(out / "0", driver)[1, MARK[2], MARK[1], MARK[0]] == 65535
    back = tmp_path / "back"
    run_cli("image", "import", str(out), f"file://{back}", "--chunk-size", CHUNK)
    binfo = json.loads((back / "info").read_text())
    assert binfo["scales"][0]["voxel_offset"] == [5, 6, 7] and binfo["scales"][0]["resolution"] == [4, 5, 40]
    assert_same(ts_read(back, 0), vol)


def test_tiff_directory_and_reimport(tmp_path, layer):
    import tifffile

    src, vol = layer
    out = tmp_path / "tiffs"
    run_cli("image", "export", f"file://{src}", str(out), "--format", "tiff", "--zrange", "8,17")
    files = sorted(out.iterdir())
    assert len(files) == 9
    plane = tifffile.imread(files[MARK[2] - 1])  # layer z 8 (the first exported) is source z 1
    assert plane.shape == (XYZ[1], XYZ[0], 2)
    assert np.array_equal(plane, zyx(vol)[MARK[2]])
    assert plane[MARK[1], MARK[0], 0] == 65535
    back = tmp_path / "back"
    run_cli("image", "import", str(out), f"file://{back}", "--resolution", "4,5,40", "--chunk-size", CHUNK)

    assert np.array_equal(ts_read(back, 0), vol[:, :, 1:10])


def test_export_from_s3_layer(tmp_path, moto, s3_bucket, layer, monkeypatch):
    from conftest import upload_layer

    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")  # cloud-files reads it with keys from the env
    src, vol = layer
    from cloudfiles import CloudFiles

    url = f"{s3_bucket}/layer"
    upload_layer(src, url, compress="gzip")
    out = tmp_path / "s3.zarr"
    run_cli("image", "export", url, str(out), "--format", "ome-zarr-v3", env=s3_env(moto))
    assert np.array_equal(zarr_read(out / "0", "zarr3"), zyx(vol).transpose(3, 0, 1, 2))
    # and into s3: sharded OME-Zarr 0.5 written there, copied down, read by zarr-python
    run_cli("image", "export", url, f"{s3_bucket}/out.zarr", "--format", "ome-zarr-v3", "--shard-shape",
            "16,16,8", env=s3_env(moto))
    down = tmp_path / "down.zarr"
    CloudFiles(f"{s3_bucket}/out.zarr").transfer_to(f"file://{down}")
    assert json.loads((down / "zarr.json").read_text())["attributes"]["ome"]["version"] == "0.5"
    assert np.array_equal(zarr_read(down / "0", "zarr3"), zyx(vol).transpose(3, 0, 1, 2))
    # and import straight from the OME-Zarr on s3 (metadata through cloud-files, voxels through tensorstore)
    back = tmp_path / "back"
    run_cli("image", "import", f"{s3_bucket}/out.zarr", f"file://{back}", "--chunk-size", CHUNK, env=s3_env(moto))
    assert json.loads((back / "info").read_text())["scales"][0]["voxel_offset"] == [5, 6, 7]
    assert_same(ts_read(back, 0), vol)


@pytest.mark.parametrize("fmt", ["ome-zarr", "ome-zarr-v3"])
def test_ome_zarr_py_reader_opens_the_export(tmp_path, layer, fmt):
    """ome-zarr-py's own reader (the one napari uses) sees every level with the layer's voxels,
    axes, units and per-level scale and translation."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    src, _ = layer
    out = tmp_path / "out.zarr"
    run_cli("image", "export", f"file://{src}", str(out), "--format", fmt)
    info = json.loads((src / "info").read_text())
    nodes = [n for n in Reader(parse_url(str(out)))() if n.load(Multiscales)]
    assert len(nodes) == 1
    image = nodes[0]
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "z", "y", "x"]
    assert [a.get("unit") for a in image.metadata["axes"]][1:] == ["nanometer"] * 3
    assert len(image.data) == len(info["scales"]) == 3
    for level, (data, transforms, scale) in enumerate(zip(image.data, image.metadata["coordinateTransformations"],
                                                          info["scales"])):
        by_type = {t["type"]: t for t in transforms}
        res, off = list(reversed(scale["resolution"])), list(reversed(scale["voxel_offset"]))
        assert by_type["scale"]["scale"] == [1.0, *map(float, res)]
        assert by_type["translation"]["translation"] == [0.0, *(float(o * r) for o, r in zip(off, res))]
        assert np.array_equal(np.asarray(data), ts_read(src, level).transpose(3, 2, 1, 0)), level


def test_large_slabs_are_split_for_every_worker(tmp_path):
    """A 2048x2048 slab 64 deep is 256 MiB: planned as 4 tiles of whole chunks, not one task,
    however large --memory is (an info file is all the planner reads)."""
    layer = tmp_path / "big"
    layer.mkdir()
    (layer / "info").write_text(json.dumps({
        "type": "image", "data_type": "uint8", "num_channels": 1,
        "scales": [{"key": "4_4_40", "resolution": [4, 4, 40], "voxel_offset": [0, 0, 0], "size": [2048, 2048, 128],
                    "chunk_sizes": [[128, 128, 64]], "encoding": "raw"}]}))
    out = run_cli("image", "export", f"file://{layer}", str(tmp_path / "out.zarr"), "--memory", "8GiB",
                  "--dry-run").stdout
    assert "image export: 8 tasks" in out
    assert "mip 0: 1024x1024x64" in out
    assert not (tmp_path / "out.zarr").exists()
    tiff = run_cli("image", "export", f"file://{layer}", str(tmp_path / "tif"), "--format", "tiff",
                   "--dry-run").stdout
    assert "image export: 2 tasks" in tiff and "mip 0: 2048x2048x64" in tiff  # whole slices
