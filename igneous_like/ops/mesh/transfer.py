"""mesh xfer: copy meshes to another layer, converting unsharded to sharded (multires Draco)
and sharded back to unsharded multires (which restores per-label random write access).

Source kinds: legacy single-resolution (`{label}:0` manifests), unsharded multires
(`{label}.index` + `{label}`), sharded multires (`*.shard`). Unsharded multires values move
into shards unchanged; legacy meshes are welded and built into levels of detail on the way.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import layers, meshing, multires
from igneous_like.errors import UserError
from igneous_like.ops.mesh.merge import check_merge_options, label_prefixes
from igneous_like.ops.mesh.merge_sharded import WORKLISTS, _spec_object, sharding_spec
from igneous_like.plan import Plan
from igneous_like.storage import get_many

MANIFEST = re.compile(r"^(\d+):0$")
INDEX = re.compile(r"^(\d+)\.index$")


def mesh_kind(minfo: dict | None) -> str:
    if minfo is None or minfo.get("@type", meshing.LEGACY_TYPE) == meshing.LEGACY_TYPE:
        return "legacy"
    return "sharded" if minfo.get("sharding") else "multires"


def _mesh_resolution(info: dict, minfo: dict | None) -> list:
    if minfo and "spatial_index" in minfo:
        return minfo["spatial_index"]["resolution"]
    if minfo and "transform" in minfo:
        t = minfo["transform"]
        return [t[0], t[5], t[10]]
    return info["scales"][(minfo or {}).get("mip", 0)]["resolution"]


def plan_mesh_xfer(
    src: str, dest: str, sharded: bool = False, mesh_dir: str | None = None, magnitude: int = 2,
    nlod: int = 0, vqb: int = 16, shard_index_bytes: int = 2**13, minishard_index_bytes: int = 2**15,
    min_shards: int = 1, max_labels_per_shard: int | None = None,
) -> Plan:
    from cloudfiles import CloudFiles

    src_url, dest_url = layers.normalize_url(src), layers.normalize_url(dest)
    if src_url == dest_url:
        raise UserError("SRC and DEST are the same layer")
    check_merge_options(nlod, vqb)
    info = layers.read_info(src_url)
    src_dir = info.get("mesh")
    if not src_dir:
        raise UserError(f"{src_url} has no meshes (its info names no mesh directory)")
    src_cf = CloudFiles(f"{src_url}/{src_dir}")
    minfo = src_cf.get_json("info")
    kind = mesh_kind(minfo)
    layers.check_writable(dest_url)
    dest_info = layers.read_info(dest_url) if CloudFiles(dest_url).exists("info") else dict(info)
    dest_dir = mesh_dir or dest_info.get("mesh") or src_dir
    resolution = _mesh_resolution(info, minfo)
    dest_prefix = f"{dest_url}/{dest_dir}"

    def write_infos(mesh_info: dict) -> None:
        layers.write_info(dest_url, {**dest_info, "mesh": dest_dir})
        CloudFiles(dest_prefix).put_json("info", mesh_info)

    if sharded and kind == "sharded" or not sharded and kind != "sharded":
        names = [n for n in src_cf.list() if n.endswith(".shard")] if kind == "sharded" else None
        prefixes = ["shards"] if kind == "sharded" else list(label_prefixes(magnitude))

        def tasks() -> Iterator:
            for prefix in prefixes:
                yield partial(mesh_copy_task, f"{src_url}/{src_dir}", dest_prefix, prefix)

        return Plan("mesh xfer", len(prefixes), tasks, lambda: write_infos(minfo or {"@type": meshing.LEGACY_TYPE}),
                    {"mode": f"byte copy of {kind} meshes", "from": f"{src_url}/{src_dir}", "to": dest_prefix,
                     "files": "shard files" if names is not None else f"{len(prefixes)} label prefixes"})

    if not sharded:  # sharded -> unsharded multires
        shards = sorted(n for n in src_cf.list() if n.endswith(".shard"))

        def tasks() -> Iterator:
            for name in shards:
                yield partial(mesh_unshard_task, f"{src_url}/{src_dir}", dest_prefix, name, minfo["sharding"])

        unsharded_info = {k: v for k, v in minfo.items() if k != "sharding"}
        return Plan("mesh xfer", len(shards), tasks, lambda: write_infos(unsharded_info),
                    {"mode": "sharded -> unsharded multires", "shards": len(shards), "to": dest_prefix})

    pattern = MANIFEST if kind == "legacy" else INDEX
    labels = sorted(int(m.group(1)) for n in src_cf.list() if (m := pattern.match(n)))
    if not labels:
        raise UserError(f"no meshes found in {src_url}/{src_dir} (run mesh merge first)")
    spec = sharding_spec(len(labels), shard_index_bytes, minishard_index_bytes, min_shards, max_labels_per_shard)
    sobj = _spec_object(spec)
    groups: dict[str, list[int]] = defaultdict(list)
    for label in labels:
        groups[sobj.compute_shard_location(label).shard_number].append(label)
    options = {"kind": kind, "nlod": nlod, "vqb": vqb, "resolution": resolution}

    def tasks() -> Iterator:
        for shard in sorted(groups):
            yield partial(mesh_shard_task, f"{src_url}/{src_dir}", dest_prefix, shard, spec, options)

    def prepare() -> None:
        CloudFiles(dest_prefix).puts(
            ((f"{WORKLISTS}/{s}.json", json.dumps(ls).encode()) for s, ls in groups.items()), compress=None)
        base = minfo if kind == "multires" else {}
        vq = minfo.get("vertex_quantization_bits", vqb) if kind == "multires" else vqb
        write_infos(multires.multires_info(resolution, vq, base, sharding=spec))

    return Plan("mesh xfer", len(groups), tasks, prepare,
                {"mode": f"{kind} -> sharded multires", "labels": len(labels), "shards": len(groups), "to": dest_prefix})


@queueable
def mesh_copy_task(src_prefix: str, dest_prefix: str, prefix: str) -> None:
    """Copy mesh files byte for byte: one label prefix, or all shard files."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(src_prefix)
    if prefix == "shards":
        names = [n for n in cf.list() if n.endswith(".shard")]
    else:
        names = [n for n in cf.list(prefix=prefix) if n[: len(prefix)] == prefix]
    cf.transfer_to(CloudFiles(dest_prefix), paths=names, allow_missing=True)


@queueable
def mesh_unshard_task(src_prefix: str, dest_prefix: str, shard_name: str, spec: dict) -> None:
    """Split one shard into `{label}.index` + `{label}` files."""
    from cloudfiles import CloudFiles
    from cloudvolume.datasource.precomputed.sharding import ShardReader

    cf = CloudFiles(src_prefix)
    reader = ShardReader(None, None, _spec_object(spec))
    values, manifest_sizes = reader.disassemble_multires_mesh_shard(cf.get(shard_name))
    out = CloudFiles(dest_prefix)
    for label in sorted(values):
        value, size = values[label], manifest_sizes[label]
        out.put(str(label), value[: len(value) - size], compress=None)
        out.put(f"{label}.index", value[len(value) - size :], compress=None)


def _legacy_mesh(cf, label: int) -> tuple[np.ndarray, np.ndarray]:
    manifest = cf.get_json(f"{label}:0")
    parts = [meshing.decode_legacy(g["content"]) for g in get_many(cf, sorted(manifest["fragments"])) if g["content"]]
    return meshing.stitch(parts, forged=False)  # any tool's legacy meshes


@queueable
def mesh_shard_task(src_prefix: str, dest_prefix: str, shard: str, spec: dict, options: dict) -> None:
    """Write one whole shard of multires meshes from unsharded sources."""
    from cloudfiles import CloudFiles
    from cloudvolume.datasource.precomputed.sharding import synthesize_shard_files

    cf, out = CloudFiles(src_prefix), CloudFiles(dest_prefix)
    labels = out.get_json(f"{WORKLISTS}/{shard}.json")
    res = np.asarray(options["resolution"], dtype=np.float32)
    values, sizes = {}, {}
    for label in labels:
        if options["kind"] == "multires":
            manifest, data = cf.get(f"{label}.index"), cf.get(str(label))
        else:
            verts, faces = _legacy_mesh(cf, label)
            if len(faces) == 0:
                continue
            built = multires.build(verts / res, faces, options["nlod"], options["vqb"])
            manifest, data = built.manifest, built.fragments
        values[label] = data + manifest
        sizes[label] = len(manifest)
    for name, blob in synthesize_shard_files(_spec_object(spec), values, sizes).items():
        out.put(name, blob, compress=None)
