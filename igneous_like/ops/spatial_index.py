"""spatial-index create / db, for meshes and skeletons.

`create` rewrites each forge task's `{task}.spatial` ({label: bbox in physical units}) from the
fragments that task wrote, without meshing or skeletonizing again: one queue task per forge
task, the same bytes the forge writes. `db` loads every `.spatial` file (and, for `.frags`
fragments, each label's byte range, read from the files' indexes) into a SQL database, so merge
planners can read one table instead of listing and opening every forge output.
"""
from __future__ import annotations

import json
import math
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import fragments, layers, meshing, skeletons, spatial_db
from igneous_like.errors import UserError
from igneous_like.plan import Plan
from igneous_like.progress import Progress

KINDS = {"mesh": "meshes", "skeletons": "skeletons"}


def object_dir(layer: str, kind: str, override: str | None) -> tuple[str, str, dict]:
    """(layer URL, directory name, its info) of a layer's meshes or skeletons."""
    from cloudfiles import CloudFiles

    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    name = override or info.get(kind) or kind
    dinfo = CloudFiles(url).get_json(f"{name}/info")
    if dinfo is None:
        raise UserError(f"no {KINDS[kind]} at {url}/{name}: run `{'mesh' if kind == 'mesh' else 'skeleton'} forge` first")
    return url, name, dinfo


def fragment_mode(kind: str, dinfo: dict) -> str:
    """frags (one MapBuffer per forge task) or files (mesh fragments, one per label per task)."""
    return "frags" if kind == "skeletons" else dinfo.get("fragments", "files")


def forge_tasks(cf, mode: str) -> dict[str, list[int]]:
    """Forge task name -> its labels (files mode) or [] (frags mode: the file's own index)."""
    tasks: dict[str, list[int]] = {}
    for name in cf.list(flat=True):
        if mode == "frags" and name.endswith(".frags"):
            tasks.setdefault(name[: -len(".frags")], [])
        elif mode == "files" and name.count(":") == 2:
            label, lod, task = name.split(":")
            if lod == "0" and label.isdigit():
                tasks.setdefault(task, []).append(int(label))
    return tasks


def plan_spatial_index_create(layer: str, kind: str, override: str | None = None) -> Plan:
    from cloudfiles import CloudFiles

    url, name, dinfo = object_dir(layer, kind, override)
    mode = fragment_mode(kind, dinfo)
    tasks_found = forge_tasks(CloudFiles(f"{url}/{name}"), mode)
    if not tasks_found:
        raise UserError(f"no forge fragments in {url}/{name}: nothing to index")
    attributes = [a["id"] for a in dinfo.get("vertex_attributes", [])]

    def tasks() -> Iterator:
        for task in sorted(tasks_found):
            yield partial(spatial_index_task, url, name, kind, mode, task, sorted(tasks_found[task]), attributes)

    details = {"directory": f"{url}/{name}", "forge tasks": len(tasks_found), "fragments": mode}
    return Plan(f"{'mesh' if kind == 'mesh' else 'skeleton'} spatial-index create", len(tasks_found), tasks,
                details=details)


def bbox_of(vertices: np.ndarray) -> list[int]:
    """Integer bounds of float32 vertices: floor of the minimum, ceil of the maximum, as forge."""
    return [int(math.floor(v)) for v in vertices.min(0)] + [int(math.ceil(v)) for v in vertices.max(0)]


def fragment_values(cf, kind: str, mode: str, task: str, labels: list[int]) -> Iterator[tuple[int, bytes]]:
    from mapbuffer import MapBuffer

    if mode == "frags":
        data = cf.get(f"{task}.frags")
        if data is None:
            raise FileNotFoundError(f"{cf.cloudpath}/{task}.frags")
        for label, value in MapBuffer(data).items():  # MapBuffer checks and strips each crc32c
            yield int(label), value
    else:
        for label in labels:
            value = cf.get(f"{label}:0:{task}")
            if value is not None:
                yield label, value


@queueable
def spatial_index_task(layer: str, obj_dir: str, kind: str, mode: str, task: str, labels: list[int],
                       attributes: list[str]) -> None:
    """Write `{task}.spatial` from the fragments one forge task wrote."""
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"{layer}/{obj_dir}")
    bboxes = {}
    for label, value in fragment_values(cf, kind, mode, task, labels):
        if kind == "mesh":
            vertices = meshing.decode_legacy(value)[0]
        else:
            vertices = skeletons.decode(value, attributes).vertices
        if len(vertices):
            bboxes[str(label)] = bbox_of(vertices)
    cf.put(f"{task}.spatial", json.dumps(bboxes, sort_keys=True).encode(), compress=None)


def load_spatial_index_db(layer: str, kind: str, db_url: str, override: str | None = None) -> tuple[str, int, int]:
    """Load a directory's spatial index into the database at db_url: (directory URL, forge
    tasks, label-task rows). Reloading replaces that directory's rows."""
    from cloudfiles import CloudFiles

    url, name, dinfo = object_dir(layer, kind, override)
    spatial_db.connect(db_url).close()  # a bad URL or a missing driver fails before any reading
    directory = f"{url}/{name}"
    cf = CloudFiles(directory)
    mode = fragment_mode(kind, dinfo)
    index = fragments.read_spatial_index(cf)
    ranges = {}
    if mode == "frags":
        with Progress("reading .frags indexes", None) as progress:
            names = sorted(forge_tasks(cf, mode))
            ranges = fragments.frags_ranges(cf, names)
            progress.update(len(names))
    if not index and not ranges:
        raise UserError(f"no spatial index in {directory}: run `spatial-index create` first")
    tasks: dict[str, dict[int, tuple]] = {}
    for task, bboxes in index.items():
        for label, bbox in bboxes.items():
            tasks.setdefault(task, {})[int(label)] = (bbox, None)
    for label, spans in ranges.items():
        for task, start, end in spans:
            bbox = tasks.get(task, {}).get(label, (None, None))[0]
            tasks.setdefault(task, {})[label] = (bbox, (start, end))
    db = spatial_db.connect(db_url)
    try:
        rows = spatial_db.store(db, directory, tasks)
    finally:
        db.close()
    return directory, len(tasks), rows
