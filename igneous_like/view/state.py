"""Neuroglancer viewer state for Precomputed layers: each layer's type from its info, the
view centred on the data (or at --pos), chosen segments selected."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from igneous_like import layers
from igneous_like.errors import UserError

ANNOTATIONS_TYPE = "neuroglancer_annotations_v1"


@dataclass(frozen=True)
class LayerSpec:
    """One layer to show: its storage URL, its info and the name it gets in the viewer."""

    url: str
    info: dict
    name: str

    @property
    def kind(self) -> str:
        """image, segmentation or annotation: the Neuroglancer layer type."""
        return "annotation" if self.info.get("@type") == ANNOTATIONS_TYPE else self.info["type"]


def read_layer(path: str) -> LayerSpec:
    """A layer's URL and info; a one-line error when it is not a Precomputed layer. The info
    is read by the shared reader, then checked as a volume unless it is an annotation layer."""
    url = layers.normalize_url(path)
    info = layers.read_info(url, check=False)
    if not (isinstance(info, dict) and info.get("@type") == ANNOTATIONS_TYPE):
        layers.check_info(info, url)
    return LayerSpec(url, info, posixpath.basename(url.rstrip("/")) or url)


def unique_names(specs: list[LayerSpec]) -> list[LayerSpec]:
    """Layer names must differ in Neuroglancer: suffix repeats with -2, -3..."""
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
        name = spec.name if seen[spec.name] == 1 else f"{spec.name}-{seen[spec.name]}"
        out.append(LayerSpec(spec.url, spec.info, name))
    return out


def dimensions(spec: LayerSpec) -> dict:
    """Neuroglancer's coordinate space of a layer: x, y, z in metres per mip-0 voxel."""
    if spec.kind == "annotation":
        return spec.info["dimensions"]
    res = spec.info["scales"][0]["resolution"]
    return {axis: [r * 1e-9, "m"] for axis, r in zip("xyz", res)}


def centre(spec: LayerSpec) -> list[float]:
    """Middle of the layer's mip-0 bounds, in its voxels."""
    if spec.kind == "annotation":
        lo, hi = spec.info["lower_bound"], spec.info["upper_bound"]
    else:
        box = layers.scale_bounds(spec.info, 0)
        lo, hi = box.start, box.stop
    return [(a + b) / 2 for a, b in zip(lo, hi)]


def layer_json(spec: LayerSpec, source: str, segments: list[int] | None) -> dict:
    """One entry of the state's `layers`: Neuroglancer finds meshes, skeletons and segment
    properties from the info itself, so a segmentation needs only its source."""
    layer = {"type": spec.kind, "source": source, "name": spec.name}
    if spec.kind == "segmentation" and segments:
        layer["segments"] = [str(s) for s in segments]
    return layer


def viewer_state(specs: list[LayerSpec], sources: dict[str, str], segments: list[int] | None = None,
                 pos: tuple[float, float, float] | None = None) -> dict:
    """The JSON state: layers in order, the first layer's space and centre (or `pos`)."""
    if not specs:
        raise UserError("give at least one layer to view")
    first = specs[0]
    return {
        "dimensions": dimensions(first),
        "position": [float(p) for p in (pos if pos is not None else centre(first))],
        "layers": [layer_json(s, sources[s.url], segments) for s in specs],
        "layout": "4panel",
    }
