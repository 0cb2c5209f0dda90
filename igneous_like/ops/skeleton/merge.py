"""skeleton merge / merge-sharded: join each label's forge fragments into one tree.

The planner locates every label's fragment bytes in the per-task .frags files once (one index
read per forge task) and writes a worklist per merge task: labels grouped by decimal prefix
(--magnitude) for unsharded output, or by destination shard. A task reads only those byte
ranges: merge I/O is linear in the volume, and each shard is written whole by one task.
Also here: skeleton clean.
"""
from __future__ import annotations

import json
from collections import defaultdict
from functools import partial
from typing import Iterator

from taskqueue import queueable

from igneous_like import fragments, layers, skeletons
from igneous_like.errors import UserError
from igneous_like.ops.mesh.merge_sharded import WORKLISTS, _spec_object, sharding_spec
from igneous_like.plan import Plan

FILTERED = "filtered"
from igneous_like.storage import put_many


def _skeleton_dir(url: str, info: dict, override: str | None) -> tuple[str, dict]:
    from cloudfiles import CloudFiles

    sdir = override or info.get("skeletons") or "skeletons"
    sinfo = CloudFiles(url).get_json(f"{sdir}/info")
    if sinfo is None:
        raise UserError(f"no skeletons at {url}/{sdir}: run `igneous-like skeleton forge` first")
    return sdir, sinfo


def plan_skeleton_merge(
    layer: str, skel_dir: str | None = None, sharded: bool = False, magnitude: int = 2,
    tick_threshold: float = 0, min_cable_length: float = 1000, max_cable_length: float | None = None,
    shard_index_bytes: int = 2**13, minishard_index_bytes: int = 2**15, min_shards: int = 1,
    max_labels_per_shard: int | None = None, spatial_index_db: str | None = None,
) -> Plan:
    from cloudfiles import CloudFiles

    if max_cable_length is not None and max_cable_length < min_cable_length:
        raise UserError(f"--max-cable-length {max_cable_length} is below --min-cable-length {min_cable_length}: "
                        "every skeleton would be dropped")
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    sdir, sinfo = _skeleton_dir(url, info, skel_dir)
    if not 1 <= magnitude <= 6:
        raise UserError(f"--magnitude must be between 1 and 6, got {magnitude}")
    if tick_threshold < 0 or min_cable_length < 0:
        raise UserError("--tick-threshold and --min-cable-length must not be negative")
    cf = CloudFiles(f"{url}/{sdir}")
    if spatial_index_db:  # one query instead of listing and opening every forge output
        from igneous_like import spatial_db

        owners = spatial_db.owners(spatial_index_db, f"{url}/{sdir}", "frags")
    else:
        owners = fragments.frags_ranges(cf, [n[: -len(".frags")] for n in cf.list() if n.endswith(".frags")])
    if not owners:
        raise UserError(f"no skeleton fragments in {url}/{sdir}: run `skeleton forge` first")
    dust: list[int] = []
    if sinfo.get("dust_global_threshold"):  # forge --dust-global: labels below it over the whole volume
        dust = sorted(fragments.global_dust(cf, sinfo["dust_global_threshold"]) & set(owners))
        for label in dust:
            owners.pop(label)
    spec = None
    groups: dict[str, dict] = defaultdict(dict)
    if sharded:
        spec = sharding_spec(len(owners), shard_index_bytes, minishard_index_bytes, min_shards, max_labels_per_shard)
        sobj = _spec_object(spec)
        for label in sorted(owners):
            groups[sobj.compute_shard_location(label).shard_number][str(label)] = owners[label]
    else:
        for label in sorted(owners):  # trailing digits spread labels evenly over tasks
            groups[str(label % 10**magnitude)][str(label)] = owners[label]
    attributes = [a["id"] for a in sinfo["vertex_attributes"]]
    options = {"tick_threshold": tick_threshold, "min_cable_length": min_cable_length,
               "max_cable_length": max_cable_length, "attributes": attributes, "spec": spec}

    def tasks() -> Iterator:
        for group in sorted(groups):
            yield partial(skeleton_merge_task, url, sdir, group, options)

    def prepare() -> None:
        cf.puts(((f"{WORKLISTS}/{g}.json", json.dumps(v).encode()) for g, v in groups.items()), compress=None)
        cf.put_json(f"{FILTERED}/dust-global.json", dust)  # so `verify` knows them as dropped, not lost
        new = {k: v for k, v in sinfo.items() if k != "sharding"}
        if spec is not None:
            new["sharding"] = spec
        cf.put_json("info", new)

    details = {"skeleton directory": f"{url}/{sdir}", "labels": len(owners),
               "output": f"sharded ({len(groups)} shards)" if sharded else f"one file per label ({len(groups)} groups)",
               "filters": f"ticks < {tick_threshold}, cable in [{min_cable_length}, {max_cable_length or 'inf'}]"}
    return Plan("skeleton merge" + ("-sharded" if sharded else ""), len(groups), tasks, prepare, details)


@queueable
def skeleton_merge_task(layer: str, skel_dir: str, group: str, options: dict) -> None:
    """Merge the labels of one worklist; write one file per label, or one whole shard."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{layer}/{skel_dir}")
    worklist = cf.get_json(f"{WORKLISTS}/{group}.json")
    if worklist is None:
        raise UserError(f"worklist {layer}/{skel_dir}/{WORKLISTS}/{group}.json is missing: re-run the planner")
    attributes = options["attributes"]
    out: dict[int, bytes] = {}
    filtered: list[int] = []
    for key in sorted(worklist, key=int):
        label = int(key)
        parts = [skeletons.decode(data, attributes) for data in fragments.fetch_frags(cf, worklist[key])]
        skel = skeletons.merge_fragments(parts, label, attributes, options["tick_threshold"],
                                         options["min_cable_length"])
        # --min-cable-length drops pieces before tick removal (merge_fragments), as Igneous's
        # merge does; what tick removal then trims below it is still the label's skeleton
        length = skeletons.cable_length(skel)
        if len(skel.vertices) == 0 or (options["max_cable_length"] and length > options["max_cable_length"]):
            filtered.append(label)  # no file at all, never an empty skeleton
            continue
        out[label] = skeletons.encode(skel, attributes)
    # what the filters dropped, so `verify` can tell a dropped skeleton from a lost one
    cf.put_json(f"{FILTERED}/{group}.json", filtered)
    if options.get("spec"):
        from cloudvolume.datasource.precomputed.sharding import synthesize_shard_files

        for name, data in synthesize_shard_files(_spec_object(options["spec"]), out).items():
            cf.put(name, data, compress=None)
    else:
        put_many(cf, ((str(label), data) for label, data in out.items()), compress=None)


def plan_skeleton_clean(layer: str, skel_dir: str | None = None) -> Plan:
    """Delete forge fragments and worklists; keep skeletons, shards and the spatial index."""
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    sdir, _ = _skeleton_dir(url, info, skel_dir)

    def tasks() -> Iterator:
        yield partial(skeleton_clean_task, url, sdir)

    return Plan("skeleton clean", 1, tasks, details={"skeleton directory": f"{url}/{sdir}"})


@queueable
def skeleton_clean_task(layer: str, skel_dir: str) -> None:
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{layer}/{skel_dir}")
    cf.delete([n for n in cf.list() if n.endswith((".frags", ".voxels")) or n.startswith(f"{WORKLISTS}/")])
