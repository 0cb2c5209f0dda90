"""A pipeline stage through a real SQS-speaking server (moto, started here on 127.0.0.1)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from conftest import run_cli, ts_read
from reference import average_pyramid


@pytest.fixture
def sqs_queue(moto):
    import boto3

    name = f"q-{uuid.uuid4().hex[:12]}"  # fresh per test: moto slows down with queue length
    client = boto3.client("sqs", endpoint_url=moto["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_queue(QueueName=name)
    return name, client


def test_downsample_through_sqs(layers, arrays, moto, sqs_queue):
    name, _ = sqs_queue
    run_cli("image", "downsample", f"file://{layers}/image", "--num-mips", "2", "--chunk-size", "64,64,64",
            "--queue", f"sqs://{name}", env=moto)
    status = run_cli("queue", "status", f"sqs://{name}", env=moto).stdout
    assert "enqueued   " in status and "approximately" in status
    run_cli("execute", f"sqs://{name}", "-p", "2", "-x", "-q", env=moto)
    assert "enqueued   0" in run_cli("queue", "status", f"sqs://{name}", env=moto).stdout
    ref = average_pyramid(arrays["image"], (2, 2, 1), 2)[1]
    got = ts_read(layers / "image", 2)[..., 0]
    assert np.abs(got.astype(int) - np.rint(ref).astype(int)).max() <= 1


def test_expired_lease_is_delivered_again(tmp_path, moto, sqs_queue):
    """A task whose worker vanishes (no delete) comes back after its lease and runs again."""
    name, client = sqs_queue
    log = tmp_path / "runs.log"
    env = {**os.environ, **moto}
    code = ("import os, sys; from functools import partial; from taskqueue import TaskQueue; "
            "from igneous_like.ops.diagnostic import sleep_task; "
            f"TaskQueue('sqs://{name}').insert([partial(sleep_task, 0, {str(log)!r}, 'once')])")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    # a worker leases the task for 2 s and dies without deleting it
    lease = ("from taskqueue import TaskQueue; "
             f"t = TaskQueue('sqs://{name}').lease(seconds=2, wait_sec=5); print(t.id[:8])")
    assert subprocess.run([sys.executable, "-c", lease], env=env, capture_output=True, text=True, check=True).stdout
    time.sleep(3)
    run_cli("execute", f"sqs://{name}", "-x", "-q", env=moto)
    assert log.read_text().count("once") == 1  # delivered again and run by the new worker
    attrs = client.get_queue_attributes(QueueUrl=client.get_queue_url(QueueName=name)["QueueUrl"],
                                        AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"


def test_sqs_failures_are_recorded_and_retried(tmp_path, moto, sqs_queue):
    """Failure records for SQS live where --failures says; after --max-attempts the task leaves
    the queue, `queue failures` shows it, `queue retry-failed` puts it back."""
    name, client = sqs_queue
    env = {**os.environ, **moto}
    code = ("from functools import partial; from taskqueue import TaskQueue; "
            "from igneous_like.ops.diagnostic import fail_task; "
            f"TaskQueue('sqs://{name}').insert([partial(fail_task, 'sqs boom')])")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    records = f"file://{tmp_path}/failures"
    proc = run_cli("execute", f"sqs://{name}", "-x", "-q", "--lease-sec", "1", "--max-attempts", "2",
                   "--failures", records, env=moto, check=False)
    assert proc.returncode == 3 and proc.stderr.count("sqs boom") >= 2
    listing = run_cli("queue", "failures", f"sqs://{name}", "--failures", records, env=moto).stdout
    assert "attempts=2 (gave up)" in listing and "RuntimeError: sqs boom" in listing
    assert "failed     1" in run_cli("queue", "status", f"sqs://{name}", "--failures", records, env=moto).stdout
    assert "re-queued 1" in run_cli("queue", "retry-failed", f"sqs://{name}", "--failures", records, env=moto).stdout
    url = client.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "1"
