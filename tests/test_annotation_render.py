"""The real Neuroglancer client (the one the `neuroglancer` package serves) in headless
Chromium draws an `annotation from-stats` layer over the image: a label's centroid point at
the centre of the view placed there, and the segment filter shows it only while its segment
is selected."""
from __future__ import annotations

import io
import shutil
import subprocess
import time

import numpy as np
import pytest

from conftest import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine")
SIZE = 300


def red_near_centre(viewer, wait: float = 20) -> bool:
    """Whether the view shows the annotation colour within a few pixels of its centre
    (screenshots repeat while data arrives)."""
    from PIL import Image

    deadline = time.time() + wait
    while True:
        shot = viewer.screenshot(size=[SIZE, SIZE]).screenshot
        img = np.asarray(Image.open(io.BytesIO(shot.image)))[..., :3].astype(int)
        red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
        c = SIZE // 2
        if red[c - 6:c + 7, c - 6:c + 7].any() or time.time() > deadline:
            return bool(red[c - 6:c + 7, c - 6:c + 7].any())
        time.sleep(1)


def test_from_stats_layer_renders_in_neuroglancer(layers):
    neuroglancer = pytest.importorskip("neuroglancer")
    from neuroglancer.static_file_server import StaticFileServer

    seg = f"file://{layers}/segmentation"
    run_cli("image", "stats", seg, "--no-segment-properties")
    run_cli("annotation", "from-stats", seg, f"file://{layers}/centroids")
    import pyarrow.dataset as ds

    table = ds.dataset(layers / "segmentation" / "stats", format="parquet").to_table().to_pydict()
    a, b = (int(np.argsort(table["voxel_count"])[k]) for k in (-1, -2))  # two big cells
    label_a, label_b = table["label"][a], table["label"][b]

    neuroglancer.set_server_bind_address("127.0.0.1")
    files = StaticFileServer(static_dir=str(layers), bind_address="127.0.0.1", daemon=True)
    viewer = neuroglancer.Viewer()
    with viewer.txn() as s:
        s.dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[8, 8, 40])
        s.layers["image"] = neuroglancer.ImageLayer(source=f"precomputed://{files.url}/image")
        s.layers["seg"] = neuroglancer.SegmentationLayer(source=f"precomputed://{files.url}/segmentation",
                                                         segment_colors={label_a: "#0000ff", label_b: "#00ff00"})
        s.layers["centroids"] = neuroglancer.AnnotationLayer(
            source=f"precomputed://{files.url}/centroids", annotation_color="#ff0000",
            linked_segmentation_layer={"segment": "seg"})
        s.position = [table[f"centroid_{axis}"][a] for axis in "xyz"]
        s.cross_section_scale = 0.5
        s.layout = "xy"
        s.show_axis_lines = False
    browser = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
                                "--enable-unsafe-swiftshader", f"--window-size={SIZE + 200},{SIZE + 200}",
                                viewer.get_viewer_url()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert red_near_centre(viewer), "label A's centroid is not drawn at the view centre"
        with viewer.txn() as s:  # filter by the `segment` relationship: only B selected
            s.layers["centroids"].filter_by_segmentation = ["segment"]
            s.layers["seg"].segments = {label_b}
        assert not red_near_centre(viewer, wait=4), "A's annotation shown while only B is selected"
        with viewer.txn() as s:
            s.layers["seg"].segments = {label_a}
        assert red_near_centre(viewer), "selecting segment A does not show its annotation"
    finally:
        browser.terminate()
        browser.wait(timeout=10)
