"""image ccl relabel and clean: write DEST from the final numbering of calc-labels (DEST's dtype
the smallest that holds N and that its encoding takes), then remove the job's intermediates."""
from __future__ import annotations

import numpy as np

from igneous_like import layers, volume_io
from igneous_like.errors import UserError
from igneous_like.ops.image import ccl_labels
from igneous_like.ops.image.ccl import LOCAL_BITS, CclJob, components

DTYPES = ("uint8", "uint16", "uint32", "uint64")


def dest_dtype(labels: int, encoding: str) -> str:
    """The smallest unsigned dtype that holds 0..labels and that the encoding can store."""
    for dtype in DTYPES:
        if labels <= np.iinfo(dtype).max and dtype in layers.ENCODING_DTYPES[encoding]:
            return dtype
    return "uint64"


def dest_info(job: CclJob, labels: int) -> dict:
    """DEST's info: SRC's geometry at --mip within the job's bounds (the whole scale unless
    --xrange/--yrange/--zrange) as DEST's only scale, a segmentation."""
    from cloudvolume import CloudVolume

    from igneous_like.grid import Box

    src = layers.read_info(job.src)["scales"][job.mip]
    bounds = Box.from_list(job.bounds)
    info = CloudVolume.create_new_info(
        num_channels=1, layer_type="segmentation", data_type=dest_dtype(labels, job.encoding),
        encoding=job.encoding, resolution=src["resolution"], voxel_offset=list(bounds.start),
        volume_size=list(bounds.shape), chunk_size=job.chunk_size,
        compressed_segmentation_block_size=(8, 8, 8) if job.encoding == "compressed_segmentation" else None,
    )
    return info


def write_dest_info(job: CclJob, info: dict) -> None:
    layers.write_info(job.dest, info)


def check_labels(job: CclJob) -> int:
    """The label count, or an error when calc-labels has not finished."""
    labels = ccl_labels.label_count(job)
    if labels is None:
        raise UserError("relabel: calc-labels has not finished for these options: run `image ccl calc-labels` "
                        "until it reports the label count")
    return labels


def final_ids(job: CclJob, t: int, n: int) -> np.ndarray:
    """Final id (0 for dust) of each local id 0..n of task t: its own kept roots from its ranks,
    its merged ids from the ranks of their roots' tasks (one batched read), each offset by its
    task's first id."""
    from igneous_like.errors import TaskError

    mine = ccl_labels.get_table(job, f"ranks/{t}.arrow")
    rank, root = mine["rank"], mine["root"]
    if len(rank) != n + 1:
        raise TaskError(f"relabel: task {t} has {n} components but calc-labels saw {len(rank) - 1}: the source changed")
    member = np.flatnonzero(root)
    root = root[member]
    root_task = (root >> LOCAL_BITS).astype(np.int64)
    others = [int(o) for o in np.unique(root_task) if o != t]
    ranks = dict(zip(others, (r["rank"] for r in ccl_labels.get_tables(job, [f"ranks/{o}.arrow" for o in others]))))
    ranks[t] = rank
    offsets = ccl_labels.read_offsets(job, [t, *others])
    ids = np.where(rank >= 0, offsets[t] + rank, 0).astype(np.uint64)
    for other in [t, *others]:
        these = root_task == other
        got = ranks[other][ccl_labels.local(root[these])]
        ids[member[these]] = np.where(got >= 0, offsets[other] + got, 0).astype(np.uint64)
    ids[0] = 0
    return ids


def relabel_work(spec: CclJob, t: int) -> None:
    """Label the box again (cc3d is deterministic) and write it with final ids."""
    box = spec.box(t)
    cc, n, _ = components(spec, box)
    info = layers.read_info(spec.dest)
    ids = final_ids(spec, t, n).astype(info["data_type"])
    out = ids[cc]
    del cc
    compress = layers.normalize_compress(None, spec.dest)
    volume_io.write(spec.dest, info, 0, box, out, compress, False, 0)


def intermediates(job: CclJob) -> list[str]:
    """The files of the job directory (none when it does not exist)."""
    from cloudfiles import CloudFiles

    try:
        return sorted(CloudFiles(job.root).list())
    except FileNotFoundError:
        return []


def clean(job: CclJob) -> int:
    """Delete the job directory (DEST/_ccl/KEY); returns the number of files removed."""
    from cloudfiles import CloudFiles

    names = intermediates(job)
    CloudFiles(job.root).delete(names)
    CloudFiles(f"{job.dest}/_ccl").delete(f"jobs/{job.key}.json")
    local = layers.local_path(f"{job.dest}/_ccl")
    if local:  # file:// leaves the emptied directories behind
        import os
        import shutil

        shutil.rmtree(os.path.join(local, job.key), ignore_errors=True)
        for empty in (os.path.join(local, "jobs"), local):
            if os.path.isdir(empty) and not os.listdir(empty):
                os.rmdir(empty)
    return len(names)

