"""Benchmark igneous-like against the reference Igneous CLI on the same sample volume.

Run from the repository root:

    .venv/bin/python scripts/bench.py                       # 512x512x128, every stage, once
    .venv/bin/python scripts/bench.py --size 256,256,64 --repeat 3 --stages ds-image,xfer-cseg
    .venv/bin/python scripts/bench.py --stages mesh-forge,mesh-merge       # meshing only
    .venv/bin/python scripts/bench.py --list-stages

What it does
  1. Makes sure `.venv-reference` (the reference tool, PyPI `igneous-pipeline`) exists at the
     repository root, creating it with `python3 -m venv` + `pip install` if it does not.
  2. Writes the sample `image` (uint8) and `segmentation` (uint64) layers once, raw, 64^3
     chunks, into OUT/KIND/pristine (igneous_like.sample.make_sample), for each volume kind of
     --volumes: "easy" (z-elongated Voronoi cells at 8x8x40 nm) and "hard" (neuron-like: somata
     with dendrites, thin branching axons crossing many tasks, ~120 fragments under 100 voxels
     per 256x256x128, ids above 2^32, 16x16x40 nm). Every stage runs on each; a table per kind.
  3. For every stage, repeat and tool, copies the needed layer into a fresh directory and runs
     the stage as a user would type it: a producer command that plans tasks into a FileQueue,
     then one worker (`execute -x`) that drains it. Both tools get the same options: the same
     number of mips, the same encoding, `--compress none`.
  4. Checks that both tools wrote output (the same scales, the same chunk file names per scale)
     and warns if not: a tool that silently did nothing would look very fast.
  5. Prints a table per stage and writes every figure (and the exact commands) to OUT/bench.json.

Mesh stages run on the segmentation the same way: `mesh forge` with the same task shape
(MESH_SHAPE) and simplification (`--max-error MESH_MAX_ERROR`) for both tools, plain files
(Igneous gets `--compress none`; igneous-like writes them uncompressed anyway), optionally
`--sharded`. A merge stage first forges in its own working copy (untimed, with SETUP_WORKERS
workers; those commands are logged and kept in bench.json under "setup", not in the table) and
then times only `mesh merge --magnitude 2` or `mesh merge-sharded --nlod 2 --vqb 16
--min-chunk-size 256,256,256`. Options not named here keep each tool's default. Fragment and mesh
file names differ between the tools, so the output check is: both wrote a mesh directory with a
non-empty info and fragments; legacy merge manifests (LABEL:0) cover the same labels;
merge-sharded wrote at least one .shard file.

Skeleton stages follow the same pattern: `skeleton forge` with task shape SKEL_SHAPE and the same
TEASAR options for both (--scale 4 --const 10 --dust-threshold 1000 and the soma options at
Igneous's defaults, all passed explicitly), then `skeleton merge --magnitude 2` or `skeleton
merge-sharded` (same --min-cable-length, --tick-threshold and --max-labels-per-shard for both)
after an untimed forge; for merge-sharded that forge gets `--sharded` for both tools (Igneous
needs it to write shard fragments; igneous-like accepts it and writes the same fragments either
way). Igneous's forge has no --compress option and gzips its fragments and merged skeletons.
Skeletonizing every label of the 512x512x128 sample takes over a minute per tool and forge, so by
default the forge gets `--labels` with up to SKEL_LABELS labels, the smallest of those present in
every forge task (Igneous's forge fails with a KeyError on a task whose cutout lacks a requested
label); they are found once by a child process and cached in OUT/pristine. When no label spans
every task, or with --skeleton-all-labels, every label is skeletonized. Output check: both wrote
a skeleton directory whose info has a radius vertex attribute; forge wrote fragments; merge wrote
files for the same labels (Igneous's end in .gz); merge-sharded wrote at least one .shard file.

Sharded volume stages (`image xfer --sharded --skip-downsample` to compressed_segmentation,
`image downsample --sharded --num-mips NUM_MIPS`) get the usual check (same scales, same file
names) plus: every scale they write holds .shard files, and a child process reads both tools'
sharded scales with tensorstore (`neuroglancer_precomputed`, `fill_missing_data_reads: false`),
warning when one cannot be read or when the arrays differ (for xfer, each must equal the source;
for downsample, ours must equal theirs).

Contrast stages run on the image: `image contrast histogram --coverage 1`; `image contrast
equalize --shape CONTRAST_SHAPE` after an untimed full-coverage histogram by the same tool (both
then build the mips that task shape holds); `image contrast clahe --shape CONTRAST_SHAPE
--tile-grid-size CLAHE_GRID`. A child process checks that every histogram equals numpy's, that
the two equalized mip 0s agree within one grey level, and that our CLAHE equals OpenCV's CLAHE of
each whole slice (Igneous's per-task CLAHE differs from it; its mean difference is printed).

The figures, per command (producer, execute) and for the stage as a whole (their sum):
  cpu s   user + system CPU seconds of the command's process tree (os.wait4 on the child, which
          includes every descendant it waited for)
  wall s  elapsed seconds from start to exit
  rss MiB peak resident set size: the largest of the child and its waited-for descendants
          (ru_maxrss); for "whole" the larger of the two commands
  ratio   ours / theirs; below 1 means igneous-like used less.
With --repeat N each figure is the median of N runs (the machine may be shared and noisy); the
order of the two tools alternates between repeats. Targets reported at the end (not asserted):
CPU ratio <= 1.0 per stage, wall ratio <= 0.5 for a whole stage, peak RSS ratio <= 1.0 for
every command.

Logs of every command are kept in OUT/logs; working copies are deleted unless --keep is given.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_VENV = ROOT / ".venv-reference"
REFERENCE_PACKAGE = "igneous-pipeline"
TOOLS = ("ours", "theirs")
NUM_MIPS = 3
MESH_SHAPE = "256,256,128"  # forge task shape, both tools
MESH_MAX_ERROR = 40  # forge simplification limit in physical units (both tools' default)
MESH_MAGNITUDE = 2  # legacy merge: ~10^2 label-prefix tasks
MESH_NLOD = 2  # merge-sharded: extra levels of detail
MESH_VQB = 16  # merge-sharded: vertex quantization bits
MESH_MIN_CHUNK = "256,256,256"  # merge-sharded: finest octree node in voxels (both tools' default)
SKEL_SHAPE = "256,256,128"  # skeleton forge task shape, both tools
SKEL_TEASAR = ("--scale", "4", "--const", "10", "--dust-threshold", "1000",  # both tools, explicitly;
               "--soma-detect", "1100", "--soma-accept", "3500",  # soma options at Igneous's defaults
               "--soma-scale", "1.0", "--soma-const", "300")
SKEL_MERGE = ("--min-cable-length", "1000", "--tick-threshold", "3500")  # skeleton merge and merge-sharded
SKEL_MAGNITUDE = 2  # skeleton merge: ~10^2 label-suffix tasks
SKEL_MAX_LABELS_PER_SHARD = 2000  # skeleton merge-sharded: Igneous's default, explicit for both
SKEL_LABELS = 3  # forge only this many labels (those spanning every task); 0 = every label
SETUP_WORKERS = min(2, os.cpu_count() or 1)  # untimed forge before a merge stage
CONTRAST_SHAPE = "256,256,64"  # equalize and clahe task shape, both tools
CLAHE_GRID = "8,8"  # clahe --tile-grid-size, both tools

TARGET_CPU = 1.0  # ours/theirs, whole stage
TARGET_WALL = 0.5  # ours/theirs, whole stage
TARGET_RSS = 1.0  # ours/theirs, every command


# ---------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """One operation, run the same way by both tools."""

    name: str
    layer: str  # "image" or "segmentation": the pristine layer to copy
    kind: str  # "downsample", "xfer", "mesh-forge", "mesh-merge", "skel-forge" or "skel-merge"
    encoding: str = ""  # xfer only
    build_mips: bool = True  # xfer only: build mips while transferring (--max-mips NUM_MIPS)
    sharded: bool = False  # mesh/skeleton: forge --sharded, then merge-sharded; image: --sharded output
    labels: tuple[int, ...] = ()  # skeleton forge only: --labels (empty: every label)
    grid: str = CLAHE_GRID  # contrast-clahe only: --tile-grid-size

    @property
    def is_mesh(self) -> bool:
        return self.kind.startswith("mesh-")

    @property
    def is_skeleton(self) -> bool:
        return self.kind.startswith("skel-")

    def setup_args(self, work: Path, queue: str, tool: str) -> list[str] | None:
        """The untimed producer to run (and drain) before the timed one: a merge needs a forge."""
        src = f"file://{work / self.layer}"
        if self.kind == "mesh-merge":
            return forge_args(src, queue, tool, self.sharded)
        if self.kind == "skel-merge":
            return skeleton_forge_args(src, queue, self.sharded, self.labels)
        if self.kind == "contrast-equalize":
            return ["image", "contrast", "histogram", src, "--coverage", "1", "--queue", queue]
        return None

    def producer_args(self, work: Path, queue: str, tool: str) -> list[str]:
        src = f"file://{work / self.layer}"
        if self.kind == "mesh-forge":
            return forge_args(src, queue, tool, self.sharded)
        if self.kind == "mesh-merge" and self.sharded:
            return ["mesh", "merge-sharded", src, "--nlod", str(MESH_NLOD), "--vqb", str(MESH_VQB),
                    "--min-chunk-size", MESH_MIN_CHUNK, "--queue", queue]
        if self.kind == "mesh-merge":
            return ["mesh", "merge", src, "--magnitude", str(MESH_MAGNITUDE), "--queue", queue]
        if self.kind == "skel-forge":
            return skeleton_forge_args(src, queue, self.sharded, self.labels)
        if self.kind == "skel-merge" and self.sharded:
            return ["skeleton", "merge-sharded", src, *SKEL_MERGE,
                    "--max-labels-per-shard", str(SKEL_MAX_LABELS_PER_SHARD), "--queue", queue]
        if self.kind == "skel-merge":
            return ["skeleton", "merge", src, "--magnitude", str(SKEL_MAGNITUDE), *SKEL_MERGE, "--queue", queue]
        if self.kind.startswith("contrast-"):
            return contrast_args(self.kind, src, f"file://{work / 'out'}", queue, self.grid)
        sharded = ["--sharded"] if self.sharded else []
        if self.kind == "downsample":
            return ["image", "downsample", src, "--num-mips", str(NUM_MIPS), "--compress", "none", *sharded,
                    "--queue", queue]
        mips = ["--max-mips", str(NUM_MIPS)] if self.build_mips else ["--skip-downsample"]
        return ["image", "xfer", src, f"file://{work / 'out'}", "--encoding", self.encoding,
                "--compress", "none", *mips, *sharded, "--queue", queue]

    def output_dir(self, work: Path) -> Path:
        return work / (self.layer if self.kind not in ("xfer", "contrast-equalize", "contrast-clahe") else "out")

    def expected_scales(self) -> int | None:
        """Scales the output should have; None when it depends on the tool's task shape."""
        if self.kind == "downsample":
            return 1 + NUM_MIPS
        return None if self.build_mips else 1

    def sharded_scales(self) -> range:
        """Indices of the output scales this stage writes as shards."""
        if not self.sharded or self.kind not in ("downsample", "xfer"):
            return range(0)
        return range(1, 1 + NUM_MIPS) if self.kind == "downsample" else range(1)


def contrast_args(kind: str, src: str, dest: str, queue: str, grid: str) -> list[str]:
    """The same for both tools: full-coverage histograms; equalize and clahe with one task shape."""
    if kind == "contrast-histogram":
        return ["image", "contrast", "histogram", src, "--coverage", "1", "--queue", queue]
    if kind == "contrast-equalize":
        return ["image", "contrast", "equalize", src, dest, "--shape", CONTRAST_SHAPE, "--queue", queue]
    return ["image", "contrast", "clahe", src, dest, "--shape", CONTRAST_SHAPE, "--tile-grid-size", grid,
            "--queue", queue]


def forge_args(src: str, queue: str, tool: str, sharded: bool) -> list[str]:
    args = ["mesh", "forge", src, "--shape", MESH_SHAPE, "--max-error", str(MESH_MAX_ERROR)]
    if tool == "theirs":
        args += ["--compress", "none"]  # Igneous gzips fragments by default; ours writes them plain
    return args + (["--sharded"] if sharded else []) + ["--queue", queue]


def skeleton_forge_args(src: str, queue: str, sharded: bool, labels: tuple[int, ...]) -> list[str]:
    """The same for both tools. Igneous's forge needs --sharded before merge-sharded; igneous-like
    accepts it (its fragments suit both merges)."""
    args = ["skeleton", "forge", src, "--shape", SKEL_SHAPE, *SKEL_TEASAR]
    if labels:
        args += ["--labels", ",".join(map(str, labels))]
    return args + (["--sharded"] if sharded else []) + ["--queue", queue]


STAGES = [
    Stage("ds-image", "image", "downsample"),
    Stage("ds-seg", "segmentation", "downsample"),
    Stage("xfer-jpeg", "image", "xfer", "jpeg"),
    Stage("xfer-cseg", "segmentation", "xfer", "compressed_segmentation"),
    Stage("xfer-cpso", "segmentation", "xfer", "compresso"),
    Stage("xfer-jpeg-only", "image", "xfer", "jpeg", build_mips=False),
    Stage("xfer-cseg-only", "segmentation", "xfer", "compressed_segmentation", build_mips=False),
    Stage("xfer-cpso-only", "segmentation", "xfer", "compresso", build_mips=False),
    Stage("xfer-sharded", "segmentation", "xfer", "compressed_segmentation", build_mips=False, sharded=True),
    Stage("ds-sharded", "segmentation", "downsample", sharded=True),
    Stage("mesh-forge", "segmentation", "mesh-forge"),
    Stage("mesh-merge", "segmentation", "mesh-merge"),
    Stage("mesh-forge-sharded", "segmentation", "mesh-forge", sharded=True),
    Stage("mesh-merge-sharded", "segmentation", "mesh-merge", sharded=True),
    Stage("skel-forge", "segmentation", "skel-forge"),
    Stage("skel-merge", "segmentation", "skel-merge"),
    Stage("skel-merge-sharded", "segmentation", "skel-merge", sharded=True),
    Stage("contrast-histogram", "image", "contrast-histogram"),
    Stage("contrast-equalize", "image", "contrast-equalize"),
    Stage("contrast-clahe", "image", "contrast-clahe"),
    Stage("contrast-clahe-7", "image", "contrast-clahe", grid="7,7"),
]
STAGE_HELP = {
    "ds-image": f"image downsample, {NUM_MIPS} mips",
    "ds-seg": f"segmentation downsample, {NUM_MIPS} mips",
    "xfer-jpeg": f"image xfer to jpeg, building up to {NUM_MIPS} mips on the way (--max-mips)",
    "xfer-cseg": f"segmentation xfer to compressed_segmentation, up to {NUM_MIPS} mips",
    "xfer-cpso": f"segmentation xfer to compresso, up to {NUM_MIPS} mips",
    "xfer-jpeg-only": "image xfer to jpeg, --skip-downsample (the transfer alone)",
    "xfer-cseg-only": "segmentation xfer to compressed_segmentation, --skip-downsample",
    "xfer-cpso-only": "segmentation xfer to compresso, --skip-downsample",
    "xfer-sharded": "segmentation xfer --sharded to compressed_segmentation, --skip-downsample (Igneous "
                    "builds no mips when sharding); checked with tensorstore against the source",
    "ds-sharded": f"segmentation downsample --sharded, {NUM_MIPS} mips (both tools take --num-mips); "
                  "ours and theirs compared with tensorstore",
    "mesh-forge": f"mesh forge, {MESH_SHAPE} tasks, --max-error {MESH_MAX_ERROR}, legacy fragments",
    "mesh-merge": f"mesh merge --magnitude {MESH_MAGNITUDE} (legacy manifests), after an untimed forge",
    "mesh-forge-sharded": f"mesh forge --sharded, {MESH_SHAPE} tasks, --max-error {MESH_MAX_ERROR}",
    "mesh-merge-sharded": f"mesh merge-sharded --nlod {MESH_NLOD} --vqb {MESH_VQB} --min-chunk-size "
                          f"{MESH_MIN_CHUNK}, after an untimed forge --sharded",
    "skel-forge": f"skeleton forge, {SKEL_SHAPE} tasks, {' '.join(SKEL_TEASAR)}, --labels of up to "
                  f"{SKEL_LABELS} labels spanning every task (or --skeleton-all-labels)",
    "skel-merge": f"skeleton merge --magnitude {SKEL_MAGNITUDE} {' '.join(SKEL_MERGE)}, after an untimed forge",
    "skel-merge-sharded": f"skeleton merge-sharded {' '.join(SKEL_MERGE)} --max-labels-per-shard "
                          f"{SKEL_MAX_LABELS_PER_SHARD}, after an untimed forge --sharded (both tools)",
    "contrast-histogram": "image contrast histogram --coverage 1 (a histogram per z slice); levels compared",
    "contrast-equalize": f"image contrast equalize --shape {CONTRAST_SHAPE} (mips from the task shape), after an "
                         "untimed histogram --coverage 1 by the same tool; mip 0 compared",
    "contrast-clahe": f"image contrast clahe --shape {CONTRAST_SHAPE} --tile-grid-size {CLAHE_GRID}; mip 0 of each "
                      "compared with OpenCV's CLAHE of whole slices",
    "contrast-clahe-7": f"image contrast clahe --shape {CONTRAST_SHAPE} --tile-grid-size 7,7 (tiles of no power-of-two "
                        "size: ours computes OpenCV's arithmetic itself); compared with OpenCV",
}
NAME_WIDTH = max(15, *(len(s.name) for s in STAGES))  # stage column of the table and --list-stages


# ---------------------------------------------------------------- tools


@dataclass
class Tool:
    name: str  # "ours" or "theirs"
    exe: str

    def producer(self, stage: Stage, work: Path, queue: str) -> list[str]:
        return [self.exe, *stage.producer_args(work, queue, self.name)]

    def setup(self, stage: Stage, work: Path, queue: str) -> list[tuple[str, list[str]]]:
        """(step, command) pairs that prepare the stage's input, untimed; none for most stages."""
        args = stage.setup_args(work, queue, self.name)
        if args is None:
            return []
        return [("setup-producer", [self.exe, *args]), ("setup-execute", self.execute(queue, SETUP_WORKERS))]

    def execute(self, queue: str, workers: int = 1) -> list[str]:
        if self.name == "ours":
            return [self.exe, "execute", queue, "-p", str(workers), "-x", "-q"]
        return [self.exe, "-p", str(workers), "execute", "-x", "-q", queue]


def ensure_reference() -> Path:
    """The reference `igneous` command, installing it into .venv-reference when missing."""
    exe = REFERENCE_VENV / "bin" / "igneous"
    if exe.exists():
        return exe
    if not (REFERENCE_VENV / "bin" / "python").exists():
        print(f"creating the reference virtualenv {REFERENCE_VENV} ...", flush=True)
        subprocess.run(["python3", "-m", "venv", str(REFERENCE_VENV)], check=True)
    print(f"installing {REFERENCE_PACKAGE} into {REFERENCE_VENV} (takes a minute) ...", flush=True)
    subprocess.run([str(REFERENCE_VENV / "bin" / "pip"), "install", "--quiet", REFERENCE_PACKAGE], check=True)
    if not exe.exists():
        sys.exit(f"bench: {REFERENCE_PACKAGE} installed but {exe} is missing")
    return exe


def our_exe() -> Path:
    for cand in (Path(sys.executable).parent / "igneous-like", ROOT / ".venv" / "bin" / "igneous-like"):
        if cand.exists():
            return cand
    found = shutil.which("igneous-like")
    if not found:
        sys.exit("bench: cannot find the igneous-like command; run with the project venv's python")
    return Path(found)


def package_version(python: Path, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def warm_up(ours: Path, theirs: Path) -> None:
    """Import the heavy libraries once per venv so the first timed command is not a cold start."""
    code = "import numpy, cloudvolume, taskqueue, tinybrain"
    mesh = ("import importlib, importlib.util as u\n"  # the mesh and skeleton libraries each venv has
            "for m in ('zmesh', 'DracoPy', 'fastremap', 'mapbuffer', 'shardcomputer', 'kimimaro'):\n"
            "    u.find_spec(m) and importlib.import_module(m)")
    for python, extra in ((ours.parent / "python", ", igneous_like.queues"), (theirs.parent / "python", ", igneous")):
        subprocess.run([str(python), "-c", code + extra], capture_output=True)
        subprocess.run([str(python), "-c", mesh], capture_output=True)


# ---------------------------------------------------------------- measuring


@dataclass
class Run:
    cmd: list[str]
    rc: int
    wall: float
    cpu: float
    rss_mib: float
    log: str


def measure(cmd: list[str], log: Path) -> Run:
    """Run cmd to completion; wall time and the rusage of its process tree via os.wait4."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # already reaped: keep Popen from waiting again
    return Run(cmd, rc, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, str(log))


def measure_ok(cmd: list[str], log: Path) -> Run:
    """measure(), exiting with the command and its log's tail when it fails (for the small
    side-by-side benchmarks, where a failed run leaves nothing to compare)."""
    run = measure(cmd, log)
    if run.rc != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{log_tail(run.log, 20)}")
    return run


def print_side_by_side(results: dict[str, tuple]) -> None:
    """The (cpu, wall, ...) of "igneous-like" and "Igneous", a line each, then their CPU ratio."""
    for name, (cpu, wall, *_) in results.items():
        print(f"  {name:13s} CPU {cpu:6.2f} s   wall {wall:6.2f} s")
    print(f"  CPU ratio igneous-like/Igneous: {results['igneous-like'][0] / results['Igneous'][0]:.2f}")


def log_tail(path: str, lines: int = 3) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join("      | " + line[-200:] for line in text[-lines:])


# ---------------------------------------------------------------- verifying


def scale_listing(layer: Path) -> dict[str, set[str]] | None:
    """Scale key -> chunk file names on disk, for the scales in the layer's info."""
    try:
        info = json.loads((layer / "info").read_text())
    except (OSError, ValueError):
        return None
    listing = {}
    for scale in info.get("scales", []):
        folder = layer / scale["key"]
        listing[scale["key"]] = set(os.listdir(folder)) if folder.is_dir() else set()
    return listing


def verify(stage: Stage, outputs: dict[str, Path]) -> list[str]:
    """Problems with the two tools' outputs; an empty list means both did the same work."""
    if stage.is_mesh:
        return verify_mesh(stage, outputs)
    if stage.is_skeleton:
        return verify_skeleton(stage, outputs)
    if stage.kind.startswith("contrast-"):
        return verify_contrast(stage, outputs)
    problems = []
    listings = {tool: scale_listing(path) for tool, path in outputs.items()}
    for tool, listing in listings.items():
        if listing is None:
            problems.append(f"{tool}: no readable info in {outputs[tool]}")
            continue
        empty = [key for key, files in listing.items() if not files]
        if empty:
            problems.append(f"{tool}: no chunk files in scale(s) {', '.join(empty)}")
        want = stage.expected_scales()
        if want is not None and len(listing) != want:
            problems.append(f"{tool}: {len(listing)} scales, expected {want}")
    ours, theirs = listings.get("ours"), listings.get("theirs")
    if ours is not None and theirs is not None:
        if set(ours) != set(theirs):
            problems.append(f"scales differ: ours {sorted(ours)} vs theirs {sorted(theirs)}")
        for key in sorted(set(ours) & set(theirs)):
            if ours[key] != theirs[key]:
                problems.append(f"scale {key}: {len(ours[key])} files (ours) vs {len(theirs[key])} (theirs), "
                                f"{len(ours[key] ^ theirs[key])} names differ")
    if stage.sharded_scales():
        problems += verify_shards(stage, outputs, listings)
    return problems


# Runs in a child process. argv: JSON {"kind", "layers": {tool: dir}, "source": dir}. Prints a JSON
# list of problems: histograms must equal numpy's; equalize outputs must agree within one grey
# level; clahe outputs are compared with OpenCV's CLAHE of each whole slice (x across, y down).
CONTRAST_CHECK = r"""
import json, os, sys
import numpy as np
from cloudvolume import CloudVolume
job = json.loads(sys.argv[1])
src = CloudVolume("file://" + job["source"], progress=False)[:, :, :][..., 0]
problems = []
if job["kind"] == "contrast-histogram":
    for tool, path in job["layers"].items():
        bad = 0
        for z in range(src.shape[2]):
            try:
                levels = json.load(open(os.path.join(path, "levels", "0", str(z))))["levels"]
            except OSError:
                bad += 1
                continue
            bad += levels[:256] != np.bincount(src[:, :, z].ravel(), minlength=256).tolist()
        if bad:
            problems.append(f"{tool}: {bad} of {src.shape[2]} slice histograms differ from numpy's")
else:
    out = {tool: CloudVolume("file://" + path, progress=False, fill_missing=False)[:, :, :][..., 0]
           for tool, path in job["layers"].items()}
    if job["kind"] == "contrast-equalize":
        diff = np.abs(out["ours"].astype(int) - out["theirs"]).max()
        if diff > 1:
            problems.append(f"equalize: mip 0 of ours and theirs differ by up to {diff} grey levels")
    else:
        import cv2
        grid = tuple(int(v) for v in job["grid"].split(","))
        want = np.stack([cv2.createCLAHE(40.0, grid).apply(np.ascontiguousarray(src[:, :, z].T)).T
                         for z in range(src.shape[2])], axis=2)
        for tool, img in out.items():
            diff = np.abs(img.astype(int) - want)
            if diff.max():
                print(f"{tool} clahe vs OpenCV on whole slices: mean |diff| {diff.mean():.2f}, max {diff.max()}", file=sys.stderr)
            if tool == "ours" and diff.max():
                problems.append(f"ours: clahe differs from OpenCV's whole-slice CLAHE in {(diff > 0).sum()} voxels")
print(json.dumps(problems))
"""


def verify_contrast(stage: Stage, outputs: dict[str, Path]) -> list[str]:
    """Contrast stages: see CONTRAST_CHECK (run in a child to keep this process small)."""
    source = outputs["ours"].parent / stage.layer
    job = json.dumps({"kind": stage.kind, "layers": {t: str(p) for t, p in outputs.items()},
                      "source": str(source), "grid": stage.grid})
    proc = subprocess.run([sys.executable, "-c", CONTRAST_CHECK, job], capture_output=True, text=True)
    if proc.stderr.strip():
        print("\n".join("  " + line for line in proc.stderr.strip().splitlines()[-2:]), flush=True)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return [f"contrast check failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"]


def verify_shards(stage: Stage, outputs: dict[str, Path], listings: dict[str, dict[str, set[str]] | None]) -> list[str]:
    """Sharded volume stages: .shard files in every scale the stage shards, and tensorstore reads
    of them that agree (with the source for xfer, with each other for downsample)."""
    problems, readable = [], {}
    for tool, listing in listings.items():
        if listing is None:
            continue
        keys = list(listing)  # in info order
        missing = [str(i) for i in stage.sharded_scales() if i >= len(keys)]
        no_shards = [keys[i] for i in stage.sharded_scales()
                     if i < len(keys) and not any(f.endswith(".shard") for f in listing[keys[i]])]
        if missing or no_shards:
            problems.append(f"{tool}: no .shard files in scale(s) {', '.join(no_shards + missing)}")
        else:
            readable[tool] = str(outputs[tool])
    if not readable:
        return problems
    source = str(outputs["ours"].parent / stage.layer) if stage.kind == "xfer" else None
    return problems + tensorstore_compare(readable, list(stage.sharded_scales()), source)


# Runs in a child process (tensorstore and whole arrays stay out of this process, whose peak RSS
# every later child would inherit). argv: JSON {"layers": {tool: dir}, "scales": [...], "source": dir|null}.
# Prints a JSON list of problems.
TENSORSTORE_CHECK = r"""
import json, sys
import numpy as np
import tensorstore as ts
job = json.loads(sys.argv[1])
names = dict(job["layers"], **({"source": job["source"]} if job["source"] else {}))
pairs = [(tool, "source") for tool in job["layers"]] if job["source"] else [("ours", "theirs")]
problems = []

def short(exc):
    return str(exc).split(" [tensorstore_spec")[0][:300]

for scale in job["scales"]:
    arrays = {}
    for name, path in names.items():
        spec = {"driver": "neuroglancer_precomputed", "kvstore": "file://" + path,
                "scale_index": 0 if name == "source" else scale, "fill_missing_data_reads": False}
        try:
            arrays[name] = ts.open(spec, read=True).result()
        except Exception as exc:
            problems.append(f"tensorstore cannot open {name} scale {scale}: {short(exc)}")
    for a, b in pairs:
        if a in arrays and b in arrays and arrays[a].domain != arrays[b].domain:
            problems.append(f"tensorstore: scale {scale} of {a} has domain {arrays[a].domain}, {b} {arrays[b].domain}")
            arrays.pop(a)
    diff = {pair: 0 for pair in pairs}
    some = next(iter(arrays.values()), None)
    lo, hi = (some.domain.inclusive_min[2], some.domain.exclusive_max[2]) if some is not None else (0, 0)
    for z in range(lo, hi, 64):  # one z-slab at a time bounds memory
        slabs = {}
        for name in list(arrays):
            try:
                slabs[name] = arrays[name][:, :, z:min(z + 64, hi)].read().result()
            except Exception as exc:
                problems.append(f"tensorstore cannot read {name} scale {scale} at z={z}: {short(exc)}")
                arrays.pop(name)
        for a, b in pairs:
            if a in slabs and b in slabs:
                diff[(a, b)] += int(np.count_nonzero(slabs[a] != slabs[b]))
    for (a, b), count in diff.items():
        if count:
            problems.append(f"tensorstore: scale {scale} of {a} differs from {b} in {count} voxels")
print(json.dumps(problems))
"""


def tensorstore_compare(layers: dict[str, str], scales: list[int], source: str | None) -> list[str]:
    """Problems found reading the sharded scales with tensorstore (see TENSORSTORE_CHECK)."""
    job = json.dumps({"layers": layers, "scales": scales, "source": source})
    proc = subprocess.run([sys.executable, "-c", TENSORSTORE_CHECK, job], capture_output=True, text=True)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return [f"tensorstore check failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"]


def object_listing(layer: Path, key: str) -> tuple[dict, set[str]] | str:
    """The info and file names of the directory the layer's info names under key ("mesh" or
    "skeletons"), or why there is none to list."""
    try:
        sub = json.loads((layer / "info").read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return f"no readable info in {layer}"
    if not isinstance(sub, str) or not sub:
        return f"the info of {layer} names no {key} directory"
    try:
        text = (layer / sub / "info").read_text().strip()
    except OSError:
        return f"no {key} info in {layer / sub}"
    if not text:
        return f"empty {key} info in {layer / sub}"
    try:
        info = json.loads(text)
    except ValueError:
        return f"unreadable {key} info in {layer / sub}"
    return info, set(os.listdir(layer / sub))


def labels_named(files: set[str], parts: int) -> set[str]:
    """Labels of legacy mesh files named LABEL:0 (parts=2, manifests) or LABEL:0:... (parts=3,
    fragments)."""
    split = (name.split(":") for name in files)
    return {p[0] for p in split if len(p) == parts and p[0].isdigit() and p[1] == "0"}


def verify_mesh(stage: Stage, outputs: dict[str, Path]) -> list[str]:
    """Problems with the two tools' meshes. Their file names differ by design (fragment bounding
    boxes, merged mesh files), so compare what both must have rather than names."""
    problems, labels = [], {}
    for tool, layer in outputs.items():
        listing = object_listing(layer, "mesh")
        if isinstance(listing, str):
            problems.append(f"{tool}: {listing}")
            continue
        files = listing[1]
        if stage.kind == "mesh-forge" and stage.sharded:
            if not any(f.endswith(".frags") for f in files):
                problems.append(f"{tool}: no .frags fragment files")
        elif stage.kind == "mesh-forge":
            labels[tool] = labels_named(files, 3)
            if not labels[tool]:
                problems.append(f"{tool}: no LABEL:0:BBOX fragment files")
        elif stage.sharded:
            if not any(f.endswith(".shard") for f in files):
                problems.append(f"{tool}: no .shard files")
        else:
            labels[tool] = labels_named(files, 2)
            if not labels[tool]:
                problems.append(f"{tool}: no LABEL:0 manifests")
    ours, theirs = labels.get("ours"), labels.get("theirs")
    if ours and theirs and ours != theirs:
        what = "fragments" if stage.kind == "mesh-forge" else "manifests"
        problems.append(f"labels with {what} differ: {len(ours)} (ours) vs {len(theirs)} (theirs), "
                        f"{len(ours ^ theirs)} not in both, e.g. {sorted(ours ^ theirs)[:3]}")
    return problems


def verify_skeleton(stage: Stage, outputs: dict[str, Path]) -> list[str]:
    """Problems with the two tools' skeletons: a skeleton info with a radius attribute, then
    fragments (forge), one file per label for the same labels (merge; Igneous's end in .gz) or
    shards (merge-sharded)."""
    problems, labels = [], {}
    for tool, layer in outputs.items():
        listing = object_listing(layer, "skeletons")
        if isinstance(listing, str):
            problems.append(f"{tool}: {listing}")
            continue
        info, files = listing
        attrs = [a.get("id") for a in info.get("vertex_attributes") or [] if isinstance(a, dict)]
        if "radius" not in attrs:
            problems.append(f"{tool}: skeleton info has no radius vertex attribute ({attrs})")
        if stage.kind == "skel-forge":
            if not [f for f in files if f != "info" and ".spatial" not in f]:
                problems.append(f"{tool}: no skeleton fragment files")
        elif stage.sharded:
            if not any(f.endswith(".shard") for f in files):
                problems.append(f"{tool}: no .shard files")
        else:
            labels[tool] = {f.removesuffix(".gz") for f in files if f.removesuffix(".gz").isdigit()}
            if not labels[tool]:
                problems.append(f"{tool}: no LABEL skeleton files")
    ours, theirs = labels.get("ours"), labels.get("theirs")
    if ours and theirs and ours != theirs:
        problems.append(f"labels with skeletons differ: {len(ours)} (ours) vs {len(theirs)} (theirs), "
                        f"{len(ours ^ theirs)} not in both, e.g. {sorted(ours ^ theirs)[:3]}")
    return problems


# ---------------------------------------------------------------- the benchmark


@dataclass
class StageResult:
    stage: Stage
    runs: dict[str, dict[str, list[Run]]] = field(
        default_factory=lambda: {t: {"producer": [], "execute": []} for t in TOOLS})
    problems: list[str] = field(default_factory=list)
    setup: dict[str, list[Run]] = field(default_factory=lambda: {t: [] for t in TOOLS})  # untimed

    def failed(self, tool: str) -> bool:
        return any(r.rc != 0 for cmd in self.runs[tool].values() for r in cmd) or \
            any(r.rc != 0 for r in self.setup[tool])

    def figures(self, tool: str) -> dict[str, dict[str, float]]:
        """Median cpu, wall and rss per command, and for the whole stage."""
        prod, exe = self.runs[tool]["producer"], self.runs[tool]["execute"]
        med = statistics.median
        out = {name: {"cpu": med(r.cpu for r in runs), "wall": med(r.wall for r in runs),
                      "rss_mib": med(r.rss_mib for r in runs)}
               for name, runs in (("producer", prod), ("execute", exe))}
        out["whole"] = {
            "cpu": med(p.cpu + e.cpu for p, e in zip(prod, exe)),
            "wall": med(p.wall + e.wall for p, e in zip(prod, exe)),
            "rss_mib": med(max(p.rss_mib, e.rss_mib) for p, e in zip(prod, exe)),
        }
        return out


def prepare_sample(out: Path, shape: tuple[int, int, int], kind: str = "easy") -> Path:
    """OUT/pristine with both sample layers, reused when it was made for the same shape and kind
    (easy: z-elongated Voronoi cells at 8x8x40 nm; hard: igneous_like.sample.neurons at 16x16x40).

    The sample is written by a child process: on Linux a forked child starts with its parent's
    peak RSS, so this process must stay small or it would inflate every measured ru_maxrss."""
    pristine = out / "pristine"
    marker = pristine / "sample.json"
    wanted = {"shape": list(shape), "kind": kind}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        print(f"reusing {kind} sample volume {pristine} {shape}", flush=True)
        return pristine
    shutil.rmtree(pristine, ignore_errors=True)
    print(f"writing {kind} sample volume {shape} to {pristine} ...", flush=True)
    t0 = time.perf_counter()
    code = ("import sys; from igneous_like.sample import make_sample; "
            "make_sample(sys.argv[1], tuple(int(v) for v in sys.argv[2].split(',')), kind=sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, f"file://{pristine}", ",".join(map(str, shape)), kind], check=True)
    marker.write_text(json.dumps(wanted))
    print(f"  done in {time.perf_counter() - t0:.1f}s", flush=True)
    return pristine


# Runs in a child process (reads the segmentation task by task). argv: layer URL, task shape X,Y,Z.
# Prints the labels present in every task's cutout (task plus the one-voxel overlap both forges
# read), smallest first by voxel count.
SPANNING_LABELS = r"""
import itertools, json, sys
import numpy as np
from cloudvolume import CloudVolume
vol = CloudVolume(sys.argv[1], progress=False)
task = [int(v) for v in sys.argv[2].split(",")]
lo, hi = vol.bounds.minpt, vol.bounds.maxpt
common, sizes = None, {}
for start in itertools.product(*(range(lo[i], hi[i], task[i]) for i in range(3))):
    stop = [min(start[i] + task[i] + 1, hi[i]) for i in range(3)]
    labels, counts = np.unique(vol[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]], return_counts=True)
    for label, count in zip(labels.tolist(), counts.tolist()):
        sizes[label] = sizes.get(label, 0) + count
    common = set(labels.tolist()) if common is None else common & set(labels.tolist())
common.discard(0)
print(json.dumps(sorted(common, key=lambda label: (sizes[label], label))))
"""


def skeleton_labels(pristine: Path, limit: int) -> tuple[int, ...]:
    """Up to `limit` labels for skeleton forge --labels, the smallest of those in every forge task
    (Igneous's forge fails on a task whose cutout lacks a requested label); () means every label.
    Cached in pristine, which is rewritten whenever the sample's shape changes."""
    if limit <= 0:
        return ()
    cache = pristine / "skeleton-labels.json"
    try:
        cached = json.loads(cache.read_text())
    except (OSError, ValueError):
        cached = {}
    if cached.get("task_shape") != SKEL_SHAPE:
        url = f"file://{pristine / 'segmentation'}"
        found = subprocess.run([sys.executable, "-c", SPANNING_LABELS, url, SKEL_SHAPE],
                               capture_output=True, text=True, check=True)
        cached = {"task_shape": SKEL_SHAPE, "spanning": json.loads(found.stdout.strip().splitlines()[-1])}
        cache.write_text(json.dumps(cached))
    return tuple(cached["spanning"][:limit])


def run_stage_once(stage: Stage, tool: Tool, pristine: Path, out: Path, rep: int, result: StageResult) -> Path:
    work = out / "work" / stage.name / tool.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(pristine / stage.layer, work / stage.layer)
    queue = f"fq://{work / 'queue'}"
    logs = out / "logs" / stage.name
    for step, cmd in tool.setup(stage, work, f"fq://{work / 'setup-queue'}"):
        if rep == 0:
            print(f"  {tool.name:6s} $ {' '.join(cmd)}   (untimed setup)", flush=True)
        run = measure(cmd, logs / f"{tool.name}-{step}-r{rep}.log")
        result.setup[tool.name].append(run)
        if run.rc != 0:
            print(f"  WARNING {tool.name} {step} exited with {run.rc}; log {run.log}:\n{log_tail(run.log)}", flush=True)
    for step, cmd in (("producer", tool.producer(stage, work, queue)), ("execute", tool.execute(queue))):
        if rep == 0:
            print(f"  {tool.name:6s} $ {' '.join(cmd)}", flush=True)
        run = measure(cmd, logs / f"{tool.name}-{step}-r{rep}.log")
        result.runs[tool.name][step].append(run)
        if run.rc != 0:
            print(f"  WARNING {tool.name} {step} exited with {run.rc}; log {run.log}:\n{log_tail(run.log)}", flush=True)
    return work


def run_stage(stage: Stage, tools: dict[str, Tool], pristine: Path, out: Path, repeat: int,
              keep: bool) -> StageResult:
    print(f"\n[{stage.name}] {STAGE_HELP[stage.name]}", flush=True)
    if stage.is_skeleton:
        print(f"  skeletonizing {'labels ' + ','.join(map(str, stage.labels)) if stage.labels else 'every label'}",
              flush=True)
    result = StageResult(stage)
    for rep in range(repeat):
        order = TOOLS if rep % 2 == 0 else TOOLS[::-1]
        works = {name: run_stage_once(stage, tools[name], pristine, out, rep, result) for name in order}
        problems = verify(stage, {name: stage.output_dir(work) for name, work in works.items()})
        for p in problems:
            if p not in result.problems:  # report each problem once, whichever repeat saw it
                result.problems.append(p)
                print(f"  WARNING output check (repeat {rep}): {p}", flush=True)
        if not keep:
            for work in works.values():
                shutil.rmtree(work, ignore_errors=True)
    return result


# ---------------------------------------------------------------- reporting


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def fmt_ratio(r: float | None) -> str:
    return "   n/a" if r is None else f"{r:6.2f}"


def print_table(results: list[StageResult]) -> None:
    head = (f"{'stage':{NAME_WIDTH}s} {'command':9s} | {'cpu s':>7s} {'theirs':>7s} {'ratio':>6s} | "
            f"{'wall s':>7s} {'theirs':>7s} {'ratio':>6s} | {'rss MiB':>7s} {'theirs':>7s} {'ratio':>6s}")
    print("\n" + head)
    print("(first figure of each group is igneous-like; ratio = igneous-like / Igneous)")
    print("-" * len(head))
    for res in results:
        ours, theirs = res.figures("ours"), res.figures("theirs")
        flag = ""
        if res.failed("ours") or res.failed("theirs") or res.problems:
            flag = "  <- " + ", ".join(
                s for s, bad in (("ours FAILED", res.failed("ours")), ("theirs FAILED", res.failed("theirs")),
                                 ("output check", bool(res.problems))) if bad)
        for i, cmd in enumerate(("producer", "execute", "whole")):
            o, t = ours[cmd], theirs[cmd]
            cells = []
            for key, width in (("cpu", 7), ("wall", 7), ("rss_mib", 7)):
                prec = 0 if key == "rss_mib" else 2
                cells.append(f"{o[key]:{width}.{prec}f} {t[key]:{width}.{prec}f} {fmt_ratio(ratio(o[key], t[key]))}")
            print(f"{res.stage.name if i == 0 else '':{NAME_WIDTH}s} {cmd:9s} | " + " | ".join(cells) + (flag if i == 0 else ""))
        print("-" * len(head))


def judge(results: list[StageResult]) -> dict[str, dict]:
    """Which targets hold, stage by stage; stages where a tool failed are not judged."""
    verdict = {"cpu": {}, "wall": {}, "rss": {}}
    for res in results:
        name = res.stage.name
        if res.failed("ours") or res.failed("theirs") or res.problems:
            for key in verdict:
                verdict[key][name] = None
            continue
        ours, theirs = res.figures("ours"), res.figures("theirs")
        verdict["cpu"][name] = ratio(ours["whole"]["cpu"], theirs["whole"]["cpu"])
        verdict["wall"][name] = ratio(ours["whole"]["wall"], theirs["whole"]["wall"])
        verdict["rss"][name] = max((ratio(ours[c]["rss_mib"], theirs[c]["rss_mib"]) or 0.0)
                                   for c in ("producer", "execute"))
    return verdict


def print_verdict(verdict: dict[str, dict]) -> None:
    print()
    for key, limit, what in (("cpu", TARGET_CPU, "CPU ratio per stage"),
                             ("wall", TARGET_WALL, "wall ratio per whole stage"),
                             ("rss", TARGET_RSS, "peak RSS ratio per command")):
        judged = {k: v for k, v in verdict[key].items() if v is not None}
        misses = [f"{k} {v:.2f}" for k, v in judged.items() if v > limit]
        unjudged = [k for k, v in verdict[key].items() if v is None]
        line = f"target {what} <= {limit}: {len(judged) - len(misses)}/{len(judged)} hold"
        if misses:
            line += f"; missed: {', '.join(misses)}"
        if unjudged:
            line += f"; not judged (failure or bad output): {', '.join(unjudged)}"
        print(line)
    every = all(v is not None and v <= lim for key, lim in (("cpu", TARGET_CPU), ("wall", TARGET_WALL),
                                                          ("rss", TARGET_RSS)) for v in verdict[key].values())
    print("ALL TARGETS HOLD" if every else "NOT ALL TARGETS HOLD")


def write_json(path: Path, args, shape, versions, floor: float,
               volumes: dict[str, tuple[list[StageResult], dict, tuple[int, ...]]]) -> None:
    """Every figure, per volume kind: {kind: (results, verdict, skeleton labels)}."""
    doc = {
        "shape": list(shape),
        "repeat": args.repeat,
        "num_mips": NUM_MIPS,
        "mesh": {"shape": MESH_SHAPE, "max_error": MESH_MAX_ERROR, "magnitude": MESH_MAGNITUDE,
                 "nlod": MESH_NLOD, "vqb": MESH_VQB, "min_chunk_size": MESH_MIN_CHUNK,
                 "setup_workers": SETUP_WORKERS},
        "skeleton": {"shape": SKEL_SHAPE, "teasar": list(SKEL_TEASAR), "merge": list(SKEL_MERGE),
                     "magnitude": SKEL_MAGNITUDE, "max_labels_per_shard": SKEL_MAX_LABELS_PER_SHARD,
                     "setup_workers": SETUP_WORKERS},
        "versions": versions,
        "rss_floor_mib": floor,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "targets": {"cpu_ratio_max": TARGET_CPU, "wall_ratio_max": TARGET_WALL, "rss_ratio_max": TARGET_RSS},
        "volumes": {},
    }
    for kind, (results, verdict, labels) in volumes.items():
        doc["volumes"][kind] = {"verdict": verdict, "skeleton_labels": list(labels), "stages": stage_figures(results)}
    path.write_text(json.dumps(doc, indent=2))


def stage_figures(results: list[StageResult]) -> dict:
    stages = {}
    for res in results:
        entry = {"description": STAGE_HELP[res.stage.name], "problems": res.problems, "tools": {}}
        for tool in TOOLS:
            entry["tools"][tool] = {
                "failed": res.failed(tool),
                "median": res.figures(tool),
                "runs": {step: [vars(r) for r in runs] for step, runs in res.runs[tool].items()},
                "setup": [vars(r) for r in res.setup[tool]],
            }
        entry["ratios"] = {
            cmd: {k: ratio(entry["tools"]["ours"]["median"][cmd][k], entry["tools"]["theirs"]["median"][cmd][k])
                  for k in ("cpu", "wall", "rss_mib")}
            for cmd in ("producer", "execute", "whole")
        }
        stages[res.stage.name] = entry
    return stages


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [s.name for s in STAGES]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="512,512,128", help="Sample volume X,Y,Z (default 512,512,128).")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-output",
                    help="Working directory for the sample, copies, logs and bench.json (default ./bench-output).")
    ap.add_argument("--stages", default="all", help=f"Comma-separated stages or 'all': {', '.join(names)}.")
    ap.add_argument("--repeat", type=int, default=1, help="Runs per stage and tool; the median is reported.")
    ap.add_argument("--keep", action="store_true", help="Keep the working copies of every stage.")
    ap.add_argument("--skeleton-all-labels", action="store_true",
                    help=f"Skeletonize every label instead of up to {SKEL_LABELS} that span every forge task "
                         "(over a minute per tool and forge at 512x512x128).")
    ap.add_argument("--volumes", default="easy,hard",
                    help="Sample volumes, comma-separated (default both): easy (z-elongated Voronoi cells, "
                         "8x8x40 nm) and hard (neuron-like: somata, thin branching axons across tasks, "
                         "small fragments, 16x16x40 nm).")
    ap.add_argument("--list-stages", action="store_true", help="Describe the stages and exit.")
    args = ap.parse_args(argv)
    if args.list_stages:
        for s in STAGES:
            print(f"{s.name:{NAME_WIDTH}s} {STAGE_HELP[s.name]}")
        sys.exit(0)
    try:
        args.shape = tuple(int(v) for v in args.size.split(","))
        assert len(args.shape) == 3 and min(args.shape) > 0
    except (ValueError, AssertionError):
        ap.error(f"--size {args.size!r}: need three positive integers, e.g. 512,512,128")
    wanted = names if args.stages == "all" else [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in names]
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    args.stage_list = [s for s in STAGES if s.name in wanted]
    args.kinds = [k.strip() for k in args.volumes.split(",") if k.strip()]
    if not args.kinds or any(k not in ("easy", "hard") for k in args.kinds):
        ap.error(f"--volumes {args.volumes!r}: choose easy, hard or easy,hard")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "logs", ignore_errors=True)

    theirs_exe = ensure_reference()
    ours_exe = our_exe()
    versions = {
        "igneous-like": package_version(ours_exe.parent / "python", "igneous-like"),
        REFERENCE_PACKAGE: package_version(theirs_exe.parent / "python", REFERENCE_PACKAGE),
    }
    print(f"igneous-like {versions['igneous-like']} ({ours_exe}) vs "
          f"Igneous {versions[REFERENCE_PACKAGE]} ({theirs_exe}); {os.cpu_count()} cpus")
    tools = {"ours": Tool("ours", str(ours_exe)), "theirs": Tool("theirs", str(theirs_exe))}

    warm_up(ours_exe, theirs_exe)
    floor = measure([sys.executable, "-c", "pass"], out / "logs" / "floor.log").rss_mib
    print(f"peak RSS reported for an empty python child (the floor of every rss figure): {floor:.0f} MiB")
    t0 = time.perf_counter()
    volumes = {}
    for kind in args.kinds:
        print(f"\n=== {kind} volume {args.shape}", flush=True)
        pristine = prepare_sample(out / kind, args.shape, kind)
        labels: tuple[int, ...] = ()
        stages = args.stage_list
        if any(s.is_skeleton for s in stages):
            labels = skeleton_labels(pristine, 0 if args.skeleton_all_labels else SKEL_LABELS)
            if not labels and not args.skeleton_all_labels:
                print(f"no label spans every {SKEL_SHAPE} skeleton task: skeletonizing every label (slow)")
            stages = [replace(s, labels=labels) if s.is_skeleton else s for s in stages]
        results = [run_stage(s, tools, pristine, out / kind, args.repeat, args.keep) for s in stages]
        volumes[kind] = (results, judge(results), labels)

    for kind, (results, verdict, _) in volumes.items():
        print(f"\n## {kind} volume {args.shape}")
        print_table(results)
        print_verdict(verdict)
    write_json(out / "bench.json", args, args.shape, versions, floor, volumes)
    print(f"\nfigures in {out / 'bench.json'}, logs in {out}/{{{','.join(args.kinds)}}}/logs; stages took {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
