"""Reading forge fragments back: one file per label per task, or one MapBuffer per task
(`{task}.frags`) read with range requests so a merge fetches only its own labels' bytes."""
from __future__ import annotations

import json
from collections import defaultdict

from igneous_like import meshing
from igneous_like.storage import get_many


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
    for item in get_many(cf, names):
        if item["content"] is None:
            continue
        out[item["path"][: -len(".spatial")]] = json.loads(item["content"])
    return out


def global_dust(cf, threshold: int) -> set[int]:
    """Labels whose voxel count over the whole volume (summed from the forge tasks' .voxels
    files, read once by the planner) is below the threshold."""
    import json

    totals: dict[int, int] = defaultdict(int)
    names = [n for n in cf.list() if n.endswith(".voxels")]
    for item in get_many(cf, names):
        for label, count in json.loads(item["content"]).items():
            totals[int(label)] += count
    return {label for label, count in totals.items() if count < threshold}


def labels_to_tasks(index: dict[str, dict]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for task in sorted(index):
        for label in index[task]:
            found[int(label)].append(task)
    return found


def frags_ranges(cf, tasks: list[str]) -> dict[int, list[list]]:
    """label -> [[task, start, end], ...]: where each label's value sits in the per-task .frags
    MapBuffers. Read once by the planner (one header + index range read per task), so merge
    tasks fetch exactly their labels' bytes and never an index."""
    from mapbuffer import MapBuffer

    found: dict[int, list[list]] = defaultdict(list)
    for task in sorted(tasks):
        buf = RangeBuffer(cf, f"{task}.frags")
        index = MapBuffer(buf).index()
        offsets = [int(o) for o in index[:, 1]] + [len(buf)]
        for i, label in enumerate(index[:, 0]):
            found[int(label)].append([task, offsets[i], offsets[i + 1]])
    return found


def _strip_crc(blob: bytes, where: str) -> bytes:
    """MapBuffer (format 1) appends a crc32c to every value."""
    import crc32c

    value, stored = blob[:-4], int.from_bytes(blob[-4:], "little")
    if crc32c.crc32c(value) != stored:
        raise ValueError(f"corrupt fragment in {where}: crc32c mismatch")
    return value


def fetch_frags(cf, sources: list) -> list[bytes]:
    """Values at [task, start, end] byte ranges of .frags files, crc-checked, in task order."""
    requests = [{"path": f"{t}.frags", "start": a, "end": b} for t, a, b in sorted(sources)]
    return [_strip_crc(g["content"], g["path"]) for g in get_many(cf, requests)]


def fetch(cf, label: int, sources: list, mode: str) -> list[tuple]:
    """Decoded fragments of one label: `sources` are forge task names (one file per label per
    task) or [task, start, end] byte ranges into .frags files."""
    if mode == "frags":
        blobs = fetch_frags(cf, sources)
    else:
        got = get_many(cf, [f"{label}:0:{task}" for task in sorted(sources)])
        blobs = [g["content"] for g in got if g["content"] is not None]
    return [meshing.decode_legacy(b) for b in blobs]
