"""Reading forge fragments back: one file per label per task, or one MapBuffer per task
(`{task}.frags`) read with range requests so a merge fetches only its own labels' bytes."""
from __future__ import annotations

import json
from collections import defaultdict

from igneous_like import meshing


class RangeBuffer:
    """Byte slices of a stored file, fetched with range requests: MapBuffer reads its header,
    index and one value through this without downloading the whole file."""

    def __init__(self, cf, path: str):
        self.cf, self.path = cf, path
        self.size = cf.size(path)
        if self.size is None:
            raise FileNotFoundError(path)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        if not isinstance(key, slice):
            return self[key : key + 1][0]
        start, stop, step = key.indices(self.size)
        if step != 1:
            raise ValueError("RangeBuffer reads contiguous ranges only")
        if stop <= start:
            return b""
        return self.cf.get({"path": self.path, "start": start, "end": stop})


def read_spatial_index(cf) -> dict[str, dict[str, list[int]]]:
    """task name -> {label: bbox} for every .spatial file (read once, by the planner)."""
    names = [n for n in cf.list() if n.endswith(".spatial")]
    out = {}
    for item in cf.get(names):
        if item["content"] is None:
            continue
        out[item["path"][: -len(".spatial")]] = json.loads(item["content"])
    return out


def labels_to_tasks(index: dict[str, dict]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for task in sorted(index):
        for label in index[task]:
            found[int(label)].append(task)
    return found


def fetch(cf, label: int, tasks: list[str], mode: str) -> list[tuple]:
    """Decoded fragments of one label from the forge tasks that hold it (sorted by task)."""
    tasks = sorted(tasks)
    if mode == "frags":
        from mapbuffer import MapBuffer

        blobs = []
        for task in tasks:
            try:
                blobs.append(MapBuffer(RangeBuffer(cf, f"{task}.frags"))[label])
            except KeyError:
                continue
    else:
        got = cf.get([f"{label}:0:{task}" for task in tasks])
        blobs = [g["content"] for g in sorted(got, key=lambda g: g["path"]) if g["content"] is not None]
    return [meshing.decode_legacy(b) for b in blobs]
