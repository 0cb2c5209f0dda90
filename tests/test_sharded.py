"""Sharded scales: image xfer --sharded through a FileQueue and `execute -p 2`, read back with
tensorstore (fill_missing_data_reads false) and cloud-volume; sharded -> unsharded; rm."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli, ts_read

SMALL_SHARDS = ("--memory", "3e7")  # ~7.5 MB of chunks per shard: several shards per scale


def xfer(layers, src, dest, *args):
    q = layers / f"q-{dest}"
    run_cli("image", "xfer", f"file://{layers}/{src}", f"file://{layers}/{dest}", "--sharded", *args,
            "--queue", f"fq://{q}")
    run_cli("execute", f"fq://{q}", "-p", "2", "-x", "-q")


def shards(layer_dir):
    info = json.loads((layer_dir / "info").read_text())
    return list((layer_dir / info["scales"][0]["key"]).glob("*.shard"))


@pytest.mark.parametrize("src,encoding,exact", [
    ("segmentation", "raw", True),
    ("segmentation", "compressed_segmentation", True),
    ("image", "raw", True),
    ("image", "png", True),
    ("image", "jpeg", False),
])
def test_sharded_xfer_reads_back_with_tensorstore(layers, arrays, src, encoding, exact):
    xfer(layers, src, "out", "--encoding", encoding, "--chunk-size", "64,64,32", *SMALL_SHARDS)
    assert len(shards(layers / "out")) >= 2
    assert not list((layers / "out").rglob("*-*_*-*_*-*"))  # no loose chunk files
    got = ts_read(layers / "out", 0)[..., 0]
    want = arrays[src]
    if exact:
        assert np.array_equal(got, want)
    else:
        assert np.abs(got.astype(float) - want).mean() < 6


@pytest.mark.parametrize("encoding", ["compresso", "crackle"])
def test_sharded_segmentation_codecs_read_back_with_cloudvolume(layers, arrays, encoding):
    from cloudvolume import CloudVolume

    xfer(layers, "segmentation", "out", "--encoding", encoding, *SMALL_SHARDS)
    vol = CloudVolume(f"file://{layers}/out", progress=False, fill_missing=False)
    assert vol.image.is_sharded(0)
    assert np.array_equal(np.asarray(vol[:, :, :])[..., 0], arrays["segmentation"])


def test_background_edge_chunks_have_their_clipped_length(tmp_path):
    """All-zero chunks at the clipped edge of the volume: tensorstore rejects a shard whose edge
    chunk reuses the full-size background encoding."""
    from igneous_like import sample

    seg = np.zeros((150, 100, 40), dtype=np.uint64, order="F")
    seg[:60, :60, :] = 2**40 + 3  # data only in the first chunk column; the edges are background
    sample.write_layer(f"file://{tmp_path}/src", seg, "segmentation", chunk=(64, 64, 16))
    run_cli("image", "xfer", f"file://{tmp_path}/src", f"file://{tmp_path}/dst", "--sharded", "--encoding", "raw")
    assert np.array_equal(ts_read(tmp_path / "dst", 0)[..., 0], seg)


def test_sharded_to_unsharded_and_rm(layers, arrays):
    xfer(layers, "segmentation", "sharded", "--encoding", "compressed_segmentation", *SMALL_SHARDS)
    run_cli("image", "xfer", f"file://{layers}/sharded", f"file://{layers}/plain", "--skip-downsample")
    info = json.loads((layers / "plain" / "info").read_text())
    assert "sharding" not in info["scales"][0]
    assert list((layers / "plain" / info["scales"][0]["key"]).glob("*-*_*-*_*-*"))
    assert np.array_equal(ts_read(layers / "plain", 0)[..., 0], arrays["segmentation"])
    run_cli("image", "rm", f"file://{layers}/sharded")
    assert shards(layers / "sharded") == []


def test_sharded_dry_run_reports_shards(layers):
    out = run_cli("image", "xfer", f"file://{layers}/image", f"file://{layers}/out", "--sharded",
                  *SMALL_SHARDS, "--dry-run").stdout
    for key in ("shards to write", "shard size", "peak memory per task", "shard shape"):
        assert key in out, out
    assert not (layers / "out").exists()


@pytest.mark.parametrize("name", ["image", "segmentation"])
def test_sharded_downsample_equals_unsharded(layers, name):
    import shutil

    shutil.copytree(layers / name, layers / "plain")
    common = ("--num-mips", "3", "--chunk-size", "32,32,16")
    q = layers / "q"
    run_cli("image", "downsample", f"file://{layers}/{name}", *common, "--sharded", "--memory", "4e8",
            "--queue", f"fq://{q}")
    run_cli("execute", f"fq://{q}", "-p", "2", "-x", "-q")
    tasks = int(run_cli("queue", "status", f"fq://{q}").stdout.split("completed")[1].split()[0])
    assert tasks > 1
    run_cli("image", "downsample", f"file://{layers}/plain", *common)
    info = json.loads((layers / name / "info").read_text())
    many = 0
    for mip in (1, 2, 3):
        assert info["scales"][mip]["sharding"]["hash"] == "identity"
        files = list((layers / name / info["scales"][mip]["key"]).iterdir())
        assert files and all(f.name.endswith(".shard") for f in files)
        many += len(files) > 1
        assert np.array_equal(ts_read(layers / name, mip), ts_read(layers / "plain", mip)), mip
    assert many >= 1


def test_expert_sharding_spec(layers, arrays):
    spec = '{"preshift_bits": 3, "minishard_bits": 1, "shard_bits": 2}'
    run_cli("-p", "2", "image", "xfer", f"file://{layers}/segmentation", f"file://{layers}/out", "--sharding", spec)
    info = json.loads((layers / "out" / "info").read_text())
    assert info["scales"][0]["sharding"]["preshift_bits"] == 3
    assert np.array_equal(ts_read(layers / "out", 0)[..., 0], arrays["segmentation"])
    proc = run_cli("image", "xfer", f"file://{layers}/segmentation", f"file://{layers}/bad", "--sharding", "{oops",
                   check=False)
    assert proc.returncode == 1 and "not valid JSON" in proc.stderr and not (layers / "bad").exists()
