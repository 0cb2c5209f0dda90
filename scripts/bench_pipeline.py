"""The whole segmentation pipeline, igneous-like against Igneous, on the hard (neuron-like) volume.

Run from the repository root:

    .venv/bin/python scripts/bench_pipeline.py                          # 1024x1024x256, -p 2
    .venv/bin/python scripts/bench_pipeline.py --size 512,512,128 --out bench-output/pipeline512  # quicker
    .venv/bin/python scripts/bench_pipeline.py --tools theirs           # one tool; the other's saved figures

The 1024x1024x256 run took 75 minutes on a 2-core machine shared with other work (igneous-like
32, Igneous 43), plus 8 minutes to write the sample (kept in OUT/pristine for later runs). Figures are
saved to OUT/pipeline.json after every stage, so an interrupted run keeps what it finished, and
`--tools` runs one tool against the other's saved figures (the table then says so: figures from
two runs on a shared machine compare less well than from one).

Each tool, in turn, on its own copy of the same segmentation (igneous_like.sample.neurons at
16x16x40 nm), runs the stages a lab runs after segmenting, each as a producer command into a
FileQueue and then `execute` with -p workers until the queue is empty:
  downsample      image downsample --num-mips NUM_MIPS (mode)
  mesh forge      mesh forge --shape MESH_SHAPE --max-error MESH_MAX_ERROR
  mesh merge      mesh merge-sharded --nlod MESH_NLOD --vqb MESH_VQB --min-chunk-size MESH_MIN_CHUNK
  skel forge      skeleton forge --shape SKEL_SHAPE, the TEASAR options of scripts/bench.py, --sharded
  skel merge      skeleton merge-sharded (same --min-cable-length, --tick-threshold, labels per shard)
(the constants are scripts/bench.py's). Printed per stage: CPU seconds of the whole process tree,
wall seconds, peak RSS of the largest single process (one worker), each with the ratio
ours/theirs; then the pipeline's throughput in gigavoxels (of mip 0) per core-hour, and its ratio
ours/theirs (above 1: igneous-like processes more voxels per CPU hour). Targets: throughput ratio
>= 1.5, peak RSS ratio <= 1 in every stage.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (MESH_MAX_ERROR, MESH_MIN_CHUNK, MESH_NLOD, MESH_SHAPE, MESH_VQB, NUM_MIPS,  # noqa: E402
                   SKEL_MAX_LABELS_PER_SHARD, SKEL_MERGE, SKEL_SHAPE, SKEL_TEASAR, ensure_reference, measure,
                   our_exe, prepare_sample)

ROOT = Path(__file__).resolve().parent.parent


def stages(tool: str, src: str, queue: str) -> list[tuple[str, list[str]]]:
    plain = ["--compress", "none"] if tool == "theirs" else []  # Igneous gzips by default
    return [
        ("downsample", ["image", "downsample", src, "--num-mips", str(NUM_MIPS), "--compress", "none"]),
        ("mesh forge", ["mesh", "forge", src, "--shape", MESH_SHAPE, "--max-error", str(MESH_MAX_ERROR),
                        "--sharded", *plain]),
        ("mesh merge", ["mesh", "merge-sharded", src, "--nlod", str(MESH_NLOD), "--vqb", str(MESH_VQB),
                        "--min-chunk-size", MESH_MIN_CHUNK]),
        ("skel forge", ["skeleton", "forge", src, "--shape", SKEL_SHAPE, *SKEL_TEASAR, "--sharded"]),
        ("skel merge", ["skeleton", "merge-sharded", src, *SKEL_MERGE,
                        "--max-labels-per-shard", str(SKEL_MAX_LABELS_PER_SHARD)]),
    ]


def run_tool(tool: str, exe: str, work: Path, workers: int, logs: Path,
             save=lambda figures: None) -> dict[str, dict[str, float]]:
    queue = f"fq://{work / 'queue'}"
    src = f"file://{work / 'segmentation'}"
    if tool == "ours":
        execute = [exe, "execute", queue, "-p", str(workers), "-x", "-q"]
    else:
        execute = [exe, "-p", str(workers), "execute", "-x", "-q", queue]
    out = {}
    for name, args in stages(tool, src, queue):
        print(f"  {tool:6s} {name} ...", flush=True)
        slug = name.replace(" ", "-")
        runs = [measure([exe, *args, "--queue", queue], logs / f"{tool}-{slug}-producer.log"),
                measure(execute, logs / f"{tool}-{slug}-execute.log")]
        for r in runs:
            if r.rc != 0:
                sys.exit(f"{tool} {name}: {' '.join(r.cmd)} exited {r.rc}; see {r.log}")
        out[name] = {"cpu": sum(r.cpu for r in runs), "wall": sum(r.wall for r in runs),
                     "rss_mib": max(r.rss_mib for r in runs)}
        save(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1024,1024,256", help="Volume X,Y,Z (default 1024,1024,256).")
    ap.add_argument("-p", "--parallel", type=int, default=2, help="Workers per execute, both tools (default 2).")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-output" / "pipeline")
    ap.add_argument("--tools", default="ours,theirs",
                    help="Tools to run (default both); a tool left out uses its figures saved in OUT/pipeline.json.")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.size.split(","))
    out = args.out.resolve()
    pristine = prepare_sample(out, shape, "hard")
    exes = {"ours": str(our_exe()), "theirs": str(ensure_reference())}
    tools = [t for t in args.tools.split(",") if t]
    if not set(tools) <= set(exes):
        sys.exit(f"--tools: choose from {', '.join(exes)}")
    saved_path = out / "pipeline.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    if saved.get("shape") != list(shape) or saved.get("parallel") != args.parallel:
        saved = {}
    figures = {t: f for t, f in saved.get("figures", {}).items() if t not in tools}
    missing = [t for t in exes if t not in tools and len(figures.get(t, {})) < len(stages(t, "", ""))]
    if missing:
        sys.exit(f"no complete saved figures for {', '.join(missing)} at this --size and -p: run them too")

    def save(tool: str, done: dict) -> None:
        figures[tool] = done
        saved["runs"] = {**saved.get("runs", {}), tool: time.strftime("%Y-%m-%d %H:%M")}
        saved_path.write_text(json.dumps({"shape": list(shape), "parallel": args.parallel, "figures": figures,
                                          "runs": saved["runs"]}, indent=2))

    for tool in tools:
        work = out / "work" / tool
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        shutil.copytree(pristine / "segmentation", work / "segmentation")
        run_tool(tool, exes[tool], work, args.parallel, out / "logs", lambda done, tool=tool: save(tool, done))
        shutil.rmtree(work, ignore_errors=True)

    gvox = math.prod(shape) / 1e9
    print(f"\nhard volume {shape} ({gvox:.3f} gigavoxels, 16x16x40 nm), -p {args.parallel}; "
          "ratio = igneous-like / Igneous")
    if len(tools) < len(exes):
        print("note: the tools ran separately (" + ", ".join(f"{t} {w}" for t, w in saved["runs"].items()) + ")")
    print(f"{'stage':12s} | {'cpu s':>8s} {'theirs':>8s} {'ratio':>6s} | {'wall s':>8s} {'theirs':>8s} "
          f"{'ratio':>6s} | {'rss MiB':>7s} {'theirs':>7s} {'ratio':>6s}")
    for name in figures["ours"]:
        o, t = figures["ours"][name], figures["theirs"][name]
        print(f"{name:12s} | {o['cpu']:8.1f} {t['cpu']:8.1f} {o['cpu'] / t['cpu']:6.2f} | {o['wall']:8.1f} "
              f"{t['wall']:8.1f} {o['wall'] / t['wall']:6.2f} | {o['rss_mib']:7.0f} {t['rss_mib']:7.0f} "
              f"{o['rss_mib'] / t['rss_mib']:6.2f}")
    rate = {tool: gvox / (sum(s["cpu"] for s in f.values()) / 3600) for tool, f in figures.items()}
    rss_ok = all(figures["ours"][n]["rss_mib"] <= figures["theirs"][n]["rss_mib"] for n in figures["ours"])
    print(f"throughput: ours {rate['ours']:.3f} gigavoxels per core-hour, theirs {rate['theirs']:.3f}; "
          f"ratio {rate['ours'] / rate['theirs']:.2f} (target >= 1.5); peak RSS per worker <= Igneous's in "
          f"every stage: {'yes' if rss_ok else 'no'}")
    saved_path.write_text(json.dumps({**json.loads(saved_path.read_text()), "gigavoxels_per_core_hour": rate},
                                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
