"""Benchmark `image import` against the converters users would pick instead, and show that
its peak memory follows --memory on a volume larger than the budget.

Run from the repository root (needs .venv-reference with igneous-pipeline and
neuroglancer-scripts, as scripts/bench.py sets up):

    .venv/bin/python scripts/bench_import.py                            # all stages
    .venv/bin/python scripts/bench_import.py --stages memory --memory-shape 2048,2048,256
    .venv/bin/python scripts/bench_import.py --stages tiff,hdf5,nifti --shape 1024,1024,128

Stages (uint8, 4x4x40 nm, no file compression for every tool):
  tiff    a directory of 2D TIFF slices (strips of 64 rows). Ours: `image import` (pyramid on)
          into a FileQueue, then `execute -x` with -p 1 and -p 2. neuroglancer-scripts:
          generate-scales-info, slices-to-precomputed, compute-scales (full pyramid). Igneous's
          `image create` reads no TIFF stacks, so it has no row here.
  hdf5    one HDF5 file. Ours with --no-downsample (mip 0 only, like Igneous) against Igneous
          `image create --h5-dataset main`; neuroglancer-scripts reads no HDF5.
  nifti   one .nii file. Ours (pyramid on) against volume-to-precomputed-pyramid (in memory by
          default) and Igneous `image create` (mip 0 only); also ours without a queue (planning
          and tasks in one process, like those one-process tools).
  export  the layer the tiff stage imported (every mip) out again. Ours: `image export --format
          ome-zarr` and `--format tiff` (mip 0) into a FileQueue, then `execute -x` with -p 1 and
          -p 2. Against the scripts users write instead (there is no export command in Igneous or
          neuroglancer-scripts): cloud-volume reading each mip whole + zarr-python writing it
          (same chunks and blosc-zstd compression as ours), a tensorstore copy (precomputed -> zarr, its own threads),
          and cloud-volume + tifffile for the TIFF slices.
  memory  a TIFF stack larger than --memory (default 2048x2048x256, 1 GiB) imported with
          `--memory 256MB` and `execute -p 2`: the peak RSS of the largest worker.
Our imports run with --memory 256MB (--ours-memory) in every stage.
CPU comes from os.wait4 over each command's process tree (summed over the producer and the
workers), peak RSS from GNU time (the largest single process); wall is end to end.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Run, measure, our_exe  # noqa: E402  (the same measurement as scripts/bench.py)

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / ".venv-reference" / "bin"
RES = (4, 4, 40)


def make_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """z,y,x uint8: a smooth gradient plus noise, so no tool gets a trivially constant volume."""
    x, y, z = shape
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 64, (y, x), dtype=np.uint8)
    vol = np.empty((z, y, x), np.uint8)
    for k in range(z):
        vol[k] = np.roll(noise, k, axis=1) + ((np.arange(x)[None, :] + k) % 192).astype(np.uint8)
    return vol


def write_stack(vol: np.ndarray, out: Path) -> Path:
    import tifffile

    out.mkdir(parents=True, exist_ok=True)
    for k, plane in enumerate(vol):
        tifffile.imwrite(out / f"slice_{k:05d}.tif", plane, rowsperstrip=64)
    return out


def write_h5(vol: np.ndarray, path: Path) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("main", data=vol, chunks=(64, 128, 128))
    return path


def write_nifti(vol: np.ndarray, path: Path) -> Path:
    import nibabel

    img = nibabel.Nifti1Image(np.asfortranarray(vol.transpose(2, 1, 0)), np.diag([*(r / 1e6 for r in RES), 1.0]))
    img.header.set_xyzt_units("mm")
    nibabel.save(img, path)
    return path


def run_all(cmds: list[tuple[list[str], Path | None]], log: Path) -> Run:
    """Run commands in order; CPU and wall add up, RSS is the largest.

    Peak RSS comes from GNU time around each command: a child forked straight from this
    (larger) process would count the pages it inherited before exec in its peak."""
    total = Run([], 0, 0.0, 0.0, 0.0, str(log))
    for i, (cmd, cwd) in enumerate(cmds):
        if cwd is not None:
            cmd = ["/usr/bin/env", "-C", str(cwd), *cmd]
        rss_file = log.with_suffix(f".{i}.rss")
        r = measure(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd], log.with_suffix(f".{i}.log"))
        rss = float(rss_file.read_text().split()[-1]) / 1024 if rss_file.exists() else r.rss_mib
        total = Run(total.cmd + [cmd], r.rc or total.rc, total.wall + r.wall, total.cpu + r.cpu,
                    max(total.rss_mib, rss), total.log)
        if r.rc:
            print(f"  FAILED ({r.rc}): {' '.join(map(str, cmd))}; see {r.log}", file=sys.stderr)
            break
    return total


def queued(work: Path, name: str, workers: int, producer: list[str]) -> Run:
    """One of our commands as a user queues it: `producer` (its arguments after the executable;
    OUT and QUEUE stand for WORK/NAME and a fresh FileQueue) with --queue, then `execute -x`."""
    exe = str(our_exe())
    out, q = work / name, work / f"{name}-q"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(q, ignore_errors=True)
    args = [str(out) if a == "OUT" else f"file://{out}" if a == "file://OUT" else a for a in producer]
    return run_all([
        ([exe, *args, "--queue", f"fq://{q}"], None),
        ([exe, "execute", f"fq://{q}", "-p", str(workers), "-x", "-q"], None),
    ], work / "logs" / name)


def ours(src: Path, work: Path, name: str, workers: int, extra: list[str]) -> Run:
    return queued(work, name, workers, ["image", "import", str(src), "file://OUT", "--resolution",
                                        ",".join(map(str, RES)), "--compress", "none", *extra])


def ours_in_process(src: Path, work: Path, name: str, extra: list[str]) -> Run:
    """`image import` without --queue: planning and tasks in one process, as a one-file tool runs
    (the queued form pays the libraries' start-up, ~0.8 s CPU, in the planner and the worker)."""
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    return run_all([([str(our_exe()), "image", "import", str(src), f"file://{out}", "--resolution",
                      ",".join(map(str, RES)), "--compress", "none", *extra], None)], work / "logs" / name)


def ngs_slices(stack: Path, shape, work: Path) -> Run:
    out = work / "ngs-slices"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    full = {"type": "image", "data_type": "uint8", "num_channels": 1,
            "scales": [{"size": list(shape), "resolution": list(RES), "voxel_offset": [0, 0, 0]}]}
    (work / "fullres.json").write_text(json.dumps(full))
    return run_all([
        ([str(REF / "generate-scales-info"), str(work / "fullres.json"), str(out)], None),
        ([str(REF / "slices-to-precomputed"), "--no-gzip", "--flat", str(stack), str(out)], out),
        ([str(REF / "compute-scales"), "--no-gzip", "--flat", str(out)], out),
    ], work / "logs" / "ngs-slices")


def ngs_volume(path: Path, work: Path) -> Run:
    out = work / "ngs-volume"
    shutil.rmtree(out, ignore_errors=True)
    return run_all([([str(REF / "volume-to-precomputed-pyramid"), "--no-gzip", "--flat", str(path), str(out)],
                     None)], work / "logs" / "ngs-volume")


def igneous_create(path: Path, work: Path, name: str, extra: list[str]) -> Run:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    return run_all([([str(REF / "igneous"), "image", "create", str(path), f"file://{out}", "--resolution",
                      ",".join(map(str, RES)), "--compress", "none", "--chunk-size", "128,128,64", *extra], None)],
                   work / "logs" / name)


def igneous_h5(h5: Path, npy: Path, work: Path) -> dict[str, Run]:
    """Igneous `image create` on the HDF5 file, or on the same voxels as .npy when the reference
    venv lacks h5py (Igneous imports it only for HDF5 and does not depend on it)."""
    probe = subprocess.run([str(REF / "python"), "-c", "import h5py"], capture_output=True)
    if probe.returncode == 0:
        return {"igneous image create": igneous_create(h5, work, "igneous-h5", ["--h5-dataset", "main"])}
    return {"igneous image create (same voxels as .npy: no h5py in .venv-reference)":
            igneous_create(npy, work, "igneous-h5", [])}


EXPORT_SCRIPTS = {
    # each reads LAYER (argv[1]) and writes DEST (argv[2]); every mip, chunks as the layer's
    "cloud-volume + zarr-python": """
import sys, numpy as np, zarr
from numcodecs import Blosc
from cloudvolume import CloudVolume
src, dst = sys.argv[1], sys.argv[2]
root = zarr.open_group(dst, mode="w", zarr_format=2)
scales = CloudVolume(src).info["scales"]
for mip, scale in enumerate(scales):
    arr = np.asarray(CloudVolume(src, mip=mip, progress=False)[:, :, :])
    zyx = np.ascontiguousarray(arr[..., 0].T)  # z,y,x (one channel)
    del arr
    cx, cy, cz = scale["chunk_sizes"][0]
    out = root.create_array(str(mip), shape=zyx.shape, chunks=(cz, cy, cx), dtype=zyx.dtype,
                            compressors=Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE))
    out[...] = zyx
    del zyx
root.attrs["multiscales"] = [{"version": "0.4", "axes": [
    {"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"], "datasets": [
    {"path": str(m), "coordinateTransformations": [{"type": "scale", "scale": s["resolution"][::-1]}]}
    for m, s in enumerate(scales)]}]
""",
    "tensorstore copy": """
import sys, json, tensorstore as ts
src, dst = sys.argv[1], sys.argv[2]
scales = json.load(open(src.replace("file://", "") + "/info"))["scales"]
for mip, scale in enumerate(scales):
    s = ts.open({"driver": "neuroglancer_precomputed", "kvstore": src + "/", "scale_index": mip}).result()
    s = s[ts.d[:].transpose[3, 2, 1, 0]][0]  # z,y,x (one channel)
    cx, cy, cz = scale["chunk_sizes"][0]
    d = ts.open({"driver": "zarr", "kvstore": f"file://{dst}/{mip}/", "metadata": {
        "shape": list(s.shape), "chunks": [cz, cy, cx], "dtype": "|u1",
        "compressor": {"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1}}},
        create=True, delete_existing=True).result()
    d.write(s).result()
""",
    "cloud-volume + tifffile": """
import sys, os, numpy as np, tifffile
from cloudvolume import CloudVolume
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
arr = np.asarray(CloudVolume(src, mip=0, progress=False)[:, :, :])[..., 0]
for z in range(arr.shape[2]):
    tifffile.imwrite(f"{dst}/{z:05d}.tif", np.ascontiguousarray(arr[:, :, z].T))
""",
}


def export_script(name: str, layer: Path, work: Path, slug: str) -> Run:
    out = work / slug
    shutil.rmtree(out, ignore_errors=True)
    return run_all([([sys.executable, "-c", EXPORT_SCRIPTS[name], f"file://{layer}", str(out)], None)],
                   work / "logs" / slug)


def ours_export(layer: Path, work: Path, name: str, workers: int, fmt: str) -> Run:
    return queued(work, name, workers, ["image", "export", f"file://{layer}", "OUT", "--format", fmt])


def check_export(zarr_dir: Path, ref: Path) -> None:
    """The exported level 0, read with zarr-python, equals the source (z,y,x)."""
    import zarr

    vol = np.load(ref, mmap_mode="r")
    got = zarr.open_array(str(zarr_dir / "0"), mode="r")
    for z in (0, vol.shape[0] // 2, vol.shape[0] - 1):
        if not np.array_equal(np.asarray(got[z]), vol[z]):
            raise SystemExit(f"bench_import: the export {zarr_dir} differs from the source at z={z}")


def ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report(stage: str, rows: dict[str, Run], pairs: list[tuple[str, str, list[str]]]) -> dict:
    """Print one stage's table, then for each (ours -p 1, ours -p 2, theirs doing the same work):
    CPU of ours -p 1, wall of ours -p 2 and peak RSS against the best of theirs."""
    print(f"\n== {stage}")
    print(f"{'tool':58s} {'cpu s':>7s} {'wall s':>7s} {'peak RSS MiB':>13s}  rc")
    for name, r in rows.items():
        print(f"{name:58s} {r.cpu:7.2f} {r.wall:7.2f} {r.rss_mib:13.0f}  {r.rc}")
    out: dict = {n: {"cpu": r.cpu, "wall": r.wall, "rss_mib": r.rss_mib, "rc": r.rc} for n, r in rows.items()}
    for one, two, theirs_names in pairs:
        theirs = [rows[n] for n in theirs_names if rows[n].rc == 0]
        if not theirs:
            continue
        mine1, mine2 = rows[one], rows[two]
        best_cpu, best_wall = min(r.cpu for r in theirs), min(r.wall for r in theirs)
        best_rss = min(r.rss_mib for r in theirs)
        print(f"ratios {one.replace(' -p 1', '')} / best of {', '.join(theirs_names)}: CPU "
              f"{ratio(mine1.cpu, best_cpu)} ({'one process' if 'no queue' in one else '-p 1'}), wall {ratio(mine2.wall, best_wall)} (-p 2), "
              f"peak RSS {ratio(mine1.rss_mib, best_rss)}")
        out.setdefault("ratios", []).append({"ours": one, "theirs": theirs_names, "cpu": mine1.cpu / best_cpu,
                                              "wall_p2": mine2.wall / best_wall, "rss": mine1.rss_mib / best_rss})
    return out


def check_layer(layer: Path, ref: Path) -> None:
    """Independent check of mip 0 with tensorstore: the imported voxels equal the source."""
    import tensorstore as ts

    vol = np.load(ref, mmap_mode="r")
    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": f"file://{layer}/", "scale_index": 0,
                     "fill_missing_data_reads": False}).result()
    for z in (0, vol.shape[0] // 2, vol.shape[0] - 1):
        got = np.asarray(store[:, :, z, 0].read().result())
        if not np.array_equal(got, vol[z].T):
            raise SystemExit(f"bench_import: {layer} differs from the source at z={z}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-import"))
    p.add_argument("--shape", default="1024,1024,128", help="x,y,z of the comparison volume")
    p.add_argument("--memory-shape", default="2048,2048,256", help="x,y,z of the memory demonstration volume")
    p.add_argument("--memory", default="256MB", help="--memory of the memory demonstration")
    p.add_argument("--ours-memory", default="256MB", help="--memory of our imports in the comparison stages")
    p.add_argument("--stages", default="tiff,hdf5,nifti,export,memory")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    stages = args.stages.split(",")
    budget = ["--memory", args.ours_memory]
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(v) for v in args.shape.split(","))
    results: dict[str, dict] = {}
    # the volumes are written, then dropped: a child forked from a process holding them would
    # count their pages in its peak RSS
    ref = work / "data" / "vol.npy"
    if {"tiff", "hdf5", "nifti"} & set(stages):
        vol = make_volume(shape)
        (work / "data").mkdir(parents=True, exist_ok=True)
        np.save(ref, vol)
        stack = write_stack(vol, work / "data" / "stack")
        h5 = write_h5(vol, work / "data" / "vol.h5")
        nii = write_nifti(vol, work / "data" / "vol.nii")
        del vol
    if "tiff" in stages:
        rows = {"igneous-like import -p 1": ours(stack, work, "ours-tiff-p1", 1, budget),
                "igneous-like import -p 2": ours(stack, work, "ours-tiff-p2", 2, budget),
                "neuroglancer-scripts slices + compute-scales": ngs_slices(stack, shape, work)}
        check_layer(work / "ours-tiff-p2", ref)
        results["tiff"] = report(f"tiff stack {args.shape} uint8 -> Precomputed with pyramid", rows,
                                 [(*list(rows)[:2], [list(rows)[2]])])
    if "hdf5" in stages:
        rows = {"igneous-like import --no-downsample -p 1": ours(h5, work, "ours-h5-p1", 1, ["--no-downsample", *budget]),
                "igneous-like import --no-downsample -p 2": ours(h5, work, "ours-h5-p2", 2, ["--no-downsample", *budget]),
                **igneous_h5(h5, ref, work)}
        check_layer(work / "ours-h5-p2", ref)
        results["hdf5"] = report(f"hdf5 {args.shape} uint8 -> Precomputed mip 0", rows,
                                 [(*list(rows)[:2], [list(rows)[2]])])
    if "nifti" in stages:
        rows = {"igneous-like import -p 1": ours(nii, work, "ours-nii-p1", 1, budget),
                "igneous-like import -p 2": ours(nii, work, "ours-nii-p2", 2, budget),
                "neuroglancer-scripts volume-to-precomputed-pyramid": ngs_volume(nii, work),
                "igneous-like import --no-downsample -p 1": ours(nii, work, "ours-nii0-p1", 1,
                                                                 ["--no-downsample", *budget]),
                "igneous-like import --no-downsample -p 2": ours(nii, work, "ours-nii0-p2", 2,
                                                                 ["--no-downsample", *budget]),
                "igneous image create (mip 0 only)": igneous_create(nii, work, "igneous-nii", []),
                "igneous-like import, no queue (one process)": ours_in_process(nii, work, "ours-nii-inproc", budget)}
        check_layer(work / "ours-nii-p2", ref)
        check_layer(work / "ours-nii-inproc", ref)
        names = list(rows)
        results["nifti"] = report(f"nifti {args.shape} uint8 -> Precomputed", rows,
                                  [(names[0], names[1], [names[2]]), (names[3], names[4], [names[5]]),
                                   (names[6], names[1], [names[2]])])
    if "export" in stages:
        layer = work / "ours-tiff-p2"
        if not (layer / "info").exists():
            raise SystemExit("bench_import: the export stage exports the tiff stage's layer: run --stages tiff,export")
        rows = {"igneous-like export ome-zarr -p 1": ours_export(layer, work, "ours-zarr-p1", 1, "ome-zarr"),
                "igneous-like export ome-zarr -p 2": ours_export(layer, work, "ours-zarr-p2", 2, "ome-zarr"),
                "cloud-volume + zarr-python": export_script("cloud-volume + zarr-python", layer, work, "cv-zarr"),
                "tensorstore copy": export_script("tensorstore copy", layer, work, "ts-zarr"),
                "igneous-like export tiff -p 1": ours_export(layer, work, "ours-tif-p1", 1, "tiff"),
                "igneous-like export tiff -p 2": ours_export(layer, work, "ours-tif-p2", 2, "tiff"),
                "cloud-volume + tifffile": export_script("cloud-volume + tifffile", layer, work, "cv-tiff")}
        for name in ("ours-zarr-p2", "cv-zarr", "ts-zarr"):
            check_export(work / name, ref)
        names = list(rows)
        results["export"] = report(f"export {args.shape} uint8 Precomputed (all mips) -> OME-Zarr, mip 0 -> TIFF",
                                   rows, [(names[0], names[1], names[2:4]), (names[4], names[5], [names[6]])])
    if "memory" in stages:
        mshape = tuple(int(v) for v in args.memory_shape.split(","))
        big = make_volume(mshape, seed=1)
        stack = write_stack(big, work / "data" / "big-stack")
        big_ref, nbytes = work / "data" / "big.npy", big.nbytes
        np.save(big_ref, big)
        del big
        dry = subprocess.run([str(our_exe()), "image", "import", str(stack), f"file://{work}/ours-big", "--resolution",
                              "4,4,40", "--memory", args.memory, "--dry-run", "--force"], capture_output=True, text=True)
        print(f"\n== memory: {args.memory_shape} uint8 TIFF stack ({nbytes / 2**30:.2f} GiB), --memory {args.memory}")
        print(dry.stdout.strip())
        rows = {"igneous-like import -p 2": ours(stack, work, "ours-big", 2, ["--memory", args.memory])}
        check_layer(work / "ours-big", big_ref)
        r = rows["igneous-like import -p 2"]
        print(f"peak RSS of the largest worker: {r.rss_mib:.0f} MiB; cpu {r.cpu:.1f} s, wall {r.wall:.1f} s, rc {r.rc}")
        results["memory"] = {"shape": mshape, "memory": args.memory, "rss_mib": r.rss_mib, "cpu": r.cpu,
                             "wall": r.wall, "plan": dry.stdout}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
