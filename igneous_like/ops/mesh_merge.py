"""mesh merge: weld each label's forge fragments into one mesh (legacy single-resolution).

Work is split by the decimal prefix of the label (--magnitude), so a task lists and reads only
the fragments of its own labels: the bytes a merge pass reads grow linearly with the volume.
"""
from __future__ import annotations

import re
from collections import defaultdict
from functools import partial
from typing import Iterator

from taskqueue import queueable

from igneous_like import layers, meshing
from igneous_like.errors import UserError
from igneous_like.plan import Plan

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
    return info


def plan_mesh_merge(layer: str, mesh_dir: str | None = None, magnitude: int = 2) -> Plan:
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    mdir = meshing.mesh_dir_of(info, mesh_dir, 0)
    minfo = read_mesh_info(url, mdir)
    if minfo.get("@type") != meshing.LEGACY_TYPE:
        raise UserError(f"{url}/{mdir} holds {minfo.get('@type')} meshes; mesh merge reads forge fragments")
    if minfo.get("fragments") == "frags":
        raise UserError("these fragments were forged with --sharded: use `mesh merge-sharded`")
    if not 1 <= magnitude <= 6:
        raise UserError(f"--magnitude must be between 1 and 6, got {magnitude}")
    prefixes = list(label_prefixes(magnitude))

    def tasks() -> Iterator:
        for prefix in prefixes:
            yield partial(mesh_merge_task, url, mdir, prefix)

    details = {"mesh directory": f"{url}/{mdir}", "label prefixes": f"{len(prefixes)} (magnitude {magnitude})",
               "output": "{label}:0 manifest + {label}:0:merged (welded mesh)"}
    return Plan("mesh merge", len(prefixes), tasks, details=details)


@queueable
def mesh_merge_task(layer: str, mesh_dir: str, prefix: str) -> None:
    """Weld the fragments of every label whose name starts with `prefix`."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{layer}/{mesh_dir}")
    groups: dict[int, list[str]] = defaultdict(list)
    for name in cf.list(prefix=prefix):
        match = FRAGMENT.match(name)
        if match and match.group(2) != meshing.MERGED:
            groups[int(match.group(1))].append(name)
    for label in sorted(groups):
        names = sorted(groups[label])
        blobs = cf.get(names)
        parts = [meshing.decode_legacy(b["content"]) for b in sorted(blobs, key=lambda b: b["path"])]
        verts, faces = meshing.stitch(parts)
        merged = f"{label}:0:{meshing.MERGED}"
        cf.put(merged, meshing.encode_legacy(verts, faces), compress=None)
        cf.put(f"{label}:0", meshing.manifest(label, [merged]), compress=None, content_type="application/json")


def plan_mesh_clean(layer: str, mesh_dir: str | None = None, magnitude: int = 1) -> Plan:
    """Delete forge fragments (one file per label per task, or per-task .frags); keep merged
    meshes, manifests and the spatial index."""
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    mdir = meshing.mesh_dir_of(info, mesh_dir, 0)
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
        doomed = [n for n in cf.list() if n.endswith(".frags")]
    else:
        doomed = [n for n in cf.list(prefix=prefix)
                  if (m := FRAGMENT.match(n)) and m.group(2) != meshing.MERGED]
    cf.delete(doomed)


def plan_mesh_rm(layer: str, mesh_dir: str | None = None) -> Plan:
    """Delete the whole mesh directory and the info's pointer to it."""
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    mdir = meshing.mesh_dir_of(info, mesh_dir, 0)

    def tasks() -> Iterator:
        yield partial(mesh_rm_task, url, mdir)

    def prepare() -> None:
        if info.get("mesh") == mdir:
            layers.write_info(url, {k: v for k, v in info.items() if k != "mesh"})

    return Plan("mesh rm", 1, tasks, prepare, details={"mesh directory": f"{url}/{mdir}"})


@queueable
def mesh_rm_task(layer: str, mesh_dir: str) -> None:
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{layer}/{mesh_dir}")
    cf.delete(list(cf.list()))
