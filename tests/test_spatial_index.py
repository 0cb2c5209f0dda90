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


FAMILY_DIRS = {"mesh": "mesh", "skeleton": "skeletons"}


@pytest.fixture(scope="module")
def merged_from_files(forged, tmp_path_factory):
    """family -> digests of `merge-sharded` planned from the forge's own files (run once each):
    what every database-planned merge must equal byte for byte."""
    src, _ = forged
    done: dict[str, dict[str, str]] = {}

    def merged(family: str) -> dict[str, str]:
        if family not in done:
            layer = tmp_path_factory.mktemp(f"files-{family}") / "seg"
            shutil.copytree(src, layer)
            run_cli(family, "merge-sharded", layer)
            done[family] = merged_outputs(layer / FAMILY_DIRS[family])
            assert any(k.endswith(".shard") for k in done[family])
        return done[family]

    return merged


@pytest.mark.parametrize("family, directory", [("mesh", "mesh"), ("skeleton", "skeletons")])
def test_db_lists_every_label_and_plans_merges_equal_to_files(forged, merged_from_files, tmp_path, family, directory):
    src, seg = forged
    from_db = tmp_path / "db" / "seg"
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
    run_cli(family, "merge-sharded", from_db, "--spatial-index-db", f"sqlite://{db}")
    assert merged_outputs(from_db / directory) == merged_from_files(family)


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


def test_postgresql_plans_the_same_merge(forged, merged_from_files, postgres_url, tmp_path):
    src, _ = forged
    from_db = tmp_path / "db" / "seg"
    shutil.copytree(src, from_db)
    run_cli("skeleton", "spatial-index", "db", from_db, postgres_url)
    run_cli("skeleton", "spatial-index", "db", from_db, postgres_url)  # reloading replaces, never doubles
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM spatial_tasks").fetchone()[0] == 8
    run_cli("skeleton", "merge-sharded", from_db, "--spatial-index-db", postgres_url)
    assert merged_outputs(from_db / "skeletons") == merged_from_files("skeleton")


MYSQL_PASSWORD = "p@ss:w/rd%"  # every character a URL must escape


@pytest.fixture(scope="module")
def mysql_url():
    """A private MySQL-compatible server (MariaDB or MySQL) on a free 127.0.0.1 port, with its
    own data directory and socket in a temporary directory, a database `igneous` and a user whose
    password needs URL escaping; skipped only where no server binary is installed."""
    import os
    import subprocess
    import tempfile
    import time
    from pathlib import Path
    from urllib.parse import quote

    import pymysql

    from conftest import free_port

    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])  # servers live in sbin
    server = shutil.which("mariadbd", path=path) or shutil.which("mysqld", path=path)
    if not server:
        pytest.skip("no MySQL-compatible server binary (mariadbd, mysqld)")
    root = Path(tempfile.mkdtemp(prefix="igneous-like-mysql-"))  # short: a unix socket path is limited
    data, sock, log = root / "data", root / "sock", root / "log"
    as_user: list[str] = []
    if os.getuid() == 0:  # the server refuses to run as root unless told to
        try:
            shutil.chown(root, "mysql", "mysql")
            as_user = ["--user=mysql"]
        except LookupError:  # no mysql account: root it is
            as_user = ["--user=root"]
    install = shutil.which("mariadb-install-db", path=path) or shutil.which("mysql_install_db", path=path)
    init = ([install, "--no-defaults", *as_user, f"--datadir={data}", "--auth-root-authentication-method=normal",
             "--skip-test-db"] if install else [server, "--no-defaults", *as_user, "--initialize-insecure",
                                                f"--datadir={data}"])
    subprocess.run(init, check=True, capture_output=True, timeout=180)
    port = free_port()
    proc = subprocess.Popen([server, "--no-defaults", *as_user, f"--datadir={data}", f"--socket={sock}",
                             f"--port={port}", "--bind-address=127.0.0.1", f"--pid-file={root / 'pid'}",
                             f"--log-error={log}", "--innodb-buffer-pool-size=16M", "--skip-log-bin"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while True:
        try:
            admin = pymysql.connect(unix_socket=str(sock), user="root")
            break
        except pymysql.err.OperationalError:
            log_tail = log.read_text()[-2000:] if log.exists() else ""
            assert proc.poll() is None and time.time() < deadline, f"the MySQL server did not start:\n{log_tail}"
            time.sleep(0.2)
    with admin.cursor() as cur:
        cur.execute("CREATE DATABASE igneous")
        cur.execute("CREATE USER 'planner'@'127.0.0.1' IDENTIFIED BY %s", (MYSQL_PASSWORD,))
        cur.execute("GRANT ALL ON igneous.* TO 'planner'@'127.0.0.1'")
    admin.commit()
    admin.close()
    yield f"mysql://planner:{quote(MYSQL_PASSWORD, safe='')}@127.0.0.1:{port}/igneous"
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(root, ignore_errors=True)


def test_mysql_plans_the_same_merges(forged, merged_from_files, mysql_url, tmp_path):
    """Meshes (fragment byte ranges) and skeletons (owner tasks) planned from one MySQL database
    equal the merges planned from files; reloads replace rows, and directories differing only
    in case keep their own rows (MySQL compares strings case-insensitively by default)."""
    import pymysql

    src, _ = forged
    from_db, other_case = tmp_path / "db" / "seg", tmp_path / "DB" / "seg"
    shutil.copytree(src, from_db)
    shutil.copytree(src, other_case)
    for family in ("mesh", "skeleton", "mesh"):  # the second mesh load replaces the first
        assert "8 forge tasks" in run_cli(family, "spatial-index", "db", from_db, mysql_url).stdout
    run_cli("skeleton", "spatial-index", "db", other_case, mysql_url)
    port = int(mysql_url.rsplit(":", 1)[1].split("/")[0])
    with pymysql.connect(host="127.0.0.1", port=port, user="planner", password=MYSQL_PASSWORD, database="igneous") as conn:
        with conn.cursor() as cur:  # read with the driver, not our reader
            cur.execute("SELECT dir, COUNT(*) FROM spatial_tasks GROUP BY dir")
            counts = dict(cur.fetchall())
            cur.execute("SELECT COUNT(*) FROM spatial_objects WHERE label < 0")  # the label above 2^63
            assert cur.fetchone()[0] > 0
    assert sorted(counts.values()) == [8, 8, 8] and len(counts) == 3, counts
    for family in ("mesh", "skeleton"):
        run_cli(family, "merge-sharded", from_db, "--spatial-index-db", mysql_url)
        assert merged_outputs(from_db / FAMILY_DIRS[family]) == merged_from_files(family)
    proc = run_cli("mesh", "merge-sharded", from_db, "--spatial-index-db",
                   mysql_url.replace("/igneous", "/nosuchdb"), check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "cannot connect to" in proc.stderr, proc.stderr
    assert "p%40ss" not in proc.stderr and MYSQL_PASSWORD not in proc.stderr  # no password in messages


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
    src, _ = forged
    hidden = tmp_path / "hidden"  # a pymysql that fails to import, ahead of the installed one
    (hidden / "pymysql").mkdir(parents=True)
    (hidden / "pymysql" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    proc = run_cli(*(a.format(layer=src, tmp=tmp_path) for a in args), check=False,
                   env={"PYTHONPATH": str(hidden)})
    assert proc.returncode == 1 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
