"""Tables as files: Parquet (default) or CSV through pyarrow, deterministic bytes.

A table too big for one file is written as part files in one directory; pyarrow and pandas
read the directory as one dataset (`pyarrow.dataset.dataset(DIR, format=...)`,
`pandas.read_parquet(DIR)`), skipping names that start with `_` or `.`."""
from __future__ import annotations

import io

import numpy as np

from igneous_like.mapreduce import Table

FORMATS = {"parquet": "parquet", "csv": "csv"}


def encode(table: Table, fmt: str) -> bytes:
    """One part file's bytes; the same table always gives the same bytes."""
    import pyarrow as pa

    arrow = pa.table({name: pa.array(col) for name, col in table.items()})
    sink = io.BytesIO()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        # zstd level 1: as small as the default level here (4M rows: 39 MiB), ~20% less CPU
        # min/max statistics for the first column only (the key, sorted): row groups span every
        # other column's whole range, so theirs would filter nothing (4M rows: ~0.07 s less)
        dictionary, encoding = _encodings(arrow)
        pq.write_table(arrow, sink, compression="zstd", compression_level=1, use_dictionary=dictionary,
                       column_encoding=encoding or None, write_statistics=arrow.column_names[:1])
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(arrow, sink)
    else:
        raise ValueError(f"unknown table format {fmt!r}")
    return sink.getvalue()


SAMPLE_ROWS = 4096


def _encodings(arrow) -> tuple[list[str], dict[str, str]]:
    """Parquet encodings per column, chosen from its first SAMPLE_ROWS values (deterministic):
    - an integer column that increases there (the sorted labels) is delta-encoded: a
      dictionary of distinct values fills up, gives up and writes them plain anyway (4M
      labels: 34 MiB instead of 39, and less CPU);
    - a float column of mostly distinct values (centroids, axes) is byte-stream-split, which
      puts each byte of the values together for zstd (4M distinct centroids: 0.94 s and
      159 MiB instead of 1.36 s and 179 MiB);
    - any other column (counts, boxes, floats of few values, booleans) takes a dictionary."""
    import pyarrow as pa

    dictionary, encoding = [], {}
    for field in arrow.schema:
        if pa.types.is_integer(field.type) or pa.types.is_floating(field.type):
            head = arrow.column(field.name).slice(0, SAMPLE_ROWS).to_numpy()
            if pa.types.is_integer(field.type) and len(head) > 1 and (head[1:] > head[:-1]).all():
                encoding[field.name] = "DELTA_BINARY_PACKED"
                continue
            if pa.types.is_floating(field.type) and len(np.unique(head)) > len(head) // 4:
                encoding[field.name] = "BYTE_STREAM_SPLIT"
                continue
        dictionary.append(field.name)
    return dictionary, encoding


def decode(data: bytes, fmt: str, columns: list[str] | None = None) -> Table:
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        arrow = pq.read_table(pa.BufferReader(data), columns=columns)
    else:
        import pyarrow.csv as pcsv

        types = pcsv.ConvertOptions(column_types={"label": pa.uint64(), "voxel_count": pa.uint64()})
        arrow = pcsv.read_csv(pa.BufferReader(data), convert_options=types)
        if columns is not None:
            arrow = arrow.select(columns)
    return {name: np.asarray(arrow.column(name).to_numpy()) for name in arrow.column_names}


def part_name(partition: int, partitions: int, fmt: str) -> str:
    return f"part-{partition:05d}-of-{partitions:05d}.{fmt}"
