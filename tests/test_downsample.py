"""image downsample end to end: CLI -> FileQueue -> `execute -p 2` workers -> files,
read back with tensorstore and compared with numpy references."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli, tree_digest, ts_read
from reference import average_pyramid, mode_violations


def queue_run(tmp_path, *producer_args):
    q = tmp_path / "queue"
    run_cli(*producer_args, "--queue", f"fq://{q}")
    proc = run_cli("execute", f"fq://{q}", "-p", "2", "-x", "-q")
    status = run_cli("queue", "status", f"fq://{q}").stdout
    assert "enqueued   0" in status, status
    return proc


def test_image_pyramid_matches_reference(layers, arrays):
    queue_run(layers, "image", "downsample", f"file://{layers}/image", "--num-mips", "3")
    img = arrays["image"]
    ref = average_pyramid(img, (2, 2, 1), 3)
    for mip in (1, 2, 3):
        got = ts_read(layers / "image", mip)[..., 0]
        assert got.shape == ref[mip - 1].shape
        diff = np.abs(got.astype(np.int16) - np.rint(ref[mip - 1]).astype(np.int16))
        assert diff.max() <= 1, f"mip {mip}: off by {diff.max()}"
    # rounding to nearest keeps the grey level: flooring would lose ~0.45 by mip 2
    mip2 = ts_read(layers / "image", 2)[..., 0].astype(np.float64)
    region = img[: mip2.shape[0] * 4, : mip2.shape[1] * 4]
    assert abs(mip2.mean() - region.mean()) < 0.3
    info = json.loads((layers / "image" / "info").read_text())
    assert [s["size"] for s in info["scales"]] == [[230, 210, 100], [115, 105, 100], [58, 53, 100], [29, 27, 100]]


def test_segmentation_mode_is_exact(layers, arrays):
    queue_run(layers, "image", "downsample", f"file://{layers}/segmentation", "--num-mips", "2")
    prev = arrays["segmentation"]
    for mip in (1, 2):
        got = ts_read(layers / "segmentation", mip)[..., 0]
        assert got.dtype == np.uint64
        assert got.max() > 2**32  # labels above 2^32 survive
        not_mode, wrong = mode_violations(prev, got, (2, 2, 1))
        assert not_mode == 0 and wrong == 0, (mip, not_mode, wrong)
        prev = got


def test_running_tasks_twice_gives_identical_bytes(layers):
    args = ("image", "downsample", f"file://{layers}/image", "--num-mips", "2", "--chunk-size", "32,32,32")
    run_cli(*args)
    first = tree_digest(layers / "image")
    run_cli(*args)
    assert tree_digest(layers / "image") == first


def test_no_gz_names_and_plain_files(layers):
    run_cli("image", "downsample", f"file://{layers}/segmentation", "--num-mips", "2", "--encoding", "cseg")
    names = [p.name for p in (layers / "segmentation").rglob("*") if p.is_file()]
    assert names and not [n for n in names if n.endswith((".gz", ".br", ".zstd"))]


@pytest.mark.parametrize("method", ["max", "min", "striding"])
def test_method_option_is_used(layers, arrays, method):
    run_cli("-p", "2", "image", "downsample", f"file://{layers}/image", "--num-mips", "1", "--method", method)
    got = ts_read(layers / "image", 1)[..., 0]
    img = arrays["image"]
    if method == "striding":
        want = img[::2, ::2]
    else:
        pad = np.pad(img, [(0, 0), (0, 0), (0, 0)])
        fx = np.maximum if method == "max" else np.minimum
        a = np.pad(pad, [(0, 1), (0, 0), (0, 0)], mode="edge")
        b = fx(fx(a[0:-1:2, 0::2], a[1::2, 0::2]), fx(a[0:-1:2, 1::2], a[1::2, 1::2]))
        want = b
    assert np.array_equal(got, want)


def test_volumetric_factor(layers, arrays):
    run_cli("image", "downsample", f"file://{layers}/image", "--num-mips", "2", "--volumetric")
    ref = average_pyramid(arrays["image"], (2, 2, 2), 2)
    got = ts_read(layers / "image", 2)[..., 0]
    assert got.shape == (58, 53, 25)
    assert np.abs(got.astype(int) - np.rint(ref[1]).astype(int)).max() <= 1


def test_default_mips_reach_a_single_chunk(layers):
    run_cli("image", "downsample", f"file://{layers}/image")
    info = json.loads((layers / "image" / "info").read_text())
    top = info["scales"][-1]["size"]
    assert top[0] <= 64 and top[1] <= 64, top
    ts_read(layers / "image", len(info["scales"]) - 1)


def test_tiny_volume_still_gets_a_pyramid(tmp_path):
    from igneous_like import sample

    data = (np.arange(40 * 30 * 10) % 251).astype(np.uint8).reshape((40, 30, 10), order="F")
    sample.write_layer(f"file://{tmp_path}/tiny", data, "image", chunk=(64, 64, 64))
    run_cli("image", "downsample", f"file://{tmp_path}/tiny", "--num-mips", "3")
    got = ts_read(tmp_path / "tiny", 3)[..., 0]
    assert got.shape == (5, 4, 10)


def test_superdownsample_from_higher_mip(layers, arrays):
    run_cli("image", "downsample", f"file://{layers}/image", "--num-mips", "1")
    run_cli("image", "downsample", f"file://{layers}/image", "--mip", "1", "--num-mips", "2")
    ref = average_pyramid(arrays["image"], (2, 2, 1), 3)
    got = ts_read(layers / "image", 3)[..., 0]
    # built from the stored (rounded) mip 1, so allow one more grey level
    assert np.abs(got.astype(int) - np.rint(ref[2]).astype(int)).max() <= 2


def test_dry_run_writes_nothing(layers):
    before = tree_digest(layers)
    out = run_cli("image", "downsample", f"file://{layers}/image", "--num-mips", "3", "--dry-run",
                  "--queue", f"fq://{layers}/q").stdout
    assert "tasks" in out and "task shape" in out and "peak memory per task" in out and "files to write" in out
    assert tree_digest(layers) == before
    assert not (layers / "q").exists()


def test_in_process_run_with_ranges(layers, arrays):
    run_cli("-p", "2", "image", "downsample", f"file://{layers}/image", "--num-mips", "1",
            "--zrange", "0,64", "--fill-missing")
    got = ts_read(layers / "image", 1, np.s_[:, :, 0:64])[..., 0]
    ref = average_pyramid(arrays["image"][:, :, :64], (2, 2, 1), 1)[0]
    assert np.abs(got.astype(int) - np.rint(ref).astype(int)).max() <= 1
    # z 64..100 was outside the range: no chunks there
    assert not list((layers / "image" / "16_16_40").glob("*_64-100"))


def test_sparse_average_ignores_background(tmp_path):
    from igneous_like import sample

    data = np.zeros((64, 64, 8), dtype=np.uint8, order="F")
    data[0::2, :, :] = 200  # every other column is background
    sample.write_layer(f"file://{tmp_path}/img", data, "image")
    run_cli("image", "downsample", f"file://{tmp_path}/img", "--num-mips", "2", "--sparse")
    assert set(np.unique(ts_read(tmp_path / "img", 2))) == {200}
    run_cli("image", "downsample", f"file://{tmp_path}/img", "--num-mips", "2")
    assert set(np.unique(ts_read(tmp_path / "img", 2))) == {100}


def test_odd_voxel_offset(tmp_path):
    """Offsets that the factor does not divide: mips still tile their own chunk grids."""
    from igneous_like import sample

    rng = np.random.default_rng(5)
    data = np.asfortranarray(rng.integers(0, 255, size=(100, 90, 30), dtype=np.uint8))
    sample.write_layer(f"file://{tmp_path}/off", data, "image", chunk=(32, 32, 16), voxel_offset=(3, 5, 1))
    run_cli("-p", "2", "image", "downsample", f"file://{tmp_path}/off", "--num-mips", "2", "--volumetric")
    import tensorstore as ts

    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": f"{tmp_path}/off/"},
                     "scale_index": 2, "fill_missing_data_reads": False}, read=True).result()
    assert list(store.domain.inclusive_min[:3]) == [0, 1, 0]
    got = np.asarray(store.read().result())[..., 0]
    ref = average_pyramid(data, (2, 2, 2), 2)[1]
    assert got.shape == ref.shape
    assert np.abs(got.astype(int) - np.rint(ref).astype(int)).max() <= 1
