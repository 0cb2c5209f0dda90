"""`--mip auto` for mesh and skeleton forge: the finest mip whose voxels are closest to
isotropic. Meshing anisotropic voxels (4x4x40 nm at mip 0) makes meshes far heavier than the
viewer needs, for no gain in accuracy along z."""
from __future__ import annotations

from dataclasses import dataclass

from igneous_like import layers
from igneous_like.errors import UserError

MAX_RATIO = 2.0  # above this max/min resolution ratio, no mip is isotropic enough to mesh


def fmt_vec(values, sep: str = "x") -> str:
    """4x4x40, or 2,2,1 for a command line; non-integers kept (4.5x4.5x40)."""
    return sep.join(f"{v:g}" for v in values)


@dataclass(frozen=True)
class MipChoice:
    mip: int
    resolution: list[float]
    ratio: float

    def describe(self, what: str) -> str:
        """One line: the mip, its resolution and how far a surface vertex may be from the truth."""
        half = [r / 2 for r in self.resolution]
        return (f"--mip auto: {what} at mip {self.mip} ({fmt_vec(self.resolution)} nm, max/min ratio "
                f"{self.ratio:.2f}); vertices within half a voxel of the true surface: "
                f"±{fmt_vec(half)} nm, at most {max(half):g} nm")


def anisotropy(resolution) -> float:
    """max/min of a voxel's sides: 1 for a cube."""
    return max(resolution) / min(resolution)


def best_mip(info: dict) -> MipChoice:
    """The mip with the smallest max/min resolution ratio; ties go to the finer mip."""
    ratios = [anisotropy(s["resolution"]) for s in info["scales"]]
    mip = min(range(len(ratios)), key=lambda m: (round(ratios[m], 9), m))
    return MipChoice(mip, list(info["scales"][mip]["resolution"]), ratios[mip])


def downsample_advice(url: str, info: dict) -> str:
    """The `image downsample` that would add a mip with a max/min ratio of at most MAX_RATIO,
    halving the fine axes of the top mip until its voxels are near cubes."""
    top = len(info["scales"]) - 1
    res = list(info["scales"][top]["resolution"])
    factor = [2 if 2 * r <= max(res) else 1 for r in res]
    steps = 0
    while anisotropy(res) > MAX_RATIO and steps < 16:
        res = [r * f for r, f in zip(res, factor)]
        steps += 1
    return (f"igneous-like image downsample {url} --mip {top} --num-mips {steps} "
            f"--factor {fmt_vec(factor, ',')} (adds mip {top + steps} at {fmt_vec(res)} nm)")


def choose_forge_mip(layer: str, what: str) -> MipChoice:
    """The mip `--mip auto` means for a forge of `what` (meshes, skeletons) on a segmentation."""
    url = layers.normalize_url(layer)
    info = layers.read_info(url)
    if info["type"] != "segmentation":
        raise UserError(f"--mip auto: {url} is an image layer; {what} are made from segmentations")
    choice = best_mip(info)
    if choice.ratio > MAX_RATIO:
        raise UserError(
            f"--mip auto: no mip of {url} is near isotropic (best: mip {choice.mip}, "
            f"{fmt_vec(choice.resolution)} nm, max/min ratio {choice.ratio:.2f} > {MAX_RATIO:g}); "
            f"make one with: {downsample_advice(url, info)}, or give --mip N")
    return choice
