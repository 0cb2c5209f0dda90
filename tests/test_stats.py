"""image stats against a whole-volume numpy reference; queued two phases; S3; segment
properties checked by a reader written here from the spec; image voxels count/sum."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from browser import Browser, View, chromium_path, wait_loaded
from conftest import free_port, run_cli, tree_digest

RES = (4, 6, 40)
OFFSET = (10, 20, 5)
SHAPE = (67, 53, 29)
ODD_TASK = "17,13,7"


def make_volume(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Wavy cells, a bar and a slab crossing many tasks, ids above 2^32, a one-voxel label,
    a label in the corner; anisotropic voxels, a voxel offset, chunks that are not the tasks."""
    from igneous_like import sample

    seg = sample.segmentation(SHAPE, seed=7, cells=30)
    seg[5:60, 20:24, 10:13] = 2**40 + 11
    seg[40:43, 2:50, 1:28] = 2**63 + 9
    seg[30, 30, 0] = 2**33 + 5
    seg[0:3, 0:2, 0:2] = 7
    img = sample.image_from(seg, seed=2)
    for name, data, kind in (("seg", seg, "segmentation"), ("img", img, "image")):
        sample.write_layer(f"file://{root}/{name}", data, kind, resolution=RES, chunk=(32, 32, 16), voxel_offset=OFFSET)
    return seg, img


@pytest.fixture(scope="module")
def pristine_stats(tmp_path_factory):
    root = tmp_path_factory.mktemp("statsvol")
    seg, img = make_volume(root)
    return root, seg, img


@pytest.fixture
def vol(pristine_stats, tmp_path):
    root, seg, img = pristine_stats
    for name in ("seg", "img"):
        shutil.copytree(root / name, tmp_path / name)
    return tmp_path, seg, img


def reference(seg: np.ndarray, img: np.ndarray | None) -> dict[int, dict]:
    """Every column for every label, straight from the definitions, one mask at a time."""
    res = np.asarray(RES, dtype=np.float64)
    off = np.asarray(OFFSET)
    padded = np.pad(seg, 1)  # the outside is background
    out = {}
    for label in np.unique(seg):
        if label == 0:
            continue
        mask = seg == label
        idx = np.stack(np.nonzero(mask), axis=1)
        row = {"voxel_count": len(idx)}
        lo, hi = idx.min(0) + off, idx.max(0) + 1 + off
        for i, a in enumerate("xyz"):
            row[f"bbox_min_{a}"], row[f"bbox_max_{a}"] = int(lo[i]), int(hi[i])
            row[f"centroid_{a}"] = int(idx[:, i].sum()) / len(idx) + 0.5 + off[i]
        row["volume_nm3"] = len(idx) * float(np.prod(res))
        pm = padded == label
        faces = [int((np.diff(pm.astype(np.int8), axis=i) != 0).sum()) for i in range(3)]
        row["surface_area_nm2"] = faces[0] * res[1] * res[2] + faces[1] * res[0] * res[2] + faces[2] * res[0] * res[1]
        row["touches_border"] = bool((idx.min(0) == 0).any() or (idx.max(0) == np.array(seg.shape) - 1).any())
        centres = (idx + 0.5) * res
        eig = np.linalg.eigvalsh(np.cov(centres.T, bias=True)) if len(idx) > 1 else np.zeros(3)
        row["axis_major_nm"], row["axis_minor_nm"] = 4 * np.sqrt(max(eig[-1], 0)), 4 * np.sqrt(max(eig[0], 0))
        if img is not None:
            values = img[mask].astype(np.float64)
            row.update(intensity_mean=values.mean(), intensity_std=values.std(), intensity_min=values.min(),
                       intensity_max=values.max())
        out[int(label)] = row
    return out


EXACT = ["voxel_count", "bbox_min_x", "bbox_min_y", "bbox_min_z", "bbox_max_x", "bbox_max_y", "bbox_max_z",
         "volume_nm3", "surface_area_nm2", "touches_border", "intensity_min", "intensity_max"]
CLOSE = ["centroid_x", "centroid_y", "centroid_z", "axis_major_nm", "axis_minor_nm", "intensity_mean", "intensity_std"]
COLUMNS = ["label", "voxel_count", "bbox_min_x", "bbox_min_y", "bbox_min_z", "bbox_max_x", "bbox_max_y",
           "bbox_max_z", "centroid_x", "centroid_y", "centroid_z", "volume_nm3", "surface_area_nm2",
           "touches_border", "axis_major_nm", "axis_minor_nm"]
INTENSITY = ["intensity_mean", "intensity_std", "intensity_min", "intensity_max"]


def read_dataset(path: Path, fmt: str = "parquet") -> dict[str, np.ndarray]:
    """The table as a user reads it: the whole directory as one pyarrow dataset."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(path), format=fmt).to_table()
    return {name: table.column(name).to_numpy() for name in table.column_names}


def check_against_reference(table: dict, ref: dict, with_image: bool) -> None:
    assert list(table) == COLUMNS + (INTENSITY if with_image else [])
    assert table["label"].dtype == np.uint64
    assert sorted(int(v) for v in table["label"]) == sorted(ref)
    row_of = {int(v): i for i, v in enumerate(table["label"])}
    for label, expected in ref.items():
        i = row_of[label]
        for col in EXACT:
            if col in expected:
                assert table[col][i] == expected[col], (label, col, table[col][i], expected[col])
        for col in CLOSE:
            if col in expected:
                assert table[col][i] == pytest.approx(expected[col], rel=1e-9, abs=1e-6), (label, col)


def test_stats_match_numpy_reference(vol):
    root, seg, img = vol
    run_cli("image", "stats", f"file://{root}/seg", "--image", f"file://{root}/img", "--shape", ODD_TASK)
    table = read_dataset(root / "seg" / "stats")
    check_against_reference(table, reference(seg, img), with_image=True)
    assert any(int(v) > 2**32 for v in table["label"])
    assert 2**63 + 9 in {int(v) for v in table["label"]}


def test_rerun_gives_same_bytes(vol):
    root, seg, _ = vol
    args = ("image", "stats", f"file://{root}/seg", "--shape", "31,29,11", "--partitions", "3")
    run_cli(*args)
    first = tree_digest(root / "seg")
    assert len(list((root / "seg" / "stats").glob("part-*-of-00003.parquet"))) == 3
    run_cli(*args, "-p", "2")
    assert tree_digest(root / "seg") == first
    check_against_reference(read_dataset(root / "seg" / "stats"), reference(seg, None), with_image=False)


def test_queued_two_phases(vol, tmp_path):
    root, seg, img = vol
    q = f"fq://{tmp_path}/q"
    base = ("image", "stats", f"file://{root}/seg", "--image", f"file://{root}/img", "--shape", ODD_TASK,
            "--partitions", "2", "--queue", q)
    run_cli(*base)
    early = run_cli(*base, "--merge", check=False)
    assert early.returncode == 1 and "map output incomplete: 100 of 100 tasks have not run" in early.stderr
    assert not (root / "seg" / "stats" / "part-00000-of-00002.parquet").exists()
    run_cli("execute", q, "-p", "2", "-x", "-q")
    other = run_cli(*base[:-4], "--partitions", "3", "--queue", q, "--merge", check=False)
    assert other.returncode == 1 and "other parameters" in other.stderr
    run_cli(*base, "--merge")
    run_cli("execute", q, "-x", "-q")
    check_against_reference(read_dataset(root / "seg" / "stats"), reference(seg, img), with_image=True)
    info = json.loads((root / "seg" / "info").read_text())
    assert info["segment_properties"] == "segment_properties"
    props = read_segment_properties(root / "seg" / info["segment_properties"] / "info")
    assert set(props["ids"]) == set(reference(seg, None))


def published(layer: Path) -> dict[str, str]:
    """Digests of a layer's files without the stats job's working files."""
    return {k: v for k, v in tree_digest(layer).items() if "_partials" not in k}


def test_queued_auto_merge_runs_both_phases_from_one_queue(vol, tmp_path):
    """--auto-merge: the last map task queues the reduce, so one `execute -x` (two workers here)
    writes the whole table; a second run starts afresh (old chain markers are cleared) and
    writes the same bytes as the two-phase workflow."""
    root, seg, img = vol
    q = f"fq://{tmp_path}/q"
    base = ("image", "stats", f"file://{root}/seg", "--image", f"file://{root}/img", "--shape", ODD_TASK,
            "--partitions", "2", "--queue", q)
    both = run_cli(*base, "--auto-merge", "--merge", check=False)
    assert both.returncode == 1 and "does not go with --merge" in both.stderr
    run_cli(*base, "--auto-merge")
    assert not (root / "seg" / "stats" / "part-00000-of-00002.parquet").exists()
    run_cli("execute", q, "-p", "2", "-x", "-q")
    check_against_reference(read_dataset(root / "seg" / "stats"), reference(seg, img), with_image=True)
    props = read_segment_properties(root / "seg" / "segment_properties" / "info")
    assert set(props["ids"]) == set(reference(seg, None))
    chained = published(root / "seg")
    for part in (root / "seg" / "stats").glob("part-*"):
        part.unlink()
    run_cli(*base, "--auto-merge")
    assert not (root / "seg" / "stats" / "_partials" / "chain" / "queued").exists()
    run_cli("execute", q, "-x", "-q")
    assert published(root / "seg") == chained
    shutil.rmtree(root / "seg" / "stats")
    run_cli(*base)
    run_cli("execute", q, "-x", "-q")
    run_cli(*base, "--merge")
    run_cli("execute", q, "-x", "-q")
    assert published(root / "seg") == chained


def test_a_chained_map_task_run_again_does_not_queue_the_reduce_twice(vol, tmp_path):
    """--auto-merge: a map task that runs again after its run queued the reduce (its worker died
    before deleting it, or its lease ran out) finds chain/queued and queues nothing more."""
    from igneous_like.ops.analysis import stats as op

    root, _, _ = vol
    q = f"fq://{tmp_path}/q"
    base = ("image", "stats", f"file://{root}/seg", "--shape", "40,40,20", "--partitions", "2", "--queue", q)
    run_cli(*base, "--auto-merge")
    run_cli("execute", q, "-x", "-q")
    status = run_cli("queue", "status", q).stdout
    assert "inserted   10" in status, status  # 8 maps, 2 reduces
    job = op.open_job(f"file://{root}/seg", shape=(40, 40, 20), partitions=2)
    tasks = list(op.plan_stats_map(job, follow_queue=q).tasks())
    owner = int((root / "seg" / "stats" / "_partials" / "chain" / "claim").read_text())
    tasks[owner]()  # the task that queued the reduce, again: it still owns the claim
    tasks[(owner + 1) % len(tasks)]()  # and another one
    status = run_cli("queue", "status", q).stdout
    assert "inserted   10" in status and "enqueued   0" in status, status


def read_segment_properties(path: Path) -> dict:
    """A reader written from neuroglancer's segment_properties.md: validates every rule and
    returns {"ids": [...], "numbers": {id: values}, "tags": {label: [tag names]}}."""
    def strict(value):
        raise ValueError(f"non-JSON constant {value}")

    doc = json.loads(path.read_text(), parse_constant=strict)
    assert doc["@type"] == "neuroglancer_segment_properties"
    inline = doc["inline"]
    ids = inline["ids"]
    assert all(isinstance(i, str) and i.isdigit() and int(i) < 2**64 for i in ids)
    limits = {"uint8": (0, 2**8), "int8": (-(2**7), 2**7), "uint16": (0, 2**16), "int16": (-(2**15), 2**15),
              "uint32": (0, 2**32), "int32": (-(2**31), 2**31)}
    numbers, tags = {}, {}
    kinds = [p["type"] for p in inline["properties"]]
    for single in ("label", "description", "tags"):
        assert kinds.count(single) <= 1
    for prop in inline["properties"]:
        assert prop["type"] in ("label", "description", "string", "tags", "number")
        assert len(prop["values"]) == len(ids)
        if prop["type"] == "number":
            assert prop["data_type"] in (*limits, "float32")
            values = np.asarray(prop["values"], dtype=np.float64)
            assert np.isfinite(values).all()
            if prop["data_type"] in limits:
                lo, hi = limits[prop["data_type"]]
                assert (values == np.round(values)).all() and values.min() >= lo and values.max() < hi
            numbers[prop["id"]] = values
        elif prop["type"] == "tags":
            assert "description" not in prop
            assert all(" " not in t and not t.startswith("#") for t in prop["tags"])
            assert len(prop.get("tag_descriptions", prop["tags"])) == len(prop["tags"])
            for label, value in zip(ids, prop["values"]):
                assert value == sorted(value) and all(0 <= t < len(prop["tags"]) for t in value)
                tags[int(label)] = [prop["tags"][t] for t in value]
        else:
            assert "data_type" not in prop and all(isinstance(v, str) for v in prop["values"])
    return {"ids": [int(i) for i in ids], "numbers": numbers, "tags": tags}


def test_segment_properties_follow_spec(vol):
    root, seg, img = vol
    run_cli("image", "stats", f"file://{root}/seg", "--image", f"file://{root}/img", "--format", "csv",
            "--top", "5", "--min-voxels", "2", "--partitions", "2",  # top 5 chosen across both parts
            "--out", f"file://{root}/table")
    ref = reference(seg, img)
    props = read_segment_properties(root / "seg" / "segment_properties" / "info")
    biggest = sorted((r for r in ref.items() if r[1]["voxel_count"] >= 2), key=lambda r: (-r[1]["voxel_count"], r[0]))
    assert props["ids"] == sorted(label for label, _ in biggest[:5])
    for i, label in enumerate(props["ids"]):
        assert props["numbers"]["voxel_count"][i] == ref[label]["voxel_count"]
        assert props["numbers"]["surface_area_nm2"][i] == pytest.approx(ref[label]["surface_area_nm2"], rel=1e-6)
        assert props["numbers"]["bbox_min_x"][i] == ref[label]["bbox_min_x"]
        assert ("touches_border" in props["tags"][label]) == ref[label]["touches_border"]
    expected = [c for c in COLUMNS + INTENSITY if c not in ("label", "touches_border")]
    assert list(props["numbers"]) == expected
    # the table keeps every label, in CSV here, where --out put it
    table = read_dataset(root / "table", fmt="csv")
    assert len(table["label"]) == len(ref) and table["touches_border"].dtype == bool
    assert sorted(p.name for p in (root / "table").glob("part-*")) == ["part-00000-of-00002.csv", "part-00001-of-00002.csv"]
    assert not (root / "seg" / "stats").exists()


def test_stats_on_s3(vol, s3_bucket, moto):
    from cloudfiles import CloudFiles

    from conftest import upload_layer

    root, seg, _ = vol
    url = f"{s3_bucket}/seg"
    upload_layer(root / "seg", url, compress="gzip")
    run_cli("image", "stats", url, "--shape", "40,40,20", "--partitions", "2", env=moto)
    cf = CloudFiles(f"{url}/stats")
    parts = sorted(n for n in cf.list(prefix="part-"))
    assert parts == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    (root / "s3copy").mkdir()
    for name in parts:
        (root / "s3copy" / name).write_bytes(cf.get(name))
    check_against_reference(read_dataset(root / "s3copy"), reference(seg, None), with_image=False)
    assert json.loads(CloudFiles(url).get("info"))["segment_properties"] == "segment_properties"
    assert CloudFiles(url).get("segment_properties/info") is not None
    # --auto-merge on S3: two workers finish the map; exactly one queues the reduce (the
    # chain/claim is a conditional write), and the table has the same bytes
    tables = {name: cf.get(name) for name in parts}
    cf.delete(parts)
    q = f"fq://{root}/q"
    run_cli("image", "stats", url, "--shape", "40,40,20", "--partitions", "2", "--auto-merge", "--queue", q, env=moto)
    run_cli("execute", q, "-p", "2", "-x", "-q", env=moto)
    maps = 2 * 2 * 2  # 67x53x29 in 40x40x20 tasks
    status = run_cli("queue", "status", q).stdout
    assert f"inserted   {maps + 2}" in status and f"completed  {maps + 2}" in status, status
    assert {name: cf.get(name) for name in parts} == tables
    chain = CloudFiles(f"{url}/stats/_partials")
    assert chain.get("chain/claim").isdigit() and chain.exists("chain/queued")
    # Igneous-compatible voxel counts on S3 too (the IntMap zstd-compressed, as Igneous does)
    run_cli("image", "voxels", "count", url, env=moto)
    run_cli("image", "voxels", "sum", url, env=moto)
    from mapbuffer import IntMap

    key = json.loads(CloudFiles(url).get("info"))["scales"][0]["key"]
    pairs = IntMap(CloudFiles(url).get(f"{key}/stats/voxel_counts.im")).index()
    uniq, cts = np.unique(seg, return_counts=True)
    assert {int(k): int(v) for k, v in pairs} == {int(u): int(c) for u, c in zip(uniq, cts)}


@pytest.mark.parametrize("args, expect", [
    (("--mip", "3"), "mip 3 is out of range"),
    (("--top", "0"), "--top must be at least 1"),
    (("--shape", "0,4,4"), "must be positive"),
    (("--partitions", "0"), "--partitions must be 1 to"),
    (("--xrange", "0,5"), "lies outside"),
    (("--format", "xlsx"), "invalid value"),
])
def test_bad_input(vol, args, expect):
    root, _, _ = vol
    before = tree_digest(root)
    proc = run_cli("image", "stats", f"file://{root}/seg", *args, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert expect.lower() in proc.stderr.lower(), proc.stderr
    assert tree_digest(root) == before


def test_bad_layers(vol):
    from igneous_like import sample

    root, _, _ = vol
    other = np.zeros((10, 10, 10), dtype=np.uint8)
    sample.write_layer(f"file://{root}/small", other, "image", resolution=RES, voxel_offset=OFFSET)
    before = tree_digest(root)
    cases = [
        (("image", "stats", f"file://{root}/img"), "is not a segmentation"),
        (("image", "stats", f"file://{root}/nothing"), "info file is missing"),
        (("image", "stats", f"file://{root}/seg", "--image", f"file://{root}/small"), "does not match"),
        (("image", "stats", f"file://{root}/seg", "--merge"), "no map output"),
        (("image", "voxels", "sum", f"file://{root}/seg"), "voxel count files are missing"),
        (("image", "stats", f"file://{root}/seg", "--queue", "zz://q"), "bad queue url"),
    ]
    for args, expect in cases:
        proc = run_cli(*args, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and expect.lower() in proc.stderr.lower(), proc.stderr
    assert tree_digest(root) == before


def test_voxel_count_and_sum(vol, tmp_path):
    from mapbuffer import IntMap

    root, seg, _ = vol
    q = f"fq://{tmp_path}/q"
    run_cli("image", "voxels", "count", f"file://{root}/seg", "--queue", q)
    run_cli("execute", q, "-x", "-q")
    key = json.loads((root / "seg" / "info").read_text())["scales"][0]["key"]
    task = root / "seg" / key / "stats" / "voxel_counts" / "10-77_20-73_5-34.json"
    counts = json.loads(task.read_text())
    uniq, cts = np.unique(seg, return_counts=True)
    assert counts == {str(int(u)): int(c) for u, c in zip(uniq, cts)}
    run_cli("image", "voxels", "sum", f"file://{root}/seg", "--compress", "none", "-o", str(tmp_path / "local.im"))
    im = IntMap((root / "seg" / key / "stats" / "voxel_counts.im").read_bytes())
    pairs = im.index()  # (label, count) rows; IntMap's lookup overflows on ids >= 2^63
    assert {int(k): int(v) for k, v in pairs} == {int(u): int(c) for u, c in zip(uniq, cts)}
    assert (tmp_path / "local.im").read_bytes() == (root / "seg" / key / "stats" / "voxel_counts.im").read_bytes()


def test_help_has_examples():
    for command in ("image stats", "image voxels count", "image voxels sum"):
        assert "Example" in run_cli(*command.split(), "--help").stdout, command


def test_dry_run_writes_nothing(vol):
    root, _, _ = vol
    before = tree_digest(root)
    out = run_cli("image", "stats", f"file://{root}/seg", "--shape", ODD_TASK, "--dry-run").stdout
    assert "image stats (map): 100 tasks" in out and "image stats (reduce): 1 tasks" in out
    assert tree_digest(root) == before


def test_voxel_files_are_igneous_bytes(vol, tmp_path):
    """Same task files and IntMap as the reference Igneous writes (skipped without it)."""
    igneous = Path(__file__).resolve().parents[1] / ".venv-reference" / "bin" / "igneous"
    if not igneous.exists():
        pytest.skip("reference Igneous not installed (.venv-reference)")
    import subprocess

    root, _, _ = vol
    shutil.copytree(root / "seg", tmp_path / "theirs")
    run_cli("image", "voxels", "count", f"file://{root}/seg")
    run_cli("image", "voxels", "sum", f"file://{root}/seg", "--compress", "")
    for args in (["image", "voxels", "count", f"file://{tmp_path}/theirs"],  # Igneous refuses "none"
                 ["image", "voxels", "sum", f"file://{tmp_path}/theirs", "--compress", ""]):
        subprocess.run([str(igneous), *args], check=True, capture_output=True, timeout=300)
    key = json.loads((root / "seg" / "info").read_text())["scales"][0]["key"]
    ours, theirs = root / "seg" / key / "stats", tmp_path / "theirs" / key / "stats"
    assert tree_digest(ours) == tree_digest(theirs) and tree_digest(ours)


@pytest.mark.parametrize("task", [(1, 1, 1), (5, 3, 2), (67, 53, 29)])
def test_label_stats_in_process_any_task_shape(pristine_stats, task):
    """The map/merge/columns functions alone, over every box of a grid (one-voxel tasks too),
    merged in shuffled order: the same table as the whole-volume reference."""
    from igneous_like import label_stats, mapreduce
    from igneous_like.grid import Box, grid_boxes

    _, seg, img = pristine_stats
    seg, img = seg[:23, :19, :11], img[:23, :19, :11]  # small enough for one-voxel tasks
    full = Box((0, 0, 0), seg.shape)
    off = np.asarray(OFFSET)
    rows = []
    for box in grid_boxes(full, task, (0, 0, 0)):
        hi = [min(b + 1, s) for b, s in zip(box.stop, seg.shape)]
        block = seg[box.start[0]:hi[0], box.start[1]:hi[1], box.start[2]:hi[2]]
        labels, inverse = np.unique(block, return_inverse=True)
        if labels[0] != 0:
            labels, inverse = np.concatenate([[0], labels]).astype(np.uint64), inverse + 1
        ids = np.asfortranarray(inverse.reshape(block.shape))
        edges = [tuple(a == b for a, b in zip(box.start, full.start)), tuple(a == b for a, b in zip(box.stop, full.stop))]
        rows.append(label_stats.block_stats(ids, labels, box.shape, tuple(np.asarray(box.start) + off), *edges,
                                            image=img[box.slices()]))
    rng = np.random.default_rng(1)
    rng.shuffle(rows)
    half = max(1, len(rows) // 2)  # merge twice: merged rows merge again
    merged = label_stats.merge(mapreduce.concat(rows[:half]))
    merged = label_stats.merge(mapreduce.concat([merged, *rows[half:]]))
    table = label_stats.columns(merged, RES, tuple(off), tuple(off + np.asarray(seg.shape)))
    check_against_reference(table, reference(seg, img), with_image=True)




def test_partial_rows_are_stored_narrow_and_widen_back_exactly(pristine_stats):
    """A map task stores task-local integers in the narrowest dtypes that hold them (counts of
    small objects in uint8, coordinates of a small task in uint8/uint16); widen gives int64
    global rows again, equal to summing the block's voxels directly."""
    from igneous_like import label_stats

    _, seg, _ = pristine_stats
    block = np.asfortranarray(seg[:40, :30, :20])
    ids, original, by_label = label_stats.dense_ids(block)
    stored = label_stats.block_partial(ids, original, block.shape, (True,) * 3, (True,) * 3, by_label=by_label)
    assert stored["min_x"].dtype == np.uint8 and stored["sx"].dtype.itemsize < 8 and stored["n"].dtype.kind == "u"
    origin = (1000, 2**33, 7)
    rows = label_stats.widen(dict(stored), origin)
    assert all(rows[c].dtype == np.int64 for c in ("n", "sx", "min_x", "max_z", "faces_y"))
    for i in (0, len(rows["label"]) // 2, len(rows["label"]) - 1):
        x, y, z = np.nonzero(block == rows["label"][i])
        assert rows["n"][i] == len(x) and rows["sy"][i] == int((y + origin[1]).sum())
        assert rows["min_x"][i] == x.min() + origin[0] and rows["max_z"][i] == z.max() + 1 + origin[2]
    assert label_stats.narrowest(np.array([-3, 100])).dtype == np.int8
    assert label_stats.narrowest(np.array([2**40, 1, 70000]), skip_first=True).dtype == np.uint32


def test_small_pages_turns_numpy_huge_pages_off_and_back():
    """The stats tasks run with numpy's MADV_HUGEPAGE off; the worker's setting comes back."""
    from igneous_like import allocator

    switch = np._core.multiarray._set_madvise_hugepage
    before = switch(True)
    try:
        with allocator.small_pages():
            assert switch(False) is False  # off inside
        assert switch(True) is True  # restored
    finally:
        switch(before)


def test_dense_ids_numbers_by_first_appearance_and_frees_a_passed_block(pristine_stats):
    """dense_ids: 0 stays background, ids follow first appearance (x fastest), original[id]
    gives the label back, by_label lists ids in label order; a block passed in a list is taken
    out of it (so the task can free it) with the same result."""
    from igneous_like import label_stats

    _, seg, _ = pristine_stats
    block = np.asfortranarray(seg[:40, :30, :20])
    ids, original, by_label = label_stats.dense_ids(block)
    assert (original[ids] == block).all() and original[0] == 0
    flat = ids.ravel(order="F")
    _, first = np.unique(flat, return_index=True)
    assert (np.diff(flat[np.sort(first)].astype(np.int64)) > 0).all()  # first appearances in id order
    in_order = original[by_label]
    assert (in_order[1:] > in_order[:-1]).all()
    holder = [block.copy(order="F")]
    again = label_stats.dense_ids(holder)
    assert holder == [] and all(np.array_equal(a, b) for a, b in zip(again, (ids, original, by_label)))


def test_dense_ids_by_table_and_by_unique_agree_with_numpy():
    """Both ways of numbering (a table over label - min, in the block's own memory, for an
    unsigned block of few distinct values; fastremap.unique otherwise) give numpy's answer: ids
    by first appearance, x fastest, 0 only for background, original and by_label consistent."""
    from igneous_like import label_stats

    def expected(block):
        flat = block.ravel(order="F")
        labels, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # label indices by first appearance
        rank = np.empty(len(labels), dtype=np.int64)
        rank[order] = np.arange(1, len(labels) + 1)
        if labels[0] == 0:
            rank -= rank > rank[0]
            rank[0] = 0
        return rank[inverse].reshape(block.shape, order="F")

    rng = np.random.default_rng(11)
    shape = (9, 7, 5)
    cases = {
        "dense range, background": rng.integers(0, 40, shape).astype(np.uint64),
        "dense range, none": (rng.integers(0, 40, shape) + 2**40).astype(np.uint64),
        "dense uint16": rng.integers(0, 300, shape).astype(np.uint16),
        "all one label": np.full(shape, 7, dtype=np.uint32),
        "sparse": rng.choice(np.array([0, 5, 2**63 + 3, 2**40], dtype=np.uint64), shape),
        # numbered per run along x: long runs, runs that go on across rows, labels that return
        "sparse, long runs": np.repeat(rng.choice(np.array([0, 9, 2**50, 2**33 + 1], dtype=np.uint64), (3, 7, 5)), 3, 0),
        "sparse, one row each": np.repeat(np.array([2**40, 0, 2**40 + 9, 3, 2**40], dtype=np.uint64), 9 * 7)
        .reshape((5, 9, 7)).transpose(1, 2, 0),
        "signed": rng.integers(0, 2**40, shape).astype(np.int64) * rng.integers(0, 2, shape),
    }
    for name, block in cases.items():
        block = np.asfortranarray(block)
        want = expected(block)
        for given in (block.copy(order="F"), [block.copy(order="F")]):
            ids, original, by_label = label_stats.dense_ids(given)
            assert np.array_equal(ids.astype(np.int64), want), name
            assert ids.flags.f_contiguous and original[0] == 0, name
            assert np.array_equal(original[ids], block.astype(np.uint64)), name
            in_order = original[by_label]
            assert by_label[0] == 0 and (in_order[1:] > in_order[:-1]).all() and len(by_label) == len(original), name


def test_first_positions_match_numpy_unique_return_index():
    """dense_ids' first voxel of each id, from run starts, equals np.unique's return_index: on
    runs of repeated ids that come back later, with and without id 0 first, and on one run;
    taken in steps of any size (runs that go on across a step's end are not restarted)."""
    from igneous_like.label_stats import _first_positions

    rng = np.random.default_rng(5)
    for flat in (np.repeat(rng.integers(0, 50, 400), rng.integers(1, 6, 400)),
                 np.repeat(rng.integers(1, 50, 300), 3), np.zeros(7, dtype=np.int64)):
        _, dense = np.unique(flat, return_inverse=True)
        _, expected = np.unique(dense, return_index=True)
        for step in (1, 2, 3, 7, 64, 1 << 22):
            for dtype in (np.uint64, np.uint32):
                got = _first_positions(dense.astype(dtype), int(dense.max()) + 1, step=step)
                assert np.array_equal(got, expected), (step, dtype)


def test_whole_float_columns_are_published_as_integers():
    """A float column of whole numbers that fit 32 bits is written as uint32 / int32 (the same
    numbers, exactly); fractions, NaN and values past 32 bits stay float32; the table's columns
    are released as they are written."""
    from igneous_like import segment_properties as sp

    assert sp.number_type(np.array([0.0, 20480.0, 4294967295.0])) == "uint32"
    assert sp.number_type(np.array([-3.0, 7.0])) == "int32"
    for values in ([1.0, 2.5], [1.0, np.nan], [1.0, np.inf], [0.0, 2.0**32], [-(2.0**31) - 1, 0.0]):
        assert sp.number_type(np.array(values)) == "float32", values
    n = 3 << 20  # more than one chunk of the whole-number check; a fraction only in the last one
    table = {"label": np.arange(1, n + 1, dtype=np.uint64), "volume_nm3": np.arange(n, dtype=np.float64) * 1000.0,
             "centroid_x": np.full(n, 4.0), "touches_border": np.zeros(n, dtype=bool)}
    table["centroid_x"][-1] = 4.5
    expect = {k: v.copy() for k, v in table.items()}
    doc = json.loads(sp.encode(table, np.arange(n), ["volume_nm3", "centroid_x"], ["touches_border"]))
    assert table == {}
    props = {p["id"]: p for p in doc["inline"]["properties"]}
    assert props["volume_nm3"]["data_type"] == "uint32" and props["centroid_x"]["data_type"] == "float32"
    assert all(type(v) is int for v in props["volume_nm3"]["values"][:1000])
    assert np.array_equal(np.array(props["volume_nm3"]["values"], dtype=np.float64), expect["volume_nm3"])
    assert np.array_equal(np.array(props["centroid_x"]["values"]), expect["centroid_x"])


def test_parquet_encodings_by_column():
    """Sorted integer columns are delta-encoded, float columns of distinct values
    byte-stream-split, other integer ones and floats of few values dictionary-encoded, and every
    column reads back exactly (same bytes run to run)."""
    import pyarrow.parquet as pq
    import pyarrow as pa

    from igneous_like import tables

    rng = np.random.default_rng(1)
    n = 20000
    table = {"label": np.arange(n, dtype=np.uint64), "voxel_count": rng.integers(1, 9, n).astype(np.uint64),
             "centroid_x": rng.random(n) * 1000, "volume_nm3": np.full(n, 20480.0), "touches_border": rng.random(n) < 0.5}
    data = tables.encode(table, "parquet")
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert "BYTE_STREAM_SPLIT" in encodings["centroid_x"]
    assert "DELTA_BINARY_PACKED" in encodings["label"] and not any("DICT" in e for e in encodings["label"])
    for name in ("voxel_count", "volume_nm3"):
        assert "BYTE_STREAM_SPLIT" not in encodings[name] and any("DICT" in e for e in encodings[name]), name
    assert "BYTE_STREAM_SPLIT" not in encodings["touches_border"]  # booleans: run-length bits
    back = tables.decode(data, "parquet")
    assert all(np.array_equal(back[k], v) for k, v in table.items())
    assert tables.encode(table, "parquet") == data


def test_closed_form_eigenvalues_match_lapack():
    """The vectorized 3x3 eigenvalues behind axis_major/minor_nm against numpy's eigvalsh:
    general, repeated, diagonal, one-plane (flat), rank-one and rank-two oblique matrices."""
    from igneous_like.label_stats import symmetric_eig_extremes

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 3, 3))
    m = x @ x.transpose(0, 2, 1) * rng.uniform(1, 1e6, (3000, 1, 1))
    m[:100] = np.eye(3) * 5
    m[100:200] = np.diag([3.0, 3.0, 1.0])
    m[200:300] = 0
    m[300:400, 2, :] = m[300:400, :, 2] = 0  # one z plane
    v, w = rng.normal(size=(2, 100, 3))
    m[400:500] = np.einsum("ni,nj->nij", v, v)
    m[500:600] = np.einsum("ni,nj->nij", v, v) + np.einsum("ni,nj->nij", w, w)
    hi, lo = symmetric_eig_extremes(m[:, 0, 0], m[:, 1, 1], m[:, 2, 2], m[:, 0, 1], m[:, 0, 2], m[:, 1, 2])
    ref = np.linalg.eigvalsh(m)
    axis = lambda e: 4 * np.sqrt(np.maximum(e, 0))  # noqa: E731  (as the table reports them)
    for mine, theirs in ((hi, ref[:, -1]), (lo, ref[:, 0])):
        assert np.allclose(axis(mine), axis(theirs), rtol=1e-9, atol=1e-6)
    assert (lo[200:400] == 0).all()  # exact zeros stay exact

SEGMENT_LIST = """JSON.stringify((() => {
  const tab = document.querySelector('.neuroglancer-segment-display-tab');
  if (tab === null) return null;
  const shown = e => e.offsetParent !== null;
  const texts = sel => [...tab.querySelectorAll(sel)].filter(shown).map(e => e.textContent.trim());
  const rows = [...tab.querySelectorAll('.neuroglancer-segment-list-entry')].filter(e => shown(e) && e.dataset.id)
    .map(e => [e.dataset.id, ...[...e.querySelectorAll('.neuroglancer-segment-list-entry-extra-property')]
      .map(c => c.textContent)]);
  return {status: texts('.neuroglancer-segment-list-status-message'), rows,
          header: texts('.neuroglancer-segment-list-header-label'), errors: texts('.neuroglancer-segment-query-errors li')};
})())"""


def segment_list(browser: Browser, query: str, timeout: float = 20) -> dict:
    """Layer `seg`'s Seg. tab with `query` in its search box, as the page shows it once the
    query has run: status message, column headers, and [id, extra column values...] per row."""
    state = json.loads(browser.evaluate("JSON.stringify(viewer.state.toJSON())"))
    for layer in state["layers"]:
        if layer["name"] == "seg":
            layer.update(tab="segments", segmentQuery=query)
    state["selectedLayer"] = {"layer": "seg", "visible": True}
    browser.evaluate(f"viewer.state.restoreState({json.dumps(state)})")
    deadline = time.time() + timeout
    while True:
        browser.pump(0.5)
        got = json.loads(browser.evaluate(SEGMENT_LIST) or "null")
        if (got and got["rows"] and any("total ids" in s for s in got["status"])) or time.time() > deadline:
            return got


@pytest.mark.skipif(chromium_path() is None, reason="no chromium (scripts/test.sh installs it as root)")
def test_segment_properties_in_neuroglancer(vol):
    """The real client reads the properties `image stats` wrote: it lists every segment with
    its numbers, sorts by one property and filters by another and by the touches_border tag."""
    root, _, _ = vol
    run_cli("image", "stats", f"file://{root}/seg", "--shape", ODD_TASK, "--partitions", "2")
    table = read_dataset(root / "seg" / "stats")
    labels = [int(v) for v in table["label"]]
    count = dict(zip(labels, (int(v) for v in table["voxel_count"])))
    area = dict(zip(labels, (float(np.float32(v)) for v in table["surface_area_nm2"])))
    border = {k for k, b in zip(labels, table["touches_border"]) if b}
    assert 0 < len(border) < len(labels) and max(labels) > 2**63
    view = View(str(root / "seg"), "--port", str(free_port()))
    try:
        with Browser(free_port()) as browser:
            browser.goto(view.url)
            states = wait_loaded(browser, 1)
            assert states[0]["sources"][0].startswith("ok") and "properties" in states[0]["sources"][0], states
            by_size = segment_list(browser, ">voxel_count |surface_area_nm2")
            big = sorted(count, key=lambda k: count[k])[len(count) // 2]
            filtered = segment_list(browser, f"voxel_count>={count[big]} <surface_area_nm2")
            tagged = segment_list(browser, "#touches_border")
            assert not browser.exceptions, browser.exceptions
    finally:
        code, _ = view.interrupt()
    assert code == 0
    # every segment, largest first, each with its voxel count and surface area from the table
    assert by_size["status"] == [f"{len(labels)} total ids"] and not by_size["errors"], by_size
    assert [h.rstrip("▲▼") for h in by_size["header"]][-2:] == ["voxel_count", "surface_area_nm2"], by_size["header"]
    assert [int(r[0]) for r in by_size["rows"]] == sorted(labels, key=lambda k: (-count[k], k))
    assert all(int(n) == count[int(i)] and float(a) == area[int(i)] for i, n, a in by_size["rows"]), by_size["rows"]
    # a numeric filter, sorted by another column
    kept = [k for k in labels if count[k] >= count[big]]
    assert filtered["status"] == [f"{len(kept)} match /{len(labels)} total ids"], filtered
    assert [int(r[0]) for r in filtered["rows"]] == sorted(kept, key=lambda k: (area[k], k))
    # the tag
    assert tagged["status"] == [f"{len(border)} match /{len(labels)} total ids"], tagged
    assert {int(r[0]) for r in tagged["rows"]} == border


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000])
def test_intmap_bytes_match_mapbuffer(n):
    """The voxel-count IntMap built from arrays is byte for byte mapbuffer's own from a dict."""
    from mapbuffer import IntMap

    from igneous_like.ops.analysis.voxel_counts import intmap_bytes

    rng = np.random.default_rng(n)
    labels = np.unique(np.concatenate([rng.integers(0, 2**64 - 1, n, dtype=np.uint64), [0, 2**63 + 5]]))[:n]
    values = rng.integers(1, 2**40, len(labels)).astype(np.int64)
    ours = intmap_bytes(labels, values)
    assert ours == IntMap(dict(zip(labels.tolist(), values.tolist()))).tobytes()
    assert {int(k): int(v) for k, v in IntMap(ours).index()} == dict(zip(labels.tolist(), values.tolist()))
