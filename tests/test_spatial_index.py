"""spatial-index create (same .spatial bytes as the forge, without re-forging) and db (SQLite
lists every label with its box; merges planned from it equal merges planned from files)."""
from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest

from conftest import run_cli, tree_digest, upload_layer

SHAPE = "48,48,24"  # 2x2x2 forge tasks
RES = np.array([8, 8, 40])


@pytest.fixture(scope="module")
def forged(tmp_path_factory):
    """A small volume forged three ways: sharded mesh fragments, one file per label, skeletons.
    Labels above 2^32, one above 2^63 (negative as a signed SQL integer), one single voxel."""
    from igneous_like import sample

    seg = sample.segmentation((96, 96, 48), seed=13, cells=10)
    seg[10:90, 40:50, 10:40] = 2**63 + 5
    seg[70, 20, 30] = 2**40 + 7
    out = tmp_path_factory.mktemp("forged") / "seg"
    sample.write_layer(f"file://{out}", seg, "segmentation", resolution=tuple(RES), chunk=(48, 48, 24))
    run_cli("-p", "2", "mesh", "forge", out, "--shape", SHAPE, "--dir", "mesh_files")
    run_cli("-p", "2", "mesh", "forge", out, "--sharded", "--shape", SHAPE, "--dir", "mesh")  # the info's now
    run_cli("-p", "2", "skeleton", "forge", out, "--shape", SHAPE)
    return out, seg


def spatial_files(directory) -> dict[str, str]:
    return {k: v for k, v in tree_digest(directory).items() if k.endswith(".spatial")}


@pytest.mark.parametrize("family, directory", [("mesh", "mesh"), ("mesh", "mesh_files"), ("skeleton", "skeletons")])
def test_create_rewrites_the_forge_spatial_files_byte_for_byte(forged, tmp_path, family, directory):
    src, _ = forged
    layer = tmp_path / "seg"
    shutil.copytree(src, layer)
    before = spatial_files(layer / directory)
    assert len(before) == 8
    for name in before:
        (layer / directory / name).unlink()
    q = f"fq://{tmp_path / 'q'}"
    run_cli(family, "spatial-index", "create", layer, "--dir", directory, "--queue", q)
    run_cli("execute", q, "-p", "2", "-x", "-q")
    assert spatial_files(layer / directory) == before


def label_boxes_from_files(directory) -> dict[int, list[int]]:
    boxes: dict[int, list[int]] = {}
    for path in directory.glob("*.spatial"):
        for label, box in json.loads(path.read_text()).items():
            old = boxes.get(int(label), box)
            boxes[int(label)] = [min(a, b) for a, b in zip(old[:3], box[:3])] + [max(a, b) for a, b in zip(old[3:], box[3:])]
    return boxes


def merged_outputs(directory) -> dict[str, str]:
    return {k: v for k, v in tree_digest(directory).items() if k.startswith("merge-plan/") or k.endswith(".shard")}


@pytest.mark.parametrize("family, directory", [("mesh", "mesh"), ("skeleton", "skeletons")])
def test_db_lists_every_label_and_plans_merges_equal_to_files(forged, tmp_path, family, directory):
    src, seg = forged
    from_files, from_db = tmp_path / "files" / "seg", tmp_path / "db" / "seg"
    shutil.copytree(src, from_files)
    shutil.copytree(src, from_db)
    db = tmp_path / "index.db"
    out = run_cli(family, "spatial-index", "db", from_db, f"sqlite://{db}").stdout
    assert "8 forge tasks" in out
    with sqlite3.connect(db) as conn:  # read with plain sqlite3, not our reader
        rows = conn.execute("SELECT o.label, MIN(x0), MIN(y0), MIN(z0), MAX(x1), MAX(y1), MAX(z1) "
                            "FROM spatial_objects o GROUP BY o.label").fetchall()
    boxes = {(label + 2**64 if label < 0 else label): list(box) for label, *box in rows}
    assert boxes == label_boxes_from_files(from_db / directory)
    labels = set(int(v) for v in np.unique(seg)) - {0}
    if family == "mesh":
        assert set(boxes) == labels  # every label, the ones above 2^32 and the 1-voxel one too
        for label in labels:  # each box holds the label's voxels (physical units, +-1 voxel)
            xyz = np.argwhere(seg == label)
            lo, hi = xyz.min(0) * RES, (xyz.max(0) + 1) * RES
            assert np.all(np.array(boxes[label][:3]) >= lo - RES) and np.all(np.array(boxes[label][3:]) <= hi + RES)
    else:
        assert boxes and set(boxes) <= labels
    run_cli(family, "merge-sharded", from_files)
    run_cli(family, "merge-sharded", from_db, "--spatial-index-db", f"sqlite://{db}")
    files_out, db_out = merged_outputs(from_files / directory), merged_outputs(from_db / directory)
    assert any(k.endswith(".shard") for k in files_out) and files_out == db_out


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (initdb + pg_ctl, as the postgres user when
    root); skipped where PostgreSQL or psycopg is not installed."""
    import os
    import pwd
    import subprocess

    from conftest import free_port

    pytest.importorskip("psycopg")
    import glob

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))  # Debian keeps them off the PATH
    path = os.pathsep.join([os.environ.get("PATH", ""), *bins])
    initdb, pg_ctl = shutil.which("initdb", path=path), shutil.which("pg_ctl", path=path)
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl)")
    import tempfile
    from pathlib import Path

    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="igneous-like-pg-"))  # pytest's tmp dirs are root-only
    if os.getuid() == 0:  # postgres refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres user")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True, timeout=120)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True, timeout=120)
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def test_postgresql_plans_the_same_merge(forged, postgres_url, tmp_path):
    src, _ = forged
    from_files, from_db = tmp_path / "files" / "seg", tmp_path / "db" / "seg"
    shutil.copytree(src, from_files)
    shutil.copytree(src, from_db)
    run_cli("skeleton", "spatial-index", "db", from_db, postgres_url)
    run_cli("skeleton", "spatial-index", "db", from_db, postgres_url)  # reloading replaces, never doubles
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM spatial_tasks").fetchone()[0] == 8
    run_cli("skeleton", "merge-sharded", from_files)
    run_cli("skeleton", "merge-sharded", from_db, "--spatial-index-db", postgres_url)
    files_out = merged_outputs(from_files / "skeletons")
    assert any(k.endswith(".shard") for k in files_out) and files_out == merged_outputs(from_db / "skeletons")


def test_spatial_index_on_s3(forged, moto, s3_bucket, tmp_path):
    src, _ = forged
    layer = f"{s3_bucket}/seg"
    upload_layer(src, layer)
    local = tmp_path / "seg"
    shutil.copytree(src, local)
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{layer}/mesh")
    spatial = sorted(n for n in cf.list() if n.endswith(".spatial"))
    before = {n: cf.get(n) for n in spatial}
    cf.delete(spatial)
    run_cli("mesh", "spatial-index", "create", layer, env=moto)
    assert {n: cf.get(n) for n in spatial} == before
    db = tmp_path / "s3.db"
    run_cli("mesh", "spatial-index", "db", layer, str(db), env=moto)  # a bare path is SQLite
    run_cli("mesh", "merge-sharded", layer, "--spatial-index-db", str(db), env=moto)
    run_cli("mesh", "merge-sharded", local)
    shards = sorted(n for n in cf.list() if n.endswith(".shard"))
    assert shards and all(cf.get(n) == (local / "mesh" / n).read_bytes() for n in shards)


@pytest.mark.parametrize("args, message", [
    (["mesh", "spatial-index", "db", "{layer}", "redis://localhost/0"], "unknown database scheme 'redis'"),
    (["mesh", "spatial-index", "db", "{layer}", "mysql://u:p@localhost/db"], "need the pymysql driver"),
    (["mesh", "spatial-index", "db", "{layer}", "sqlite:///no/such/dir/x.db"], "does not exist"),
    (["mesh", "merge-sharded", "{layer}", "--spatial-index-db", "sqlite://{tmp}/empty.db"], "holds no spatial index"),
    (["skeleton", "spatial-index", "create", "{tmp}"], "no layer at"),
])
def test_spatial_index_errors(forged, tmp_path, args, message):
    pytest.importorskip("sqlite3")
    if "mysql" in " ".join(args):
        try:
            import pymysql  # noqa: F401

            pytest.skip("pymysql is installed: the missing-driver message cannot show")
        except ImportError:
            pass
    src, _ = forged
    proc = run_cli(*(a.format(layer=src, tmp=tmp_path) for a in args), check=False)
    assert proc.returncode == 1 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
