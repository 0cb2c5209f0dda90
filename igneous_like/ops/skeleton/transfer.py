"""skeleton xfer (unsharded <-> sharded, or a plain copy) and skeleton convert (to SWC)."""
from __future__ import annotations

import json
import os
from collections import defaultdict
from functools import partial
from typing import Iterator

from taskqueue import queueable

from igneous_like import layers
from igneous_like.errors import UserError
from igneous_like.ops.mesh.merge_sharded import WORKLISTS, _spec_object, sharding_spec
from igneous_like.plan import Plan
from igneous_like.storage import get_many, put_many


def _source(src: str) -> tuple[str, dict, str, dict]:
    from cloudfiles import CloudFiles

    url = layers.normalize_url(src)
    info = layers.read_info(url)
    sdir = info.get("skeletons")
    if not sdir:
        raise UserError(f"{url} has no skeletons (its info names no skeleton directory)")
    sinfo = CloudFiles(f"{url}/{sdir}").get_json("info")
    if sinfo is None:
        raise UserError(f"{url}/{sdir}/info is missing")
    return url, info, sdir, sinfo


def plan_skeleton_xfer(src: str, dest: str, sharded: bool = False, skel_dir: str | None = None, magnitude: int = 2,
                       min_shards: int = 1, max_labels_per_shard: int | None = None) -> Plan:
    from cloudfiles import CloudFiles

    src_url, info, sdir, sinfo = _source(src)
    dest_url = layers.normalize_url(dest)
    if dest_url == src_url:
        raise UserError("SRC and DEST are the same layer")
    layers.check_writable(dest_url)
    dest_info = layers.read_info(dest_url) if CloudFiles(dest_url).exists("info") else dict(info)
    ddir = skel_dir or dest_info.get("skeletons") or sdir
    src_prefix, dest_prefix = f"{src_url}/{sdir}", f"{dest_url}/{ddir}"
    cf = CloudFiles(src_prefix)
    src_sharded = bool(sinfo.get("sharding"))
    base_info = {k: v for k, v in sinfo.items() if k not in ("sharding", "fragments")}

    def write_infos(new_skel_info: dict) -> None:
        layers.write_info(dest_url, {**dest_info, "skeletons": ddir})
        CloudFiles(dest_prefix).put_json("info", new_skel_info)

    if src_sharded and not sharded:
        shards = sorted(n for n in cf.list() if n.endswith(".shard"))

        def tasks() -> Iterator:
            for name in shards:
                yield partial(skeleton_unshard_task, src_prefix, dest_prefix, name, sinfo["sharding"])

        return Plan("skeleton xfer", len(shards), tasks, lambda: write_infos(base_info),
                    {"mode": "sharded -> one file per label", "shards": len(shards), "to": dest_prefix})
    if src_sharded == sharded:
        groups = ["shards"] if src_sharded else [str(n) for n in range(10**magnitude)]

        def tasks() -> Iterator:
            for group in groups:
                yield partial(skeleton_copy_task, src_prefix, dest_prefix, group, magnitude)

        return Plan("skeleton xfer", len(groups), tasks, lambda: write_infos(sinfo),
                    {"mode": "byte copy", "to": dest_prefix})
    labels = sorted(int(n) for n in cf.list() if n.isdigit())
    if not labels:
        raise UserError(f"no skeletons in {src_prefix} (run skeleton merge first)")
    spec = sharding_spec(len(labels), 2**13, 2**15, min_shards, max_labels_per_shard)
    sobj = _spec_object(spec)
    by_shard: dict[str, list[int]] = defaultdict(list)
    for label in labels:
        by_shard[sobj.compute_shard_location(label).shard_number].append(label)

    def tasks() -> Iterator:
        for shard in sorted(by_shard):
            yield partial(skeleton_shard_task, src_prefix, dest_prefix, shard, spec)

    def prepare() -> None:
        put_many(CloudFiles(dest_prefix), ((f"{WORKLISTS}/{s}.json", json.dumps(v).encode()) for s, v in by_shard.items()),
                 compress=None)
        write_infos({**base_info, "sharding": spec})

    return Plan("skeleton xfer", len(by_shard), tasks, prepare,
                {"mode": "one file per label -> sharded", "labels": len(labels), "shards": len(by_shard)})


@queueable
def skeleton_copy_task(src_prefix: str, dest_prefix: str, group: str, magnitude: int) -> None:
    from cloudfiles import CloudFiles

    cf = CloudFiles(src_prefix)
    if group == "shards":
        names = [n for n in cf.list() if n.endswith(".shard")]
    else:
        names = [n for n in cf.list() if n.isdigit() and int(n) % 10**magnitude == int(group)]
    cf.transfer_to(CloudFiles(dest_prefix), paths=names, allow_missing=True)


@queueable
def skeleton_unshard_task(src_prefix: str, dest_prefix: str, shard_name: str, spec: dict) -> None:
    from cloudfiles import CloudFiles
    from cloudvolume.datasource.precomputed.sharding import ShardReader

    values = ShardReader(None, None, _spec_object(spec)).disassemble_shard(CloudFiles(src_prefix).get(shard_name))
    put_many(CloudFiles(dest_prefix), ((str(label), values[label]) for label in sorted(values)), compress=None)


@queueable
def skeleton_shard_task(src_prefix: str, dest_prefix: str, shard: str, spec: dict) -> None:
    from cloudfiles import CloudFiles
    from cloudvolume.datasource.precomputed.sharding import synthesize_shard_files

    out = CloudFiles(dest_prefix)
    labels = out.get_json(f"{WORKLISTS}/{shard}.json")
    got = get_many(CloudFiles(src_prefix), [str(label) for label in labels])
    values = {int(g["path"]): g["content"] for g in got if g["content"] is not None}
    for name, data in synthesize_shard_files(_spec_object(spec), values).items():
        out.put(name, data, compress=None)


def convert_to_swc(src: str, dest: str, labels: list[int] | None) -> int:
    """Write LABEL.swc files into the local directory DEST; returns how many were written."""
    from cloudvolume import CloudVolume

    url, _, sdir, sinfo = _source(src)
    from igneous_like.urls import volume_path

    vol = CloudVolume(volume_path(url), progress=False)
    if labels is None:
        if sinfo.get("sharding"):
            raise UserError("name the LABELS to convert from sharded skeletons (shards cannot be listed by label)")
        from cloudfiles import CloudFiles

        labels = sorted(int(n) for n in CloudFiles(f"{url}/{sdir}").list() if n.isdigit())
    out = dest[len("file://"):] if dest.startswith("file://") else dest
    os.makedirs(out, exist_ok=True)
    written = 0
    for label in labels:
        try:
            sk = vol.skeleton.get(int(label))
        except Exception as exc:
            raise UserError(f"no skeleton for label {label} in {url}/{sdir}: {type(exc).__name__}") from None
        with open(os.path.join(out, f"{label}.swc"), "w") as f:
            f.write(sk.to_swc())
        written += 1
    return written
