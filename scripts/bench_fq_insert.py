"""Planner inserts into a FileQueue: `image xfer --queue fq://...` of igneous-like against
Igneous's own `igneous image xfer --queue`, side by side in one run on the same layer.

    .venv/bin/python scripts/bench_fq_insert.py                   # 20,000 tasks
    .venv/bin/python scripts/bench_fq_insert.py --tasks 10000     # below the parallel-insert size

The layer is "virtual": an info file and no chunks (planning reads none); both tools get
`--shape 256,256,64 --skip-downsample --encoding png` (png, so not a byte-for-byte copy, whose
task shape is fixed), so both plan --tasks tasks (rounded up to a rectangle). Each planner
runs in its own process; CPU seconds are user + system of it and its children (the figure to
compare on a shared machine). Checks that every task file in queue/ is whole JSON and that the
counts agree, then prints the CPU ratio ours/Igneous. Queues are deleted after.

Then, to see the cost of writing each task whole and renaming it (before and after igneous-like
planners went through fq_atomic), the insert call alone on the same task bodies, in this process,
one thread, batches of 10 as TaskQueue hands them out: python-task-queue's
FileQueueAPI.insert (straight to queue/) against AtomicFileQueueAPI.insert (incoming/, then
rename), alternating, --repeat times each; prints the median CPU seconds of each. File creation
on a shared disk varies a lot from run to run; `--dir /dev/shm` takes the disk out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from bench import measure_ok, print_side_by_side  # noqa: E402

OURS = [str(ROOT / ".venv" / "bin" / "python"), "-m", "igneous_like"]
IGNEOUS = [str(ROOT / ".venv-reference" / "bin" / "igneous")]
TASK_XY, TASK_Z = 256, 64


def virtual_layer(path: Path, cols: int, rows: int) -> None:
    """An image layer with an info and no chunks: cols x rows tasks of TASK_XY x TASK_XY x TASK_Z."""
    path.mkdir(parents=True)
    info = {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [{
        "key": "8_8_40", "resolution": [8, 8, 40], "voxel_offset": [0, 0, 0],
        "size": [TASK_XY * cols, TASK_XY * rows, TASK_Z], "chunk_sizes": [[128, 128, TASK_Z]], "encoding": "raw"}]}
    (path / "info").write_text(json.dumps(info))


def whole_tasks(qdir: Path) -> int:
    """How many task files the queue holds, failing on any that is not whole JSON."""
    n = 0
    for path in (qdir / "queue").iterdir():
        json.loads(path.read_text())
        n += 1
    return n


def api_inserts(n: int, repeat: int, where: str | None) -> dict[str, float]:
    """Median CPU seconds of inserting n task bodies through each FileQueue insert."""
    from functools import partial

    from taskqueue.file_queue_api import FileQueueAPI

    from igneous_like.fq_atomic import AtomicFileQueueAPI
    from igneous_like.ops.diagnostic import sleep_task
    from igneous_like.queues import as_function_tasks

    tasks = as_function_tasks(partial(sleep_task, 0, None, str(i)) for i in range(n))
    bodies = [{"payload": t.payload(), "queueName": "bench"} for t in tasks]
    cpu: dict[str, list[float]] = {"python-task-queue": [], "fq_atomic": []}
    for _ in range(repeat):
        for name, cls in (("python-task-queue", FileQueueAPI), ("fq_atomic", AtomicFileQueueAPI)):
            qdir = tempfile.mkdtemp(prefix="bench-fq-api-", dir=where)
            try:
                api = cls(qdir)
                t0 = time.process_time()
                for i in range(0, n, 10):
                    api.insert([dict(b) for b in bodies[i : i + 10]])
                cpu[name].append(time.process_time() - t0)
            finally:
                shutil.rmtree(qdir, ignore_errors=True)
    return {name: statistics.median(v) for name, v in cpu.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each insert call alone")
    ap.add_argument("--dir", default=None, help="where the insert-call queues go (default: the temp dir)")
    args = ap.parse_args()
    if not Path(IGNEOUS[0]).exists():
        raise SystemExit(f"no Igneous reference at {IGNEOUS[0]}")
    cols = math.isqrt(args.tasks)
    rows = -(-args.tasks // cols)
    work = Path(tempfile.mkdtemp(prefix="bench-fq-insert-"))
    try:
        results = {}
        for name, cli in (("igneous-like", OURS), ("Igneous", IGNEOUS)):
            layer, q = work / f"{name}-layer", work / f"{name}-q"
            virtual_layer(layer, cols, rows)
            run = measure_ok([*cli, "image", "xfer", f"file://{layer}", f"file://{work}/{name}-dest",
                              "--shape", f"{TASK_XY},{TASK_XY},{TASK_Z}", "--skip-downsample", "--encoding", "png",
                              "--queue", f"fq://{q}"], work / f"{name}.log")
            results[name] = (run.cpu, run.wall, whole_tasks(q))
        counts = {r[2] for r in results.values()}
        assert len(counts) == 1, f"the tools planned different task counts: {results}"
        print(f"image xfer --queue fq://: {counts.pop()} tasks inserted, {os.cpu_count()} cores")
        print_side_by_side(results)
        api = api_inserts(args.tasks, args.repeat, args.dir)
        print(f"insert call alone, {args.tasks} tasks, one thread, median CPU of {args.repeat} runs in {args.dir or tempfile.gettempdir()}")
        for name, cpu in api.items():
            print(f"  {name:17s} CPU {cpu:6.2f} s")
        print(f"  CPU ratio fq_atomic/python-task-queue: {api['fq_atomic'] / api['python-task-queue']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
