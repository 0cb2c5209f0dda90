"""Bad input to image import/export: one line `igneous-like: error: ...`, exit 1, and nothing
written to DEST."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli


def stack(tmp_path, shapes, names=None):
    import tifffile

    d = tmp_path / "stack"
    d.mkdir()
    for i, shape in enumerate(shapes):
        tifffile.imwrite(d / (names[i] if names else f"s{i}.tif"), np.ones(shape, np.uint8))
    return str(d)


def h5(tmp_path):
    import h5py

    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("raw", data=np.zeros((4, 5, 6), np.uint8))
        f.create_dataset("labels", data=np.zeros((4, 5, 6), np.uint32))
    return str(tmp_path / "v.h5")


def npy(tmp_path, arr):
    np.save(tmp_path / "v.npy", arr)
    return str(tmp_path / "v.npy")


CASES = {
    "missing slice": (lambda p: stack(p, [(5, 6)] * 3, ["z1.tif", "z2.tif", "z4.tif"]), [], "slice number 3 is missing"),
    "unreadable slice": (lambda p: (stack(p, [(5, 6)] * 2), (p / "stack" / "s2.tif").write_bytes(b"junk"))[0], [],
                         "cannot read slice"),
    "different shapes": (lambda p: stack(p, [(5, 6), (5, 6), (4, 6)]), [], "pass --pad"),
    "no such dataset": (h5, ["--dataset", "nope"], "has no dataset 'nope'; it has: labels 4x5x6, raw 4x5x6"),
    "two 3D datasets": (h5, [], "pick one with --dataset"),
    "2D tiff": (lambda p: (__import__("tifffile").imwrite(p / "a.tif", np.zeros((5, 6), np.uint8)), str(p / "a.tif"))[1],
                [], "2D image"),
    "unsupported dtype": (lambda p: npy(p, np.zeros((3, 4, 5), np.complex64)), [], "unsupported data type complex64"),
    "missing resolution": (lambda p: npy(p, np.zeros((3, 4, 5), np.uint8)), [], "pass --resolution X,Y,Z"),
    "missing source": (lambda p: str(p / "nothing.h5"), [], "does not exist"),
    "float segmentation": (lambda p: npy(p, np.zeros((3, 4, 5), np.float32)), ["--seg"], "integer labels"),
    "bad memory": (lambda p: npy(p, np.zeros((3, 4, 5), np.uint8)), ["--memory", "lots"], "not a size in bytes"),
    "bad encoding": (lambda p: npy(p, np.zeros((3, 4, 5), np.uint16)), ["--encoding", "jpeg"], "cannot store uint16"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_import_is_one_line_and_writes_nothing(tmp_path, case):
    make, args, message = CASES[case]
    src = make(tmp_path)
    dest = tmp_path / "dest"
    extra = [] if case == "missing resolution" else ["--resolution", "1,1,1"]
    proc = run_cli("image", "import", src, f"file://{dest}", *extra, *args, check=False)
    assert proc.returncode in (1, 2), proc.stderr  # 2: click's own usage errors
    assert message in proc.stderr, proc.stderr
    if proc.returncode == 1:
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("igneous-like: error: ")
    assert "Traceback" not in proc.stderr
    assert not dest.exists()


def test_pad_accepts_smaller_slices(tmp_path):
    src = stack(tmp_path, [(5, 6), (5, 6), (4, 3)])
    dest = tmp_path / "dest"
    run_cli("image", "import", src, f"file://{dest}", "--resolution", "1,1,1", "--pad")
    from conftest import ts_read

    got = ts_read(dest, 0)[..., 0]
    assert got.shape == (6, 5, 3) and got[:, :, 2].sum() == 12 and got[:, :, :2].all()


def test_existing_destination_needs_force(tmp_path):
    src = npy(tmp_path, np.ones((3, 4, 5), np.uint8))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    proc = run_cli("image", "import", src, f"file://{dest}", "--resolution", "1,1,1", check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        f"igneous-like: error: destination file://{dest} exists and is not empty (pass --force to write into it)")
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]
    run_cli("image", "import", src, f"file://{dest}", "--resolution", "1,1,1", "--force")
    assert (dest / "info").exists()


def test_bad_export(tmp_path):
    src = npy(tmp_path, np.ones((3, 4, 5), np.uint8))
    layer = tmp_path / "layer"
    run_cli("image", "import", src, f"file://{layer}", "--resolution", "1,1,1")
    for args, message in [
        (["--mip", "4"], "mip 4 is out of range"),
        (["--format", "ome-zarr", "--shard-shape", "64,64,64"], "--shard-shape applies to --format ome-zarr-v3 only"),
        (["--format", "ome-zarr-v3", "--shard-shape", "100,64,64"], "must be a positive multiple of the chunk size"),
        (["--zrange", "3,9"], "lies outside"),
    ]:
        proc = run_cli("image", "export", f"file://{layer}", str(tmp_path / "out"), *args, check=False)
        assert proc.returncode == 1 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
    proc = run_cli("image", "export", f"file://{tmp_path / 'none'}", str(tmp_path / "out"), check=False)
    assert proc.returncode == 1 and "no layer at" in proc.stderr
