"""One million synapse-like points from CSV into an annotation layer through a FileQueue with
`execute -p 2`: wall time per phase and the peak RSS of the largest single process (a worker
or the planner), as ru_maxrss of waited children reports it.

    .venv/bin/python scripts/bench_annotations.py [--rows 1000000] [--dir /tmp/bench-ann]
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


def run(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "igneous_like", *args], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dir", default="/tmp/bench-ann")
    opts = ap.parse_args()
    root = Path(opts.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    table, dest, q = root / "syn.csv", f"file://{root}/syn", f"fq://{root}/q"
    make_csv(table, opts.rows)
    args = [str(table), dest, "--resolution", "8,8,40", "--property", "score:float32", "--relationship", "pre:pre",
            "--queue", q, "--partitions", "4"]
    times = {"plan map (scan + insert)": run("annotation", "import", *args)}
    times["map tasks (-p 2)"] = run("-p", "2", "execute", q, "-x", "-q")
    times["plan counts"] = run("annotation", "import", *args, "--merge")
    times["counts tasks (-p 2)"] = run("-p", "2", "execute", q, "-x", "-q")
    times["plan emit (coarse levels here)"] = run("annotation", "import", *args, "--merge")
    times["emit tasks (-p 2)"] = run("-p", "2", "execute", q, "-x", "-q")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    for name, sec in times.items():
        print(f"{name:34s} {sec:7.1f} s")
    print(f"{'total wall':34s} {sum(times.values()):7.1f} s for {opts.rows} points")
    print(f"peak RSS of the largest process:   {peak:7.0f} MB")


if __name__ == "__main__":
    main()
