"""image xfer end to end: re-encode, re-chunk, shift, build mips, byte-copy; SRC untouched."""
from __future__ import annotations

import json

import numpy as np

from conftest import run_cli, tree_digest, ts_read
from reference import average_pyramid, mode_violations


def xfer_via_queue(tmp_path, *args):
    q = tmp_path / "xq"
    run_cli("image", "xfer", *args, "--queue", f"fq://{q}")
    run_cli("execute", f"fq://{q}", "-p", "2", "-x", "-q")


def test_image_to_jpeg_with_mips(layers, arrays):
    src_before = tree_digest(layers / "image")
    xfer_via_queue(layers, f"file://{layers}/image", f"file://{layers}/jpeg", "--encoding", "jpeg",
                   "--chunk-size", "32,32,16", "--num-mips", "2")
    assert tree_digest(layers / "image") == src_before  # SRC, info included, is never modified
    info = json.loads((layers / "jpeg" / "info").read_text())
    assert [s["encoding"] for s in info["scales"]] == ["jpeg"] * 3
    assert info["scales"][0]["chunk_sizes"] == [[32, 32, 16]]
    got = ts_read(layers / "jpeg", 0)[..., 0].astype(np.float64)
    img = arrays["image"].astype(np.float64)
    assert got.shape == img.shape
    assert np.abs(got - img).mean() < 6  # lossy, but the same picture
    mip2 = ts_read(layers / "jpeg", 2)[..., 0].astype(np.float64)
    ref = average_pyramid(arrays["image"], (2, 2, 1), 2)[1]
    assert np.abs(mip2 - ref).mean() < 6  # mips come from the decoded source, then one jpeg pass


def test_segmentation_to_compressed_segmentation_is_exact(layers, arrays):
    xfer_via_queue(layers, f"file://{layers}/segmentation", f"file://{layers}/cseg",
                   "--encoding", "compressed_segmentation", "--num-mips", "1")
    got = ts_read(layers / "cseg", 0)[..., 0]
    assert np.array_equal(got, arrays["segmentation"])
    mip1 = ts_read(layers / "cseg", 1)[..., 0]
    assert mode_violations(arrays["segmentation"], mip1, (2, 2, 1)) == (0, 0)


def test_segmentation_to_compresso_reads_back(layers, arrays):
    from cloudvolume import CloudVolume

    xfer_via_queue(layers, f"file://{layers}/segmentation", f"file://{layers}/cpso",
                   "--encoding", "compresso", "--skip-downsample")
    vol = CloudVolume(f"file://{layers}/cpso", progress=False, fill_missing=False)
    assert vol.encoding == "compresso"
    assert np.array_equal(vol[:, :, :][..., 0], arrays["segmentation"])


def test_same_chunking_copies_bytes(layers):
    run_cli("image", "xfer", f"file://{layers}/segmentation", f"file://{layers}/copy", "--skip-downsample")
    src = tree_digest(layers / "segmentation")
    dst = tree_digest(layers / "copy")
    src.pop("info"), dst.pop("info")
    assert src == dst and len(src) > 10
    plan = run_cli("image", "xfer", f"file://{layers}/segmentation", f"file://{layers}/copy2",
                   "--skip-downsample", "--dry-run").stdout
    assert "byte-for-byte" in plan


def test_translate_moves_the_data(layers, arrays):
    run_cli("-p", "2", "image", "xfer", f"file://{layers}/image", f"file://{layers}/moved",
            "--translate", "64,32,0", "--skip-downsample", "--encoding", "raw")
    info = json.loads((layers / "moved" / "info").read_text())
    assert info["scales"][0]["voxel_offset"] == [64, 32, 0]
    import tensorstore as ts

    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": f"{layers}/moved/"},
                     "scale_index": 0, "fill_missing_data_reads": False}, read=True).result()
    assert list(store.domain.inclusive_min[:3]) == [64, 32, 0]
    got = np.asarray(store.read().result())[..., 0]
    assert np.array_equal(got, arrays["image"])


def test_rechunk_and_idempotent(layers, arrays):
    args = ("image", "xfer", f"file://{layers}/segmentation", f"file://{layers}/rechunk",
            "--chunk-size", "128,128,32", "--num-mips", "1")
    run_cli(*args)
    first = tree_digest(layers / "rechunk")
    run_cli(*args)
    assert tree_digest(layers / "rechunk") == first
    assert np.array_equal(ts_read(layers / "rechunk", 0)[..., 0], arrays["segmentation"])


def test_image_rm_deletes_mips(layers):
    run_cli("image", "downsample", f"file://{layers}/image", "--num-mips", "2")
    assert list((layers / "image" / "32_32_40").iterdir())
    run_cli("image", "rm", f"file://{layers}/image", "--mip", "1")
    assert not list((layers / "image" / "16_16_40").iterdir())
    assert not list((layers / "image" / "32_32_40").iterdir())
    assert list((layers / "image" / "8_8_40").iterdir())


def test_segmentation_to_crackle_reads_back(layers, arrays):
    from cloudvolume import CloudVolume

    run_cli("image", "xfer", f"file://{layers}/segmentation", f"file://{layers}/ckl", "--encoding", "crackle",
            "--num-mips", "1")
    vol = CloudVolume(f"file://{layers}/ckl", progress=False)
    assert np.array_equal(vol[:, :, :][..., 0], arrays["segmentation"])
    assert CloudVolume(f"file://{layers}/ckl", mip=1, progress=False).encoding == "crackle"


def test_delete_bg_leaves_no_background_chunks(layers):
    from igneous_like import sample

    data = np.zeros((128, 128, 64), dtype=np.uint8, order="F")
    data[:64, :64] = 7
    sample.write_layer(f"file://{layers}/sparse", data, "image")
    run_cli("image", "xfer", f"file://{layers}/sparse", f"file://{layers}/sparse2", "--delete-bg",
            "--skip-downsample", "--chunk-size", "64,64,64", "--encoding", "raw", "--compress", "none")
    files = sorted(p.name for p in (layers / "sparse2" / "8_8_40").iterdir())
    assert files == ["0-64_0-64_0-64"]
