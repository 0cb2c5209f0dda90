"""queue cp / mv / rezero between FileQueues and SQS (moto): every task arrives, a move cut
off by SIGKILL loses none, and moved work still runs."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from conftest import is_json, run_cli, ts_read


def insert_tagged(queue: str, n: int, env: dict | None = None) -> None:
    """n diagnostic tasks tagged 0..n-1, inserted through python-task-queue itself."""
    import os

    code = ("from functools import partial; from taskqueue import TaskQueue; "
            "from igneous_like.ops.diagnostic import sleep_task; "
            f"TaskQueue({queue!r}).insert([partial(sleep_task, 0, None, str(i)) for i in range({n})])")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, **(env or {})}, timeout=300)


def fq_tags(qdir) -> Counter:
    """Tags of every task file in a FileQueue, leased or not (read as JSON, not via our code)."""
    import json

    tags = Counter()
    for path in (qdir / "queue").glob("*.json"):  # every file whole, even after a SIGKILL
        tags[json.loads(path.read_text())["payload"][1][2]] += 1
    return tags


def fq_payloads(qdir) -> list[str]:
    """Function, args and kwargs of every task in a FileQueue (ids and queue names differ)."""
    import json

    return sorted(json.dumps(json.loads(p.read_text())["payload"][:3]) for p in (qdir / "queue").glob("*.json"))


def status(queue: str, env: dict | None = None) -> dict:
    out = run_cli("queue", "status", queue, env=env).stdout
    rows = dict(line.split(None, 1) for line in out.strip().splitlines())
    return {k: v.split()[0] for k, v in rows.items()}


def fq_counters(qdir) -> tuple[int, int]:
    """(inserted, completed) as python-task-queue itself reads them."""
    from taskqueue import TaskQueue

    tq = TaskQueue(f"fq://{qdir}", progress=False)
    return tq.inserted, tq.completed


def test_cp_mv_rezero_between_file_queues_and_the_work_still_runs(layers):
    a, b, c = layers / "a", layers / "b", layers / "c"
    run_cli("image", "downsample", layers / "image", "--num-mips", "1", "--chunk-size", "32,32,32",
            "--queue", f"fq://{a}")
    tasks = fq_payloads(a)
    assert "copied" in run_cli("queue", "cp", f"fq://{a}", f"fq://{b}").stdout
    assert fq_payloads(b) == tasks
    assert fq_payloads(a) == tasks  # cp leaves SRC whole
    assert f"moved {len(tasks)} task(s)" in run_cli("queue", "mv", f"fq://{a}", f"fq://{c}").stdout
    assert fq_payloads(a) == [] and fq_payloads(c) == tasks and fq_counters(c)[0] == len(tasks)
    run_cli("execute", f"fq://{c}", "-p", "2", "-x", "-q")
    mip1 = ts_read(layers / "image", 1)
    assert mip1.shape[:3] == (115, 105, 100) and mip1.any()
    assert "counters zeroed" in run_cli("queue", "rezero", f"fq://{c}").stdout
    assert fq_counters(c) == (0, 0)


def test_a_killed_move_loses_nothing(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    n = 1500
    insert_tagged(f"fq://{src}", n)
    proc = subprocess.Popen([sys.executable, "-m", "igneous_like", "queue", "mv", f"fq://{src}", f"fq://{dest}",
                             "--lease-sec", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (dest / "queue").is_dir() or not any((dest / "queue").iterdir()):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.kill()  # SIGKILL mid-move: no cleanup of any kind
    proc.wait()
    left, arrived = fq_tags(src), fq_tags(dest)
    assert sum(left.values()) > 0, "the move finished before the kill: nothing was tested"
    assert set(left) | set(arrived) == {str(i) for i in range(n)}  # every task is somewhere
    time.sleep(1.1)  # the killed batch's leases run out
    run_cli("queue", "mv", f"fq://{src}", f"fq://{dest}")
    arrived = fq_tags(dest)
    assert not fq_tags(src) and set(arrived) == {str(i) for i in range(n)}
    assert sum(arrived.values()) - n <= 100  # at most the one batch in flight arrives twice


STALLING_CLI = Path(__file__).with_name("stalling_cli.py")  # the 30th task body written to DEST stalls half-written


def test_a_move_killed_mid_write_leaves_no_partial_task_to_lease(tmp_path):
    import os

    from taskqueue import QueueEmptyError, TaskQueue

    src, dest, mark = tmp_path / "src", tmp_path / "dest", tmp_path / "stalled"
    n = 120
    insert_tagged(f"fq://{src}", n)
    proc = subprocess.Popen([sys.executable, str(STALLING_CLI), "queue", "mv", f"fq://{src}", f"fq://{dest}",
                             "--lease-sec", "1"], env={**os.environ, "STALL_QDIR": str(dest), "STALL_MARK": str(mark)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not mark.exists():
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    proc.kill()  # SIGKILL while a task body is half on disk
    proc.wait()
    halves = [p for p in dest.rglob("*") if p.is_file() and p.read_text().startswith("{") and not is_json(p)]
    assert len(halves) == 1, "the stall did not happen: nothing was tested"
    files = list((dest / "queue").glob("*"))
    assert files and halves[0] not in files
    arrived = fq_tags(dest)  # raises on a half-written file
    assert sum(arrived.values()) == len(files)
    leased = TaskQueue(f"fq://{dest}", progress=False).lease(seconds=60, num_tasks=n)  # the library itself
    leased = leased if isinstance(leased, list) else [leased]
    assert len(leased) == len(files)
    with pytest.raises(QueueEmptyError):
        TaskQueue(f"fq://{dest}", progress=False).lease(seconds=60, num_tasks=1)
    time.sleep(1.1)  # the killed batch's SRC leases run out; the rest moves and runs
    TaskQueue(f"fq://{dest}", progress=False).release_all()
    os.utime(halves[0], (0, 0))  # as if left an hour ago: the next move removes it
    run_cli("queue", "mv", f"fq://{src}", f"fq://{dest}")
    assert not halves[0].exists()
    assert set(fq_tags(dest)) == {str(i) for i in range(n)} and not fq_tags(src)
    run_cli("execute", f"fq://{dest}", "-x", "-q")
    assert not list((dest / "queue").glob("*")) and fq_counters(dest)[1] >= n


def test_cp_and_mv_through_sqs(tmp_path, moto):
    import boto3

    name = f"q-{uuid.uuid4().hex[:12]}"
    boto3.client("sqs", endpoint_url=moto["AWS_ENDPOINT_URL"], region_name="us-east-1").create_queue(QueueName=name)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    n = 35
    insert_tagged(f"fq://{a}", n)
    everything = Counter(str(i) for i in range(n))
    assert f"moved {n}" in run_cli("queue", "mv", f"fq://{a}", f"sqs://{name}", env=moto).stdout
    assert not fq_tags(a)
    assert f"copied {n}" in run_cli("queue", "cp", f"sqs://{name}", f"fq://{b}", env=moto).stdout
    assert fq_tags(b) == everything
    assert f"moved {n}" in run_cli("queue", "mv", f"sqs://{name}", f"fq://{c}", env=moto).stdout  # cp kept them
    assert fq_tags(c) == everything
    assert status(f"sqs://{name}", env=moto)["enqueued"] == "0"
    assert "SQS keeps no counters" in run_cli("queue", "rezero", f"sqs://{name}", env=moto).stdout
    run_cli("execute", f"fq://{c}", "-x", "-q")
    assert fq_counters(c)[1] == n


def test_queue_move_errors(tmp_path):
    for args, message in ((["mv", f"fq://{tmp_path}/none", f"fq://{tmp_path}/b"], "no queue at"),
                          (["cp", f"fq://{tmp_path}/a", f"fq://{tmp_path}/a"], "same queue"),
                          (["cp", "http://x", f"fq://{tmp_path}/b"], "bad queue URL"),
                          (["rezero", f"fq://{tmp_path}/none"], "no queue at")):
        proc = run_cli("queue", *args, check=False)
        assert proc.returncode == 1 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
