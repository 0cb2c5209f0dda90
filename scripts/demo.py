"""The demo behind scripts/demo.sh: sample volume -> FileQueue -> `execute -p 2` -> report."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from igneous_like.sample import make_sample


def run(*args: str) -> None:
    print("$ igneous-like " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "igneous_like", *args], check=True)


def main(out: Path) -> None:
    data, queue = out / "data", out / "queue"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(queue, ignore_errors=True)
    t0 = time.time()
    img, seg = make_sample(f"file://{data}", (256, 256, 128))
    print(f"sample volume 256x256x128 written in {time.time() - t0:.1f}s: {img}, {seg}")
    q = f"fq://{queue}"
    run("image", "downsample", img, "--queue", q)
    run("image", "downsample", seg, "--queue", q)
    run("image", "xfer", img, f"file://{data}/image-jpeg", "--encoding", "jpeg", "--queue", q)
    run("image", "xfer", seg, f"file://{data}/segmentation-cseg", "--encoding", "cseg", "--queue", q)
    run("mesh", "forge", seg, "--sharded", "--queue", q)
    run("execute", q, "-p", "2", "-x", "-q")
    # the merge needs every forge task finished: a second pass through the queue
    run("mesh", "merge-sharded", seg, "--nlod", "2", "--queue", q)
    run("execute", q, "-p", "2", "-x", "-q")
    run("queue", "status", q)
    print("\nWhat was made:")
    for layer in sorted(p for p in data.iterdir() if (p / "info").exists()):
        info = json.loads((layer / "info").read_text())
        print(f"  file://{layer}  ({info['type']}, {info['data_type']})")
        for mip, scale in enumerate(info["scales"]):
            files = len(list((layer / scale["key"]).glob("*"))) if (layer / scale["key"]).exists() else 0
            size = "x".join(map(str, scale["size"]))
            print(f"    mip {mip}: {size:>12} voxels, {scale['encoding']:<24} {files:>4} chunk files")
        if "mesh" in info:
            mesh_dir = layer / info["mesh"]
            shards = list(mesh_dir.glob("*.shard"))
            mesh_info = json.loads((mesh_dir / "info").read_text())
            print(f"    meshes: {mesh_info['@type']}, {len(shards)} shard file(s), "
                  f"{sum(p.stat().st_size for p in shards) / 1e6:.1f} MB")
    shown = " ".join(f"file://{data}/{name}" for name in ("image", "segmentation"))
    print(f"\nView it in Neuroglancer (served from this machine; Ctrl-C stops it):\n"
          f"  {Path(sys.executable).parent / 'igneous-like'} view {shown}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-output").resolve())
