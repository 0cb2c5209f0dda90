"""Benchmark `image ccl` beside Igneous's `image ccl` on the same volume.

    .venv/bin/python scripts/bench_ccl.py                          # 256x256x128 noise, 64^3 tasks
    .venv/bin/python scripts/bench_ccl.py --size 128,128,64 --shape 32,32,32 --out /tmp/bc

The volume is a uint8 image of random noise thresholded at >= 128 (--threshold-gte 128, 6-connected):
half the voxels are foreground, above the percolation threshold, so one giant component
snakes through every task and hundreds of thousands of small ones sit on task faces: the
equivalence step sees many boundary labels. Each pass is run as a user types it, through a
FileQueue and one worker (`execute -x`, one process), and timed as its process tree (os.wait4:
user+system CPU seconds, peak RSS):
  faces, links, relabel   producer (--queue Q) + execute, summed; RSS the larger (DEST chunks =
                          the task shape for both: Igneous refuses writes not aligned to them;
                          DEST encoding compressed_segmentation for both)
  calc-labels             ours: every union-find step here in one process (-p 1), with
                          --partitions P (default 4; 2*ceil(log2 P)+2 steps, counted from its
                          log); Igneous: its single-machine calc-labels
The two outputs are checked to be the same components (a one-to-one map between label sets).
Prints CPU s, wall s and peak RSS MiB per pass and the ratios ours/theirs; OUT/bench_ccl.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ensure_reference, measure, our_exe  # noqa: E402

PASSES = ("faces", "links", "calc-labels", "relabel")


MAKE_VOLUME = """
import sys, numpy as np
from igneous_like import sample
size = tuple(int(v) for v in sys.argv[2].split(","))
img = np.random.default_rng(0).integers(0, 256, size=size, dtype=np.uint8)
sample.write_layer(sys.argv[1], np.asfortranarray(img), "image", chunk=(64, 64, 64))
"""


def make_volume(url: str, size: str) -> None:
    """Written by a child process: a forked child inherits its parent's peak RSS, so the bench
    process must stay small for the measured commands' peaks to be their own."""
    import subprocess

    subprocess.run([sys.executable, "-c", MAKE_VOLUME, url, size], check=True)


def commands(tool: str, exe: str, src: str, dest: str, q: str, shape: str, partitions: int) -> dict[str, list[list[str]]]:
    """The commands of each pass, as a user would type them."""
    thr = ["--threshold-gte", "128"]
    enc = ["--encoding", "cseg"]  # both: the reference venv may lack the compresso codec
    if tool == "ours":
        job = ["--shape", shape, *thr, "--partitions", str(partitions)]
        run = [exe, "execute", q, "-p", "1", "-x", "-q"]
        return {"faces": [[exe, "image", "ccl", "faces", src, dest, *job, "--queue", q], run],
                "links": [[exe, "image", "ccl", "links", src, dest, *job, "--queue", q], run],
                "calc-labels": [[exe, "-p", "1", "image", "ccl", "calc-labels", src, dest, *job]],
                "relabel": [[exe, "image", "ccl", "relabel", src, dest, *job, "--chunk-size", shape, *enc, "--queue", q], run]}
    run = [exe, "-p", "1", "execute", "-x", "-q", q]
    return {"faces": [[exe, "image", "ccl", "faces", src, "--shape", shape, *thr, "--queue", q], run],
            "links": [[exe, "image", "ccl", "links", src, "--shape", shape, *thr, "--queue", q], run],
            "calc-labels": [[exe, "image", "ccl", "calc-labels", src, "--shape", shape]],
            "relabel": [[exe, "image", "ccl", "relabel", src, dest, "--shape", shape, *thr, "--chunk-size", shape, *enc,
                         "--queue", q], run]}


def same_components(a_url: str, b_url: str) -> str:
    import numpy as np
    from cloudvolume import CloudVolume

    a = np.asarray(CloudVolume(a_url, progress=False)[:, :, :])[..., 0].astype(np.uint64)
    b = np.asarray(CloudVolume(b_url, progress=False)[:, :, :])[..., 0].astype(np.uint64)
    if not ((a == 0) == (b == 0)).all():
        return "different foreground"
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    ok = len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    return f"same components ({pairs.shape[1]} labels)" if ok else "DIFFERENT components"


def calc_steps(log: Path) -> int:
    """Steps our calc-labels ran: one "...: N tasks done" line each in its log."""
    return sum(1 for line in log.read_text().splitlines() if line.endswith("tasks done"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256,256,128")
    ap.add_argument("--shape", default="64,64,64")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--out", default="/tmp/bench_ccl")
    ap.add_argument("--calc-labels-only", action="store_true",
                    help="Run faces and links here without a queue, unmeasured; measure calc-labels only "
                         "(larger volumes in less time: the union-find's memory against the boundary labels).")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    src = f"file://{out}/noise"
    make_volume(src, args.size)
    exes = {"ours": str(our_exe()), "theirs": str(ensure_reference())}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for tool, exe in exes.items():
        if tool == "theirs":  # Igneous keeps its intermediates in SRC: give it its own copy
            shutil.copytree(out / "noise", out / "noise-theirs")
        tsrc = src if tool == "ours" else f"{src}-theirs"
        cmds = commands(tool, exe, tsrc, f"file://{out}/cc-{tool}", f"fq://{out}/q-{tool}", args.shape, args.partitions)
        results[tool] = {}
        for name in PASSES:
            if args.calc_labels_only and name != "calc-labels":
                if name == "relabel":
                    continue
                cmds[name] = [[c for c in cmds[name][0] if not c.startswith("fq://")][:-1]]  # no --queue: run here
                bad = [r for r in [measure(cmds[name][0], out / "logs" / f"{tool}-{name}.log")] if r.rc]
                if bad:
                    sys.exit(f"bench_ccl: {tool} {name} failed, see {bad[0].log}")
                continue
            runs = [measure(cmd, out / "logs" / f"{tool}-{name}-{i}.log") for i, cmd in enumerate(cmds[name])]
            bad = [r for r in runs if r.rc != 0]
            if bad:
                sys.exit(f"bench_ccl: {tool} {name} failed, see {bad[0].log}")
            results[tool][name] = {"cpu": sum(r.cpu for r in runs), "wall": sum(r.wall for r in runs),
                                   "rss_mib": max(r.rss_mib for r in runs)}
    if args.calc_labels_only:
        o, t = results["ours"]["calc-labels"], results["theirs"]["calc-labels"]
        print(f"volume {args.size} noise >= 128, task shape {args.shape}, ours --partitions {args.partitions} "
              f"({calc_steps(out / 'logs' / 'ours-calc-labels-0.log')} steps); calc-labels: "
              f"cpu {o['cpu']:.2f} / {t['cpu']:.2f} s, wall {o['wall']:.2f} / {t['wall']:.2f} s, "
              f"peak RSS {o['rss_mib']:.0f} / {t['rss_mib']:.0f} MiB (ours / theirs)")
        (out / "bench_ccl.json").write_text(json.dumps({"results": results, "args": vars(args)}, indent=1))
        return
    check = same_components(f"file://{out}/cc-ours", f"file://{out}/cc-theirs")
    steps = calc_steps(out / "logs" / "ours-calc-labels-0.log")
    print(f"volume {args.size} noise >= 128, task shape {args.shape}, ours --partitions {args.partitions} "
          f"(calc-labels in {steps} steps): {check}")
    print(f"{'pass':12} {'cpu ours':>9} {'theirs':>8} {'ratio':>6} {'wall ours':>10} {'theirs':>8} {'ratio':>6} "
          f"{'RSS ours':>9} {'theirs':>8} {'ratio':>6}")
    total = {t: {"cpu": 0.0, "wall": 0.0} for t in exes}
    for name in PASSES:
        o, t = results["ours"][name], results["theirs"][name]
        for tool in exes:
            total[tool]["cpu"] += results[tool][name]["cpu"]
            total[tool]["wall"] += results[tool][name]["wall"]
        print(f"{name:12} {o['cpu']:9.2f} {t['cpu']:8.2f} {o['cpu'] / t['cpu']:6.2f} {o['wall']:10.2f} {t['wall']:8.2f} "
              f"{o['wall'] / t['wall']:6.2f} {o['rss_mib']:9.0f} {t['rss_mib']:8.0f} {o['rss_mib'] / t['rss_mib']:6.2f}")
    o, t = total["ours"], total["theirs"]
    print(f"{'all passes':12} {o['cpu']:9.2f} {t['cpu']:8.2f} {o['cpu'] / t['cpu']:6.2f} {o['wall']:10.2f} "
          f"{t['wall']:8.2f} {o['wall'] / t['wall']:6.2f}")
    (out / "bench_ccl.json").write_text(json.dumps({"check": check, "results": results, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
