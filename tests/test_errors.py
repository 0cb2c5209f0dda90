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
                  expect="chunk size must be positive")


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
                  expect="3 comma-separated", one_line=False)


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
