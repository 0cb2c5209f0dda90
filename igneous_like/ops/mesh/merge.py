"""mesh merge: weld each label's forge fragments into one mesh, written as legacy
single-resolution (`{label}:0` manifest + `{label}:0:merged`) or, with --nlod N, as
unsharded multi-resolution Draco meshes (`{label}.index` + `{label}`).

Work is split by the decimal prefix of the label (--magnitude), so a task lists and reads only
the fragments of its own labels: the bytes a merge pass reads grow linearly with the volume.
Also here: mesh clean, which acts on the same files.
"""
from __future__ import annotations

import re
from collections import defaultdict
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import layers, meshing, multires
from igneous_like.errors import UserError
from igneous_like.plan import Plan
from igneous_like.storage import get_many

FRAGMENT = re.compile(r"^(\d+):0:(.+)$")


def label_prefixes(magnitude: int) -> Iterator[str]:
    """Prefixes that partition all decimal labels: short labels end in ':', the rest by digits."""
    for digits in range(1, magnitude):
        for n in range(10 ** (digits - 1), 10**digits):
            yield f"{n}:"
    for n in range(10 ** (magnitude - 1), 10**magnitude):
        yield str(n)


def read_mesh_info(url: str, mdir: str) -> dict:
    from cloudfiles import CloudFiles

    info = CloudFiles(url).get_json(f"{mdir}/info")
    if info is None:
        raise UserError(f"no meshes at {url}/{mdir}: run `igneous-like mesh forge` first")
    if "spatial_index" not in info and "fragments" not in info:
        raise UserError(f"{url}/{mdir} has no forge fragments to merge (its info lacks the forge keys)")
    return info


def check_merge_options(nlod: int, vqb: int) -> None:
    if nlod < 0:
        raise UserError(f"--nlod must be 0 or more, got {nlod}")
    if vqb not in (10, 16):
        raise UserError(f"--vqb must be 10 or 16 (the spec allows no other), got {vqb}")


def plan_mesh_merge(layer: str, mesh_dir: str | None = None, magnitude: int = 2, nlod: int = 0,
                    vqb: int = 16, min_chunk_size=multires.DEFAULT_MIN_CHUNK) -> Plan:
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    mdir = meshing.mesh_dir_of(info, mesh_dir)
    minfo = read_mesh_info(url, mdir)
    if minfo.get("fragments") == "frags":
        raise UserError("these fragments were forged with --sharded: use `mesh merge-sharded`")
    if not 1 <= magnitude <= 6:
        raise UserError(f"--magnitude must be between 1 and 6, got {magnitude}")
    check_merge_options(nlod, vqb)
    prefixes = list(label_prefixes(magnitude))
    resolution = minfo["spatial_index"]["resolution"]
    dust: dict[str, list[int]] = defaultdict(list)
    if minfo.get("dust_global_threshold"):
        from cloudfiles import CloudFiles

        from igneous_like.fragments import global_dust

        for label in global_dust(CloudFiles(f"{url}/{mdir}"), minfo["dust_global_threshold"]):
            text = str(label)
            dust[text[:magnitude] if len(text) >= magnitude else f"{text}:"].append(label)

    def tasks() -> Iterator:
        for prefix in prefixes:
            yield partial(mesh_merge_task, url, mdir, prefix, nlod, vqb, list(min_chunk_size), resolution,
                          sorted(dust.get(prefix, [])))

    def prepare() -> None:
        from cloudfiles import CloudFiles

        new = multires.multires_info(resolution, vqb, minfo) if nlod else {**minfo, "@type": meshing.LEGACY_TYPE}
        CloudFiles(url).put_json(f"{mdir}/info", new)

    output = ("{label}.index + {label} (multires Draco, %d extra lods)" % nlod) if nlod else \
        "{label}:0 manifest + {label}:0:merged (welded mesh)"
    details = {"mesh directory": f"{url}/{mdir}", "label prefixes": f"{len(prefixes)} (magnitude {magnitude})",
               "output": output}
    return Plan("mesh merge", len(prefixes), tasks, prepare, details)


def welded(cf, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    parts = [meshing.decode_legacy(g["content"]) for g in get_many(cf, sorted(names))]
    return meshing.stitch(parts)


@queueable
def mesh_merge_task(layer: str, mesh_dir: str, prefix: str, nlod: int = 0, vqb: int = 16,
                    min_chunk_size=multires.DEFAULT_MIN_CHUNK, resolution=None, skip=()) -> None:
    """Weld the fragments of every label whose name starts with `prefix` (but those in skip:
    labels under the global dust threshold)."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{layer}/{mesh_dir}")
    groups: dict[int, list[str]] = defaultdict(list)
    for name in cf.list(prefix=prefix):
        match = FRAGMENT.match(name)
        if match and match.group(2) != meshing.MERGED:
            groups[int(match.group(1))].append(name)
    skip = set(skip)
    for label in sorted(groups):
        if label in skip:
            continue
        verts, faces = welded(cf, groups[label])
        if nlod:
            built = multires.build(verts / np.asarray(resolution, dtype=np.float32), faces, nlod, vqb, min_chunk_size)
            cf.put(str(label), built.fragments, compress=None)
            cf.put(f"{label}.index", built.manifest, compress=None)
        else:
            merged = f"{label}:0:{meshing.MERGED}"
            cf.put(merged, meshing.encode_legacy(verts, faces), compress=None)
            cf.put(f"{label}:0", meshing.manifest([merged]), compress=None, content_type="application/json")


def plan_mesh_clean(layer: str, mesh_dir: str | None = None, magnitude: int = 1) -> Plan:
    """Delete forge fragments (one file per label per task, or per-task .frags) and merge
    worklists; keep merged meshes, manifests, shards and the spatial index."""
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    mdir = meshing.mesh_dir_of(info, mesh_dir)
    read_mesh_info(url, mdir)
    prefixes = list(label_prefixes(magnitude)) + ["frags"]

    def tasks() -> Iterator:
        for prefix in prefixes:
            yield partial(mesh_clean_task, url, mdir, prefix)

    return Plan("mesh clean", len(prefixes), tasks, details={"mesh directory": f"{url}/{mdir}"})


@queueable
def mesh_clean_task(layer: str, mesh_dir: str, prefix: str) -> None:
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{layer}/{mesh_dir}")
    if prefix == "frags":
        doomed = [n for n in cf.list() if n.endswith(".frags") or n.startswith("merge-plan/")]
    else:
        doomed = [n for n in cf.list(prefix=prefix)
                  if (m := FRAGMENT.match(n)) and m.group(2) != meshing.MERGED]
    cf.delete(doomed)
