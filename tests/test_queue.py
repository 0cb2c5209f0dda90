"""execute and queue commands against a real FileQueue and real worker processes."""
from __future__ import annotations

import subprocess
import sys

from conftest import run_cli


def enqueue(layers, q, *extra):
    run_cli("image", "downsample", f"file://{layers}/image", "--num-mips", "1", "--chunk-size", "32,32,32",
            "--queue", f"fq://{q}", *extra)


def counts(q) -> dict:
    out = run_cli("queue", "status", f"fq://{q}").stdout
    rows = dict(line.split(None, 1) for line in out.strip().splitlines())
    return {k: int(v.split()[0]) for k, v in rows.items() if k != "queue"}


def test_num_tasks_and_min_sec_limit_the_work(layers):
    q = layers / "q"
    enqueue(layers, q)
    total = counts(q)["inserted"]
    assert total >= 4
    run_cli("execute", f"fq://{q}", "-n", "2", "-q")
    assert counts(q)["completed"] == 2
    run_cli("execute", f"fq://{q}", "--min-sec", "0", "-q")
    assert counts(q)["completed"] == 3
    run_cli("-p", "2", "execute", f"fq://{q}", "-x", "-q")  # root-level -p, as Igneous users type it
    c = counts(q)
    assert c["enqueued"] == 0 and c["completed"] == total


def test_bare_path_means_file_queue(layers):
    q = layers / "plainq"
    enqueue(layers, str(q))
    run_cli("execute", str(q), "-x", "-q")
    assert counts(q)["enqueued"] == 0


def test_failed_task_gives_up_after_max_attempts_and_can_be_retried(layers):
    q = layers / "q"
    enqueue(layers, q)
    bad = layers / "image" / "8_8_40" / "0-64_0-64_0-64"
    good = bad.read_bytes()
    bad.write_bytes(b"broken")
    # lease 1 s so the failed task comes back quickly; one attempt allowed
    proc = run_cli("execute", f"fq://{q}", "-x", "-q", "--lease-sec", "1", "--max-attempts", "1", check=False)
    assert proc.returncode == 3 and "0-64_0-64_0-64" in proc.stderr
    c = counts(q)
    assert c["enqueued"] == 0 and c["failed"] == 1
    bad.write_bytes(good)
    assert "re-queued 1" in run_cli("queue", "retry-failed", f"fq://{q}").stdout
    run_cli("execute", f"fq://{q}", "-x", "-q")
    c = counts(q)
    assert c["enqueued"] == 0 and c["failed"] == 0


def test_release_purge_and_wait(layers):
    q = layers / "q"
    enqueue(layers, q)
    run_cli("queue", "release", f"fq://{q}")
    run_cli("queue", "purge", f"fq://{q}")
    c = counts(q)
    assert c["enqueued"] == 0 and c["inserted"] == 0
    assert "empty" in run_cli("queue", "wait", f"fq://{q}", "--interval", "0.1").stdout


def test_status_eta(layers):
    q = layers / "q"
    enqueue(layers, q)
    out = run_cli("queue", "status", f"fq://{q}", "--eta", "0.5").stdout
    assert "rate" in out and "ETA" in out


def test_help_is_fast_because_nothing_heavy_is_imported():
    code = ("import sys, igneous_like.cli; "
            "heavy = [m for m in ('numpy', 'cloudvolume', 'taskqueue', 'tinybrain') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert "igneous-like" in run_cli("--help").stdout
    commands = ["image downsample", "image xfer", "image rm", "mesh forge", "mesh merge", "mesh merge-sharded",
                "mesh xfer", "mesh clean", "mesh rm", "skeleton forge", "skeleton merge", "skeleton merge-sharded",
                "skeleton xfer", "skeleton convert", "skeleton clean", "skeleton rm", "execute", "queue status",
                "queue failures", "queue retry-failed", "queue release", "queue purge", "queue wait", "verify"]
    for command in commands:  # every command's help carries an example
        assert "Example" in run_cli(*command.split(), "--help").stdout, command


def test_lease_is_renewed_while_a_slow_task_runs(tmp_path):
    """A task longer than its lease must not be handed to a second worker while the first lives."""
    from functools import partial

    from taskqueue import TaskQueue

    from igneous_like.ops.diagnostic import sleep_task

    q, log = tmp_path / "q", tmp_path / "runs.log"
    TaskQueue(f"fq://{q}").insert([partial(sleep_task, 5, str(log), "slow")])
    run_cli("execute", f"fq://{q}", "-p", "2", "--lease-sec", "2", "--min-sec", "8", "-q")
    runs = log.read_text().splitlines()
    assert len(runs) == 1, runs
    assert counts(q)["enqueued"] == 0


def test_failing_task_is_recorded_with_traceback(tmp_path):
    import json
    from functools import partial

    from taskqueue import TaskQueue

    from igneous_like.ops.diagnostic import fail_task

    q = tmp_path / "q"
    TaskQueue(f"fq://{q}").insert([partial(fail_task, "boom 42")])
    proc = run_cli("execute", f"fq://{q}", "-x", "--max-attempts", "0", check=False)
    assert proc.returncode == 3 and "boom 42" in proc.stderr and "Traceback" in proc.stderr
    (rec,) = [json.loads(p.read_text()) for p in (q / "failures").glob("*.json")]
    assert rec["error"] == "RuntimeError: boom 42" and "fail_task" in rec["traceback"] and rec["attempts"] == 1
    assert counts(q)["enqueued"] == 1  # still queued for another try


def test_large_plans_insert_in_parallel_with_exact_counts(tmp_path):
    """Over 20,000 tasks go in through one process per core; every task arrives once, intact."""
    import json

    layer = tmp_path / "virtual"
    layer.mkdir()
    info = {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [{
        "key": "8_8_40", "resolution": [8, 8, 40], "voxel_offset": [0, 0, 0], "size": [160 * 256, 160 * 256, 64],
        "chunk_sizes": [[128, 128, 64]], "encoding": "raw"}]}
    (layer / "info").write_text(json.dumps(info))
    q = tmp_path / "q"
    run_cli("image", "downsample", f"file://{layer}", "--num-mips", "1", "--queue", f"fq://{q}")
    c = counts(q)
    assert c["inserted"] == c["enqueued"] == 160 * 160
    boxes = set()
    for path in (q / "queue").iterdir():
        payload = json.loads(path.read_text())["payload"]
        assert payload[0] == ["igneous_like.ops.image.downsample", "downsample_task"]
        boxes.add(tuple(payload[1][2]))
    assert len(boxes) == 160 * 160  # no task twice, none lost
    proc = run_cli("execute", f"fq://{q}", "-n", "1", "--max-attempts", "1", check=False)
    assert "missing chunk" in proc.stderr  # a real task ran: the volume has no chunks


def test_exit_on_empty_waits_only_for_tasks_still_running(tmp_path):
    """`execute -x` must not leave while a leased task may still queue the next phase of a
    phased job, but must leave when the only leased tasks are failed ones waiting out their lease."""
    from taskqueue import PrintTask, TaskQueue

    from igneous_like.queues import failures_url, others_running

    tq = TaskQueue(f"fq://{tmp_path}/q")
    tq.insert([PrintTask("a")])
    records = failures_url(tq)
    assert not others_running(tq, records)  # queued, not leased
    task = tq.lease(seconds=60)
    assert others_running(tq, records)  # running somewhere
    (tmp_path / "q" / "failures").mkdir(exist_ok=True)
    (tmp_path / "q" / "failures" / f"{task.id}.json").write_text("{}")
    assert not others_running(tq, records)  # failed: left for its lease to run out


def test_progress_line_gives_slow_rates_per_minute():
    """A forge task takes about a minute: its rate reads per minute, not "0.0/s"."""
    from igneous_like.progress import Progress

    p = Progress("Executing", 32, quiet=True)
    p.start -= 100.0
    p.count = 3
    assert p.line().endswith("(1.8/min)")
    p.count = 50
    assert p.line().endswith("(0.5/s)")
