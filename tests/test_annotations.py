"""annotation import / from-stats: the real CLI writes layers that a reader written from the
spec (tests/annotation_reader.py, over tensorstore) and, where its property handling agrees
with the spec, Neuroglancer's own Python reader read back exactly."""
from __future__ import annotations

import csv
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from annotation_reader import Reader
from conftest import run_cli, tree_digest, upload_layer


def reader(path: Path) -> Reader:
    return Reader(path)


def write_csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def synapses(n: int, seed: int = 0, ids: bool = True) -> tuple[list[str], list[list]]:
    """Clustered points (a dense blob plus a uniform background) with every property kind."""
    rng = np.random.default_rng(seed)
    blob = rng.normal((30, 20, 10), (3, 3, 1), size=(n // 3, 3))
    rest = rng.uniform((0, 0, 0), (120, 90, 25), size=(n - n // 3, 3))
    pts = np.clip(np.concatenate([blob, rest]), 0, [119.9, 89.9, 24.9])
    header = ["x", "y", "z", "score", "count", "delta", "kind", "colour", "pre", "post"]
    rows = []
    for i, (x, y, z) in enumerate(pts):
        rows.append([f"{x:.3f}", f"{y:.3f}", f"{z:.3f}", f"{rng.random():.5f}", int(rng.integers(0, 60000)),
                     int(rng.integers(-100, 100)), rng.choice(["excitatory", "inhibitory", "unknown"]),
                     "#%02x%02x%02x" % tuple(rng.integers(0, 256, 3)), int(rng.integers(1, 2**40)) + 2**33,
                     int(rng.integers(0, 4))])
    if ids:
        header = ["id", *header]
        rows = [[int(i) * 7919 + 2**35, *r] for i, r in enumerate(rows)]
    return header, rows


PROPS = ["--property", "score:float32", "--property", "count:uint16", "--property", "delta:int8",
         "--property", "kind:enum", "--property", "colour:rgb", "--relationship", "pre:pre",
         "--relationship", "post:post"]


def spatial_cells(r):
    """Every (level, cell, annotations) of the spatial index, read cell by cell."""
    for level, index in enumerate(r.spatial):
        for cell in np.ndindex(*index.meta["grid_shape"]):
            try:
                got = index[cell]
            except KeyError:
                continue
            yield level, cell, got


def check_spatial(r, limit: int, ids: set[int]) -> None:
    """Each cell holds at most `limit`; for points every annotation is in exactly one cell of
    all levels together, inside that cell."""
    seen = Counter()
    lower = np.asarray(r.lower_bound)
    for level, cell, got in spatial_cells(r):
        assert len(got) <= limit
        chunk = np.asarray(r.spatial[level].meta["chunk_size"])
        for a in got:
            seen[a.id] += 1
            if r.annotation_type == "POINT":
                lo = lower + np.asarray(cell) * chunk
                assert (a.geometry >= lo).all() and (a.geometry <= lo + chunk).all()
    assert set(seen) == ids
    if r.annotation_type == "POINT":
        assert set(seen.values()) == {1}


def compare_by_id(r, header, rows, kinds=("excitatory", "inhibitory", "unknown")):
    labels = sorted(set(kinds))
    col = {name: i for i, name in enumerate(header)}
    for i, row in enumerate(rows):
        aid = int(row[col["id"]]) if "id" in col else i
        a = r.by_id[aid]
        assert np.array_equal(a.geometry, np.float32([float(row[col[k]]) for k in "xyz"]))
        score, count, delta, kind, colour = a.props
        assert score == np.float32(row[col["score"]]) and count == int(row[col["count"]])
        assert delta == int(row[col["delta"]]) and labels[int(kind)] == row[col["kind"]]
        assert "#%02x%02x%02x" % tuple(int(v) for v in colour) == row[col["colour"]]
        assert [int(s) for s in a.segments[0]] == [int(row[col["pre"]])]
        post = int(row[col["post"]])
        assert [int(s) for s in a.segments[1]] == ([post] if post else [])


def test_points_from_csv_read_back(tmp_path):
    header, rows = synapses(400, ids=False)
    table = write_csv(tmp_path / "syn.csv", header, rows)
    out = tmp_path / "syn"
    run_cli("annotation", "import", table, f"file://{out}", "--resolution", "8,8,40", "--limit", "25", *PROPS)
    r = reader(out)
    assert r.metadata["annotation_type"] == "POINT" and "sharding" not in r.metadata["by_id"]
    assert r.metadata["dimensions"]["z"] == [40e-9, "m"]
    kind = r.metadata["properties"][3]
    assert kind["type"] == "uint8" and kind["enum_labels"] == ["excitatory", "inhibitory", "unknown"]
    compare_by_id(r, header, rows)
    check_spatial(r, 25, set(range(400)))
    assert len(r.spatial) >= 3 and r.spatial[0].meta["grid_shape"] == [1, 1, 1]
    # the clustered blob does not crowd level 0: the sample is uniform in space
    top = next(got for level, _, got in spatial_cells(r) if level == 0)
    in_blob = sum(np.linalg.norm(a.geometry - (30, 20, 10)) < 9 for a in top)
    assert in_blob < 0.6 * len(top)
    # relationship indexes list exactly the annotations naming each segment
    post = Counter(int(row[-1]) for row in rows)
    for seg in (1, 2, 3):
        assert sorted(a.id for a in r.relationships["post"][seg]) == \
            [i for i, row in enumerate(rows) if int(row[-1]) == seg]
    with pytest.raises(KeyError):
        r.relationships["post"][0]
    assert sum(post.values()) == 400
    # Neuroglancer's own reader agrees (these property types are already in size order)
    from neuroglancer.read_precomputed_annotations import AnnotationReader

    ng = AnnotationReader(f"file://{out}/")
    for i in (0, 17, 399):
        mine, theirs = r.by_id[i], ng.by_id[i]
        assert np.array_equal(mine.geometry, theirs.point) and [list(s) for s in mine.segments] == \
            [[int(v) for v in s] for s in theirs.segments]
    assert sorted(int(a.id) for a in ng.get_within_spatial_bounds()) == list(range(400))
    # deterministic: a re-run writes the same bytes
    before = tree_digest(out)
    run_cli("annotation", "import", table, f"file://{out}", "--resolution", "8,8,40", "--limit", "25", *PROPS)
    assert tree_digest(out) == before
    # another table into the same place: nothing of the first import survives
    small = write_csv(tmp_path / "small.csv", header, rows[:30])
    run_cli("annotation", "import", small, f"file://{out}", "--resolution", "8,8,40", "--limit", "25", *PROPS)
    r = reader(out)
    check_spatial(r, 25, set(range(30)))
    assert 31 not in r.by_id and sorted(int(p.name) for p in (out / "by_id").iterdir()) == list(range(30))


@pytest.mark.parametrize("kind", ["line", "box", "ellipsoid"])
def test_lines_boxes_ellipsoids_from_parquet(tmp_path, kind):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    n = 150
    a = rng.uniform(5, 60, size=(n, 3))
    b = a + rng.uniform(-4, 4, size=(n, 3)) if kind != "ellipsoid" else rng.uniform(0.5, 4, size=(n, 3))
    names = ("x", "y", "z", "rx", "ry", "rz") if kind == "ellipsoid" else ("x1", "y1", "z1", "x2", "y2", "z2")
    cols = {"id": np.arange(n, dtype=np.uint64) * 3 + 1, "seg": rng.integers(1, 9, n).astype(np.uint64),
            **{name: v for name, v in zip(names, np.concatenate([a, b], axis=1).T)},
            "weight": rng.random(n).astype(np.float32)}
    pq.write_table(pa.table(cols), tmp_path / "t.parquet")
    out = tmp_path / kind
    run_cli("annotation", "import", tmp_path / "t.parquet", f"file://{out}", "--type", kind, "--limit", "10",
            "--property", "weight:float32", "--relationship", "segment:seg", "--bounds", "0,0,0,70,70,70")
    r = reader(out)
    for i in range(n):
        got = r.by_id[int(cols["id"][i])]
        first, second = got.geometry[:3], got.geometry[3:]
        assert np.array_equal(first, a[i].astype(np.float32)) and np.array_equal(second, b[i].astype(np.float32))
        assert got.props[0] == cols["weight"][i] and [int(s) for s in got.segments[0]] == [int(cols["seg"][i])]
    check_spatial(r, 10, set(cols["id"].tolist()))
    # an annotation is emitted on every root-to-leaf path through cells it touches at most once
    levels = r.metadata["spatial"]
    places: dict[int, list] = {}
    for level, cell, got in spatial_cells(r):
        for ann in got:
            places.setdefault(ann.id, []).append((level, np.asarray(cell)))
    for aid, where in places.items():
        for (la, ca), (lb, cb) in itertools.combinations(where, 2):
            if la == lb:
                continue
            (lc, cc), (lf, cf) = ((la, ca), (lb, cb)) if la < lb else ((lb, cb), (la, ca))
            ratio = np.asarray(levels[lc]["chunk_size"]) / np.asarray(levels[lf]["chunk_size"])
            assert not ((cf // ratio.astype(int)) == cc).all(), f"{aid} emitted in a cell and its descendant"


def test_queued_sharded_equals_unsharded(tmp_path):
    header, rows = synapses(1200, seed=2)
    table = write_csv(tmp_path / "syn.csv", header, rows)
    plain, sharded, q = tmp_path / "plain", tmp_path / "sharded", f"fq://{tmp_path}/q"
    run_cli("annotation", "import", table, f"file://{plain}", "--limit", "40", *PROPS, "--shard-above", "1000000000")
    common = [table, f"file://{sharded}", "--limit", "40", *PROPS, "--shard-above", "100", "--partitions", "3"]
    run_cli("annotation", "import", *common, "--queue", q)
    early = run_cli("annotation", "import", *common, "--queue", q, "--merge", check=False)
    assert early.returncode == 1 and "have not run" in early.stderr
    for _ in range(2):  # map, then counts; each --merge plans the next phase
        run_cli("-p", "2", "execute", q, "-x")
        run_cli("annotation", "import", *common, "--queue", q, "--merge")
    run_cli("-p", "2", "execute", q, "-x")
    assert (sharded / "by_id").is_dir() and not (sharded / "info").exists()  # the info comes last
    done = run_cli("annotation", "import", *common, "--queue", q, "--merge")
    assert "is complete" in done.stderr
    for layer in (sharded, plain):  # unqueued runs clean up too
        assert not [p for p in (layer / "_work").rglob("*") if p.is_file()]
    a, b = reader(plain), reader(sharded)
    assert "sharding" in b.metadata["by_id"] and "sharding" in b.metadata["relationships"][0]
    assert not any("sharding" in x for x in a.metadata["relationships"])
    assert list((sharded / "by_id").iterdir())[0].name.endswith(".shard")
    strip = [{k: v for k, v in level.items() if k != "sharding"} for level in b.metadata["spatial"]]
    assert a.metadata["spatial"] == strip
    sharded_levels = [lv for lv in b.metadata["spatial"] if "sharding" in lv]
    assert sharded_levels and all(lv["sharding"]["hash"] == "identity" for lv in sharded_levels)
    assert not any("sharding" in lv for lv in a.metadata["spatial"])
    compare_by_id(b, header, rows)
    for level, cell, got in spatial_cells(a):  # same cells, same annotations, same order
        assert [x.id for x in b.spatial[level][cell]] == [x.id for x in got]
    for seg in {int(row[-2]) for row in rows[:50]}:
        assert [x.id for x in a.relationships["pre"][seg]] == [x.id for x in b.relationships["pre"][seg]]
    check_spatial(b, 40, {int(row[0]) for row in rows})


def test_from_stats_points_and_boxes(layers, arrays):
    seg = f"file://{layers}/segmentation"
    run_cli("image", "stats", seg)
    import pyarrow.dataset as ds

    table = ds.dataset(layers / "segmentation" / "stats", format="parquet").to_table().to_pydict()
    for kind in ("point", "box"):
        out = layers / f"ann-{kind}"
        run_cli("annotation", "from-stats", seg, f"file://{out}", "--type", kind)
        r = reader(out)
        assert r.metadata["lower_bound"] == [0, 0, 0] and r.metadata["upper_bound"] == [230, 210, 100]
        names = [p["id"] for p in r.metadata["properties"]]
        assert "voxel_count" in names and "touches_border" in names
        vc = names.index("voxel_count")
        for i, label in enumerate(table["label"][:30]):
            got = r.by_id[label]
            if kind == "point":
                expect = [table[f"centroid_{a}"][i] for a in "xyz"]
                assert np.allclose(got.geometry, expect, rtol=1e-6)
            else:
                assert list(got.geometry[:3]) == [table[f"bbox_min_{a}"][i] for a in "xyz"]
                assert list(got.geometry[3:]) == [table[f"bbox_max_{a}"][i] for a in "xyz"]
            assert got.props[vc] == table["voxel_count"][i]
            # selecting segment `label` finds its annotation
            assert [x.id for x in r.relationships["segment"][label]] == [label]
        check_spatial(r, 1000, set(table["label"]))
    assert int(np.unique(arrays["segmentation"]).size) - 1 == len(table["label"])


def test_import_to_s3(tmp_path, s3_bucket, moto):
    from cloudfiles import CloudFiles

    header, rows = synapses(300, seed=4)
    write_csv(tmp_path / "syn.csv", header, rows)
    upload_layer(tmp_path, f"{s3_bucket}/tables")
    dest = f"{s3_bucket}/syn"
    run_cli("-p", "2", "annotation", "import", f"{s3_bucket}/tables/syn.csv", dest, "--limit", "30", *PROPS,
            "--shard-above", "50", env=moto)
    local = tmp_path / "copy"
    cf = CloudFiles(dest)
    for name in cf.list():
        if not name.startswith("_work"):
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_bytes(cf.get(name))
    r = reader(local)
    assert "sharding" in r.metadata["by_id"]
    compare_by_id(r, header, rows)
    check_spatial(r, 30, {int(row[0]) for row in rows})


@pytest.mark.parametrize("rows, args, expect", [
    ([["x", "y"], [1, 2]], [], "no column 'z'"),
    ([["x", "y", "z"], [1, 2, 3], [1, "abc", 3]], [], "column 'y'"),
    ([["x", "y", "z"], [1, 2, 3], [1, 200, 3]], ["--bounds", "0,0,0,100,100,100"], "outside the bounds"),
    ([["x", "y", "z", "s"], [1, 2, 3, 1]], ["--property", "s:float64"], "not one the annotation spec allows"),
    ([["x", "y", "z", "s"], [1, 2, 3, 1]], ["--property", "S:float32"], "must match"),
    ([["x", "y", "z", "s"], [1, 2, 3, 300]], ["--property", "s:uint8"], "does not fit uint8"),
    ([["id", "x", "y", "z"], [4, 1, 2, 3], [4, 2, 2, 2]], [], "duplicate annotation id 4 (rows 1 and 2 of"),
    ([["x", "y", "z"], [1, 2, 3]], ["--columns", "q=x"], "--columns"),
    ([["x", "y", "z"], [1, 2, 3]], ["--relationship", "pre"], "NAME:COLUMN"),
    ([["x", "y", "z"]], [], "no annotations"),
    ([["x", "y", "z", "s"], [1, 2, 3, "high"]], ["--property", "s:float32"], "column 's'"),
    ([["x", "y", "z"], [1, "", 3]], [], "is empty"),
    ([["x", "y", "z"], [1, 2, 3]], ["--queue", "bogus://q"], "queue"),
    ([["x", "y", "z"], [1, 2, 3]], ["--merge"], "without --merge first"),
    ([["x", "y", "z"], [1, 2, 3]], ["--memory", "1e6"], "too small"),
    ([["x", "y", "z"], [1, 2, 3]], ["--limit", "0"], "--limit"),
    ([["x", "y", "z"], [1, 2, 3]], ["--type", "polygon"], "--type"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, rows, args, expect):
    """In process (click's runner: the same command tree and error handling; a subprocess per
    case would cost half a minute), plus one case through the real entry point."""
    from click.testing import CliRunner

    from igneous_like.cli import cli

    table = write_csv(tmp_path / "t.csv", rows[0], rows[1:])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["annotation", "import", str(table), f"file://{out}", *map(str, args)])
    assert result.exit_code == 1, result.output
    assert error_lines(result.stderr) == [result.stderr.strip().splitlines()[-1]]
    assert result.stderr.strip().splitlines()[-1].startswith("igneous-like: error:") and expect in result.stderr
    assert not out.exists()


def error_lines(stderr: str) -> list[str]:
    """stderr without the phases' progress lines ("... N tasks done"): a duplicate id is found
    after the map phase has run (and its files have been removed again)."""
    return [line for line in stderr.strip().splitlines() if not line.endswith("tasks done")]


def test_bad_input_through_the_real_entry_point(tmp_path):
    table = write_csv(tmp_path / "t.csv", ["id", "x", "y", "z"], [[4, 1, 2, 3], [4, 2, 2, 2]])
    proc = run_cli("annotation", "import", table, f"file://{tmp_path}/out", check=False)
    assert proc.returncode == 1 and error_lines(proc.stderr) == \
        [f"igneous-like: error: duplicate annotation id 4 (rows 1 and 2 of file://{table}): ids must be unique"]
    assert not (tmp_path / "out").exists()


def test_duplicate_ids_found_by_partition_stop_a_queued_job(tmp_path):
    """The planner keeps no ids: the counts task of the partition holding a repeated id records
    it (rows from separate map tasks and files), the next --merge stops with one line, and no
    layer file is written; an earlier layer at DEST is left as it was."""
    header, rows = synapses(600, seed=6)
    parts = tmp_path / "parts"
    parts.mkdir()
    rows[450][0] = rows[20][0]  # row 451 repeats row 21's id, in the second part file
    write_csv(parts / "a.csv", header, rows[:300])
    write_csv(parts / "b.csv", header, rows[300:])
    out, q = tmp_path / "out", f"fq://{tmp_path}/q"
    good = write_csv(tmp_path / "good.csv", header, rows[:100])
    run_cli("annotation", "import", good, f"file://{out}", *PROPS)
    before = tree_digest(out)
    common = [parts, f"file://{out}", *PROPS, "--partitions", "5", "--queue", q]
    run_cli("annotation", "import", *common)  # one map task per part file at least
    run_cli("-p", "2", "execute", q, "-x")
    run_cli("annotation", "import", *common, "--merge")  # plans the counts phase
    run_cli("-p", "2", "execute", q, "-x")  # the counts task of the id's partition records it
    expect = f"duplicate annotation id {rows[20][0]} (file://{parts}/a.csv row 21, file://{parts}/b.csv row 151)"
    for _ in range(2):  # every later --merge stops with it
        proc = run_cli("annotation", "import", *common, "--merge", check=False)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == \
            [f"igneous-like: error: {expect}: ids must be unique"]
    assert {k: v for k, v in tree_digest(out).items() if not k.startswith("_work")} == before


def test_from_stats_needs_a_stats_table(layers):
    proc = run_cli("annotation", "from-stats", f"file://{layers}/segmentation", f"file://{layers}/out", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("igneous-like: error: no table at")
    assert not (layers / "out").exists()


def test_clip_drops_rows_outside_bounds(tmp_path):
    table = write_csv(tmp_path / "t.csv", ["cx", "y", "z", "n"], [[1, 2, 3, 7], [1, 200, 3, 8], [5, 5, 5, 9]])
    out = tmp_path / "out"
    run_cli("annotation", "import", table, f"file://{out}", "--bounds", "0,0,0,10,10,10", "--clip",
            "--columns", "x=cx,id=n")
    r = reader(out)
    assert np.array_equal(r.by_id[9].geometry, [5, 5, 5]) and 8 not in r.by_id and 7 in r.by_id
    assert r.metadata["upper_bound"] == [10, 10, 10]


def test_crowded_point_loses_nothing(tmp_path):
    """30 annotations at one place cannot be split into cells of 10: the finest level holds
    them all (and says so in the plan) rather than dropping any."""
    rows = [[1.5, 1.5, 1.5]] * 30 + [[x + 0.5, 7.5, 3.5] for x in range(8)]
    table = write_csv(tmp_path / "t.csv", ["x", "y", "z"], rows)
    out = tmp_path / "out"
    proc = run_cli("annotation", "import", table, f"file://{out}", "--limit", "10", "--bounds", "0,0,0,8,8,8")
    assert "WARNING: the finest level still has a cell with 30 annotations" in proc.stderr
    r = reader(out)
    seen = Counter(a.id for _, _, got in spatial_cells(r) for a in got)
    assert set(seen) == set(range(38)) and set(seen.values()) == {1}


def test_help_has_examples():
    for command in ("annotation import", "annotation from-stats"):
        assert "Example" in run_cli(*command.split(), "--help").stdout, command


def test_fast_shard_hash_is_cloud_volumes():
    """Shard numbers come from cloud-volume's ShardingSpecification; only its MurmurHash3 is
    swapped for the mmh3 C extension, which must give the same locations."""
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification, synthesize_shard_files

    from igneous_like import annotations

    spec = annotations.index_sharding(10**6, 4096)
    fast, slow = annotations.sharding_object(spec), ShardingSpecification.from_dict(spec)
    keys = np.random.default_rng(1).integers(0, 2**64 - 1, 3000, dtype=np.uint64, endpoint=True)
    assert [fast.compute_shard_location(int(k)) for k in keys] == [slow.compute_shard_location(int(k)) for k in keys]
    for spec in (spec, {**spec, "preshift_bits": 3, "minishard_bits": 2, "shard_bits": 5},
                 {**spec, "hash": "identity", "preshift_bits": 2}):
        slow = ShardingSpecification.from_dict(spec)  # the vectorized shard numbers agree too
        assert annotations.shard_numbers(keys, spec).tolist() == \
            [int(slow.compute_shard_location(int(k)).shard_number, 16) for k in keys]
        values = {int(k): int(k).to_bytes(8, "little") * (int(k) % 3 + 1) for k in keys}
        assert annotations.shard_files(values, spec) == synthesize_shard_files(slow, values)
