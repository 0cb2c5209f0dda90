"""verify: check a finished job. Every expected chunk (or shard) of every scale exists and
decodes; every label the mesh and skeleton spatial indexes name has its mesh and skeleton
(skeletons the merge filters dropped excepted). Prints each missing or broken file."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import numpy as np

from igneous_like import layers


@dataclass
class Report:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    def bad(self, what: str) -> None:
        self.problems.append(what)


def verify_layer(layer: str, decode: bool = True) -> Report:
    from cloudfiles import CloudFiles

    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    report = Report()
    cf = CloudFiles(url)
    for mip in range(len(info["scales"])):
        _check_scale(cf, url, info, mip, decode, report)
    if info.get("mesh"):
        _check_meshes(CloudFiles(f"{url}/{info['mesh']}"), f"{url}/{info['mesh']}", report,
                      lambda: _cloudvolume(url).mesh)
    if info.get("skeletons"):
        _check_skeletons(CloudFiles(f"{url}/{info['skeletons']}"), f"{url}/{info['skeletons']}", report,
                         lambda: _cloudvolume(url).skeleton)
    return report


def _cloudvolume(url: str):
    from cloudvolume import CloudVolume

    from igneous_like.urls import volume_path

    return CloudVolume(volume_path(url), progress=False)


def _missing_in_shards(source, subdir: str, labels: set[int]) -> list[int]:
    """Labels that no shard holds (cloud-volume's shard reader looks them up by hash)."""
    if not labels:
        return []
    found = source.reader.exists(sorted(labels), path=subdir)
    return sorted(label for label, loc in found.items() if not loc)


def _check_scale(cf, url: str, info: dict, mip: int, decode: bool, report: Report) -> None:
    from cloudvolume.lib import Bbox

    from igneous_like.volume_io import find_bad_chunk, open_volume

    scale = info["scales"][mip]
    key = scale["key"]
    bounds = layers.scale_bounds(info, mip)
    present = set(cf.list(prefix=f"{key}/"))
    if layers.is_sharded(info, mip):
        vol = open_volume(url, info, mip)
        _, codes = vol.image.morton_codes(Bbox(bounds.start, bounds.stop), mip=mip, same_shard=False)
        reader = vol.image.shard_reader(mip=mip)
        expected = sorted({f"{key}/{reader.get_filename(int(c))}" for c in codes})
    else:
        expected = list(layers.chunk_names(key, bounds, bounds, layers.scale_chunk(info, mip)))
        present |= {p.rsplit(".", 1)[0] for p in present if p.endswith((".gz", ".br", ".zstd"))}
    missing = [name for name in expected if name not in present]
    for name in missing:
        report.bad(f"missing: {url}/{name} (mip {mip})")
    report.checked += len(expected)
    if decode and not missing:
        try:
            vol = open_volume(url, info, mip, fill_missing=False)
            vol.download(Bbox(bounds.start, bounds.stop), mip=mip)
        except Exception as exc:
            bad = None if layers.is_sharded(info, mip) else find_bad_chunk(url, info, mip, bounds)
            report.bad(f"corrupt: {bad or f'{url}/{key}'} (mip {mip}): {type(exc).__name__}")


def _index_labels(cf) -> set[int]:
    labels: set[int] = set()
    for name in cf.list():
        if name.endswith(".spatial"):
            labels |= {int(k) for k in json.loads(cf.get(name))}
    return labels


def _check_meshes(cf, where: str, report: Report, source) -> None:
    minfo = cf.get_json("info") or {}
    labels = _index_labels(cf)
    if minfo.get("dust_global_threshold"):
        from igneous_like.fragments import global_dust

        labels -= global_dust(cf, minfo["dust_global_threshold"])
    kind = minfo.get("@type", "neuroglancer_legacy_mesh")
    for label in sorted(labels):
        report.checked += 1
        if minfo.get("sharding"):
            continue  # checked in bulk below
        if kind == "neuroglancer_legacy_mesh":
            manifest = cf.get(f"{label}:0")
            if manifest is None:
                report.bad(f"missing mesh: {where}/{label}:0")
                continue
            for frag in json.loads(manifest)["fragments"]:
                if not cf.exists(frag):
                    report.bad(f"missing mesh fragment: {where}/{frag}")
        else:
            index, data = cf.get(f"{label}.index"), cf.get(str(label))
            if index is None or data is None:
                report.bad(f"missing mesh: {where}/{label}{'' if data is None else '.index'}")
            elif _manifest_data_size(index) != len(data):
                report.bad(f"corrupt mesh: {where}/{label} (size disagrees with {label}.index)")
    if minfo.get("sharding"):
        for label in _missing_in_shards(source(), where.rsplit("/", 1)[1], labels):
            report.bad(f"missing mesh in shards: label {label} in {where}")


def _manifest_data_size(index: bytes) -> int:
    (num_lods,) = struct.unpack_from("<I", index, 24)
    off = 28 + 4 * num_lods + 12 * num_lods
    counts = np.frombuffer(index, "<u4", num_lods, off)
    off += 4 * num_lods
    total = 0
    for n in counts:
        off += 12 * int(n)
        total += int(np.frombuffer(index, "<u4", int(n), off).sum())
        off += 4 * int(n)
    return total


def _check_skeletons(cf, where: str, report: Report, source) -> None:
    from igneous_like.ops.skeleton.merge import FILTERED

    sinfo = cf.get_json("info") or {}
    labels = _index_labels(cf)
    for name in cf.list(prefix=f"{FILTERED}/"):
        labels -= set(json.loads(cf.get(name)))
    if sinfo.get("sharding"):
        missing = _missing_in_shards(source(), where.rsplit("/", 1)[1], labels)
    else:
        present = {n for n in cf.list() if n.isdigit()}
        missing = [label for label in sorted(labels) if str(label) not in present]
    report.checked += len(labels)
    for label in missing:
        report.bad(f"missing skeleton: label {label} in {where}")
