"""Benchmark `image stats` at a million labels, against what a user would run instead.

    .venv/bin/python scripts/bench_stats.py                    # 256x256x128 and 512x512x128
    .venv/bin/python scripts/bench_stats.py --sizes 128,128,64 --out /tmp/bs
    .venv/bin/python scripts/bench_stats.py --volume sample --sizes 512,512,128

Volumes: dense 2x2x2 cubes, every cube its own uint64 label above 2^33 (shuffled), raw
128x128x64 chunks, 8x8x40 nm: 256x256x128 holds 1,048,576 labels; 512x512x128 four times the
labels and the voxels. The ids are contiguous (2^33 + a permutation), so both tools' label
tables take their array paths (our map's table indexed by label - min, fastremap.unique's array
counting in Igneous's); `--volume sparse-cubes` draws them from [2^33, 2^53) instead, as in an
agglomerated segmentation, where both sort or hash. `--volume sample` uses the neuron-like
sample segmentation instead (hundreds of large labels). Each row is one command run as a user types it, through a FileQueue and
one worker (`execute -x`, one process), timed as its process tree (os.wait4: user+system CPU
seconds, peak RSS):
  ours map / reduce   image stats LAYER --queue Q, execute; then --merge, execute
                      (the full table plus segment properties for every label)
  ours auto-merge     image stats LAYER --queue Q --auto-merge, execute: the same table, the
                      last map task queueing the reduce, so one worker process runs both phases
  ours one command    image stats LAYER: both phases in one process, no queue
  ours voxels         image voxels count --queue Q, execute, image voxels sum
  igneous voxels      Igneous's image voxels count --queue Q, execute, image voxels sum
  cc3d + numpy        one process: read the whole volume (cloud-volume), fastremap.renumber,
                      cc3d.statistics (counts, boxes, centroids), numpy voxel-face counts per label
It prints CPU s, peak RSS MiB and labels/s per row, the ratios ours/theirs, and how CPU and RSS
grow from the first size to the next; everything also goes to OUT/bench_stats.json. With
`--repeat N` every row runs N times (all rows once, then again) and the figures are medians
per row (the ratio of medians; each repetition's CPU is in the JSON): on a shared machine one
command's CPU varies by 20% or more from run to run, most of it system time for fresh pages.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ensure_reference, measure, our_exe  # noqa: E402

BASELINE = """
import sys, numpy as np, fastremap, cc3d
from cloudvolume import CloudVolume
vol = CloudVolume(sys.argv[1], progress=False, fill_missing=False)
seg = np.asarray(vol[:, :, :])[..., 0]
ids, mapping = fastremap.renumber(seg, preserve_zero=True, in_place=True)
stats = cc3d.statistics(ids, no_slice_conversion=True)
faces = np.zeros(len(stats["voxel_counts"]), dtype=np.int64)
padded = np.pad(ids, 1)
for axis in range(3):
    a = np.take(padded, range(0, padded.shape[axis] - 1), axis=axis)
    b = np.take(padded, range(1, padded.shape[axis]), axis=axis)
    d = a != b
    faces += np.bincount(a[d], minlength=len(faces)) + np.bincount(b[d], minlength=len(faces))
print(len(mapping) - 1, int(faces[1:].sum()))
"""


def make_cubes(url: str, shape: tuple[int, int, int], sparse: bool = False) -> int:
    import numpy as np

    from igneous_like import sample

    rng = np.random.default_rng(0)
    grid = tuple(s // 2 for s in shape)
    n = grid[0] * grid[1] * grid[2]
    if sparse:  # distinct ids spread over [2^33, 2^53): what agglomerated segmentations hold
        ids = np.unique(rng.integers(2**33, 2**53, int(n * 1.01) + 16, dtype=np.uint64))
        ids = rng.permutation(ids)[:n]
        assert len(ids) == n
    else:
        ids = np.uint64(2**33) + rng.permutation(n).astype(np.uint64)
    ids = ids.reshape(grid, order="F")
    seg = np.asfortranarray(ids.repeat(2, 0).repeat(2, 1).repeat(2, 2))
    sample.write_layer(url, seg, "segmentation", resolution=(8, 8, 40), chunk=(128, 128, 64))
    return n


def make_sample(url: str, shape: tuple[int, int, int]) -> int:
    """The neuron-like sample segmentation (igneous_like.sample): few, large, wavy labels."""
    import numpy as np

    from igneous_like import sample

    seg = sample.segmentation(shape, seed=0, cells=400)
    sample.write_layer(url, seg, "segmentation", resolution=(8, 8, 40), chunk=(128, 128, 64))
    return int(np.count_nonzero(np.unique(seg)))


def run_rows(work: Path, layer: Path, ours: Path, theirs: Path) -> dict[str, dict]:
    """Every command of every row, each on a fresh copy of the layer."""
    rows: dict[str, list] = {}
    logs = work / "logs"

    def fresh(name: str) -> Path:
        dest = work / name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(layer, dest)
        return dest

    seg = fresh("ours-stats")
    q = f"fq://{work}/q-stats"
    rows["ours map"] = [measure([str(ours), "image", "stats", f"file://{seg}", "--queue", q], logs / "map.log"),
                        measure([str(ours), "execute", q, "-x", "-q"], logs / "map-exec.log")]
    rows["ours reduce"] = [measure([str(ours), "image", "stats", f"file://{seg}", "--queue", q, "--merge"], logs / "reduce.log"),
                           measure([str(ours), "execute", q, "-x", "-q"], logs / "reduce-exec.log")]
    seg = fresh("ours-auto")
    q = f"fq://{work}/q-auto"
    rows["ours auto-merge"] = [
        measure([str(ours), "image", "stats", f"file://{seg}", "--queue", q, "--auto-merge"], logs / "auto.log"),
        measure([str(ours), "execute", q, "-x", "-q"], logs / "auto-exec.log")]
    seg = fresh("ours-local")
    rows["ours one command"] = [measure([str(ours), "image", "stats", f"file://{seg}"], logs / "local.log")]
    seg = fresh("ours-voxels")
    q = f"fq://{work}/q-voxels"
    rows["ours voxels"] = [measure([str(ours), "image", "voxels", "count", f"file://{seg}", "--queue", q], logs / "ov.log"),
                           measure([str(ours), "execute", q, "-x", "-q"], logs / "ov-exec.log"),
                           measure([str(ours), "image", "voxels", "sum", f"file://{seg}"], logs / "ov-sum.log")]
    seg = fresh("igneous-voxels")
    q = f"{work}/q-igneous"
    rows["igneous voxels"] = [measure([str(theirs), "image", "voxels", "count", f"file://{seg}", "--queue", q], logs / "iv.log"),
                              measure([str(theirs), "execute", "-x", q], logs / "iv-exec.log"),
                              measure([str(theirs), "image", "voxels", "sum", f"file://{seg}"], logs / "iv-sum.log")]
    rows["cc3d + numpy"] = [measure([sys.executable, "-c", BASELINE, f"file://{layer}"], logs / "cc3d.log")]
    out = {}
    for name, runs in rows.items():
        failed = [r.log for r in runs if r.rc != 0]
        if failed:
            print(f"WARNING: {name} failed, see {failed[0]}", file=sys.stderr)
        out[name] = {"cpu": sum(r.cpu for r in runs), "rss_mib": max(r.rss_mib for r in runs),
                     "commands": [{"cmd": " ".join(r.cmd[:3]) + " ...", "cpu": r.cpu, "rss_mib": r.rss_mib, "rc": r.rc}
                                  for r in runs]}
    ig = out["igneous voxels"]
    ig["count_cpu"] = sum(c["cpu"] for c in ig["commands"][:2])  # count + execute, without the sum
    two = (out["ours map"], out["ours reduce"])
    out["ours full table"] = {"cpu": sum(r["cpu"] for r in two), "rss_mib": max(r["rss_mib"] for r in two),
                              "commands": [c for r in two for c in r["commands"]]}
    return out


def median_rows(repeats: list[dict[str, dict]]) -> dict[str, dict]:
    """Per row, the median of each figure over the repetitions (each repetition's CPU kept)."""
    import statistics

    out = {}
    for name in repeats[0]:
        runs = [rep[name] for rep in repeats]
        keys = [key for key in ("cpu", "rss_mib", "count_cpu") if key in runs[0]]
        out[name] = {**{key: statistics.median(r[key] for r in runs) for key in keys},
                     "repeats": {key: [r[key] for r in runs] for key in keys}, "commands": [r["commands"] for r in runs]}
    return out


def check_table(work: Path, labels: int) -> str:
    """Row count of the two-phase table; the auto-merge run's table and segment properties
    must be the same bytes."""
    import filecmp

    import pyarrow.dataset as ds

    table = ds.dataset(str(work / "ours-stats" / "stats"), format="parquet").to_table(columns=["voxel_count"])
    if table.num_rows != labels:
        return f"WRONG: {table.num_rows} rows for {labels} labels"
    a, b = work / "ours-stats", work / "ours-auto"
    for name in [*(p.relative_to(a) for p in (a / "stats").glob("part-*")), Path("segment_properties/info")]:
        if not (b / name).exists() or not filecmp.cmp(a / name, b / name, shallow=False):
            return f"WRONG: auto-merge {name} differs from the two-phase run's"
    return "ok"


def make_in_child(kind: str, url: str, shape: str) -> int:
    """Write the volume in a child process: on Linux a forked child inherits its parent's peak
    RSS, so a big parent would inflate every measured command."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import bench_stats as b; "
            "shape = tuple(int(v) for v in sys.argv[4].split(',')); "
            "print(b.make_sample(sys.argv[3], shape) if sys.argv[2] == 'sample' else "
            "b.make_cubes(sys.argv[3], shape, sparse=sys.argv[2] == 'sparse-cubes'))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), kind, url, shape],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,256,128;512,512,128", help="volume shapes, ';'-separated")
    parser.add_argument("--out", default="/tmp/bench_stats", help="working directory")
    parser.add_argument("--volume", choices=["cubes", "sparse-cubes", "sample"], default="cubes",
                        help="cubes: 2x2x2 labels (the worst case), ids 2^33 + a permutation (contiguous); "
                             "sparse-cubes: the same cubes, ids spread over [2^33, 2^53); "
                             "sample: the neuron-like sample")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every row; figures are medians")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    theirs = ensure_reference()
    ours = our_exe()
    results = []
    for text in args.sizes.split(";"):
        shape = tuple(int(v) for v in text.split(","))
        work = out / "x".join(map(str, shape))
        shutil.rmtree(work, ignore_errors=True)
        labels = make_in_child(args.volume, f"file://{work}/pristine", text)
        repeats = []
        for _ in range(max(args.repeat, 1)):
            repeats.append(run_rows(work, work / "pristine", ours, theirs))
            table = check_table(work, labels)
        rows = median_rows(repeats)
        results.append({"shape": shape, "labels": labels, "rows": rows, "table": table, "repeat": len(repeats)})
        print_size(results[-1])
    if len(results) > 1:
        a, b = results[0], results[1]
        print(f"\ngrowth {a['labels']} -> {b['labels']} labels ({b['labels'] / a['labels']:.1f}x):")
        for name in a["rows"]:
            ra, rb = a["rows"][name], b["rows"][name]
            print(f"  {name:16s} cpu x{rb['cpu'] / ra['cpu']:.2f}   peak rss x{rb['rss_mib'] / ra['rss_mib']:.2f}")
    (out / "bench_stats.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nfigures: {out / 'bench_stats.json'}")


def print_size(result: dict) -> None:
    rows, labels = result["rows"], result["labels"]
    median = f", medians of {result['repeat']} runs" if result["repeat"] > 1 else ""
    print(f"\n{'x'.join(map(str, result['shape']))}: {labels} labels (table check: {result['table']}{median})")
    print(f"  {'':16s} {'cpu s':>8s} {'peak MiB':>9s} {'labels/s':>10s}")
    for name, row in rows.items():
        print(f"  {name:16s} {row['cpu']:8.2f} {row['rss_mib']:9.0f} {labels / max(row['cpu'], 1e-9):10.0f}")
    full = rows["ours full table"]  # map + reduce
    ig, cc = rows["igneous voxels"], rows["cc3d + numpy"]
    count_only = ig["count_cpu"]  # count + execute, without the sum
    auto = rows["ours auto-merge"]
    print(f"  full table / igneous voxels count alone: cpu {full['cpu'] / count_only:.2f} (target <= 1.5), "
          f"with --auto-merge {auto['cpu'] / count_only:.2f}")
    print(f"  full table / igneous voxels count+sum:   cpu {full['cpu'] / ig['cpu']:.2f}, "
          f"peak rss {full['rss_mib'] / ig['rss_mib']:.2f}")
    print(f"  full table / cc3d+numpy:                 cpu {full['cpu'] / cc['cpu']:.2f}, "
          f"peak rss {full['rss_mib'] / cc['rss_mib']:.2f}")
    print(f"  ours voxels / igneous voxels (count+sum): cpu {rows['ours voxels']['cpu'] / ig['cpu']:.2f}, "
          f"peak rss {rows['ours voxels']['rss_mib'] / ig['rss_mib']:.2f}")
    if result["repeat"] > 1:
        per = lambda name: [f"{a / b:.2f}" for a, b in zip(rows[name]["repeats"]["cpu"], ig["repeats"]["count_cpu"])]  # noqa: E731
        print(f"  each run, full table / igneous voxels count alone: {', '.join(per('ours full table'))}; "
              f"with --auto-merge: {', '.join(per('ours auto-merge'))}")
    result["igneous_count_cpu"] = count_only
    result["full"] = full
    result["ratio_full_vs_count"] = full["cpu"] / count_only
    result["ratio_auto_vs_count"] = auto["cpu"] / count_only


if __name__ == "__main__":
    main()
