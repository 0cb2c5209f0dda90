"""annotation import at scale: the planner's bounded distinct-segment count, how a file's
pieces become map parts, and the default partitions and map sizes that keep a pool busy."""
from __future__ import annotations

import numpy as np

from igneous_like.ops.annotation import import_table as op
from igneous_like.ops.annotation.rows import DistinctCount


def test_distinct_count_is_exact_then_close_in_bounded_memory():
    rng = np.random.default_rng(0)
    for n, tolerance in ((5000, 0), (DistinctCount.KEEP, 0), (400_000, 0.03)):
        keys = rng.integers(1, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
        count = DistinctCount()
        for chunk in np.array_split(np.concatenate([keys, keys[::3]]), 40):  # repeats are not counted
            count.add(chunk)
        assert abs(count.count() - len(np.unique(keys))) <= tolerance * n
        assert len(count.smallest) <= DistinctCount.KEEP


def test_split_parts_groups_whole_pieces_and_cuts_row_addressed_ones():
    csv = np.array([[10, 100, 40], [100, 190, 40], [190, 300, 40], [300, 320, 500]])  # bytes, rows
    assert op.split_parts(csv, 100, by_rows=False) == [[10, 190, 0], [190, 300, 80], [300, 320, 120]]
    groups = np.array([[0, 40, 40], [40, 80, 40], [80, 330, 250], [330, 340, 10]])  # Parquet row groups
    assert op.split_parts(groups, 100, by_rows=True) == \
        [[0, 80, 0], [80, 163, 80], [163, 246, 163], [246, 330, 246], [330, 340, 330]]


def test_default_partitions_and_map_tasks_scale_with_rows_and_memory():
    mem = 3.5e9
    assert op.choose_partitions(1000, mem) == 1
    assert op.choose_partitions(1_000_000, mem) == 20  # was 1: one reduce and three emit tasks for a pool
    assert op.choose_partitions(50_000_000, mem) == 64
    assert op.choose_partitions(1_000_000_000, mem) > 64  # memory asks for more
    assert op.choose_rows_per_task(1_000_000, 15, mem) == 25_000
    assert op.choose_rows_per_task(100_000_000, 15, mem) == op.MAX_ROWS_PER_MAP
    assert op.choose_rows_per_task(100_000_000, 15, 0.6e9) < op.MAX_ROWS_PER_MAP  # a small worker


def test_index_shards_follow_rows_so_emit_tasks_share_the_work():
    """cloud-volume's sizing alone gives a million ids two shards (two emit tasks holding half
    a million annotations each); at least one shard per ROWS_PER_SHARD rows spreads them."""
    from igneous_like import annotations

    assert annotations.index_sharding(10**6, 4096)["shard_bits"] == 1
    bits = annotations.index_sharding(10**6, 4096, -(-10**6 // op.ROWS_PER_SHARD))["shard_bits"]
    assert 2**(bits + 1) > 10**6 // op.ROWS_PER_SHARD  # cloud-volume rounds down to a power of two
    assert annotations.index_sharding(3000, 4096, 40) is None  # small indexes stay one file per key
