"""Multi-resolution meshes, unsharded (mesh merge --nlod) and sharded (merge-sharded), decoded
with a reader written here from the Precomputed mesh and sharding specs, with tensorstore's
neuroglancer_uint64_sharded key-value store, and with cloud-volume."""
from __future__ import annotations

import gzip
import json
import shutil
import struct

import DracoPy
import numpy as np
import pytest
import trimesh

from conftest import run_cli

RES = np.array((8, 8, 40), dtype=np.float64)
SMALL_NODES = ("--min-chunk-size", "32,32,32")  # objects here are ~150 voxels: allow several lods


def decode_manifest(data: bytes) -> dict:
    chunk_shape = np.frombuffer(data, "<f4", 3, 0)
    grid_origin = np.frombuffer(data, "<f4", 3, 12)
    (num_lods,) = struct.unpack_from("<I", data, 24)
    off = 28
    lod_scales = np.frombuffer(data, "<f4", num_lods, off)
    off += 4 * num_lods
    vertex_offsets = np.frombuffer(data, "<f4", 3 * num_lods, off).reshape(num_lods, 3)
    off += 12 * num_lods
    counts = np.frombuffer(data, "<u4", num_lods, off)
    off += 4 * num_lods
    positions, sizes = [], []
    for n in counts:
        positions.append(np.frombuffer(data, "<u4", 3 * n, off).reshape(3, n).T)
        off += 12 * n
        sizes.append(np.frombuffer(data, "<u4", n, off))
        off += 4 * n
    assert off == len(data)
    return dict(chunk_shape=chunk_shape, grid_origin=grid_origin, lod_scales=lod_scales,
                vertex_offsets=vertex_offsets, positions=positions, sizes=sizes)


def zorder(p) -> int:
    key = 0
    for bit in range(21):
        for axis in range(3):
            key |= ((int(p[axis]) >> bit) & 1) << (3 * bit + axis)
    return key


def decode_lods(manifest: bytes, data: bytes, vqb: int) -> list:
    """Physical-space (vertices, faces) per lod; checks the spec's rules on the way."""
    m = decode_manifest(manifest)
    top = 2**vqb - 1
    lods, cursor = [], 0
    assert sum(int(s.sum()) for s in m["sizes"]) == len(data)
    for lod, (pos, sizes) in enumerate(zip(m["positions"], m["sizes"])):
        keys = [zorder(p) for p in pos]
        assert keys == sorted(keys), "fragments must be in Z-curve order"
        node = m["chunk_shape"].astype(np.float64) * 2**lod
        verts, faces, base = [], [], 0
        for p, size in zip(pos, sizes):
            mesh = DracoPy.decode(data[cursor : cursor + size])
            cursor += size
            q = np.asarray(mesh.points, dtype=np.float64)
            # Draco's own quantization: decoded values are the stored integers themselves
            assert np.allclose(q, np.rint(q)) and q.min() >= 0 and q.max() <= top
            model = m["grid_origin"] + m["vertex_offsets"][lod] + node * (p + q / top)
            f = np.asarray(mesh.faces).reshape(-1, 3)
            if lod > 0:  # no triangle crosses the node's 2x2x2 sub-grid
                # (the mid-plane falls between two quantization steps: allow one step)
                half = (q / top * 2)  # in child-cell units, 0..2
                tri = half[f]
                step = 2.0 / top
                lo, hi = np.floor(tri.min(axis=1) + step), np.ceil(tri.max(axis=1) - step)
                assert ((hi - lo) <= 1).all()
            verts.append(model * RES)
            faces.append(f + base)
            base += len(model)
        lods.append((np.concatenate(verts), np.concatenate(faces)) if verts else (np.zeros((0, 3)), np.zeros((0, 3), int)))
    return lods


def sharded_value(mesh_dir, spec: dict, label: int) -> tuple[bytes, bytes]:
    """(fragment data, manifest) of a label, found by parsing the shard per the sharding spec."""
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    loc = ShardingSpecification.from_dict(spec).compute_shard_location(label)
    shard = (mesh_dir / f"{loc.shard_number}.shard").read_bytes()
    index_end = 16 * 2 ** spec["minishard_bits"]
    start, end = struct.unpack_from("<QQ", shard, 16 * int(loc.minishard_number))
    raw = shard[index_end + start : index_end + end]
    if spec["minishard_index_encoding"] == "gzip":
        raw = gzip.decompress(raw)
    table = np.frombuffer(raw, "<u8").reshape(3, -1)
    labels = np.cumsum(table[0])
    offset = 0
    for lab, delta, size in zip(labels, table[1], table[2]):
        offset += int(delta)
        if int(lab) == label:
            manifest = shard[index_end + offset : index_end + offset + int(size)]
            m = decode_manifest(manifest)
            frag_len = sum(int(s.sum()) for s in m["sizes"])
            return shard[index_end + offset - frag_len : index_end + offset], manifest
        offset += int(size)
    raise KeyError(label)


def run_pipeline(root, *steps):
    q = root / "q"
    for step in steps:
        run_cli(*step, "--queue", f"fq://{q}")
        run_cli("execute", f"fq://{q}", "-p", "2", "-x", "-q")


@pytest.fixture(scope="module")
def both(mesh_volume, tmp_path_factory):
    """The same segmentation meshed unsharded (--nlod 2) and sharded (merge-sharded --nlod 2)."""
    root, seg = mesh_volume
    out = tmp_path_factory.mktemp("multires")
    for name in ("plain", "sharded"):
        shutil.copytree(root / "seg", out / name)
    run_pipeline(out, ("mesh", "forge", f"file://{out}/plain", "--shape", "64,64,32"),
                 ("mesh", "merge", f"file://{out}/plain", "--nlod", "2", "--magnitude", "1", *SMALL_NODES))
    run_pipeline(out, ("mesh", "forge", f"file://{out}/sharded", "--shape", "64,64,32", "--sharded"),
                 ("mesh", "merge-sharded", f"file://{out}/sharded", "--nlod", "2", "--max-labels-per-shard", "10",
                  *SMALL_NODES))
    return out, seg


def test_unsharded_multires_follows_the_spec(both):
    out, seg = both
    mdir = out / "plain" / "mesh"
    info = json.loads((mdir / "info").read_text())
    assert info["@type"] == "neuroglancer_multilod_draco" and info["vertex_quantization_bits"] == 16
    assert info["transform"] == [8.0, 0, 0, 0, 0, 8.0, 0, 0, 0, 0, 40.0, 0]
    labels, counts = np.unique(seg, return_counts=True)
    multi_lod = 0
    for label, count in zip(labels, counts):
        if label == 0:
            continue
        lods = decode_lods((mdir / f"{label}.index").read_bytes(), (mdir / str(label)).read_bytes(), 16)
        multi_lod += len(lods) > 1
        verts, faces = lods[0]
        mesh = trimesh.Trimesh(verts, faces, process=False)
        mesh.merge_vertices()
        assert mesh.is_watertight and mesh.is_winding_consistent, label
        if count >= 1000:
            assert abs(mesh.volume / (count * RES.prod()) - 1) < 0.10, label
    assert multi_lod > 0


def test_sharded_equals_unsharded_and_tensorstore_reads_it(both):
    import tensorstore as ts

    out, seg = both
    mdir = out / "sharded" / "mesh"
    info = json.loads((mdir / "info").read_text())
    spec = info["sharding"]
    assert len(list(mdir.glob("*.shard"))) >= 4  # --max-labels-per-shard 10 spreads ~28 labels
    kv = ts.KvStore.open({"driver": "neuroglancer_uint64_sharded", "base": f"file://{mdir}/",
                          "metadata": spec}).result()
    for label in np.unique(seg):
        if label == 0:
            continue
        frags, manifest = sharded_value(mdir, spec, int(label))
        assert kv.read(int(label).to_bytes(8, "big")).result().value == manifest
        plain = out / "plain" / "mesh"
        assert manifest == (plain / f"{label}.index").read_bytes()
        assert frags == (plain / str(label)).read_bytes()


def test_cloudvolume_reads_sharded_multires(both):
    from cloudvolume import CloudVolume

    out, seg = both
    vol = CloudVolume(f"file://{out}/sharded", progress=False)
    label = 2**33 + 1
    mesh = vol.mesh.get(label, lod=0)
    mesh = mesh[label] if isinstance(mesh, dict) else mesh
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    assert tm.is_watertight
    count = int((seg == label).sum())
    assert abs(tm.volume / (count * RES.prod()) - 1) < 0.10


def test_mesh_xfer_both_ways(both, tmp_path):
    """sharded -> unsharded -> sharded round-trips byte for byte; legacy -> sharded builds lods."""
    import tensorstore as ts

    out, seg = both
    run_cli("mesh", "xfer", f"file://{out}/sharded", f"file://{tmp_path}/unsharded")
    plain = tmp_path / "unsharded" / "mesh"
    label = 2**33 + 1
    assert (plain / f"{label}.index").read_bytes() == (out / "plain" / "mesh" / f"{label}.index").read_bytes()
    assert "sharding" not in json.loads((plain / "info").read_text())
    run_cli("mesh", "xfer", f"file://{tmp_path}/unsharded", f"file://{tmp_path}/resharded", "--sharded",
            "--max-labels-per-shard", "10")
    before = sorted(p.name for p in (out / "sharded" / "mesh").glob("*.shard"))
    after = sorted(p.name for p in (tmp_path / "resharded" / "mesh").glob("*.shard"))
    assert before == after
    for name in after:
        assert (tmp_path / "resharded" / "mesh" / name).read_bytes() == (out / "sharded" / "mesh" / name).read_bytes()

    # legacy single-resolution -> sharded multires
    legacy = tmp_path / "legacy"
    shutil.copytree(out / "plain", legacy, ignore=shutil.ignore_patterns("mesh"))
    run_cli("mesh", "forge", f"file://{legacy}", "--shape", "64,64,32")
    run_cli("mesh", "merge", f"file://{legacy}", "--magnitude", "1")
    run_cli("mesh", "xfer", f"file://{legacy}", f"file://{tmp_path}/fromlegacy", "--sharded", "--nlod", "1")
    mdir = tmp_path / "fromlegacy" / "mesh"
    spec = json.loads((mdir / "info").read_text())["sharding"]
    kv = ts.KvStore.open({"driver": "neuroglancer_uint64_sharded", "base": f"file://{mdir}/", "metadata": spec}).result()
    frags, manifest = sharded_value(mdir, spec, label)
    assert kv.read(label.to_bytes(8, "big")).result().value == manifest
    verts, faces = decode_lods(manifest, frags, 16)[0]
    mesh = trimesh.Trimesh(verts, faces, process=False)
    mesh.merge_vertices()
    assert mesh.is_watertight


def test_merge_sharded_reads_each_fragment_byte_once(mesh_volume, tmp_path, monkeypatch):
    """Total bytes the merge tasks read stay about the size of the forge output, however many
    shards there are (a merge that re-reads whole fragment files per shard would not)."""
    from cloudfiles import CloudFiles

    from igneous_like.ops.mesh.merge_sharded import plan_mesh_merge_sharded

    root, seg = mesh_volume
    shutil.copytree(root / "seg", tmp_path / "seg")
    run_cli("mesh", "forge", f"file://{tmp_path}/seg", "--shape", "64,64,32", "--sharded")
    mdir = tmp_path / "seg" / "mesh"
    frag_bytes = sum(p.stat().st_size for p in mdir.glob("*.frags"))
    plan = plan_mesh_merge_sharded(f"file://{tmp_path}/seg", nlod=1, max_labels_per_shard=4, min_chunk_size=(32, 32, 32))
    assert plan.total >= 6
    plan.prepare()
    read = {"bytes": 0}
    original = CloudFiles.get

    def counting_get(self, paths, *args, **kwargs):
        result = original(self, paths, *args, **kwargs)
        items = result if isinstance(result, list) else [{"content": result}]
        for item in items:
            content = item["content"] if isinstance(item, dict) else item
            read["bytes"] += len(content or b"")
        return result

    monkeypatch.setattr(CloudFiles, "get", counting_get)
    for task in plan.tasks():
        task()
    worklists = sum(p.stat().st_size for p in (mdir / "merge-plan").glob("*.json"))
    assert read["bytes"] <= frag_bytes + worklists + 1024, (read["bytes"], frag_bytes)
    assert len(list(mdir.glob("*.shard"))) == plan.total


def test_lod0_has_the_geometry_of_the_legacy_merge(both, tmp_path):
    """LOD 0 (sharded, equal to unsharded) is the welded mesh, only cut on the octree grid and
    quantized: same volume, area and extent as the single-resolution merge of the same forge."""
    from test_mesh import read_mesh

    out, seg = both
    shutil.copytree(out / "plain", tmp_path / "legacy")
    run_cli("mesh", "merge", f"file://{tmp_path}/legacy", "--magnitude", "1")
    mdir = out / "sharded" / "mesh"
    spec = json.loads((mdir / "info").read_text())["sharding"]
    for label in np.unique(seg):
        if label == 0:
            continue
        frags, manifest = sharded_value(mdir, spec, int(label))
        verts, faces = decode_lods(manifest, frags, 16)[0]
        lod0 = trimesh.Trimesh(verts, faces, process=False)
        lv, lf = read_mesh(tmp_path / "legacy", int(label))
        legacy = trimesh.Trimesh(lv, lf, process=False)
        assert abs(lod0.volume / legacy.volume - 1) < 1e-3, label
        assert abs(lod0.area / legacy.area - 1) < 1e-3, label
        step = float(RES.max()) * 0.01  # far below a voxel; quantization is 1/65535 of a node
        assert np.allclose(lod0.bounds, legacy.bounds, atol=step), label


def test_merge_sharded_caps_labels_per_shard_by_default():
    """Without a cap, ten thousand labels fit one shard's indices, so one worker would merge them
    all alone and hold every mesh of the dataset: by default merge-sharded caps shards at
    Igneous's 1000 labels (meshes) and 2000 (skeletons), rounded up to a power of two."""
    from igneous_like.cli.mesh import merge_sharded as mesh_merge
    from igneous_like.cli.skeleton import merge_sharded as skeleton_merge
    from igneous_like.ops.mesh.merge_sharded import sharding_spec

    defaults = [{p.name: p.default for p in cmd.params}["max_labels_per_shard"] for cmd in (mesh_merge, skeleton_merge)]
    assert defaults == [1000, 2000]
    assert sharding_spec(9857, 2**13, 2**15, 1, None)["shard_bits"] == 0
    assert sharding_spec(9857, 2**13, 2**15, 1, 1000)["shard_bits"] == 4  # 10 shards' worth -> 16
    assert sharding_spec(9857, 2**13, 2**15, 1, 2000)["shard_bits"] == 3
