"""skeleton forge + merge (unsharded and sharded) end to end through a FileQueue and
`execute -p 2`, read with a parser written here from the Precomputed skeleton spec, with
tensorstore's sharded key-value store, and with cloud-volume."""
from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

from conftest import run_cli

RES = np.array((16, 16, 16), dtype=np.float64)
TUBE, TREE, ZTUBE, SPECK = 2**33 + 1, 2**34 + 5, 2**35 + 9, 2**36 + 1


def parse_skeleton(data: bytes, attributes: list[dict]):
    """Per spec: uint32 num_vertices, uint32 num_edges, float32 [n,3] vertices, uint32 [m,2]
    edges, then each attribute's n*num_components values."""
    nv, ne = struct.unpack_from("<II", data, 0)
    off = 8
    verts = np.frombuffer(data, "<f4", 3 * nv, off).reshape(nv, 3)
    off += 12 * nv
    edges = np.frombuffer(data, "<u4", 2 * ne, off).reshape(ne, 2)
    off += 8 * ne
    attrs = {}
    for a in attributes:
        dtype = np.dtype(a["data_type"]).newbyteorder("<")
        n = nv * a["num_components"]
        attrs[a["id"]] = np.frombuffer(data, dtype, n, off)
        off += dtype.itemsize * n
    assert off == len(data)
    return verts, edges, attrs


def components_and_cycles(nv: int, edges: np.ndarray) -> tuple[int, bool]:
    parent = list(range(nv))

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    cycle = False
    for a, b in edges:
        ra, rb = root(int(a)), root(int(b))
        if ra == rb:
            cycle = True
        parent[ra] = rb
    return len({root(i) for i in range(nv)}), cycle


def cable(verts, edges) -> float:
    return float(np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1).sum())


@pytest.fixture(scope="module")
def neurites(tmp_path_factory):
    """A tube along x, a branching tree, a tube along z, all crossing task borders; a speck."""
    from igneous_like import sample

    root = tmp_path_factory.mktemp("skel")
    shape = (170, 140, 90)  # tasks of 64x64x32: 3 x 3 x 3, edges not multiples
    seg = np.zeros(shape, dtype=np.uint64, order="F")
    x, y, z = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), np.arange(shape[2]), indexing="ij", sparse=True)
    seg[(((y - 25) ** 2 + (z - 20) ** 2) <= 16) & (x >= 10) & (x < 160)] = TUBE  # length 150 voxels
    trunk = (((y - 80) ** 2 + (z - 50) ** 2) <= 16) & (x >= 10) & (x < 150)
    branch = (((x - 80) ** 2 + (z - 50) ** 2) <= 16) & (y >= 80) & (y < 130)
    seg[trunk | branch] = TREE  # 140 + 50 voxels of centreline
    seg[(((x - 140) ** 2 + (y - 30) ** 2) <= 16) & (z >= 5) & (z < 85)] = ZTUBE  # 80 voxels along z
    seg[5:8, 130:133, 80:83] = SPECK  # 27 voxels: under the default dust threshold
    sample.write_layer(f"file://{root}/seg", seg, "segmentation", resolution=tuple(RES.astype(int)))
    truth = {TUBE: 150 * 16, TREE: (140 + 50) * 16, ZTUBE: 80 * 16}
    return root, seg, truth


def pipeline(root, name, *merge, forge=()):
    q = root / f"q-{name}"
    layer = f"file://{root}/{name}"
    for step in (("skeleton", "forge", layer, "--shape", "64,64,32", *forge), ("skeleton", *merge, layer)):
        run_cli(*step, "--queue", f"fq://{q}")
        run_cli("execute", f"fq://{q}", "-p", "2", "-x", "-q")


@pytest.fixture(scope="module")
def merged(neurites, tmp_path_factory):
    root, seg, truth = neurites
    out = tmp_path_factory.mktemp("skelout")
    for name in ("plain", "sharded"):
        shutil.copytree(root / "seg", out / name)
    pipeline(out, "plain", "merge", "--min-cable-length", "100")
    pipeline(out, "sharded", "merge-sharded", "--min-cable-length", "100", "--max-labels-per-shard", "1")
    return out, truth


def test_one_tree_per_object_with_true_cable_length(merged):
    out, truth = merged
    sdir = out / "plain" / "skeletons"
    info = json.loads((sdir / "info").read_text())
    assert info["@type"] == "neuroglancer_skeletons"
    # Neuroglancer drops the whole layer for a uint8 attribute: everything must be float32
    assert [a["data_type"] for a in info["vertex_attributes"]] == ["float32"] * len(info["vertex_attributes"])
    assert "radius" in [a["id"] for a in info["vertex_attributes"]]
    for label, length in truth.items():
        verts, edges, attrs = parse_skeleton((sdir / str(label)).read_bytes(), info["vertex_attributes"])
        n, cycle = components_and_cycles(len(verts), edges)
        assert n == 1 and not cycle, (label, n, cycle)
        assert abs(cable(verts, edges) / length - 1) < 0.10, (label, cable(verts, edges), length)
        assert (attrs["radius"] > 0).all()
    assert not (sdir / str(SPECK)).exists()  # below the dust threshold: no file, not an empty one


def test_sharded_equals_unsharded_and_readers_agree(merged):
    import tensorstore as ts
    from cloudvolume import CloudVolume

    out, truth = merged
    sdir = out / "sharded" / "skeletons"
    info = json.loads((sdir / "info").read_text())
    assert len(list(sdir.glob("*.shard"))) >= 2
    kv = ts.KvStore.open({"driver": "neuroglancer_uint64_sharded", "base": f"file://{sdir}/",
                          "metadata": info["sharding"]}).result()
    vol = CloudVolume(f"file://{out}/sharded", progress=False)
    for label in truth:
        value = kv.read(int(label).to_bytes(8, "big")).result().value
        assert value == (out / "plain" / "skeletons" / str(label)).read_bytes()
        sk = vol.skeleton.get(label)
        assert len(sk.vertices) == parse_skeleton(value, info["vertex_attributes"])[0].shape[0]


def test_min_cable_length_drops_labels_without_files(neurites, tmp_path):
    root, _, truth = neurites
    shutil.copytree(root / "seg", tmp_path / "seg")
    pipeline(tmp_path, "seg", "merge", "--min-cable-length", "2000")
    kept = sorted(int(p.name) for p in (tmp_path / "seg" / "skeletons").iterdir() if p.name.isdigit())
    assert kept == sorted(label for label, length in truth.items() if length > 2200)


def test_switches_change_the_output(neurites, pristine, tmp_path):
    """--no-fix-borders, --no-fix-branching and --fix-avocados each really change what is made."""
    from igneous_like import sample

    root, _, _ = neurites

    def forge_bytes(layer_dir, *args):
        shutil.rmtree(layer_dir / "skeletons", ignore_errors=True)
        run_cli("skeleton", "forge", f"file://{layer_dir}", *(args or ("--shape", "64,64,32")))
        return {p.name: p.read_bytes() for p in (layer_dir / "skeletons").glob("*.frags")}

    shutil.copytree(root / "seg", tmp_path / "seg")
    base = forge_bytes(tmp_path / "seg")
    assert forge_bytes(tmp_path / "seg", "--shape", "64,64,32", "--no-fix-borders") != base
    # branch points need thick, irregular objects: the dense sample segmentation
    shutil.copytree(pristine / "segmentation", tmp_path / "dense")
    crop = ("--xrange", "0,128", "--yrange", "0,128", "--zrange", "0,64", "--shape", "128,128,64")
    dense = forge_bytes(tmp_path / "dense", *crop)
    assert forge_bytes(tmp_path / "dense", *crop, "--no-fix-branching") != dense

    # an avocado: a nucleus (label 2) segmented apart inside its soma (label 1)
    x, y, z = np.mgrid[:80, :80, :80]
    r = np.sqrt((x - 40) ** 2 + (y - 40) ** 2 + (z - 40) ** 2)
    cell = np.zeros((80, 80, 80), dtype=np.uint64, order="F")
    cell[r < 30] = 1
    cell[r < 12] = 2
    sample.write_layer(f"file://{tmp_path}/cell", cell, "segmentation", resolution=(8, 8, 8))
    soma = ("--soma-detect", "50", "--soma-accept", "100", "--soma-const", "30", "--dust-threshold", "100")

    def labels_made(*args):
        shutil.rmtree(tmp_path / "cell" / "skeletons", ignore_errors=True)
        run_cli("skeleton", "forge", f"file://{tmp_path}/cell", *soma, *args)
        run_cli("skeleton", "merge", f"file://{tmp_path}/cell", "--min-cable-length", "0")
        files = [p for p in (tmp_path / "cell" / "skeletons").iterdir() if p.name.isdigit()]
        assert all(struct.unpack_from("<I", p.read_bytes())[0] > 0 for p in files), "an empty skeleton file"
        return sorted(int(p.name) for p in files)

    assert labels_made("--no-fix-avocados") == [1, 2]
    assert labels_made("--fix-avocados") == [1]


def test_skeleton_errors(layers):
    proc = run_cli("skeleton", "forge", f"file://{layers}/image", check=False)
    assert proc.returncode == 1 and "image layer" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("skeleton", "merge", f"file://{layers}/segmentation", check=False)
    assert proc.returncode == 1 and "skeleton forge" in proc.stderr


def test_xfer_both_ways_and_swc(merged, tmp_path):
    out, truth = merged
    run_cli("skeleton", "xfer", f"file://{out}/sharded", f"file://{tmp_path}/files")
    for label in truth:
        assert (tmp_path / "files" / "skeletons" / str(label)).read_bytes() == \
            (out / "plain" / "skeletons" / str(label)).read_bytes()
    run_cli("skeleton", "xfer", f"file://{tmp_path}/files", f"file://{tmp_path}/resharded", "--sharded",
            "--max-labels-per-shard", "1")
    for shard in (out / "sharded" / "skeletons").glob("*.shard"):
        assert (tmp_path / "resharded" / "skeletons" / shard.name).read_bytes() == shard.read_bytes()
    labels = ",".join(str(label) for label in truth)
    run_cli("skeleton", "convert", f"file://{out}/sharded", str(tmp_path / "swc"), labels)
    for label in truth:
        rows = [r for r in (tmp_path / "swc" / f"{label}.swc").read_text().splitlines() if r and not r.startswith("#")]
        parents = [int(r.split()[6]) for r in rows]
        assert parents.count(-1) == 1 and len(rows) > 10  # one root: one connected tree


def test_cross_section_and_labels(neurites, tmp_path):
    root, _, truth = neurites
    shutil.copytree(root / "seg", tmp_path / "seg")
    run_cli("skeleton", "forge", f"file://{tmp_path}/seg", "--shape", "64,64,32", "--cross-section", "1",
            "--labels", str(TUBE))
    run_cli("skeleton", "merge", f"file://{tmp_path}/seg")
    sdir = tmp_path / "seg" / "skeletons"
    info = json.loads((sdir / "info").read_text())
    assert [a["id"] for a in info["vertex_attributes"]] == ["radius", "cross_sectional_area"]
    assert {a["data_type"] for a in info["vertex_attributes"]} == {"float32"}
    assert sorted(int(p.name) for p in sdir.iterdir() if p.name.isdigit()) == [TUBE]
    verts, edges, attrs = parse_skeleton((sdir / str(TUBE)).read_bytes(), info["vertex_attributes"])
    area = attrs["cross_sectional_area"]
    # a tube of radius ~4 voxels of 16 nm: about pi * 64^2 nm^2 in the middle of the tube
    middle = area[(verts[:, 0] > 40 * 16) & (verts[:, 0] < 130 * 16)]
    assert len(middle) and 0.5 < np.median(middle) / (np.pi * 64**2) < 1.6


def test_min_cable_length_drops_short_pieces_of_a_label(tmp_path):
    """A label in two pieces, a long tube and a small blob apart from it: the blob's short
    skeleton goes (as with Igneous's merge), leaving one tree, not a label split in two."""
    from igneous_like import sample

    seg = np.zeros((170, 60, 40), dtype=np.uint64, order="F")
    x, y, z = np.meshgrid(np.arange(170), np.arange(60), np.arange(40), indexing="ij", sparse=True)
    seg[(((y - 20) ** 2 + (z - 20) ** 2) <= 16) & (x >= 10) & (x < 160)] = TUBE
    seg[100:112, 40:52, 20:32] = TUBE  # 1728 voxels, over the forge's dust threshold
    sample.write_layer(f"file://{tmp_path}/seg", seg, "segmentation", resolution=tuple(RES.astype(int)))
    pipeline(tmp_path, "seg", "merge", "--min-cable-length", "1000")
    sdir = tmp_path / "seg" / "skeletons"
    info = json.loads((sdir / "info").read_text())
    verts, edges, _ = parse_skeleton((sdir / str(TUBE)).read_bytes(), info["vertex_attributes"])
    assert components_and_cycles(len(verts), edges) == (1, False)
    assert abs(cable(verts, edges) / (150 * 16) - 1) < 0.10


def test_tick_removal_never_splits_a_tree():
    """kimimaro's remove_ticks (run by Igneous's merge too) files an inner path as a tick once a
    branch point between two forks drops to two edges, and cuts the tree in two. Here: forks A and
    C with two long arms each, B between them with one short tick; after the tick goes, A-B-C is
    the shortest "tick". Our merge keeps one tree with kimimaro's other cuts."""
    import kimimaro
    from igneous_like import skeletons

    pts, edges = [], []

    def line(a, b, steps):  # vertices from a (excluded when already there) to b, joined in a chain
        start = len(pts)
        for t in np.linspace(0, 1, steps + 1)[1:]:
            pts.append(np.asarray(a) + t * (np.asarray(b) - np.asarray(a)))
        return start

    pts.append(np.zeros(3))  # A, index 0
    line((0, 0, 0), (0, 0, 20), 2)  # A..B (B at index 2)
    line((0, 0, 20), (0, 0, 40), 2)  # B..C (C at index 4)
    edges += [(0, 1), (1, 2), (2, 3), (3, 4)]
    for fork, centre, arms in ((0, (0, 0, 0), [(-1000, 0, 0), (0, -1000, 0)]), (4, (0, 0, 40), [(1000, 0, 40), (0, 1000, 40)]),
                               (2, (0, 0, 20), [(5, 0, 20)])):
        for end in arms:
            steps = max(int(np.linalg.norm(np.subtract(end, centre)) // 100), 1)
            first = line(centre, end, steps)
            edges.append((fork, first))
            edges += [(i, i + 1) for i in range(first, len(pts) - 1)]
    parts = [skeletons.Skel(np.asarray(pts, np.float32), np.asarray(edges, np.uint32),
                            {"radius": np.full(len(pts), 2, np.float32)})]
    label = 7
    theirs = kimimaro.postprocess(skeletons.to_osteoid(parts[0], label), dust_threshold=0, tick_threshold=100)
    assert len(theirs.components()) == 2  # the library's cut, which this test guards against
    ours = skeletons.merge_fragments(parts, label, ["radius"], tick_threshold=100, min_cable_length=0)
    assert components_and_cycles(len(ours.vertices), ours.edges) == (1, False)
    assert abs(skeletons.cable_length(ours) - (4000 + 40)) < 1e-2  # the four arms and A..C, no tick
    placed = {tuple(np.round(v, 3)) for v in ours.vertices.tolist()}
    assert (0.0, 0.0, 10.0) in placed and (0.0, 0.0, 30.0) in placed  # A..C as it was traced, not a new edge
    assert (5.0, 0.0, 20.0) not in placed  # the real tick stays removed


def test_tick_removal_may_leave_a_skeleton_below_min_cable_length(tmp_path):
    """--min-cable-length drops pieces before tick removal, as Igneous's merge does: a T whose bar
    (~900 nm) is below it after its ~300 nm stem goes as a tick keeps its skeleton (the old rule
    checked the length again after tick removal and dropped the label)."""
    from igneous_like import sample

    seg = np.zeros((80, 50, 30), dtype=np.uint64, order="F")
    x, y, z = np.meshgrid(np.arange(80), np.arange(50), np.arange(30), indexing="ij", sparse=True)
    seg[(((y - 10) ** 2 + (z - 15) ** 2) <= 9) & (x >= 10) & (x < 67)] = TUBE  # bar: 57 voxels, 912 nm
    seg[(((x - 38) ** 2 + (z - 15) ** 2) <= 9) & (y >= 10) & (y < 30)] = TUBE  # stem: 20 voxels, 320 nm
    sample.write_layer(f"file://{tmp_path}/seg", seg, "segmentation", resolution=tuple(RES.astype(int)))
    pipeline(tmp_path, "seg", "merge", "--min-cable-length", "1000", "--tick-threshold", "500",
             forge=("--shape", "128,64,32", "--dust-threshold", "100"))
    sdir = tmp_path / "seg" / "skeletons"
    assert (sdir / str(TUBE)).exists(), "the label lost its skeleton"
    info = json.loads((sdir / "info").read_text())
    verts, edges, _ = parse_skeleton((sdir / str(TUBE)).read_bytes(), info["vertex_attributes"])
    assert components_and_cycles(len(verts), edges) == (1, False)
    assert 700 < cable(verts, edges) < 1000  # the bar alone: the stem went as a tick


def test_dust_global_keeps_small_pieces_of_large_objects(tmp_path):
    """A tube that dips across a task border for a short stretch: per task (--dust-local) the dip's
    piece is dust and the tube's skeleton falls in two; with --dust-global every piece is traced,
    the tube is one tree, and a label small over the whole volume is still dropped (recorded for
    verify)."""
    from igneous_like import sample

    seg = np.zeros((128, 96, 32), dtype=np.uint64, order="F")
    x, y, z = np.meshgrid(np.arange(128), np.arange(96), np.arange(32), indexing="ij", sparse=True)
    path = [(10, 56), (50, 56), (58, 72), (70, 72), (78, 56), (118, 56)]
    for (x0, y0), (x1, y1) in zip(path, path[1:]):
        for t in np.linspace(0, 1, 60):
            cx, cy = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
            seg[((x - cx) ** 2 + (y - cy) ** 2 + (z - 16) ** 2) <= 9] = TUBE
    seg[20:26, 10:16, 10:16] = SPECK  # 216 voxels: dust either way
    assert 0 < (seg[:, 65:] == TUBE).sum() < 1000  # the dip's piece in the second task row
    sample.write_layer(f"file://{tmp_path}/seg", seg, "segmentation", resolution=tuple(RES.astype(int)))

    def trees(*dust):
        shutil.rmtree(tmp_path / "seg" / "skeletons", ignore_errors=True)
        pipeline(tmp_path, "seg", "merge", "--min-cable-length", "0",
                 forge=("--shape", "128,64,32", "--dust-threshold", "1000", *dust))
        sdir = tmp_path / "seg" / "skeletons"
        assert not (sdir / str(SPECK)).exists()
        info = json.loads((sdir / "info").read_text())
        verts, edges, _ = parse_skeleton((sdir / str(TUBE)).read_bytes(), info["vertex_attributes"])
        return components_and_cycles(len(verts), edges)[0], sdir

    assert trees("--dust-local")[0] == 2
    count, sdir = trees("--dust-global")
    assert count == 1
    assert json.loads((sdir / "filtered" / "dust-global.json").read_text()) == [SPECK]
    run_cli("verify", f"file://{tmp_path}/seg", "--no-decode")
