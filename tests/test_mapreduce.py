"""The shared map -> reduce-by-partition machinery, on its own: partitioning, partial names,
idempotent writes, the missing-map check, and folding in batches."""
from __future__ import annotations

import numpy as np
import pytest

from igneous_like import mapreduce
from igneous_like.grid import Box, grid_boxes


def count_merge(table: mapreduce.Table) -> mapreduce.Table:
    """A toy operation: voxels per label."""
    keys, inv = mapreduce.group(table["label"])
    return {"label": keys, "n": mapreduce.group_sum(inv, table["n"], len(keys))}


def toy_map(box: Box, volume: np.ndarray) -> mapreduce.Table:
    labels, counts = np.unique(volume[box.slices()], return_counts=True)
    return {"label": labels.astype(np.uint64), "n": counts.astype(np.int64)}


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    return rng.choice(np.array([1, 5, 2**33, 2**63 + 1, 17, 99], dtype=np.uint64), size=(20, 15, 9))


def test_partition_is_fixed_and_spread():
    keys = np.arange(1, 100001, dtype=np.uint64)
    parts = mapreduce.partition_of(keys, 16)
    assert parts.min() == 0 and parts.max() == 15
    sizes = np.bincount(parts, minlength=16)
    assert sizes.min() > 0.9 * len(keys) / 16  # consecutive ids do not cluster
    # the same on every machine and version: pinned values of the splitmix64 finalizer
    assert mapreduce.partition_of(np.array([0, 1, 2**63 + 5], dtype=np.uint64), 1000).tolist() == \
        [int(v) % 1000 for v in _splitmix_reference([0, 1, 2**63 + 5])]


def _splitmix_reference(values):
    """Python integers, no numpy: the finalizer as published."""
    out = []
    for z in values:
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 % 2**64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB % 2**64
        out.append(z ^ (z >> 31))
    return out


def test_choose_partitions_grows_with_rows():
    assert mapreduce.choose_partitions(1000, 200, 3.5e9) == 1
    assert mapreduce.choose_partitions(1e9, 200, 2e9) == 300
    assert mapreduce.choose_partitions(1e15, 200, 1e9) == mapreduce.MAX_PARTITIONS


def test_map_then_reduce_equals_whole_count(tmp_path, volume):
    layout = mapreduce.Layout(f"file://{tmp_path}/job", partitions=3)
    bounds = Box((0, 0, 0), volume.shape)
    boxes = list(grid_boxes(bounds, (7, 4, 5), (0, 0, 0)))
    assert mapreduce.missing_maps(layout, boxes) == boxes
    for box in boxes[:-1]:
        mapreduce.write_partials(layout, box, toy_map(box, volume))
    assert mapreduce.missing_maps(layout, boxes) == [boxes[-1]]
    mapreduce.write_partials(layout, boxes[-1], toy_map(boxes[-1], volume))
    assert mapreduce.missing_maps(layout, boxes) == []
    # one file per map task, not per (task, partition): its index, then a segment per partition
    files = sorted(p.relative_to(tmp_path / "job").as_posix() for p in (tmp_path / "job").rglob("*.arrow"))
    assert files == sorted(f"maps/{mapreduce.box_name(b)}.arrow" for b in boxes)
    data = (tmp_path / "job" / files[0]).read_bytes()
    offsets = np.frombuffer(data[:32], dtype="<u8")
    assert offsets[0] == 32 and offsets[-1] == len(data) and (np.diff(offsets) > 0).all()  # empty ones too
    for p in range(3):  # each segment is an Arrow IPC file on its own
        seg = mapreduce.decode_table(data[int(offsets[p]):int(offsets[p + 1])])
        assert (mapreduce.partition_of(seg["label"], 3) == p).all()
    merged = {}
    for p in range(3):
        out = mapreduce.reduce_partition(layout, boxes, p, count_merge, batch=4)  # several folds
        assert (mapreduce.partition_of(out["label"], 3) == p).all()
        assert (np.diff(out["label"].astype(np.float64)) > 0).all()
        merged.update(zip(out["label"].tolist(), out["n"].tolist()))
    labels, counts = np.unique(volume, return_counts=True)
    assert merged == dict(zip(labels.tolist(), counts.tolist()))
    assert mapreduce.partition_rows(layout, boxes).sum() == sum(len(toy_map(b, volume)["label"]) for b in boxes)


def test_rewrite_is_byte_identical_and_stale_files_are_ignored(tmp_path, volume):
    layout = mapreduce.Layout(f"file://{tmp_path}/job", partitions=2)
    box = Box((0, 0, 0), (10, 15, 9))
    mapreduce.write_partials(layout, box, toy_map(box, volume))
    first = {p: p.read_bytes() for p in (tmp_path / "job").rglob("*") if p.is_file()}
    mapreduce.write_partials(layout, box, toy_map(box, volume))
    assert {p: p.read_bytes() for p in (tmp_path / "job").rglob("*") if p.is_file()} == first
    # a partial of a box outside the planned grid (an older run's) is never read
    stale = Box((0, 0, 0), (3, 3, 3))
    mapreduce.write_partials(layout, stale, {"label": np.array([5], np.uint64), "n": np.array([10**6])})
    total = sum(mapreduce.reduce_partition(layout, [box], p, count_merge)["n"].sum() for p in range(2))
    assert total == 10 * 15 * 9


def test_missing_partial_fails_the_reduce(tmp_path, volume):
    from igneous_like.errors import TaskError

    layout = mapreduce.Layout(f"file://{tmp_path}/job", partitions=1)
    box = Box((0, 0, 0), (10, 15, 9))
    with pytest.raises(TaskError, match="map output missing"):
        mapreduce.reduce_partition(layout, [box], 0, count_merge)


def test_arrow_round_trip_keeps_dtypes():
    table = {"label": np.array([2**64 - 1, 3], np.uint64), "x": np.array([-1.5, 2.0]), "b": np.array([True, False])}
    back = mapreduce.decode_table(mapreduce.encode_table(table))
    for name, col in table.items():
        assert back[name].dtype == col.dtype and (back[name] == col).all()


def test_named_sources_and_another_key(tmp_path):
    """A reduce task can feed the next round: sources named by a string, rows split by any
    uint64 column (here a block id that groups several labels in one partition)."""
    layout = mapreduce.Layout(f"file://{tmp_path}/job", partitions=4)
    rows = {"label": np.arange(20, dtype=np.uint64), "block": np.arange(20, dtype=np.uint64) // 5}
    mapreduce.write_partials(layout, "p00001", rows, key="block")
    assert (tmp_path / "job" / "maps" / "p00001.arrow").exists()
    assert mapreduce.missing_maps(layout, ["p00001", "p00002"]) == ["p00002"]
    seen = []
    for p in range(4):
        part = mapreduce.concat([t for b in mapreduce.read_partials(layout, ["p00001"], p) for t in b])
        assert (mapreduce.partition_of(part["block"], 4) == p).all()
        seen += part["label"].tolist()
    assert sorted(seen) == list(range(20))
