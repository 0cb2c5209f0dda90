"""Partial task files in a FileQueue: a planner SIGKILLed while a task body is half on disk leaves
queue/ holding only whole tasks, which python-task-queue itself leases; and a file that is not a
task anyway (an older run, another tool) is reported by name and set aside, recorded as a
failure, while every other task runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import is_json, run_cli

STALLING_CLI = Path(__file__).with_name("stalling_cli.py")


def virtual_layer(path, cols: int, rows: int) -> None:
    """An image layer with an info and no chunks (planning reads none): cols x rows tasks of
    256x256x64 for `image xfer --shape 256,256,64`."""
    path.mkdir()
    info = {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [{
        "key": "8_8_40", "resolution": [8, 8, 40], "voxel_offset": [0, 0, 0], "size": [256 * cols, 256 * rows, 64],
        "chunk_sizes": [[128, 128, 64]], "encoding": "raw"}]}
    (path / "info").write_text(json.dumps(info))


@pytest.mark.parametrize("cols,rows", [(10, 20), (160, 128)], ids=["serial", "parallel"])
def test_a_planner_killed_mid_insert_leaves_no_partial_task(tmp_path, cols, rows):
    from taskqueue import QueueEmptyError, TaskQueue

    from igneous_like.queues import PARALLEL_INSERT_MIN

    if cols * rows >= PARALLEL_INSERT_MIN and (os.cpu_count() or 1) < 2:
        pytest.skip("the parallel insert needs two cores")
    layer, q, mark = tmp_path / "layer", tmp_path / "q", tmp_path / "stalled"
    virtual_layer(layer, cols, rows)
    env = {**os.environ, "STALL_QDIR": str(q), "STALL_MARK": str(mark)}
    proc = subprocess.Popen([sys.executable, str(STALLING_CLI), "image", "xfer", f"file://{layer}", f"file://{tmp_path}/dest",
                             "--shape", "256,256,64", "--skip-downsample", "--encoding", "png", "--queue", f"fq://{q}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not mark.exists():
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the planner and its insert processes: no cleanup at all
        proc.wait()
    time.sleep(0.2)  # spawned processes die a moment after the group is signalled
    halves = [p for p in q.rglob("*") if p.is_file() and p.read_text().startswith("{") and not is_json(p)]
    assert halves, "the stall did not happen: nothing was tested"
    files = list((q / "queue").iterdir())
    assert files, "nothing reached the queue before the kill: nothing was tested"
    assert all(is_json(p) for p in files), [p.name for p in files if not is_json(p)]
    leased = TaskQueue(f"fq://{q}", progress=False).lease(seconds=60, num_tasks=len(files) + 10)  # the library itself
    leased = leased if isinstance(leased, list) else [leased]
    assert len(leased) == len(files)
    assert {t.key for t in leased} == {("igneous_like.ops.image.transfer", "transfer_task")}
    with pytest.raises(QueueEmptyError):
        TaskQueue(f"fq://{q}", progress=False).lease(seconds=60, num_tasks=1)


def test_an_unreadable_task_file_is_reported_and_set_aside_while_the_rest_run(tmp_path):
    import uuid
    from functools import partial

    from taskqueue import TaskQueue

    from igneous_like.ops.diagnostic import sleep_task

    q, log = tmp_path / "q", tmp_path / "runs.log"
    TaskQueue(f"fq://{q}", progress=False).insert([partial(sleep_task, 0, str(log), str(i)) for i in range(6)])
    half = sorted((q / "queue").iterdir())[0]
    lost = json.loads(half.read_text())["payload"][1][2]  # its tag
    half.write_text(half.read_text()[:40])  # a task body cut off mid-write
    empty = q / "queue" / f"0--{uuid.uuid4()}.json"  # created, never written
    empty.write_text("")
    for path in (half, empty):
        os.utime(path, (time.time() - 3600,) * 2)  # left by a writer killed an hour ago
    young = q / "queue" / f"0--{uuid.uuid4()}.json"  # may still be being written: left alone
    young.write_text("")
    bad = {half.name: half.read_bytes(), empty.name: b""}

    copied = run_cli("queue", "cp", f"fq://{q}", f"fq://{tmp_path}/copy")  # SRC untouched, the rest copied
    assert "copied 5 task(s)" in copied.stdout
    assert sorted(line.split()[4].rstrip(":") for line in copied.stderr.splitlines() if "unreadable task file" in line) \
        == sorted(str(p) for p in (half, empty, young))

    proc = run_cli("execute", f"fq://{q}", "-p", "1", "-x", "-q", "--lease-sec", "60", check=False)
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2 and "Traceback" not in proc.stderr, proc.stderr
    for name in bad:
        (line,) = [e for e in errors if name in e]
        assert line.startswith(f"ERROR unreadable task file {q}/queue/{name}: JSONDecodeError")
        assert line.endswith(f"moved to {q}/unreadable/{name}")
    assert f"WARNING unreadable task file {young}" in proc.stderr and "maybe still being written" in proc.stderr
    assert sorted(line.split()[0] for line in log.read_text().splitlines()) == sorted({str(i) for i in range(6)} - {lost})
    assert {p.name: p.read_bytes() for p in (q / "unreadable").iterdir()} == bad  # set aside whole
    assert [p.name.split("--")[1] for p in (q / "queue").iterdir()] == [young.name.split("--")[1]]  # leased

    rows = dict(line.split(None, 1) for line in run_cli("queue", "status", f"fq://{q}").stdout.splitlines())
    assert rows["completed"] == "5" and rows["failed"] == "3" and rows["enqueued"].startswith("1 (leased 1)")
    listed = run_cli("queue", "failures", f"fq://{q}").stdout.splitlines()
    for name in bad:  # set aside: given up
        assert any(f"(gave up)  {q}/unreadable/{name}" in line for line in listed), listed
    assert any(f"(queued)  {young}" in line for line in listed) and "3 failed task(s)" in listed
    assert "re-queued 0" in run_cli("queue", "retry-failed", f"fq://{q}").stdout  # nothing to run in them
    run_cli("queue", "purge", f"fq://{q}")
    assert not (q / "unreadable").exists() and not list((q / "queue").iterdir())


def test_queue_mv_sets_an_unreadable_task_file_aside_and_moves_the_rest(tmp_path):
    from functools import partial

    from taskqueue import TaskQueue

    from igneous_like.ops.diagnostic import sleep_task

    src, dest = tmp_path / "src", tmp_path / "dest"
    TaskQueue(f"fq://{src}", progress=False).insert([partial(sleep_task, 0, None, str(i)) for i in range(5)])
    bad = src / "queue" / "0--00000000-1111-2222-3333-444444444444.json"
    bad.write_text('{"payload": 3}')  # JSON, but not a task
    os.utime(bad, (time.time() - 3600,) * 2)
    proc = run_cli("queue", "mv", f"fq://{src}", f"fq://{dest}")
    assert "moved 5 task(s)" in proc.stdout
    assert f"ERROR unreadable task file {bad}: ValueError: not a task" in proc.stderr
    assert [p.name for p in (src / "unreadable").iterdir()] == [bad.name] and not list((src / "queue").iterdir())
    assert len(list((dest / "queue").iterdir())) == 5
    assert "1 failed task(s)" in run_cli("queue", "failures", f"fq://{src}").stdout


# Each child inserts one task at a time through queues.insert_tasks, as a task that queues the
# next pass does. argv: queue URL, how many.
CONCURRENT_INSERTER = r"""
import functools, sys
from igneous_like import queues
from igneous_like.ops.delete import delete_shards_task
for i in range(int(sys.argv[2])):
    queues.insert_tasks(sys.argv[1], [functools.partial(delete_shards_task, "file:///nowhere", f"x{i}")], 1)
"""


def test_concurrent_inserters_lose_no_count(tmp_path):
    """python-task-queue's own counter update empties the file before it locks it, so processes
    inserting at the same time lose counts; ours adds under one lock (fq_atomic)."""
    queue, children, each = f"fq://{tmp_path / 'q'}", 4, 60
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_INSERTER, queue, str(each)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(children)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    status = run_cli("queue", "status", queue).stdout
    total = children * each
    assert f"inserted   {total}\n" in status and f"enqueued   {total} " in status, status
