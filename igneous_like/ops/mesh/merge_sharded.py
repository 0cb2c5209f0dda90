"""mesh merge-sharded: multi-resolution Draco meshes packed into Neuroglancer shards.

The planner reads the forge spatial index once (linear in the volume), counts the labels,
derives the sharding parameters, and writes one worklist per shard naming, for each label, the
forge tasks that hold its fragments. A task then reads only its own labels' fragments (range
reads into per-task .frags files) and writes exactly one whole shard file.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import fragments, layers, meshing, multires
from igneous_like.errors import UserError
from igneous_like.ops.mesh.merge import check_merge_options, read_mesh_info
from igneous_like.plan import Plan

WORKLISTS = "merge-plan"


def sharding_spec(num_labels: int, shard_index_bytes: int, minishard_index_bytes: int, min_shards: int,
                  max_labels_per_shard: int | None) -> dict:
    """Parameters for murmurhash-keyed objects, from cloud-volume's sizing rule."""
    from cloudvolume.datasource.precomputed.sharding import compute_shard_params_for_hashed

    if max_labels_per_shard:
        min_shards = max(min_shards, math.ceil(num_labels / max_labels_per_shard))
    shard_bits, minishard_bits, preshift_bits = compute_shard_params_for_hashed(
        num_labels, shard_index_bytes=shard_index_bytes, minishard_index_bytes=minishard_index_bytes,
        min_shards=min_shards,
    )
    if max_labels_per_shard:  # round shard count up to a power of two that honours the cap
        shard_bits = max(shard_bits, math.ceil(math.log2(max(min_shards, 1))))
    return {
        "@type": "neuroglancer_uint64_sharded_v1",
        "preshift_bits": preshift_bits,
        "hash": "murmurhash3_x86_128",
        "minishard_bits": minishard_bits,
        "shard_bits": shard_bits,
        "minishard_index_encoding": "gzip",
        "data_encoding": "raw",
    }


def _spec_object(spec: dict):
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    return ShardingSpecification.from_dict(spec)


def plan_mesh_merge_sharded(
    layer: str, mesh_dir: str | None = None, nlod: int = 1, vqb: int = 16, compress_level: int = 7,
    shard_index_bytes: int = 2**13, minishard_index_bytes: int = 2**15, min_shards: int = 1,
    max_labels_per_shard: int | None = None, min_chunk_size=multires.DEFAULT_MIN_CHUNK,
    spatial_index_db: str | None = None,
) -> Plan:
    from cloudfiles import CloudFiles

    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    mdir = meshing.mesh_dir_of(info, mesh_dir)
    minfo = read_mesh_info(url, mdir)
    check_merge_options(nlod, vqb)
    if not 0 <= compress_level <= 10:
        raise UserError(f"--compress-level must be between 0 and 10 (Draco), got {compress_level}")
    cf = CloudFiles(f"{url}/{mdir}")
    mode = minfo.get("fragments", "files")
    if spatial_index_db:  # one query instead of listing and opening every forge output
        from igneous_like import spatial_db

        owners = spatial_db.owners(spatial_index_db, f"{url}/{mdir}", mode)
    elif mode == "frags":
        owners = fragments.frags_ranges(cf, [n[: -len(".frags")] for n in cf.list() if n.endswith(".frags")])
    else:
        owners = fragments.labels_to_tasks(fragments.read_spatial_index(cf))
    if not owners:
        raise UserError(f"no forge fragments found in {url}/{mdir}: run `mesh forge` (with its spatial index) first")
    dust = minfo.get("dust_global_threshold")
    if dust:
        for label in fragments.global_dust(cf, dust):
            owners.pop(label, None)
    spec = sharding_spec(len(owners), shard_index_bytes, minishard_index_bytes, min_shards, max_labels_per_shard)
    sobj = _spec_object(spec)
    shards: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for label in sorted(owners):
        shards[sobj.compute_shard_location(label).shard_number][str(label)] = owners[label]
    resolution = minfo["spatial_index"]["resolution"]
    options = {"nlod": nlod, "vqb": vqb, "compress_level": compress_level, "mode": mode,
               "resolution": resolution, "min_chunk_size": list(min_chunk_size)}

    def tasks() -> Iterator:
        for shard in sorted(shards):
            yield partial(mesh_merge_shard_task, url, mdir, shard, spec, options)

    def prepare() -> None:
        cf.puts(((f"{WORKLISTS}/{shard}.json", json.dumps(labels).encode()) for shard, labels in shards.items()),
                content_type="application/json", compress=None)
        cf.put_json("info", multires.multires_info(resolution, vqb, minfo, sharding=spec))

    details = {
        "mesh directory": f"{url}/{mdir}",
        "labels": len(owners),
        "sharding": f"{2 ** spec['shard_bits']} shards x {2 ** spec['minishard_bits']} minishards "
                    f"(shard_bits {spec['shard_bits']}, minishard_bits {spec['minishard_bits']})",
        "shards with data": len(shards),
        "levels of detail": f"up to {nlod + 1}, vertex quantization {vqb} bits, Draco level {compress_level}",
    }
    return Plan("mesh merge-sharded", len(shards), tasks, prepare, details)


@queueable
def mesh_merge_shard_task(layer: str, mesh_dir: str, shard: str, spec: dict, options: dict) -> None:
    """Build the multires mesh of every label of one shard and write the shard file whole."""
    from cloudfiles import CloudFiles
    from cloudvolume.datasource.precomputed.sharding import synthesize_shard_files

    cf = CloudFiles(f"{layer}/{mesh_dir}")
    worklist = cf.get_json(f"{WORKLISTS}/{shard}.json")
    if worklist is None:
        raise UserError(f"worklist {layer}/{mesh_dir}/{WORKLISTS}/{shard}.json is missing: re-run the planner")
    res = np.asarray(options["resolution"], dtype=np.float32)
    values: dict[int, bytes] = {}
    manifest_sizes: dict[int, int] = {}
    for key in sorted(worklist, key=int):
        label = int(key)
        parts = fragments.fetch(cf, label, worklist[key], options["mode"])
        if not parts:
            continue
        verts, faces = meshing.stitch(parts)
        if len(faces) == 0:
            continue
        built = multires.build(verts / res, faces, options["nlod"], options["vqb"],
                               options["min_chunk_size"], options["compress_level"])
        values[label] = built.fragments + built.manifest
        manifest_sizes[label] = len(built.manifest)  # the shard index points at the manifest
    files = synthesize_shard_files(_spec_object(spec), values, manifest_sizes)
    for name, data in files.items():
        if name.split(".")[0] != shard:
            raise RuntimeError(f"shard {name} computed for worklist {shard}: sharding spec mismatch")
        cf.put(name, data, compress=None)
