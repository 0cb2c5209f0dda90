"""Transient storage errors (HTTP 503, SlowDown throttling, connection resets) injected by a
proxy in front of the S3 server are retried inside the task: the queue's attempt budget
(--max-attempts 1 here) is never touched, and the output is what a clean run writes."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli, upload_layer
from faulty_proxy import FaultyProxy

REGIONS = {"a": ("0,64", "0,64", "0,32"), "b": ("0,64", "0,64", "32,40")}  # one downsample task each


@pytest.fixture(scope="module")
def layer(tmp_path_factory, moto):
    """A small image on file:// (downsampled there as the reference) and the same on S3."""
    import uuid

    import boto3

    from igneous_like import sample

    root = tmp_path_factory.mktemp("flaky")
    img = sample.image_from(sample.segmentation((96, 80, 40), seed=7, cells=6), seed=8)
    sample.write_layer(f"file://{root}/image", img, "image", chunk=(32, 32, 32))
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(Bucket=bucket)
    upload_layer(root / "image", f"s3://{bucket}/image")
    run_cli("image", "downsample", f"file://{root}/image", "--num-mips", "1")
    return root, f"s3://{bucket}/image"


def downsample_through(proxy: FaultyProxy, url: str, region: str, queue, moto: dict, **env: str):
    """Plan one task (cleanly), then run it with every request going through the proxy."""
    x, y, z = REGIONS[region]
    run_cli("image", "downsample", url, "--num-mips", "1", "--xrange", x, "--yrange", y, "--zrange", z,
            "--queue", f"fq://{queue}", env=moto)
    proc = run_cli("execute", f"fq://{queue}", "-x", "--max-attempts", "1",
                   env={**moto, "AWS_ENDPOINT_URL": proxy.url, **env})
    status = run_cli("queue", "status", f"fq://{queue}").stdout
    assert "completed  1" in status and "failed     0" in status, status
    return proc.stderr


def assert_region_matches(layer, region: str, moto: dict) -> None:
    """tensorstore reads the task's output on S3 (only its chunks) and the file:// reference."""
    import tensorstore as ts

    from test_object_storage import s3_kvstore

    root, url = layer
    x, y, z = (tuple(int(v) for v in r.split(",")) for r in REGIONS[region])
    part = np.s_[x[0] // 2:x[1] // 2, y[0] // 2:y[1] // 2, z[0]:z[1]]

    def read(kvstore: dict) -> np.ndarray:
        spec = {"driver": "neuroglancer_precomputed", "kvstore": kvstore, "scale_index": 1,
                "fill_missing_data_reads": False}
        return np.asarray(ts.open(spec, read=True).result()[part].read().result())

    assert np.array_equal(read(s3_kvstore(url, moto)), read({"driver": "file", "path": f"{root}/image/"}))


def test_flaky_store_costs_no_queue_attempt(layer, moto, tmp_path):
    """Two failures per object and request kind: botocore and cloud-files absorb them."""
    with FaultyProxy(moto["AWS_ENDPOINT_URL"], failures=2) as proxy:
        downsample_through(proxy, layer[1], "a", tmp_path / "q", moto)
    assert set(proxy.injected) == {"503", "throttle", "reset"}, proxy.injected
    assert sum(proxy.injected.values()) >= 6
    assert_region_matches(layer, "a", moto)


def test_errors_past_the_library_budgets_rerun_the_task(layer, moto, tmp_path):
    """With botocore at one attempt and cloud-files at two, three failures per object get
    through the libraries: the task itself is run again (logged), still in one queue attempt."""
    knobs = {"AWS_MAX_ATTEMPTS": "1", "IGNEOUS_LIKE_STORAGE_ATTEMPTS": "2", "IGNEOUS_LIKE_STORAGE_MAX_WAIT": "0.1",
             "IGNEOUS_LIKE_RETRY_DELAY": "0.1"}
    with FaultyProxy(moto["AWS_ENDPOINT_URL"], failures=3, only=("GET",)) as proxy:
        log = downsample_through(proxy, layer[1], "b", tmp_path / "q", moto, **knobs)
    assert "WARNING storage retry 1 of S3Interface.get_file" in log, log
    assert "WARNING transient storage error, task run again" in log, log
    assert "ERROR" not in log, log
    assert_region_matches(layer, "b", moto)


def test_a_corrupt_chunk_is_not_retried(layers):
    """Bad data is not transient: the task fails at once (the retry layer does not hide it)."""
    (layers / "image" / "8_8_40" / "0-64_0-64_0-64").write_bytes(b"garbage")
    proc = run_cli("image", "downsample", f"file://{layers}/image", "--num-mips", "1", check=False,
                   env={"IGNEOUS_LIKE_RETRY_DELAY": "30"}, timeout=25)
    assert proc.returncode == 1 and "task run again" not in proc.stderr and "0-64_0-64_0-64" in proc.stderr
