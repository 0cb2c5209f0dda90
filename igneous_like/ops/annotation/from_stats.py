"""annotation from-stats: one annotation per label from the table of `image stats`: a point at
its centroid, or its bounding box, with the numeric columns as properties and a `segment`
relationship (so selecting a segment in Neuroglancer shows its annotation). It is an
`annotation import` of that table with the columns and types read from it."""
from __future__ import annotations

from igneous_like.errors import UserError
from igneous_like.ops.annotation.import_table import ImportJob, open_job

GEOMETRY = {
    "point": {"x": "centroid_x", "y": "centroid_y", "z": "centroid_z", "id": "label"},
    "box": {"x1": "bbox_min_x", "y1": "bbox_min_y", "z1": "bbox_min_z",
            "x2": "bbox_max_x", "y2": "bbox_max_y", "z2": "bbox_max_z", "id": "label"},
}
NOT_PROPERTIES = {"label"}


def open_stats_job(layer: str, dest: str, kind: str = "point", stats: str | None = None, limit: int | None = None,
                   memory: float = 3.5e9, partitions: int | None = None, rows_per_task: int | None = None,
                   shard_above: int = 4096) -> ImportJob:
    """Check the layer and its statistics table, then the rows, as `annotation import` does."""
    import pyarrow as pa
    from cloudfiles import CloudFiles

    from igneous_like import layers
    from igneous_like.formats import tables
    from igneous_like.ops.annotation import import_table

    if kind not in GEOMETRY:
        raise UserError(f"--type must be point or box for from-stats, not {kind!r}")
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    stats = layers.normalize_url(stats) if stats else f"{url}/stats"
    made = CloudFiles(f"{stats}/_partials").get_json("job.json") or {}
    mip = int(made.get("mip", 0))
    layers.check_mip(info, mip, url)
    try:
        files = tables.table_files(stats)
    except UserError as exc:
        raise UserError(f"{exc}; run `igneous-like image stats {url}` first") from None
    schema = tables.schema(*files[0])
    missing = [c for c in GEOMETRY[kind].values() if c not in schema]
    if missing:
        raise UserError(f"{stats} is not an `image stats` table: no column {missing[0]!r}")
    props = []
    for name, dtype in schema.items():
        if name in NOT_PROPERTIES or not (pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
                                          or pa.types.is_boolean(dtype)):
            continue
        props.append({"id": name, "type": "uint8" if pa.types.is_boolean(dtype) else "auto", "column": name,
                      "source": "number", "integers": not pa.types.is_floating(dtype)})
    bounds = layers.scale_bounds(info, mip)
    return open_job(stats, dest, kind=kind, columns=GEOMETRY[kind], properties=props,
                    relationships=[["segment", "label"]], resolution=info["scales"][mip]["resolution"],
                    bounds=[*bounds.start, *bounds.stop], limit=limit or import_table.DEFAULT_LIMIT,
                    memory=memory, partitions=partitions, rows_per_task=rows_per_task, shard_above=shard_above)
