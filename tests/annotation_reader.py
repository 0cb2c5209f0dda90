"""A reader of Neuroglancer precomputed annotations written from the spec alone
(google/neuroglancer src/datasource/precomputed/annotations.md), over tensorstore's key-value
stores (plain files, or its `neuroglancer_uint64_sharded` driver). Independent of the writer.

neuroglancer's own Python reader (neuroglancer.read_precomputed_annotations, 2.41) keeps the
info's property order where the spec (and the viewer) group properties by size, and mis-sizes
uint32 properties, so the tests use this one and that one only where both agree."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GEOMETRY = {"POINT": 3, "LINE": 6, "AXIS_ALIGNED_BOUNDING_BOX": 6, "ELLIPSOID": 6}
TYPES = {"uint32": ("<u4", 4), "int32": ("<i4", 4), "float32": ("<f4", 4), "uint16": ("<u2", 2),
         "int16": ("<i2", 2), "uint8": ("u1", 1), "int8": ("i1", 1), "rgb": (("u1", 3), 1), "rgba": (("u1", 4), 1)}


@dataclass
class Annotation:
    id: int
    geometry: np.ndarray
    props: list
    segments: list | None = None


class Index:
    """One uint64 or spatial index: key -> bytes, or KeyError."""

    def __init__(self, root: Path, meta: dict, spatial: bool, decode):
        import tensorstore as ts

        base = {"driver": "file", "path": f"{root}/{meta['key']}/"}
        self.sharded = "sharding" in meta
        spec = {"driver": "neuroglancer_uint64_sharded", "base": base, "metadata": meta["sharding"]} \
            if self.sharded else base
        self.store = ts.KvStore.open(spec).result()
        self.meta, self.spatial, self.decode = meta, spatial, decode

    def key(self, k) -> bytes:
        if self.spatial:
            if self.sharded:
                return struct.pack(">Q", morton(k, self.meta["grid_shape"]))
            return "_".join(str(int(c)) for c in k).encode()
        return struct.pack(">Q", int(k)) if self.sharded else str(int(k)).encode()

    def __getitem__(self, k):
        got = self.store.read(self.key(k)).result()
        if got.state != "value":
            raise KeyError(k)
        return self.decode(bytes(got.value))

    def __contains__(self, k) -> bool:
        try:
            self[k]
        except KeyError:
            return False
        return True


def morton(cell, grid_shape) -> int:
    """Compressed morton code, as the volume spec defines it."""
    code, out = 0, 0
    for bit in range(32):
        for c, size in zip(cell, grid_shape):
            if (size - 1) >> bit:
                code |= ((int(c) >> bit) & 1) << out
                out += 1
    return code


class Reader:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.metadata = json.loads((self.root / "info").read_text())
        m = self.metadata
        assert m["@type"] == "neuroglancer_annotations_v1"
        self.annotation_type = m["annotation_type"]
        self.lower_bound, self.upper_bound = m["lower_bound"], m["upper_bound"]
        self.dtype = self._record_dtype()
        self.by_id = Index(self.root, m["by_id"], False, self._single)
        self.relationships = {r["id"]: Index(self.root, r, False, self._many) for r in m.get("relationships", [])}
        self.spatial = [Index(self.root, s, True, self._many) for s in m["spatial"]]

    def _record_dtype(self) -> np.dtype:
        props = self.metadata.get("properties", [])
        fields = [("geometry", "<f4", (GEOMETRY[self.annotation_type],))]
        for size in (4, 2, 1):  # the spec's order: by size, then as listed
            for i, p in enumerate(props):
                t, s = TYPES[p["type"]]
                if s == size:
                    fields.append((f"p{i}", *t) if isinstance(t, tuple) else (f"p{i}", t))
        n = np.dtype(fields).itemsize
        if n % 4:
            fields.append(("pad", "u1", (4 - n % 4,)))
        return np.dtype(fields)

    def _annotation(self, rec, aid: int) -> Annotation:
        n = len(self.metadata.get("properties", []))
        return Annotation(aid, np.array(rec["geometry"]), [rec[f"p{i}"] for i in range(n)])

    def _single(self, data: bytes) -> Annotation:
        rec = np.frombuffer(data, self.dtype, count=1)[0]
        assert "pad" not in self.dtype.names or not rec["pad"].any(), "padding must be zero"
        out = self._annotation(rec, -1)
        pos, out.segments = self.dtype.itemsize, []
        for _ in self.relationships:
            (count,) = struct.unpack_from("<I", data, pos)
            out.segments.append(np.frombuffer(data, "<u8", count=count, offset=pos + 4).tolist())
            pos += 4 + 8 * count
        assert pos == len(data), "trailing bytes after the relationships"
        return out

    def _many(self, data: bytes) -> list[Annotation]:
        (count,) = struct.unpack_from("<Q", data, 0)
        recs = np.frombuffer(data, self.dtype, count=count, offset=8)
        ids = np.frombuffer(data, "<u8", count=count, offset=8 + count * self.dtype.itemsize)
        assert 8 + count * (self.dtype.itemsize + 8) == len(data)
        return [self._annotation(r, int(i)) for r, i in zip(recs, ids)]
