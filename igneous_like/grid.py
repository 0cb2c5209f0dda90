"""Bounding boxes and task grids: plain integer geometry, no I/O, no heavy imports."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

Vec3 = tuple[int, int, int]


def vec3(values: Sequence[float]) -> Vec3:
    x, y, z = (int(v) for v in values)
    return (x, y, z)


@dataclass(frozen=True)
class Box:
    """Half-open box [start, stop) in voxels of one mip."""

    start: Vec3
    stop: Vec3

    @classmethod
    def from_list(cls, values: Sequence[int]) -> "Box":
        return cls(vec3(values[:3]), vec3(values[3:]))

    def to_list(self) -> list[int]:
        return [*self.start, *self.stop]

    @property
    def shape(self) -> Vec3:
        return vec3(max(b - a, 0) for a, b in zip(self.start, self.stop))

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    def empty(self) -> bool:
        return self.voxels == 0

    def intersect(self, other: "Box") -> "Box":
        start = vec3(max(a, b) for a, b in zip(self.start, other.start))
        stop = vec3(min(a, b) for a, b in zip(self.stop, other.stop))
        return Box(start, vec3(max(s, e) for s, e in zip(start, stop)))

    def contains(self, other: "Box") -> bool:
        return all(a <= b for a, b in zip(self.start, other.start)) and all(
            a >= b for a, b in zip(self.stop, other.stop)
        )

    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    def __str__(self) -> str:
        return "{},{},{}-{},{},{}".format(*self.start, *self.stop)


def grid_count(bounds: Box, shape: Vec3, origin: Vec3) -> int:
    """Number of grid cells (anchored at origin) that overlap bounds."""
    n = 1
    for a, b, s, o in zip(bounds.start, bounds.stop, shape, origin):
        first = (a - o) // s
        last = -((o - b) // s)  # ceil((b - o) / s)
        n *= max(last - first, 0)
    return n


def grid_boxes(bounds: Box, shape: Vec3, origin: Vec3) -> Iterator[Box]:
    """Lazily yield the cells of a grid anchored at origin, clipped to bounds (x fastest)."""
    axes = []
    for a, b, s, o in zip(bounds.start, bounds.stop, shape, origin):
        first = o + ((a - o) // s) * s
        axes.append([(max(c, a), min(c + s, b)) for c in range(first, b, s)])
    for z0, z1 in axes[2]:
        for y0, y1 in axes[1]:
            for x0, x1 in axes[0]:
                yield Box((x0, y0, z0), (x1, y1, z1))


def expand_to_grid(box: Box, shape: Vec3, origin: Vec3, limit: Box) -> Box:
    """Grow box outward to grid lines (anchored at origin), never past limit."""
    start = vec3(o + ((a - o) // s) * s for a, s, o in zip(box.start, shape, origin))
    stop = vec3(o - ((o - b) // s) * s for b, s, o in zip(box.stop, shape, origin))
    return Box(start, stop).intersect(limit)


def downsampled(box: Box, factor: Vec3, levels: int, origin: Vec3, new_origin: Vec3) -> Box:
    """The box at `levels` mips up: offsets from origin divide (floor start, ceil stop)."""
    f = [fa**levels for fa in factor]
    start = vec3(no + (a - o) // fi for a, o, no, fi in zip(box.start, origin, new_origin, f))
    stop = vec3(no - ((o - b) // fi) for b, o, no, fi in zip(box.stop, origin, new_origin, f))
    return Box(start, stop)


def lcm3(*vectors: Sequence[int]) -> Vec3:
    return vec3(math.lcm(*(int(v[i]) for v in vectors)) for i in range(3))


def mips_to_top(size: Vec3, chunk: Vec3, factor: Vec3) -> int:
    """Mips needed until every axis that is downsampled fits inside one chunk (at least 1)."""
    levels = 1
    shape = list(size)
    while True:
        shape = [-(-s // f) for s, f in zip(shape, factor)]
        done = all(s <= c or f == 1 for s, c, f in zip(shape, chunk, factor))
        if done or levels >= 32:
            return levels
        levels += 1


def parse_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    a, b = (int(v) for v in str(text).split(","))
    return a, b
