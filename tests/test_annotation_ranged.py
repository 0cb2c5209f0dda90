"""annotation import from object storage: map tasks read only their part of a table (CSV by
line-aligned byte range, Parquet by row group) with ranged reads, and the layer equals the
one imported from the same table on local disk."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, tree_digest, upload_layer
from test_annotations import PROPS, synapses, write_csv


def s3_copy(url: str, local: Path) -> Path:
    """The layer's files (not its working files) on local disk, to compare digests."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(url)
    for name in cf.list():
        if not name.startswith("_work"):
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_bytes(cf.get(name))
    return local


def parquet_table(path: Path, header: list[str], rows: list[list], row_group: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {name: [r[i] for r in rows] for i, name in enumerate(header)}
    for name in ("x", "y", "z", "score"):
        cols[name] = [float(v) for v in cols[name]]
    rng = np.random.default_rng(0)  # a wide column the import does not read, as real tables have
    cols["notes"] = [rng.bytes(60).hex() for _ in rows]
    pq.write_table(pa.table(cols), path, row_group_size=row_group)
    return path


def fetched_by_map_task(monkeypatch, table: str, dest: str, **options) -> tuple[list, dict[str, int]]:
    """Plan in this process, run one middle map task here, and count the bytes it fetched
    per object (the `fetched` counters of the byte sources the task opened)."""
    from igneous_like.formats import byte_access
    from igneous_like.ops.annotation import import_table as op
    from igneous_like.ops.annotation.rows import parse_property, parse_relationship

    job = op.open_job(table, dest, properties=[parse_property(p) for p in ("score:float32", "count:uint16")],
                      relationships=[parse_relationship("pre:pre")], **options)
    tasks = list(job.map_tasks())
    opened = []
    real = byte_access.byte_source

    def recording(url):
        opened.append(real(url))
        return opened[-1]

    monkeypatch.setattr(byte_access, "byte_source", recording)
    name, i, lo, hi, first = tasks[len(tasks) // 2]
    op.annotation_map_task(job.spec(), name, i, lo, hi, first)
    counts: dict[str, int] = {}
    for source in opened:
        counts[source.url] = counts.get(source.url, 0) + source.fetched
    return tasks, counts


def test_csv_on_s3_map_task_reads_its_byte_range(tmp_path, s3_bucket, moto, monkeypatch):
    from cloudfiles import CloudFiles

    header, rows = synapses(3000, seed=8)
    (tmp_path / "t").mkdir()
    write_csv(tmp_path / "t" / "syn.csv", header, rows)
    upload_layer(tmp_path / "t", f"{s3_bucket}/tables")
    url = f"{s3_bucket}/tables/syn.csv"
    size = CloudFiles(f"{s3_bucket}/tables").size("syn.csv")
    tasks, counts = fetched_by_map_task(monkeypatch, url, f"file://{tmp_path}/probe", rows_per_task=400)
    assert len(tasks) >= 6
    _, _, lo, hi, _ = tasks[len(tasks) // 2]
    # its byte range (plus the header line and the small reads around it), never the object
    assert hi - lo <= counts[url] < 0.35 * size, (counts, size, lo, hi)
    # the whole import from S3 (queued, two workers) equals the local one, byte for byte
    local, q = tmp_path / "local", f"fq://{tmp_path}/q"
    small = ["--limit", "30", "--shard-above", "50"]  # sharded indexes: a few objects, not thousands
    run_cli("annotation", "import", tmp_path / "t" / "syn.csv", f"file://{local}", *PROPS, *small,
            "--rows-per-task", "400")
    common = [url, f"{s3_bucket}/syn", *PROPS, *small, "--rows-per-task", "400", "--queue", q]
    run_cli("annotation", "import", *common, env=moto)
    for _ in range(3):  # map, counts, emit
        run_cli("-p", "2", "execute", q, "-x", env=moto)
        run_cli("annotation", "import", *common, "--merge", env=moto)
    assert tree_digest(s3_copy(f"{s3_bucket}/syn", tmp_path / "copy")) == tree_digest(local)


def test_parquet_on_s3_map_task_reads_its_row_groups(tmp_path, s3_bucket, moto, monkeypatch):
    from cloudfiles import CloudFiles

    header, rows = synapses(3000, seed=9)
    (tmp_path / "t").mkdir()
    parquet_table(tmp_path / "t" / "syn.parquet", header, rows, row_group=250)
    upload_layer(tmp_path / "t", f"{s3_bucket}/tables")
    url = f"{s3_bucket}/tables/syn.parquet"
    size = CloudFiles(f"{s3_bucket}/tables").size("syn.parquet")
    tasks, counts = fetched_by_map_task(monkeypatch, url, f"file://{tmp_path}/probe", rows_per_task=500)
    assert len(tasks) == 6 and all(hi - lo == 500 for _, _, lo, hi, _ in tasks)  # two row groups each
    assert 0 < counts[url] < 0.25 * size, (counts, size)  # 1/6 of its rows, some of its columns, the footer
    local = tmp_path / "local"
    small = ["--limit", "30", "--shard-above", "50"]
    run_cli("annotation", "import", tmp_path / "t" / "syn.parquet", f"file://{local}", *PROPS, *small)
    run_cli("-p", "2", "annotation", "import", url, f"{s3_bucket}/syn", *PROPS, *small, "--rows-per-task", "700",
            env=moto)
    assert tree_digest(s3_copy(f"{s3_bucket}/syn", tmp_path / "copy")) == tree_digest(local)


@pytest.mark.parametrize("piece_bytes", [None, 5000])
def test_csv_pieces_are_line_aligned_and_cover_the_file(tmp_path, piece_bytes):
    """Every row is read exactly once, whatever the piece size: the parts a planner makes
    from the pieces give back the table (CRLF line ends, a last line without a newline)."""
    import pyarrow as pa

    from igneous_like.formats import tables

    lines = ["id,x,name"] + [f"{i},{i * 0.5},n{i % 7}" for i in range(2000)]
    path = tmp_path / "t.csv"
    path.write_bytes("\r\n".join(lines).encode())
    url = f"file://{path}"
    types = {"id": pa.uint64(), "x": pa.float64(), "name": pa.string()}
    pieces = list(tables.pieces(url, "csv", types, piece_bytes))
    assert len(pieces) > (4 if piece_bytes else 0)
    assert pieces[0][0] == len(lines[0]) + 2 and pieces[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    ids = np.concatenate([b.column("id").to_numpy() for _, _, got in pieces for b in got])
    assert ids.tolist() == list(range(2000))
    again = np.concatenate([b.column("id").to_numpy() for lo, hi, _ in pieces
                            for b in tables.read_part(url, "csv", types, lo, hi)])
    assert again.tolist() == list(range(2000))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_ranged_window_reads_only_its_bytes(tmp_path, s3_bucket, where):
    """A window [start, stop) of a file, local (pread) or on S3 (ranged GETs), reads exactly
    those bytes wherever its reads start and end, fetches nothing outside it, counts what it
    fetched, and fetches adjacent missing cache blocks in one request."""
    from igneous_like.formats.byte_access import RangedFile

    data = np.random.default_rng(3).integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "blob").write_bytes(data)
    if where == "s3":
        upload_layer(tmp_path / "d", f"{s3_bucket}/w")
    url = f"{s3_bucket}/w/blob" if where == "s3" else f"file://{tmp_path}/d/blob"
    with RangedFile(url, block=4096, cache_blocks=4, part=16384) as whole:  # reads above 8 KiB skip the cache
        assert whole.size == len(data) and whole.fetched == 0
        start, stop = 123_457, 234_567
        asked: list[tuple[int, int]] = []
        real = whole.source.fetch
        whole.source.fetch = lambda parts: asked.extend(parts) or real(parts)
        part = whole.window(start, stop)
        assert part.size == stop - start
        rng = np.random.default_rng(4)
        for _ in range(30):
            at, n = int(rng.integers(0, part.size)), int(rng.choice([1, 100, 5000, 9000, 60_000]))
            part.seek(at)
            assert part.read(n) == data[start + at: start + min(at + n, part.size)]
        part.seek(-7, 2)
        assert part.read() == data[stop - 7: stop] and part.read(10) == b""
        assert asked and all(start <= a < b <= stop for a, b in asked), asked  # nothing outside the window
        assert whole.fetched == part.fetched == sum(b - a for a, b in asked)
        fresh, before = whole.window(start, stop), len(asked)
        assert fresh.read(8000) == data[start: start + 8000] and len(asked) == before + 1  # 2 blocks, 1 GET
        calls: list[int] = []
        whole.source.fetch = lambda parts: calls.append(len(parts)) or real(parts)
        assert fresh.read(60_000) == data[start + 8000: start + 68_000] and calls == [4]  # 4 parts at once
        inner = part.window(10, 20)  # a window of a window, and a read of all of it
        assert inner.read() == data[start + 10: start + 20]
        part.close()  # a window does not close the file it came from
        whole.seek(len(data) - 5)
        assert whole.read() == data[-5:]
