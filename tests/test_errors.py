"""Bad input gets one line naming the problem, a non-zero exit, no traceback, nothing written."""
from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli, tree_digest


def fails_cleanly(root, *args, expect: str, one_line: bool = True):
    before = tree_digest(root)
    proc = run_cli(*args, check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert expect.lower() in proc.stderr.lower(), proc.stderr
    if one_line:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert tree_digest(root) == before, "a failed command wrote files"
    return proc.stderr


def test_missing_layer(layers):
    fails_cleanly(layers, "image", "downsample", f"file://{layers}/nothing-here", expect="info file is missing")


def test_malformed_info(layers):
    (layers / "image" / "info").write_text("{not json")
    fails_cleanly(layers, "image", "downsample", f"file://{layers}/image", expect="malformed info")


def test_info_without_scales(layers):
    info = json.loads((layers / "image" / "info").read_text())
    del info["scales"][0]["chunk_sizes"]
    (layers / "image" / "info").write_text(json.dumps(info))
    fails_cleanly(layers, "image", "xfer", f"file://{layers}/image", f"file://{layers}/out",
                  expect="lacks chunk_sizes")


def test_mip_out_of_range(layers):
    fails_cleanly(layers, "image", "downsample", f"file://{layers}/image", "--mip", "4", expect="mip 4 is out of range")


def test_unknown_encoding(layers):
    fails_cleanly(layers, "image", "xfer", f"file://{layers}/image", f"file://{layers}/out",
                  "--encoding", "webp", expect="unknown encoding")


def test_jpeg_on_uint64(layers):
    fails_cleanly(layers, "image", "xfer", f"file://{layers}/segmentation", f"file://{layers}/out",
                  "--encoding", "jpeg", expect="cannot store uint64")


def test_chunk_size_not_positive(layers):
    fails_cleanly(layers, "image", "downsample", f"file://{layers}/image", "--chunk-size", "0,64,64",
                  expect="'--chunk-size': '0,64,64': every value must be at least 1")


def test_range_outside_volume(layers):
    fails_cleanly(layers, "image", "downsample", f"file://{layers}/image", "--xrange", "0,5000",
                  expect="outside")


@pytest.mark.parametrize("url", ["ftp://somewhere/q", "sqs://", "fq://"])
def test_bad_queue_url(layers, url):
    fails_cleanly(layers, "image", "downsample", f"file://{layers}/image", "--queue", url, expect="queue url")


def test_execute_bad_queue(layers):
    fails_cleanly(layers, "execute", "ftp://x/q", "-x", expect="bad queue url")
    fails_cleanly(layers, "execute", f"fq://{layers}/never-made", "-x", expect="no queue at")


def test_unwritable_destination(layers):
    (layers / "a-file").write_text("x")
    fails_cleanly(layers, "image", "xfer", f"file://{layers}/image", f"file://{layers}/a-file/out",
                  expect="not writable")


def test_memory_too_small(layers):
    fails_cleanly(layers, "image", "downsample", f"file://{layers}/image", "--memory", "1000", expect="too small")


def test_bad_tuple_is_a_usage_error(layers):
    fails_cleanly(layers, "image", "downsample", f"file://{layers}/image", "--chunk-size", "64,64",
                  expect="3 comma-separated")


def test_corrupt_chunk_fails_its_task_and_stays_queued(layers):
    chunk = layers / "image" / "8_8_40" / "64-128_0-64_0-64"
    chunk.write_bytes(os.urandom(1000))
    q = layers / "q"
    run_cli("image", "downsample", f"file://{layers}/image", "--num-mips", "1", "--queue", f"fq://{q}")
    proc = run_cli("execute", f"fq://{q}", "-p", "2", "-x", "--max-attempts", "0", check=False)
    assert proc.returncode != 0
    assert "64-128_0-64_0-64" in proc.stderr  # the message names the chunk
    status = run_cli("queue", "status", f"fq://{q}").stdout
    assert "enqueued   1" in status and "failed     1" in status, status
    failures = run_cli("queue", "failures", f"fq://{q}").stdout
    assert "64-128_0-64_0-64" in failures


def test_corrupt_chunk_in_process_run(layers):
    (layers / "image" / "8_8_40" / "0-64_64-128_0-64").write_bytes(b"garbage")
    proc = run_cli("image", "downsample", f"file://{layers}/image", "--num-mips", "1", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "0-64_64-128_0-64" in proc.stderr


@pytest.fixture(scope="module")
def tiny_pristine(tmp_path_factory):
    from igneous_like import sample

    root = tmp_path_factory.mktemp("tiny")
    seg = sample.segmentation((64, 48, 32), seed=1, cells=5)
    sample.write_layer(f"file://{root}/image", sample.image_from(seg, seed=2), "image", chunk=(32, 32, 32))
    sample.write_layer(f"file://{root}/segmentation", seg, "segmentation", chunk=(32, 32, 32))
    return root


@pytest.fixture
def tiny(tiny_pristine, tmp_path):
    """Small private layers: these cases are refused before any data is read."""
    import shutil

    for name in ("image", "segmentation"):
        shutil.copytree(tiny_pristine / name, tmp_path / name)
    return tmp_path


def _edit_info(layer, edit) -> None:
    info = json.loads((layer / "info").read_text())
    edit(info)
    (layer / "info").write_text(json.dumps(info))


BAD_INFOS = [
    ("negative size", lambda i: i["scales"][0].update(size=[-230, 210, 100]), "size must have 3 values, all positive"),
    ("zero resolution", lambda i: i["scales"][0].update(resolution=[0, 8, 40]), "resolution must have 3 values"),
    ("size as text", lambda i: i["scales"][0].update(size=["230", 210, 100]), "size must have 3 values"),
    ("float offset", lambda i: i["scales"][0].update(voxel_offset=[0.5, 0, 0]), "voxel_offset must have 3 values"),
    ("zero channels", lambda i: i.update(num_channels=0), "num_channels must be a whole number of at least 1"),
    ("unknown dtype", lambda i: i.update(data_type="uint128"), "unsupported data_type"),
    ("unknown encoding", lambda i: i["scales"][0].update(encoding="webp"), "unknown encoding 'webp'"),
    ("encoding cannot hold dtype", lambda i: i["scales"][0].update(encoding="compressed_segmentation"),
     "compressed_segmentation cannot hold uint8"),
    ("second chunk size zero", lambda i: i["scales"][0].update(chunk_sizes=[[64, 64, 64], [0, 64, 64]]), "chunk_sizes"),
    ("empty key", lambda i: i["scales"][0].update(key=""), "key must be a non-empty path"),
    ("bad sharding", lambda i: i["scales"][0].update(sharding={"@type": "neuroglancer_uint64_sharded_v1",
                                                                 "hash": "md5"}), "not a valid neuroglancer_uint64"),
]


@pytest.mark.parametrize("name,edit,expect", BAD_INFOS, ids=[b[0] for b in BAD_INFOS])
def test_malformed_info_is_refused_before_writing(tiny, name, edit, expect):
    """The issue's negative size ('nothing to do', exit 0) and zero resolution (rewrote the info)."""
    _edit_info(tiny / "image", edit)
    fails_cleanly(tiny, "image", "downsample", f"file://{tiny}/image", expect=expect)


BAD_OPTIONS = [
    # (command line after the layer URLs, expected text); {img} and {seg} are the sample layers
    ("image xfer {img} {out} --encoding jpeg --encoding-level 500", "jpeg quality must be 0 to 100"),
    ("image xfer {img} {out} --encoding png --encoding-level 10", "png compression level must be 0 to 9"),
    ("image xfer {img} {out} --encoding raw --encoding-level 5", "has no meaning for raw"),
    ("image downsample {img} --encoding-level 90", "has no meaning for raw"),
    ("image downsample {img} --bg-color 300", "--bg-color 300 does not fit the layer's uint8"),
    ("image downsample {img} --mip -1", "'--mip': -1 is not in the range x>=0"),
    ("image downsample {img} --num-mips 0", "'--num-mips': 0 is not in the range x>=1"),
    ("image downsample {img} --factor 0,2,1", "'--factor'"),
    ("image downsample {img} --memory -5", "'--memory': -5.0 is not in the range x>0"),
    ("image downsample {img} --method median", "'--method'"),
    ("image downsample {img} -p -2", "'-p' / '--parallel'"),
    ("-p -1 image downsample {img}", "'-p' / '--parallel'"),
    ("image xfer {img} {out} --max-mips -1", "'--max-mips'"),
    ("image xfer {img} {out} --shape 0,64,64", "'--shape'"),
    ("image rm {img} --num-mips 0", "'--num-mips'"),
    ("skeleton forge {seg} --scale -1", "'--scale': -1.0 is not in the range x>=0"),
    ("skeleton forge {seg} --scale 0 --const 0", "needs a positive invalidation radius"),
    ("skeleton forge {seg} --const -10", "'--const'"),
    ("skeleton forge {seg} --soma-detect -1", "'--soma-detect'"),
    ("skeleton forge {seg} --max-paths 0", "'--max-paths'"),
    ("skeleton forge {seg} --dust-threshold -1", "'--dust-threshold'"),
    ("skeleton forge {seg} --cross-section -3", "'--cross-section'"),
    ("skeleton forge {seg} --fill-holes 4", "'--fill-holes': 4 is not in the range 0<=x<=3"),
    ("skeleton merge {seg} --tick-threshold -1", "'--tick-threshold'"),
    ("skeleton merge {seg} --min-cable-length 100 --max-cable-length 10", "below --min-cable-length"),
    ("skeleton merge {seg} --magnitude 0", "'--magnitude'"),
    ("skeleton merge-sharded {seg} --min-shards 0", "'--min-shards'"),
    ("mesh forge {seg} --max-error -1", "'--max-error'"),
    ("mesh forge {seg} --dust-threshold -5", "'--dust-threshold'"),
    ("mesh forge {seg} --shape 64,0,64", "'--shape'"),
    ("mesh merge {seg} --vqb 12", "'--vqb': 12 is not one of 10, 16"),
    ("mesh merge {seg} --nlod -1", "'--nlod'"),
    ("mesh merge-sharded {seg} --compress-level 11", "'--compress-level'"),
    ("mesh merge-sharded {seg} --shard-index-bytes 0", "'--shard-index-bytes'"),
    ("mesh merge-sharded {seg} --max-labels-per-shard 0", "'--max-labels-per-shard'"),
    ("mesh xfer {seg} {out} --magnitude 9", "'--magnitude'"),
    ("execute fq://{root}/q --lease-sec 0", "'--lease-sec'"),
    ("execute fq://{root}/q --max-attempts -1", "'--max-attempts'"),
    ("execute fq://{root}/q -n -2", "'-n' / '--num-tasks'"),
    ("queue status fq://{root}/q --eta -1", "'--eta'"),
    ("queue wait fq://{root}/q --interval 0", "'--interval'"),
]


@pytest.mark.parametrize("line,expect", BAD_OPTIONS, ids=[b[0].split(" {")[0] + b[0].split("}")[-1] for b in BAD_OPTIONS])
def test_bad_option_values_are_refused_before_writing(tiny, line, expect):
    """Every numeric and enumerated option is range-checked: one line, exit 1, inputs untouched."""
    args = line.format(img=f"file://{tiny}/image", seg=f"file://{tiny}/segmentation",
                       out=f"file://{tiny}/out", root=tiny).split()
    fails_cleanly(tiny, *args, expect=expect)


def test_usage_errors_exit_1_in_one_line(tiny):
    stderr = fails_cleanly(tiny, "image", "downsample", expect="missing argument 'layer'")
    assert stderr.startswith("igneous-like: error: ")
