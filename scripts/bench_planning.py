"""Planning at scale: plan and insert N downsample tasks for a huge virtual volume (an info file
only, no chunks) into a FileQueue, and compare with python-task-queue inserting the same
number of tasks its standard way, side by side in one run.

    .venv/bin/python scripts/bench_planning.py                 # 200,000 tasks each
    .venv/bin/python scripts/bench_planning.py --tasks 1000000

Prints tasks/s, wall seconds and the producer's peak RSS for both, and the ratio. The target
(issue 6): at least 2x task-queue's rate with bounded producer memory. Queues are deleted after.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = ROOT / ".venv" / "bin" / "python"
sys.path.insert(0, str(ROOT / "scripts"))
from bench import measure_ok  # noqa: E402

BASELINE = r"""
import sys, time
from functools import partial
from taskqueue import TaskQueue
from igneous_like.ops.image.downsample import downsample_task
n, url, layer = int(sys.argv[1]), sys.argv[2], sys.argv[3]
side = 256
per_row = 4096
tasks = (partial(downsample_task, layer, 0, [x * side, y * side, 0, (x + 1) * side, (y + 1) * side, 64], 1,
                 [2, 2, 1], "avg", False, False, False, False, 0)
         for i in range(n) for x, y in [(i % per_row, i // per_row)])
TaskQueue(url, progress=False).insert(tasks, total=n)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--baseline-tasks", type=int, default=None,
                    help="tasks for the task-queue baseline (default: --tasks); rates are compared")
    ap.add_argument("--out", default=None, help="working directory (default: a temp dir on /tmp)")
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="bench-planning-"))
    work.mkdir(parents=True, exist_ok=True)
    side, per_row = 256, 4096
    rows = math.ceil(args.tasks / per_row)
    layer = work / "virtual"
    layer.mkdir(exist_ok=True)
    # x spans 4096 tasks of 256 voxels; y as many rows as needed; one task deep in z
    size = [per_row * side, rows * side, 64]
    info = {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [{
        "key": "8_8_40", "resolution": [8, 8, 40], "voxel_offset": [0, 0, 0], "size": size,
        "chunk_sizes": [[128, 128, 64]], "encoding": "raw"}]}
    (layer / "info").write_text(json.dumps(info))
    n = args.tasks
    yrange = f"0,{math.ceil(n / per_row) * side}"
    results = {}

    ours_q = work / "ours-q"
    cmd = [str(PY), "-m", "igneous_like", "image", "downsample", f"file://{layer}", "--num-mips", "1",
           "--chunk-size", "128,128,64", "--yrange", yrange, "--queue", f"fq://{ours_q}"]
    run = measure_ok(cmd, work / "ours.log")
    wall, rss = run.wall, run.rss_mib
    inserted = int((ours_q / "insertions").read_text())
    results["igneous-like (plan + insert)"] = (inserted, wall, rss)
    shutil.rmtree(ours_q)
    (layer / "info").write_text(json.dumps(info))

    base_q = work / "taskqueue-q"
    run = measure_ok([str(PY), "-c", BASELINE, str(args.baseline_tasks or n), f"fq://{base_q}", f"file://{layer}"],
                     work / "taskqueue.log")
    wall, rss = run.wall, run.rss_mib
    inserted = int((base_q / "insertions").read_text())
    results["python-task-queue insert"] = (inserted, wall, rss)
    shutil.rmtree(base_q)

    print(f"{'producer':32} {'tasks':>9} {'wall s':>8} {'tasks/s':>9} {'peak RSS MiB':>13}")
    for name, (count, wall, rss) in results.items():
        print(f"{name:32} {count:>9} {wall:>8.1f} {count / wall:>9.0f} {rss:>13.0f}")
    ours, base = results["igneous-like (plan + insert)"], results["python-task-queue insert"]
    ratio = (ours[0] / ours[1]) / (base[0] / base[1])
    print(f"rate ratio igneous-like / task-queue: {ratio:.2f} (target >= 2.0); cores: {os.cpu_count()}")
    if args.out is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
