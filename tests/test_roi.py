"""image roi: tissue boxes found at a low mip, mapped to mip 0 and written into the info."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli, ts_read, upload_layer
from igneous_like import sample

BLOBS = [((20, 30, 2), (100, 90, 20)), ((150, 140, 10), (240, 250, 30))]  # mip 0 voxels, [start, stop)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """Two bright tissue blocks on black, faint noise (<= 15) everywhere, one bright speck; mips 1, 2."""
    rng = np.random.default_rng(5)
    img = rng.integers(0, 16, size=(256, 256, 32)).astype(np.uint8)
    for lo, hi in BLOBS:
        img[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.integers(100, 250, size=[b - a for a, b in zip(lo, hi)])
    img[200, 20, 5] = 255  # a speck: dust at any mip
    layer = tmp_path_factory.mktemp("roi") / "em"
    sample.write_layer(f"file://{layer}", np.asfortranarray(img), "image", chunk=(64, 64, 32))
    run_cli("image", "downsample", layer, "--num-mips", "2")
    return layer


def boxes_of(stdout: str) -> list[list[int]]:
    return [[int(v) for v in line.replace("-", ",").split(",")] for line in stdout.split()]


def assert_matches_blobs(boxes, slack=(4, 4, 0)):
    assert len(boxes) == len(BLOBS), boxes
    for box, (lo, hi) in zip(sorted(boxes), BLOBS):
        for axis in range(3):  # at mip 2 a box edge is known to within 4 voxels in x and y
            assert lo[axis] - slack[axis] <= box[axis] <= lo[axis], (box, lo, hi)
            assert hi[axis] <= box[axis + 3] <= hi[axis] + slack[axis], (box, lo, hi)


def test_roi_finds_the_tissue_and_writes_it_into_the_info(slide, tmp_path):
    import shutil

    layer = tmp_path / "em"
    shutil.copytree(slide, layer)
    proc = run_cli("image", "roi", layer, "--suppress-faint", "15")
    assert_matches_blobs(boxes_of(proc.stdout))
    assert "2 ROI(s) detected" in proc.stderr
    rois = json.loads((layer / "info").read_text())["scales"][0]["rois"]
    assert rois == boxes_of(proc.stdout)
    from cloudvolume import CloudVolume

    assert CloudVolume(f"file://{layer}").scales[0]["rois"] == rois  # the info stays valid for readers
    assert ts_read(layer, 2).shape[:3] == (64, 64, 32)
    # without suppressing the faint noise, everything is one slab of "tissue"
    assert len(boxes_of(run_cli("image", "roi", layer).stdout)) == 1
    # z slabs of 8 sections: each blob is cut at the slab planes
    sliced = boxes_of(run_cli("image", "roi", layer, "--suppress-faint", "15", "--z-step", "8").stdout)
    assert len(sliced) == 6 and all(b[5] - b[2] <= 8 for b in sliced)


def test_roi_on_s3_and_errors(slide, moto, s3_bucket, layers):
    url = f"{s3_bucket}/em"
    upload_layer(slide, url, compress="gzip")
    proc = run_cli("image", "roi", url, "--suppress-faint", "15", "--mip", "1", env=moto)
    assert_matches_blobs(boxes_of(proc.stdout), slack=(2, 2, 0))
    from cloudfiles import CloudFiles

    assert json.loads(CloudFiles(url).get("info"))["scales"][0]["rois"] == boxes_of(proc.stdout)
    for args, message in (([layers / "segmentation"], "is a segmentation"),
                          ([layers / "image", "--mip", "7"], "mip 7 is out of range"),
                          ([layers / "image", "--z-step", "0"], "must be positive")):
        bad = run_cli("image", "roi", *args, check=False)
        assert bad.returncode == 1 and message in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
