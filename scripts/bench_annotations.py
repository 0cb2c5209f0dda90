"""One million synapse-like points from CSV into an annotation layer through a FileQueue with
`execute -p 2`: wall time per phase, the CPU seconds of all processes, and the peak RSS of the
largest single process (a worker or the planner), as ru_maxrss of waited children reports it.
Partitions and map row ranges are the planner's default unless --partitions is given.

    .venv/bin/python scripts/bench_annotations.py [--rows 1000000] [--dir /tmp/bench-ann] [--partitions P]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_csv(path: Path, rows: int) -> None:
    """Clustered points (half in 20 dense blobs) in a 40000x40000x8000-voxel volume, uint64
    ids above 2^32, a score and a pre-synaptic segment id."""
    rng = np.random.default_rng(0)
    centres = rng.uniform((0, 0, 0), (40000, 40000, 8000), size=(20, 3))
    blob = centres[rng.integers(0, 20, rows // 2)] + rng.normal(0, 300, size=(rows // 2, 3))
    pts = np.clip(np.concatenate([blob, rng.uniform((0, 0, 0), (40000, 40000, 8000), size=(rows - rows // 2, 3))]),
                  0, [39999, 39999, 7999])
    ids = np.arange(rows, dtype=np.uint64) * 7 + 2**33
    seg = rng.integers(1, 200_000, rows) + 2**32
    with open(path, "w") as f:
        f.write("id,x,y,z,score,pre\n")
        for i in range(0, rows, 100_000):
            s = slice(i, i + 100_000)
            block = np.column_stack([ids[s], pts[s].round(1), rng.random(len(ids[s])).round(4), seg[s]])
            np.savetxt(f, block, fmt=["%d", "%.1f", "%.1f", "%.1f", "%.4f", "%d"], delimiter=",")


def run(*args: str) -> tuple[float, float]:
    """(wall, CPU seconds of the command and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "igneous_like", *args], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dir", default="/tmp/bench-ann")
    ap.add_argument("--partitions", type=int, default=None, help="default: the planner's choice")
    opts = ap.parse_args()
    root = Path(opts.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    table, dest, q = root / "syn.csv", f"file://{root}/syn", f"fq://{root}/q"
    make_csv(table, opts.rows)
    args = [str(table), dest, "--resolution", "8,8,40", "--property", "score:float32", "--relationship", "pre:pre",
            "--queue", q, *(["--partitions", str(opts.partitions)] if opts.partitions else [])]
    times = {"plan map (scan + insert)": run("annotation", "import", *args)}
    times["map tasks (-p 2)"] = run("-p", "2", "execute", q, "-x", "-q")
    times["plan counts"] = run("annotation", "import", *args, "--merge")
    times["counts tasks (-p 2)"] = run("-p", "2", "execute", q, "-x", "-q")
    times["plan emit (coarse levels here)"] = run("annotation", "import", *args, "--merge")
    times["emit tasks (-p 2)"] = run("-p", "2", "execute", q, "-x", "-q")
    times["finish (info, remove work)"] = run("annotation", "import", *args, "--merge")
    assert (root / "syn" / "info").exists() and not list((root / "syn" / "_work").rglob("*.arrow"))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{'phase':34s} {'wall':>7s}   {'CPU':>7s}")
    for name, (wall, cpu) in times.items():
        print(f"{name:34s} {wall:7.1f} s {cpu:7.1f} s")
    print(f"{'total':34s} {sum(w for w, _ in times.values()):7.1f} s {sum(c for _, c in times.values()):7.1f} s"
          f" for {opts.rows} points")
    print(f"peak RSS of the largest process:   {peak:7.0f} MB")


if __name__ == "__main__":
    main()
