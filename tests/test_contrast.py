"""image contrast histogram / equalize / clahe, end to end through the real CLI.

References are independent: numpy's bincount for histograms, Igneous's documented equalize
rule written out here in float64, OpenCV's CLAHE of whole slices. Outputs are read back with
tensorstore (missing chunks are errors)."""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, tree_digest, ts_read, upload_layer

SHAPE = (230, 210, 20)  # not a multiple of the 64x64x8 chunks
CHUNK = (64, 64, 8)


def em_image(shape=SHAPE, dtype=np.uint8, seed=5) -> np.ndarray:
    """EM-like slices whose brightness and contrast drift with z, with black (missing) margins."""
    from igneous_like import sample

    seg = sample.segmentation(shape, seed=seed, cells=30)
    img = sample.image_from(seg, seed=seed + 1).astype(np.float64)
    z = np.arange(shape[2])[None, None, :]
    img = (img - 40) * (0.4 + 0.03 * z) + 30 + 2 * z
    img[:7, :, :] = 0  # a black margin: level 0 is ignored by equalize
    if dtype == np.uint16:
        img = img * 200 + 500
    return np.asfortranarray(np.clip(np.rint(img), 0, np.iinfo(dtype).max).astype(dtype))


@pytest.fixture(scope="session")
def pristine_em(tmp_path_factory) -> Path:
    from igneous_like import sample

    root = tmp_path_factory.mktemp("em")
    for name, dtype, shape, offset in (("em", np.uint8, SHAPE, (0, 0, 0)), ("em16", np.uint16, (150, 100, 8), (0, 0, 0)),
                                       ("em256", np.uint8, (256, 256, 8), (0, 0, 0)),
                                       ("emoff", np.uint8, (140, 150, 8), (37, -11, 3))):
        img = em_image(shape, dtype)
        sample.write_layer(f"file://{root}/{name}", img, "image", chunk=CHUNK, voxel_offset=offset)
        np.save(root / f"{name}.npy", img)
    seg = sample.segmentation((64, 64, 8), seed=1, cells=5)
    sample.write_layer(f"file://{root}/seg", seg, "segmentation", chunk=CHUNK)
    return root


@pytest.fixture
def em(pristine_em, tmp_path) -> Path:
    for name in ("em", "em16", "em256", "emoff", "seg"):
        shutil.copytree(pristine_em / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def arrays(pristine_em):
    return {n: np.load(pristine_em / f"{n}.npy") for n in ("em", "em16", "em256", "emoff")}


def levels(layer: Path, z: int, mip: int = 0) -> dict:
    return json.loads((layer / "levels" / str(mip) / str(z)).read_text())


def queued(root: Path, *command: str) -> None:
    """Plan into a FileQueue, then drain it with a real worker process."""
    q = root / "q"
    shutil.rmtree(q, ignore_errors=True)
    run_cli(*command, "--queue", f"fq://{q}")
    run_cli("execute", f"fq://{q}", "-x", "-q")


# ---- histogram ------------------------------------------------------------------------------

def test_histogram_full_coverage_equals_numpy(em, arrays):
    queued(em, "image", "contrast", "histogram", str(em / "em"), "--coverage", "1")
    img = arrays["em"]
    for z in range(SHAPE[2]):
        doc = levels(em / "em", z)
        assert doc["levels"] == np.bincount(img[:, :, z].ravel(), minlength=256).tolist(), z
        assert doc["num_patches"] == 4 * 4 and doc["coverage_ratio"] == 1.0
        assert doc["patch_size"] == [64, 64, 1]
    assert not (em / "em" / "levels" / "0" / str(SHAPE[2])).exists()
    first = tree_digest(em / "em" / "levels")
    run_cli("image", "contrast", "histogram", str(em / "em"), "--coverage", "1")
    assert tree_digest(em / "em" / "levels") == first  # a re-run writes the same bytes


def test_histogram_coverage_samples_whole_chunk_columns(em, arrays):
    run_cli("image", "contrast", "histogram", str(em / "em"), "--coverage", "0.25", "--zrange", "8,20")
    img = arrays["em"]
    assert not (em / "em" / "levels" / "0" / "7").exists()  # outside --zrange
    columns = [(x, y) for y in range(0, 210, 64) for x in range(0, 230, 64)]
    for slab in (range(8, 16), range(16, 20)):
        docs = [levels(em / "em", z) for z in slab]
        assert all(d["num_patches"] == 4 for d in docs)  # ceil(0.25 * 16) chunk columns
        # the sample is one set of 4 chunk columns for the whole slab: find it
        hits = []
        for combo in itertools.combinations(columns, 4):
            if all(d["levels"] == sum(np.bincount(img[x:x + 64, y:y + 64, z].ravel(), minlength=256)
                                      for x, y in combo).tolist() for d, z in zip(docs[:2], slab)):
                hits.append(combo)
        assert len(hits) == 1
        area = sum(min(64, 230 - x) * min(64, 210 - y) for x, y in hits[0])
        for d, z in zip(docs, slab):
            assert sum(d["levels"]) == area
            assert d["coverage_ratio"] == pytest.approx(area / (230 * 210))
            assert d["levels"] == sum(np.bincount(img[x:x + 64, y:y + 64, z].ravel(), minlength=256)
                                      for x, y in hits[0]).tolist()
    again = tree_digest(em / "em" / "levels")
    run_cli("image", "contrast", "histogram", str(em / "em"), "--coverage", "0.25", "--zrange", "8,20")
    assert tree_digest(em / "em" / "levels") == again  # seeded sample: same bytes


def test_histogram_at_mip_1_with_ranges_at_bounds_mip_0(em):
    run_cli("image", "downsample", str(em / "em"), "--num-mips", "1")
    run_cli("image", "contrast", "histogram", str(em / "em"), "--mip", "1", "--coverage", "1",
            "--xrange", "0,128", "--zrange", "0,8", "--bounds-mip", "0")
    mip1 = ts_read(em / "em", 1)[..., 0]
    for z in range(8):
        assert levels(em / "em", z, mip=1)["levels"] == np.bincount(mip1[:64, :, z].ravel(), minlength=256).tolist()
    assert not (em / "em" / "levels" / "1" / "8").exists() and not (em / "em" / "levels" / "0").exists()


# ---- equalize -------------------------------------------------------------------------------

def igneous_rule(img: np.ndarray, hist: np.ndarray, fraction: float, minval: float, maxval: float, top: int):
    """Igneous's documented equalize: drop black from the histogram; lower/upper are the last
    grey levels whose cumulative share of the rest is <= fraction and <= 1 - fraction; stretch
    lower..upper onto 0..top, round, clip to minval..maxval; a slice with lower == upper is kept."""
    hist = hist.astype(np.float64).copy()
    hist[0] = 0
    if hist.sum() == 0:
        return np.clip(img, minval, maxval)
    share = np.cumsum(hist) / hist.sum()
    lower = max(int((share <= fraction).sum()) - 1, 0)
    upper = max(int((share <= 1 - fraction).sum()) - 1, 0)
    if lower == upper:
        return np.clip(img, minval, maxval)
    out = (img.astype(np.float64) - lower) * (top / (upper - lower))
    return np.clip(np.round(out), minval, maxval)


@pytest.mark.parametrize("name,options", [
    ("em", ["--clip-fraction", "0.05", "--shape", "128,64,8"]),
    ("em", ["--minval", "20", "--maxval", "230", "--shape", "64,128,16"]),
    ("em16", ["--clip-fraction", "0.02"]),
])
def test_equalize_follows_igneous_rule(em, arrays, name, options):
    run_cli("image", "contrast", "histogram", str(em / name), "--coverage", "1")
    queued(em, "image", "contrast", "equalize", str(em / name), str(em / "out"), *options)
    img = arrays[name]
    top = np.iinfo(img.dtype).max
    fraction = float(options[options.index("--clip-fraction") + 1]) if "--clip-fraction" in options else 0.01
    lo = float(options[options.index("--minval") + 1]) if "--minval" in options else 0
    hi = float(options[options.index("--maxval") + 1]) if "--maxval" in options else top
    out = ts_read(em / "out", 0)[..., 0]
    assert out.shape == img.shape and out.dtype == img.dtype
    for z in range(img.shape[2]):
        hist = np.array(levels(em / name, z)["levels"])
        want = igneous_rule(img[:, :, z], hist, fraction, lo, hi, top)
        assert np.abs(out[:, :, z].astype(np.float64) - want).max() <= 1, z
    assert out.min() >= lo and out.max() <= hi
    assert not np.array_equal(out, img)


def test_equalize_translate_and_ranges(em, arrays):
    run_cli("image", "contrast", "histogram", str(em / "em"), "--coverage", "1")
    args = ["image", "contrast", "equalize", str(em / "em"), str(em / "out"), "--translate", "64,0,8", "--zrange", "8,16"]
    run_cli(*args)
    first = tree_digest(em / "out")
    run_cli(*args)
    assert tree_digest(em / "out") == first  # same bytes on a re-run
    info = json.loads((em / "out" / "info").read_text())
    assert info["scales"][0]["voxel_offset"] == [64, 0, 8]
    out = ts_read(em / "out", 0, region=(slice(None), slice(None), slice(16, 24)))[..., 0]  # z 8..16 moved by 8
    img = arrays["em"]
    for k, z in enumerate(range(8, 16)):
        want = igneous_rule(img[:, :, z], np.array(levels(em / "em", z)["levels"]), 0.01, 0, 255, 255)
        assert np.abs(out[:, :, k] - want).max() <= 1
    # the default 256x256 task shape builds mips 1 and 2 from the same read, as Igneous does
    assert [s["resolution"] for s in info["scales"]] == [[8, 8, 40], [16, 16, 40], [32, 32, 40]]
    mip1 = ts_read(em / "out", 1, region=(slice(None), slice(None), slice(16, 24)))[..., 0]
    mean = out.astype(np.float64).reshape(115, 2, 105, 2, 8).mean(axis=(1, 3))
    assert np.abs(mip1 - mean).max() <= 0.5


# ---- clahe ----------------------------------------------------------------------------------

def opencv_clahe(img: np.ndarray, clip: float, grid: tuple[int, int]) -> np.ndarray:
    """OpenCV's CLAHE of each whole z slice, x across and y down."""
    import cv2

    out = np.empty_like(img)
    for z in range(img.shape[2]):
        out[:, :, z] = cv2.createCLAHE(clipLimit=clip, tileGridSize=grid).apply(np.ascontiguousarray(img[:, :, z].T)).T
    return out


@pytest.mark.parametrize("name,shape,grid,clip", [
    ("em", "64,64,8", (8, 8), 40.0),      # 29x27 tiles: numpy path, 4x4 tasks per slab
    ("em", "128,64,16", (5, 4), 2.0),     # 230 divides by 5, 210 not by 4: both axes padded
    ("em", "192,128,8", (3, 7), 0.0),     # no clip limit; 210 divides by 7, 230 not by 3
    ("em256", "64,128,8", (8, 8), 3.0),   # 32x32 tiles: OpenCV runs on the task's window
    ("em16", "64,64,8", (4, 3), 4.0),     # uint16
    ("emoff", "64,64,8", (3, 4), 40.0),   # voxel offset 37,-11,3: tiles count from the slice's corner
])
def test_clahe_equals_opencv_on_whole_slices(em, arrays, name, shape, grid, clip):
    queued(em, "image", "contrast", "clahe", str(em / name), str(em / "out"), "--shape", shape,
           "--tile-grid-size", f"{grid[0]},{grid[1]}", "--clip-limit", str(clip))
    img = arrays[name]
    out = ts_read(em / "out", 0)[..., 0]  # tensorstore's domain starts at the offset; arrays at 0
    want = opencv_clahe(img, clip, grid)
    assert out.dtype == img.dtype
    assert np.array_equal(out, want), f"{(out != want).sum()} voxels differ from OpenCV"
    # no seam: the step across a task border equals the whole slice's step there
    sx = int(shape.split(",")[0])
    for x in range(sx, img.shape[0], sx):
        assert np.array_equal(np.diff(out[x - 1:x + 1].astype(int), axis=0), np.diff(want[x - 1:x + 1].astype(int), axis=0))


def test_clahe_windows_equal_opencv_for_random_slices_grids_and_boxes():
    """In process, many shapes: every window computation (OpenCV on the window, or OpenCV's float32
    arithmetic at the slice's coordinates) gives OpenCV's whole-slice values."""
    import cv2

    from igneous_like.grid import Box
    from igneous_like.ops.image.clahe import TileGrid, WindowCLAHE

    rng = np.random.default_rng(7)
    paths = set()
    for trial in range(40):
        w, h = (int(v) for v in rng.integers(24, 260, 2))
        grid_size = tuple(int(v) for v in rng.integers(1, 10, 2))
        if trial < 3:  # 32x32 tiles: OpenCV can run on the window itself
            w, h, grid_size = 256, 128, (8, 4)
        clip = float(rng.choice([0.0, 1.0, 2.5, 40.0]))
        dtype = np.uint16 if trial % 5 == 0 else np.uint8
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w)).astype(np.uint8), (5, 5), 2).astype(dtype)
        if dtype == np.uint16:
            img = img * 200 + rng.integers(0, 200, (h, w)).astype(dtype)
        grid = TileGrid([0, 0, w, h], grid_size)
        if min(grid.tile) < 2:
            continue
        want = cv2.createCLAHE(clipLimit=clip, tileGridSize=grid_size).apply(img)
        bx, by = (int(v) for v in rng.integers(8, 80, 2))
        for y in range(0, h, by):
            for x in range(0, w, bx):
                box = Box((x, y, 0), (min(x + bx, w), min(y + by, h), 1))
                spans = [grid.window(0, box.start[0], box.stop[0]), grid.window(1, box.start[1], box.stop[1])]
                padded = np.pad(img, ((0, grid.padded[1] - h), (0, grid.padded[0] - w)), mode="reflect")
                window = np.ascontiguousarray(padded[spans[1][0]:spans[1][1], spans[0][0]:spans[0][1]])
                crop = (y - spans[1][0], box.stop[1] - spans[1][0], x - spans[0][0], box.stop[0] - spans[0][0])
                clahe = WindowCLAHE(grid, spans, crop, window.shape, dtype, clip)
                paths.add(clahe.fast)
                got = clahe.apply(window)
                assert np.array_equal(got, want[y:box.stop[1], x:box.stop[0]]), (trial, w, h, grid_size, clip, x, y)
    assert paths == {True, False}


def test_clahe_is_idempotent_and_ranges_define_the_slice(em, arrays):
    args = ["image", "contrast", "clahe", str(em / "em"), str(em / "out"), "--shape", "64,64,8",
            "--xrange", "64,192", "--yrange", "0,128", "--tile-grid-size", "3,3"]
    run_cli(*args)
    first = tree_digest(em / "out")
    run_cli(*args)
    assert tree_digest(em / "out") == first
    region = (slice(64, 192), slice(0, 128), slice(None))
    out = ts_read(em / "out", 0, region=region)[..., 0]
    assert np.array_equal(out, opencv_clahe(np.asfortranarray(arrays["em"][region]), 40.0, (3, 3)))


# ---- object storage -------------------------------------------------------------------------

def test_contrast_on_s3(em, arrays, moto, s3_bucket):
    from cloudfiles import CloudFiles
    from cloudvolume import CloudVolume

    upload_layer(em / "em", f"{s3_bucket}/em", compress="gzip")
    src, q = f"{s3_bucket}/em", f"fq://{em / 'q'}"
    run_cli("image", "contrast", "histogram", src, "--coverage", "1", "--queue", q, env=moto)
    run_cli("execute", q, "-x", "-q", env=moto)
    run_cli("image", "contrast", "equalize", src, f"{s3_bucket}/eq", "--queue", q, env=moto)
    run_cli("execute", q, "-x", "-q", env=moto)
    run_cli("image", "contrast", "clahe", src, f"{s3_bucket}/cl", "--shape", "64,64,8", env=moto)

    img = arrays["em"]
    docs = [json.loads(CloudFiles(src).get(f"levels/0/{z}")) for z in range(SHAPE[2])]
    for z, doc in enumerate(docs):
        assert doc["levels"] == np.bincount(img[:, :, z].ravel(), minlength=256).tolist()
    eq = CloudVolume(f"{s3_bucket}/eq", progress=False, fill_missing=False)[:, :, :][..., 0]
    for z, doc in enumerate(docs):
        want = igneous_rule(img[:, :, z], np.array(doc["levels"]), 0.01, 0, 255, 255)
        assert np.abs(eq[:, :, z] - want).max() <= 1
    cl = CloudVolume(f"{s3_bucket}/cl", progress=False, fill_missing=False)[:, :, :][..., 0]
    assert np.array_equal(cl, opencv_clahe(img, 40.0, (8, 8)))


# ---- bad input ------------------------------------------------------------------------------

def fails_cleanly(root: Path, *args: str, expect: str) -> None:
    before = tree_digest(root)
    proc = run_cli(*args, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("igneous-like: error: "), proc.stderr
    assert expect.lower() in proc.stderr.lower(), proc.stderr
    assert tree_digest(root) == before, "a failed command wrote files"


@pytest.mark.parametrize("args,expect", [
    (["histogram", "{seg}"], "uint8 or uint16 image"),
    (["histogram", "{em}", "--coverage", "0"], "--coverage"),
    (["histogram", "{em}", "--zrange", "0,99"], "outside"),
    (["histogram", "{root}/nothing"], "no layer"),
    (["equalize", "{em}", "{out}"], "run `igneous-like image contrast histogram"),
    (["equalize", "{em}", "{em}"], "same layer"),
    (["clahe", "{em}", "{out}", "--shape", "60,64,8"], "multiple of the chunk size"),
    (["clahe", "{em}", "{out}", "--tile-grid-size", "0,8"], "--tile-grid-size"),
    (["clahe", "{em}", "{out}", "--tile-grid-size", "300,8"], "too fine"),
    (["clahe", "{seg}", "{out}"], "uint8 or uint16 image"),
    (["clahe", "{em}", "{out}", "--tile-grid-size", "1,1", "--memory", "3.01e8"], "above --memory"),
])
def test_bad_input_is_one_line_and_writes_nothing(em, args, expect):
    names = {"em": str(em / "em"), "seg": str(em / "seg"), "out": str(em / "out"), "root": str(em)}
    fails_cleanly(em, "image", "contrast", *(a.format(**names) for a in args), expect=expect)


def test_bad_equalize_options(em):
    run_cli("image", "contrast", "histogram", str(em / "em"))
    for args, expect in [
        (["--clip-fraction", "0.7"], "--clip-fraction"),
        (["--minval", "300"], "outside the range of uint8"),
        (["--minval", "abc"], "not a number"),
        (["--minval", "200", "--maxval", "100"], "above --maxval"),
    ]:
        fails_cleanly(em, "image", "contrast", "equalize", str(em / "em"), str(em / "out"), *args, expect=expect)


def test_help_has_examples():
    for command in ("histogram", "equalize", "clahe"):
        assert "Example" in run_cli("image", "contrast", command, "--help").stdout
