"""image ccl: DEST equals cc3d.connected_components of the whole volume up to a renumbering
(a bijection, checked both ways), through the real CLI, read back with tensorstore."""
from __future__ import annotations

import json

import cc3d
import numpy as np
import pytest
from cloudvolume import CloudVolume

from conftest import run_cli, ts_read
from igneous_like import sample


def assert_same_components(got: np.ndarray, want: np.ndarray) -> None:
    """Same background, and a one-to-one map between the label sets (both directions)."""
    assert got.shape == want.shape
    assert ((got == 0) == (want == 0)).all()
    fg = want != 0
    pairs = np.unique(np.stack([got[fg].astype(np.uint64), want[fg].astype(np.uint64)]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1], "one DEST label covers several components"
    assert len(np.unique(pairs[1])) == pairs.shape[1], "one component is split over several DEST labels"


def contiguous(labels: np.ndarray) -> None:
    ids = np.unique(labels)
    ids = ids[ids != 0]
    assert ids.tolist() == list(range(1, len(ids) + 1))


def spiral_comb(shape=(61, 47, 23)) -> np.ndarray:
    """A one-voxel-thick square spiral in each z slab (snakes across many tasks), a comb whose
    teeth join only through its back, diagonal-only contacts (6 vs 18 vs 26 differ), and two
    labels touching each other (a segmentation splits them)."""
    seg = np.zeros(shape, dtype=np.uint64)
    x0, y0, x1, y1 = 1, 1, shape[0] - 2, shape[1] - 2
    while x0 < x1 and y0 < y1:  # spiral walls, gap of one voxel between turns
        seg[x0:x1 + 1, y0, 2:6] = 7
        seg[x1, y0:y1 + 1, 2:6] = 7
        seg[x0:x1 + 1, y1, 2:6] = 7
        seg[x0, y0 + 2:y1 + 1, 2:6] = 7
        x0, y0, x1, y1 = x0 + 2, y0 + 2, x1 - 2, y1 - 2
    seg[2:58, 3, 8] = 2**40 + 1  # comb back
    for x in range(2, 58, 3):
        seg[x, 3:44, 8] = 2**40 + 1  # teeth
    seg[5:50, 20, 10] = 3  # a bar, and one touching it with another label
    seg[5:50, 21, 10] = 4
    for i in range(0, 20):  # a diagonal staircase: joined only at 18 (edges) ...
        seg[3 + i, 10 + i, 12] = 9
        seg[3 + i, 11 + i, 12] = 9
    for i in range(0, 20):  # ... and a corner-only chain: joined only at 26
        seg[30 + i, 5 + i, 14 + (i % 2)] = 11
    rng = np.random.default_rng(1)
    noise = rng.random(shape) < 0.08
    seg[:, :, 17:] = np.where(noise[:, :, 17:], 5, 0)  # many small pieces
    return np.asfortranarray(seg)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cclvol")
    seg = spiral_comb()
    sample.write_layer(f"file://{root}/seg", seg, "segmentation", chunk=(16, 16, 8))
    img = sample.image_from(sample.segmentation((70, 52, 30), seed=5, cells=30), seed=6)
    sample.write_layer(f"file://{root}/img", img, "image", chunk=(32, 32, 16))
    return root, seg, img


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_auto_equals_cc3d_of_whole_volume(volumes, tmp_path, connectivity):
    root, seg, _ = volumes
    # odd task shape: not a multiple of the source chunk, many tasks along the spiral
    run_cli("image", "ccl", "auto", f"file://{root}/seg", f"file://{tmp_path}/cc", "--shape", "17,13,9",
            "--connectivity", connectivity, "--partitions", "3", "--encoding", "raw")
    got = ts_read(tmp_path / "cc", 0)[..., 0]
    want = cc3d.connected_components(seg, connectivity=connectivity)
    assert_same_components(got, want)
    contiguous(got)
    info = json.loads((tmp_path / "cc" / "info").read_text())
    assert info["type"] == "segmentation" and info["scales"][0]["chunk_sizes"] == [[17, 13, 9]]
    assert info["data_type"] == ("uint8" if got.max() < 256 else "uint16")
    assert not (tmp_path / "cc" / "_ccl").exists(), "auto cleans its intermediates"


def test_threshold_dust_and_rerun_same_bytes(volumes, tmp_path):
    root, _, img = volumes
    args = ["image", "ccl", "auto", f"file://{root}/img", f"file://{tmp_path}/cc", "--shape", "32,20,16",
            "--threshold-gte", "100", "--threshold-lte", "200", "--dust", "40", "--connectivity", "26"]
    run_cli(*args)
    first = {p.name: p.read_bytes() for p in (tmp_path / "cc").rglob("*") if p.is_file()}
    info = json.loads((tmp_path / "cc" / "info").read_text())
    assert info["scales"][0]["encoding"] == "compresso"  # the default; tensorstore cannot read it
    got = CloudVolume(f"file://{tmp_path}/cc")[:, :, :][..., 0]
    want = cc3d.connected_components((img >= 100) & (img <= 200), connectivity=26)
    want = cc3d.dust(want, 40, connectivity=26)
    assert_same_components(got, want)
    contiguous(got)
    run_cli(*args, "--partitions", "3")  # other partitions (default 1 here): same labels, same bytes
    again = {p.name: p.read_bytes() for p in (tmp_path / "cc").rglob("*") if p.is_file()}
    assert again == first


def run_queued(src: str, dest: str, q: str, *opts: str, env: dict | None = None, calc_here: bool = False) -> str:
    """Every pass through a FileQueue and real worker processes; calc-labels repeated until it
    reports the label count (or, with calc_here, run here at once). Returns its last message."""
    def execute():
        run_cli("execute", q, "-x", "-q", env=env)

    for name in ("faces", "links"):
        run_cli("image", "ccl", name, src, dest, *opts, "--queue", q, env=env)
        execute()
    for _ in range(50):
        queue = () if calc_here else ("--queue", q)
        said = run_cli("image", "ccl", "calc-labels", src, dest, *opts, *queue, env=env).stderr
        if "labels; next" in said:
            break
        assert "queued" in said, said
        execute()
    else:
        raise AssertionError("calc-labels did not finish")
    run_cli("image", "ccl", "relabel", src, dest, *opts, "--encoding", "raw", "--queue", q, env=env)
    execute()
    run_cli("image", "ccl", "clean", src, dest, *opts, env=env)
    return said


def test_passes_through_a_queue(volumes, tmp_path):
    root, seg, _ = volumes
    opts = ("--shape", "32,24,12", "--connectivity", "18", "--partitions", "2")
    said = run_queued(f"file://{root}/seg", f"file://{tmp_path}/cc", f"fq://{tmp_path}/q", *opts)
    got = ts_read(tmp_path / "cc", 0)[..., 0]
    want = cc3d.connected_components(seg, connectivity=18)
    assert_same_components(got, want)
    contiguous(got)
    assert f"{got.max()} labels" in said
    assert not (tmp_path / "cc" / "_ccl").exists()


def test_on_s3(volumes, tmp_path, moto, s3_bucket):
    from conftest import upload_layer

    root, seg, _ = volumes
    upload_layer(root / "seg", f"{s3_bucket}/seg", compress="gzip")
    src, dest = f"{s3_bucket}/seg", f"{s3_bucket}/cc"
    run_queued(src, dest, f"fq://{tmp_path}/q", "--shape", "32,24,12", "--dust", "3", env=moto, calc_here=True)
    got = CloudVolume(dest, progress=False, fill_missing=False)[:, :, :][..., 0]
    want = cc3d.dust(cc3d.connected_components(seg, connectivity=6), 3, connectivity=6)
    assert_same_components(got, want)
    contiguous(got)
    run_cli("image", "ccl", "auto", src, f"{s3_bucket}/cc2", "--shape", "32,24,12", "--dust", "3", "--encoding", "raw",
            env=moto)
    again = CloudVolume(f"{s3_bucket}/cc2", progress=False, fill_missing=False)[:, :, :][..., 0]
    assert (again == got).all()  # queued passes and auto: the same labels


def one_line_error(proc, *words: str) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("igneous-like: error:"), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_bad_input(volumes, tmp_path):
    root, _, _ = volumes
    seg, img, dest = f"file://{root}/seg", f"file://{root}/img", f"file://{tmp_path}/cc"
    one_line_error(run_cli("image", "ccl", "auto", seg, dest, "--threshold-gte", "3", check=False), "segmentation")
    one_line_error(run_cli("image", "ccl", "faces", img, dest, check=False), "--threshold-gte")
    one_line_error(run_cli("image", "ccl", "auto", seg, dest, "--shape", "20,16,12", "--chunk-size", "16,16,16",
                           check=False), "divide")
    one_line_error(run_cli("image", "ccl", "auto", seg, dest, "--connectivity", "8", check=False))
    one_line_error(run_cli("image", "ccl", "auto", seg, seg, check=False), "same layer")
    assert not (tmp_path / "cc").exists(), "nothing written"
    run_cli("image", "ccl", "faces", seg, dest, "--shape", "20,16,12")
    one_line_error(run_cli("image", "ccl", "calc-labels", seg, dest, "--shape", "20,16,12", check=False), "links")
    one_line_error(run_cli("image", "ccl", "links", seg, dest, "--shape", "32,16,12", check=False),
                   "--shape [20, 16, 12] (now [32, 16, 12])")
    run_cli("image", "ccl", "links", seg, dest, "--shape", "20,16,12")
    one_line_error(run_cli("image", "ccl", "relabel", seg, dest, "--shape", "20,16,12", check=False), "calc-labels")
    assert not (tmp_path / "cc" / "info").exists()


def test_every_pass_has_help_with_an_example():
    from click.testing import CliRunner

    from igneous_like.cli.ccl import ccl

    for name in ("auto", "faces", "links", "calc-labels", "relabel", "clean"):
        out = CliRunner().invoke(ccl, [name, "--help"])
        assert out.exit_code == 0 and "Example" in out.output, name


def test_fill_missing(volumes, tmp_path):
    import shutil

    root, seg, _ = volumes
    shutil.copytree(root / "seg", tmp_path / "seg")
    (tmp_path / "seg" / "8_8_40" / "16-32_0-16_0-8").unlink()
    args = ["image", "ccl", "auto", f"file://{tmp_path}/seg", f"file://{tmp_path}/cc", "--shape", "32,24,12",
            "--encoding", "raw"]
    failed = run_cli(*args, check=False)
    assert failed.returncode == 1 and "missing" in failed.stderr
    run_cli(*args, "--fill-missing")
    want = seg.copy()
    want[16:32, 0:16, 0:8] = 0
    assert_same_components(ts_read(tmp_path / "cc", 0)[..., 0], cc3d.connected_components(want, connectivity=6))


def test_auto_queued_runs_every_pass_in_one_execute(volumes, tmp_path):
    """auto --queue queues faces only; the last task of each pass queues the next, so one
    `execute -p 2 -x` runs the whole job (calc-labels' tree: 3 leaves, depth 2)."""
    root, seg, _ = volumes
    q = f"fq://{tmp_path}/q"
    said = run_cli("image", "ccl", "auto", f"file://{root}/seg", f"file://{tmp_path}/cc", "--shape", "17,13,9",
                   "--connectivity", "26", "--partitions", "3", "--encoding", "raw", "--queue", q).stderr
    assert "image ccl faces: 48 tasks queued" in said
    assert not (tmp_path / "cc" / "info").exists(), "relabel's info is written by the task that queues it"
    run_cli("execute", q, "-p", "2", "-x", "-q")
    got = ts_read(tmp_path / "cc", 0)[..., 0]
    assert_same_components(got, cc3d.connected_components(seg, connectivity=26))
    contiguous(got)
    assert not (tmp_path / "cc" / "_ccl").exists(), "the last relabel task cleans"
    status = run_cli("queue", "status", q).stdout
    # faces, links, relabel: 48 each; up-0..2: 3+2+1; down-1, down-0: 2+3; offsets: 1
    assert "inserted   156" in status and "completed  156" in status and "enqueued   0" in status, status


def test_calc_labels_steps_do_not_grow_with_the_spiral(volumes, tmp_path):
    """The spiral crosses every task; calc-labels still takes 2*ceil(log2 P)+2 steps."""
    root, seg, _ = volumes
    said = run_cli("image", "ccl", "auto", f"file://{root}/seg", f"file://{tmp_path}/cc", "--shape", "8,8,8",
                   "--partitions", "8", "--encoding", "raw").stderr
    steps = [line.split(":")[0] for line in said.splitlines() if line.startswith(("image ccl up-", "image ccl down-"))]
    assert steps == ["image ccl up-0", "image ccl up-1", "image ccl up-2", "image ccl up-3",
                     "image ccl down-2", "image ccl down-1", "image ccl down-0"], said
    assert_same_components(ts_read(tmp_path / "cc", 0)[..., 0], cc3d.connected_components(seg, connectivity=6))


def test_dry_run_writes_nothing(volumes, tmp_path):
    root, _, _ = volumes
    seg, dest = f"file://{root}/seg", f"file://{tmp_path}/cc"
    opts = ("--shape", "32,24,12", "--partitions", "4")
    out = run_cli("image", "ccl", "auto", seg, dest, *opts, "--dry-run").stdout
    for line in ("image ccl faces: 8 tasks", "image ccl links: 8 tasks", "image ccl calc-labels: 14 tasks in 6 steps",
                 "image ccl relabel: 8 tasks", "task shape: 32x24x12", "peak memory per task", "steps (tasks): up-0 (4), "
                 "up-1 (2), up-2 (1), down-1 (2), down-0 (4), offsets (1)", "image ccl clean: removes"):
        assert line in out, out
    for name in ("faces", "links", "calc-labels", "relabel"):
        assert "tasks" in run_cli("image", "ccl", name, seg, dest, *opts, "--dry-run").stdout
    assert not (tmp_path / "cc").exists(), "a dry run writes nothing"
    run_cli("image", "ccl", "faces", seg, dest, *opts)
    said = run_cli("image", "ccl", "clean", seg, dest, *opts, "--dry-run").stdout
    assert "would remove" in said and (tmp_path / "cc" / "_ccl").exists()


def test_ranges_label_a_sub_box(volumes, tmp_path):
    """--xrange/--yrange/--zrange: components of the sub-box alone (a piece joined only outside
    it is split), DEST covering just that box."""
    root, seg, _ = volumes
    run_cli("image", "ccl", "auto", f"file://{root}/seg", f"file://{tmp_path}/cc", "--shape", "16,16,5",
            "--xrange", "3,50", "--yrange", "2,40", "--zrange", "1,13", "--connectivity", "18", "--encoding", "raw")
    info = json.loads((tmp_path / "cc" / "info").read_text())
    assert info["scales"][0]["voxel_offset"] == [3, 2, 1] and info["scales"][0]["size"] == [47, 38, 12]
    got = ts_read(tmp_path / "cc", 0)[..., 0]
    want = cc3d.connected_components(np.ascontiguousarray(seg[3:50, 2:40, 1:13]), connectivity=18)
    assert_same_components(got, want)
    contiguous(got)
    bad = run_cli("image", "ccl", "auto", f"file://{root}/seg", f"file://{tmp_path}/cc2", "--xrange", "50,3",
                  check=False)
    one_line_error(bad, "--xrange")


def test_mip_1(volumes, tmp_path):
    import shutil

    root, _, _ = volumes
    shutil.copytree(root / "seg", tmp_path / "seg")
    run_cli("image", "downsample", f"file://{tmp_path}/seg", "--num-mips", "1")
    down = ts_read(tmp_path / "seg", 1)[..., 0]
    run_cli("image", "ccl", "auto", f"file://{tmp_path}/seg", f"file://{tmp_path}/cc", "--mip", "1",
            "--shape", "9,7,5", "--connectivity", "26", "--partitions", "2", "--encoding", "raw")
    info = json.loads((tmp_path / "cc" / "info").read_text())
    src = json.loads((tmp_path / "seg" / "info").read_text())["scales"][1]
    assert info["scales"][0]["resolution"] == src["resolution"] and info["scales"][0]["size"] == src["size"]
    got = ts_read(tmp_path / "cc", 0)[..., 0]
    assert_same_components(got, cc3d.connected_components(down, connectivity=26))


@pytest.mark.parametrize("grid,leaves", [((16, 16, 4), 4), ((3, 1, 2), 5), ((5, 7, 3), 7), ((1, 1, 1), 3), ((4, 4, 4), 8)])
def test_leaf_tree_partitions_the_grid(grid, leaves):
    """Each task lies in exactly one leaf, whose box leaf_cells gives (links writers and up-0
    readers must agree), and leaves of one group at level L are p >> L apart only."""
    from igneous_like.ops.image.ccl_tree import LeafTree, cells_in, merge_level

    tree = LeafTree(grid, (32, 32, 32), leaves)
    t = np.arange(np.prod(grid))
    leaf = tree.leaf_of(np.stack([t % grid[0], (t // grid[0]) % grid[1], t // (grid[0] * grid[1])], axis=1))
    assert leaf.min() >= 0 and leaf.max() < leaves
    for p in range(leaves):
        assert sorted(cells_in(tree.leaf_cells(p), grid).tolist()) == t[leaf == p].tolist()
    p, q = np.meshgrid(np.arange(leaves), np.arange(leaves))
    level = merge_level(p, q)
    assert ((p >> level) == (q >> level)).all() and ((level == 0) | ((p >> (level - 1)) != (q >> (level - 1)))).all()


def test_phase_complete_is_seen_by_the_last_task_only(tmp_path):
    """Grouped done markers: only the task finishing last (in any order) sees its phase whole."""
    from igneous_like.ops.image.ccl import CclJob, done_count, mark_done, phase_complete

    job = CclJob(src="file:///nowhere", dest=f"file://{tmp_path}/cc", mip=0, bounds=[0, 0, 0, 8, 8, 8],
                 shape=[8, 8, 8], connectivity=6, threshold_gte=None, threshold_lte=None, dust=0, fill_missing=False,
                 partitions=1, encoding="raw", chunk_size=[8, 8, 8])
    order = np.random.default_rng(3).permutation(11)
    seen = []
    for i in order:
        mark_done(job, "links", int(i), group=4)
        seen.append(phase_complete(job, "links", 11, int(i), group=4))
    assert seen == [False] * 10 + [True]
    assert done_count(job, "links") == 11
