"""`queue mv` between FileQueues: igneous-like (whole task files renamed into DEST) against
Igneous's own `igneous queue mv`, side by side in one run on the same tasks.

    .venv/bin/python scripts/bench_queue_moves.py               # 2,000 tasks
    .venv/bin/python scripts/bench_queue_moves.py --tasks 20000

Both sources are filled by python-task-queue with the same diagnostic tasks; each move runs in
its own process. Prints CPU seconds (user + system of the process and its children; the figure
to compare on a shared machine) and wall seconds, checks that every task arrived, and prints
the CPU ratio ours/Igneous. Queues are deleted after.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from bench import measure_ok, print_side_by_side  # noqa: E402

OURS = [str(ROOT / ".venv" / "bin" / "python"), "-m", "igneous_like"]
IGNEOUS = [str(ROOT / ".venv-reference" / "bin" / "igneous")]

FILL = """
import sys
from functools import partial
from taskqueue import TaskQueue
from igneous_like.ops.diagnostic import sleep_task
TaskQueue(sys.argv[1], progress=False).insert([partial(sleep_task, 0, None, str(i)) for i in range(int(sys.argv[2]))])
"""


def tags(qdir: Path) -> list[str]:
    return sorted(json.loads(p.read_text())["payload"][1][2] for p in (qdir / "queue").glob("*.json"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=2000)
    args = ap.parse_args()
    if not Path(IGNEOUS[0]).exists():
        raise SystemExit(f"no Igneous reference at {IGNEOUS[0]}")
    work = Path(tempfile.mkdtemp(prefix="bench-queue-moves-"))
    try:
        results = {}
        for name, cli in (("igneous-like", OURS), ("Igneous", IGNEOUS)):
            src, dest = work / f"{name}-src", work / f"{name}-dest"
            subprocess.run([OURS[0], "-c", FILL, f"fq://{src}", str(args.tasks)], check=True)
            run = measure_ok([*cli, "queue", "mv", f"fq://{src}", f"fq://{dest}"], work / f"{name}.log")
            cpu, wall = run.cpu, run.wall
            assert tags(dest) == sorted(str(i) for i in range(args.tasks)), f"{name}: tasks lost or doubled"
            results[name] = (cpu, wall)
        print(f"queue mv of {args.tasks} tasks, FileQueue -> FileQueue")
        print_side_by_side(results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
