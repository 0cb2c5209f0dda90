"""Mesh and skeleton fidelity and forge cost, igneous-like against Igneous, on the hard
(neuron-like) volume or the easy one.

Run from the repository root:

    .venv/bin/python scripts/bench_fidelity.py                     # meshes, 256x256x64, --shape 128,128,64
    .venv/bin/python scripts/bench_fidelity.py --size 512,512,128 --shape 256,256,128 --kind easy
    .venv/bin/python scripts/bench_fidelity.py --what skeleton --size 512,512,128 --shape 256,256,128

Meshes (--what mesh):
Both tools forge (same --shape and --max-error) through a FileQueue with one worker, then merge
to legacy single-resolution meshes (`mesh merge`). For every label of at least --min-voxels
voxels the script reads both tools' merged meshes with cloud-volume and reports, per label size
class: the relative error of the mesh volume against the voxel volume (median, 90th
percentile), the share of watertight meshes (trimesh `is_volume`), the faces per label; and the
simplified surface's distance to the unsimplified marching-cubes surface (points sampled on the
simplified mesh against a dense sampling of zmesh's unsimplified mesh of the whole volume:
99th percentile and maximum, nm). CPU seconds and peak RSS of the forge are printed as ratios
ours/theirs, measured in the same run.

Skeletons (--what skeleton): both tools forge every label (the same TEASAR options, Igneous's
defaults passed explicitly) and merge to one file per label (same --min-cable-length and
--tick-threshold). Reported: labels skeletonized by each and by both; per label in both, the
relative difference of cable length (median, 90th percentile, share within 3 %); for labels
whose voxels are one 26-connected object in the whole volume, the share whose skeleton is one
connected tree without cycles; forge CPU seconds and peak RSS, ratios ours/theirs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ensure_reference, measure, our_exe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLASSES = [(1_000, 10_000), (10_000, 100_000), (100_000, 10**12)]
TEASAR = ("--scale", "4", "--const", "10", "--dust-threshold", "1000", "--soma-detect", "1100",
          "--soma-accept", "3500", "--soma-scale", "1.0", "--soma-const", "300")
SKEL_MERGE = ("--min-cable-length", "1000", "--tick-threshold", "3500")


def make_volume(path: Path, shape, kind: str) -> None:
    if (path / "segmentation" / "info").exists():
        return
    code = ("import sys; from igneous_like.sample import make_sample; "
            "make_sample(sys.argv[1], tuple(int(v) for v in sys.argv[2].split(',')), kind=sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, f"file://{path}", ",".join(map(str, shape)), kind], check=True)


def forge_and_merge(tool: str, exe: str, layer: Path, what: str, shape: str, max_error: float, logs: Path):
    """Forge (timed) then merge through a FileQueue with one worker; (forge cpu s, peak rss MiB)."""
    queue = f"fq://{layer.parent / 'queue'}"
    src = f"file://{layer}"
    if what == "mesh":
        forge = [exe, "mesh", "forge", src, "--shape", shape, "--max-error", str(max_error), "--queue", queue]
        forge += ["--compress", "none"] if tool == "theirs" else []
        merge = [exe, "mesh", "merge", src, "--queue", queue]
    else:
        forge = [exe, "skeleton", "forge", src, "--shape", shape, *TEASAR, "--queue", queue]
        merge = [exe, "skeleton", "merge", src, *SKEL_MERGE, "--queue", queue]
    run = lambda name, cmd: measure(cmd, logs / f"{tool}-{what}-{name}.log")  # noqa: E731
    execute = ([exe, "execute", queue, "-x", "-q"] if tool == "ours" else [exe, "execute", "-x", "-q", queue])
    runs = [run("forge", forge), run("forge-exec", execute)]
    for r in runs + [run("merge", merge), run("merge-exec", execute)]:
        if r.rc != 0:
            sys.exit(f"{tool}: {' '.join(r.cmd)} failed, see {r.log}")
    return sum(r.cpu for r in runs), max(r.rss_mib for r in runs)


def reference_surface(seg: np.ndarray, res) -> dict[int, "object"]:
    """Unsimplified, voxel-centred marching cubes meshes of the whole volume (zmesh)."""
    import zmesh

    mesher = zmesh.Mesher(res)
    mesher.mesh(np.asfortranarray(np.pad(seg, 1)), close=False)
    out = {}
    for label in mesher.ids():
        m = mesher.get(label, normals=False, voxel_centered=True, reduction_factor=0, max_error=0)
        out[int(label)] = (m.vertices - np.asarray(res, dtype=np.float32), m.faces)
        mesher.erase(label)
    return out


def deviation(mesh, ref) -> np.ndarray:
    """Distances (nm) from points sampled on `mesh` to a dense sampling of the reference surface."""
    import trimesh
    from scipy.spatial import cKDTree

    rv, rf = ref
    dense = trimesh.Trimesh(rv, rf, process=False)
    pts_ref = np.concatenate([rv, trimesh.sample.sample_surface_even(dense, max(len(rf) * 4, 1000), seed=0)[0]])
    pts = np.concatenate([mesh.vertices, trimesh.sample.sample_surface(mesh, 2000, seed=0)[0]])
    return cKDTree(pts_ref).query(pts)[0]


def analyse(layer: Path, seg: np.ndarray, res, min_voxels: int, refs) -> dict:
    import fastremap
    import trimesh
    from cloudvolume import CloudVolume

    vol = CloudVolume(f"file://{layer}", progress=False)
    labels, counts = fastremap.unique(seg, return_counts=True)
    voxel_nm3 = float(np.prod(res))
    rows = []
    for label, count in zip(labels.tolist(), counts.tolist()):
        if label == 0 or count < min_voxels:
            continue
        m = vol.mesh.get(label)
        m = m[label] if isinstance(m, dict) else m
        tm = trimesh.Trimesh(m.vertices, m.faces, process=True)
        err = abs(abs(tm.volume) - count * voxel_nm3) / (count * voxel_nm3)
        dist = deviation(tm, refs[label]) if label in refs else np.zeros(1)
        rows.append((count, err, tm.is_volume, len(tm.faces), float(np.percentile(dist, 99)), float(dist.max())))
    return rows


def report(name: str, rows) -> None:
    print(f"  {name}")
    print(f"    {'voxels':>16s} {'labels':>6s} {'vol err med':>11s} {'p90':>7s} {'watertight':>10s} "
          f"{'faces/label':>11s} {'dev p99 nm':>10s} {'dev max nm':>10s}")
    for lo, hi in CLASSES + [(0, 10**12)]:
        sel = [r for r in rows if lo <= r[0] < hi]
        if not sel:
            continue
        err = np.array([r[1] for r in sel]) * 100
        label = f"{lo:,}+" if (lo, hi) == CLASSES[-1] else ("all" if lo == 0 else f"{lo:,}-{hi:,}")
        print(f"    {label:>16s} {len(sel):6d} {np.median(err):10.2f}% {np.percentile(err, 90):6.2f}% "
              f"{100 * np.mean([r[2] for r in sel]):9.1f}% {np.mean([r[3] for r in sel]):11.0f} "
              f"{np.percentile([r[4] for r in sel], 99):10.1f} {max(r[5] for r in sel):10.1f}")


def skeleton_rows(layer: Path) -> dict[int, tuple[float, int, bool]]:
    """label -> (cable length nm, connected components, has a cycle) of every merged skeleton."""
    import networkx as nx
    from cloudvolume import CloudVolume

    vol = CloudVolume(f"file://{layer}", progress=False)
    names = os.listdir(layer / vol.info["skeletons"])
    labels = sorted(int(n[:-3] if n.endswith(".gz") else n) for n in names
                    if (n[:-3] if n.endswith(".gz") else n).isdigit())
    rows = {}
    for label in labels:
        sk = vol.skeleton.get(label)
        if len(sk.vertices) == 0:  # Igneous writes empty skeletons for labels its merge emptied
            continue
        graph = nx.Graph()
        graph.add_nodes_from(range(len(sk.vertices)))
        graph.add_edges_from(map(tuple, sk.edges.tolist()))
        components = nx.number_connected_components(graph)
        cyclic = graph.number_of_edges() > graph.number_of_nodes() - components
        rows[label] = (float(sk.cable_length()), components, cyclic)
    return rows


def report_skeletons(seg: np.ndarray, ours: dict, theirs: dict) -> None:
    import cc3d
    import fastremap

    both = sorted(set(ours) & set(theirs))
    print(f"  labels skeletonized: ours {len(ours)}, theirs {len(theirs)}, both {len(both)}; "
          f"theirs only {len(set(theirs) - set(ours))} (e.g. {sorted(set(theirs) - set(ours))[:3]}), "
          f"ours only {len(set(ours) - set(theirs))}")
    if both:
        diff = np.array([abs(ours[l][0] - theirs[l][0]) / max(theirs[l][0], 1e-9) for l in both]) * 100
        print(f"  cable length |ours - theirs| / theirs: median {np.median(diff):.2f}%, p90 "
              f"{np.percentile(diff, 90):.2f}%, within 3 %: {100 * np.mean(diff <= 3):.1f}% of labels")
    cc = cc3d.connected_components(seg, connectivity=26, out_dtype=np.uint64)
    pieces = {}
    for comp, label in fastremap.component_map(cc, seg).items():
        if label:
            pieces[int(label)] = pieces.get(int(label), 0) + 1
    for name, rows in (("ours", ours), ("theirs", theirs)):
        single = [l for l in rows if pieces.get(l) == 1]
        trees = [l for l in single if rows[l][1] == 1 and not rows[l][2]]
        print(f"  {name}: of {len(single)} skeletonized labels that are one connected object, "
              f"{len(trees)} ({100 * len(trees) / max(len(single), 1):.1f}%) are one tree without cycles")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", default="mesh", choices=["mesh", "skeleton", "both"])
    ap.add_argument("--size", default="256,256,64")
    ap.add_argument("--shape", default="128,128,64", help="forge task shape, both tools")
    ap.add_argument("--kind", default="hard", choices=["hard", "easy"])
    ap.add_argument("--max-error", type=float, default=40)
    ap.add_argument("--min-voxels", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-output" / "fidelity")
    ap.add_argument("--tools", default="both", choices=["both", "ours", "theirs"],
                    help="run only this tool; the other's output and figures come from an earlier run in --out")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.size.split(","))
    out = args.out.resolve() / f"{args.kind}-{'x'.join(map(str, shape))}"
    pristine = out / "pristine"
    make_volume(pristine, shape, args.kind)
    from cloudvolume import CloudVolume

    src = CloudVolume(f"file://{pristine / 'segmentation'}", progress=False)
    seg, res = np.asarray(src[:, :, :])[..., 0], tuple(float(r) for r in src.resolution)
    exes = {"ours": str(our_exe()), "theirs": str(ensure_reference())}
    for what in (["mesh", "skeleton"] if args.what == "both" else [args.what]):
        figures = {}
        for tool, exe in exes.items():
            work = out / what / tool
            saved = work / "figures.json"
            if args.tools != "both" and tool != args.tools:  # the other tool's output and figures of an earlier run
                if not saved.exists():
                    sys.exit(f"--tools {args.tools}: no earlier {tool} run in {work}; run --tools both first")
                figures[tool] = tuple(json.loads(saved.read_text()))
                continue
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            shutil.copytree(pristine / "segmentation", work / "segmentation")
            figures[tool] = forge_and_merge(tool, exe, work / "segmentation", what, args.shape, args.max_error,
                                            out / "logs")
            saved.write_text(json.dumps(figures[tool]))
        print(f"{args.kind} volume {shape} at {res} nm, {what} forge --shape {args.shape}")
        if what == "mesh":
            print(f"  --max-error {args.max_error}, labels >= {args.min_voxels} voxels")
            refs = reference_surface(seg, res)
            for tool in exes:
                report(tool, analyse(out / what / tool / "segmentation", seg, res, args.min_voxels, refs))
        else:
            print(f"  {' '.join(TEASAR)}; merge {' '.join(SKEL_MERGE)}")
            report_skeletons(seg, *(skeleton_rows(out / what / t / "segmentation") for t in exes))
        (oc, orss), (tc, trss) = figures["ours"], figures["theirs"]
        print(f"  {what} forge cpu s ours {oc:.1f} theirs {tc:.1f} ratio {oc / tc:.2f}; "
              f"peak rss MiB ours {orss:.0f} theirs {trss:.0f} ratio {orss / trss:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
