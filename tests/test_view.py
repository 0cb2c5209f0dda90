"""`view`: the file server (CORS, ranges, .gz files), ports, Ctrl-C, and Neuroglancer itself in a
headless Chromium loading every layer (local, gzip'd, S3, with meshes and skeletons)."""
from __future__ import annotations

import gzip
import io
import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from browser import Browser, View, chromium_path, wait_loaded
from conftest import free_port, run_cli, upload_layer
from igneous_like import sample


@pytest.fixture(scope="module")
def viewed(tmp_path_factory):
    """A small image (stored gzip'd, as cloud-files writes it) and a segmentation with sharded
    multi-resolution meshes and skeletons made by the real pipeline."""
    root = tmp_path_factory.mktemp("view")
    seg = sample.segmentation((96, 96, 48), seed=5, cells=12)
    sample.write_layer(f"file://{root}/plain-image", sample.image_from(seg), "image", chunk=(32, 32, 32))
    sample.write_layer(f"file://{root}/seg", seg, "segmentation", chunk=(32, 32, 32))
    upload_layer(root / "plain-image", f"file://{root}/image", compress="gzip")
    layer = f"file://{root}/seg"
    for args in (["mesh", "forge", layer, "--sharded"], ["mesh", "merge-sharded", layer, "--nlod", "1"],
                 ["skeleton", "forge", layer], ["skeleton", "merge-sharded", layer]):
        run_cli(*args)
    labels, counts = np.unique(seg[seg != 0], return_counts=True)
    label = int(labels[counts.argmax()])
    add_segment_properties(root / "seg", label)
    write_points(root / "points", [[40, 50, 20], [10, 10, 5]])
    return root, label


def add_segment_properties(layer: Path, label: int) -> None:
    """An inline segment-properties directory named by the info, as the spec describes."""
    props = {"@type": "neuroglancer_segment_properties",
             "inline": {"ids": [str(label)], "properties": [{"id": "name", "type": "label", "values": ["big one"]}]}}
    (layer / "segment_properties").mkdir()
    (layer / "segment_properties" / "info").write_text(json.dumps(props))
    info = json.loads((layer / "info").read_text())
    (layer / "info").write_text(json.dumps({**info, "segment_properties": "segment_properties"}))


def write_points(path: Path, points: list[list[float]]) -> None:
    """A Precomputed annotation layer, written by neuroglancer's own writer."""
    import neuroglancer
    from neuroglancer.write_annotations import AnnotationWriter

    space = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm", scales=[8, 8, 40])
    writer = AnnotationWriter(coordinate_space=space, annotation_type="point")
    for point in points:
        writer.add_point(point)
    writer.write(str(path))


def get(url: str, headers: dict | None = None, method: str = "GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), b""


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server restarting there would
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_file_server_ranges_cors_gzip_and_ports(viewed):
    root, _ = viewed
    gz_chunk = next((root / "image" / "8_8_40").glob("*.gz"))
    plain = gzip.decompress(gz_chunk.read_bytes())
    shard = next((root / "seg" / "mesh").glob("*.shard")).read_bytes()
    with socket.socket() as taken:  # the asked-for port is in use: the next free one is used
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        view = View(str(root / "image"), str(root / "seg"), "--port", str(port))
        try:
            time.sleep(0.2)
            line = view.proc.stderr.readline()
            assert f"port {port} is in use" in line, line
            data_port = int(line.rsplit(" ", 1)[1])
            base = f"http://127.0.0.1:{data_port}"
            status, headers, body = get(f"{base}/0-image/8_8_40/{gz_chunk.name[:-3]}")
            assert status == 200 and body == plain  # NAME.gz answered under NAME, decompressed
            assert headers["Access-Control-Allow-Origin"] == "*"
            status, headers, body = get(f"{base}/0-image/info")  # info.gz too
            assert status == 200 and json.loads(body)["type"] == "image"
            status, headers, body = get(f"{base}/1-seg/mesh/0.shard", {"Range": "bytes=10-109"})
            assert status == 206 and body == shard[10:110]
            assert headers["Content-Range"] == f"bytes 10-109/{len(shard)}"
            assert get(f"{base}/1-seg/mesh/0.shard", {"Range": "bytes=-7"})[2] == shard[-7:]
            assert get(f"{base}/1-seg/mesh/0.shard", {"Range": f"bytes={len(shard)}-"})[0] == 416
            status, headers, _ = get(f"{base}/1-seg/info", method="OPTIONS")
            assert status == 204 and "Range" in headers["Access-Control-Allow-Headers"]
            assert get(f"{base}/1-seg/8_8_40/nope")[0] == 404
            assert get(f"{base}/1-seg/8_8_40")[0] == 404  # a directory
            assert get(f"{base}/1-seg/../image/info")[0] == 404
            assert get(f"{base}/nolayer/info")[0] == 404
            assert get(view.url)[0] == 200  # the bundled client
        finally:
            code, err = view.interrupt()
    assert code == 0 and "stopped" in err and "Traceback" not in err and "Exception" not in err
    viewer_port = int(view.url.split(":")[2].split("/")[0])
    assert port_is_free(data_port) and port_is_free(viewer_port)


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "no layer at"),
    (lambda d: (d / "info").write_text("{not json"), "malformed info file"),
    (lambda d: (d / "info").write_text('{"type": "mesh"}'), "malformed info file"),
])
def test_view_rejects_what_is_not_precomputed(tmp_path, make, message):
    make(tmp_path)
    proc = run_cli("view", "--no-browser", str(tmp_path), check=False, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_view_rejects_bad_options(viewed):
    root, _ = viewed
    for args, message in ((["--port", "0"], "not a TCP port"), (["--segments", "a,b"], "comma-separated")):
        proc = run_cli("view", "--no-browser", str(root / "seg"), *args, check=False, timeout=60)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def coloured_pixels(png: bytes, box: tuple[float, float, float, float]) -> int:
    """Pixels in a fractional box of the screenshot that are neither grey nor the yellow bounds."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    h, w, _ = img.shape
    part = img[int(box[1] * h):int(box[3] * h), int(box[0] * w):int(box[2] * w)]
    spread = part.max(-1) - part.min(-1)
    yellow = (part[..., 0] > 150) & (part[..., 1] > 150) & (part[..., 2] < 100)
    return int(((spread > 40) & ~yellow).sum())


def make_public(bucket: str, env: dict) -> None:
    import boto3

    name = bucket[len("s3://"):]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                      "Resource": f"arn:aws:s3:::{name}/*"}]}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1").put_bucket_policy(
        Bucket=name, Policy=json.dumps(policy))


@pytest.mark.skipif(chromium_path() is None, reason="no chromium (scripts/test.sh installs it as root)")
def test_neuroglancer_loads_every_layer_in_a_real_browser(viewed, moto, s3_bucket, tmp_path):
    root, label = viewed
    upload_layer(root / "plain-image", f"{s3_bucket}/em", compress="gzip")  # Content-Encoding: gzip on S3
    make_public(s3_bucket, moto)  # Neuroglancer reads S3 itself, without credentials
    broken = tmp_path / "broken"
    shutil.copytree(root / "seg", broken)
    (broken / "skeletons" / "info").unlink()  # Neuroglancer drops such a layer: the check must see it
    view = View(str(root / "image"), str(root / "seg"), f"{s3_bucket}/em", str(broken), str(root / "points"),
                "--port", str(free_port()), "--segments", str(label), "--pos", "40,50,20", env=moto)
    try:
        with Browser(free_port()) as browser:
            browser.goto(view.url)
            states = wait_loaded(browser, 5)
            by_name = {s["name"]: s for s in states}
            assert by_name["image"]["type"] == "image" and by_name["em"]["type"] == "image"
            assert by_name["seg"]["type"] == "segmentation"
            assert by_name["points"]["type"] == "annotation"
            for name in ("image", "seg", "em", "points"):
                assert all(s.startswith("ok") for s in by_name[name]["sources"]), json.dumps(states)
            assert all(sub in by_name["seg"]["sources"][0] for sub in ("mesh", "skeletons", "properties")), states
            assert by_name["broken"]["sources"][0].startswith("error"), states
            state = json.loads(browser.evaluate("JSON.stringify(viewer.state.toJSON())"))
            assert state["position"] == [40.5, 50.5, 20.5] or state["position"] == [40, 50, 20], state["position"]
            assert [ly for ly in state["layers"] if ly["name"] == "seg"][0]["segments"] == [str(label)]
            browser.evaluate("viewer.showPerspectiveSliceViews.value = false")
            browser.pump(4)
            png = browser.screenshot(tmp_path / "shot.png").read_bytes()
            assert not browser.exceptions, browser.exceptions
            chunk_errors = [m for m in browser.console if "Error retrieving" in m]  # Neuroglancer's word for it
            assert not chunk_errors, chunk_errors
    finally:
        code, _ = view.interrupt()
    assert code == 0
    assert coloured_pixels(png, (0, 0.08, 0.35, 0.5)) > 500  # the selected segment in a cross-section
    assert coloured_pixels(png, (0, 0.55, 0.35, 1.0)) > 500  # its mesh (or skeleton) in the 3D view


def test_state_centres_on_the_first_layer_and_types_each_layer(viewed):
    from igneous_like.view.state import read_layer, unique_names, viewer_state

    root, label = viewed
    specs = unique_names([read_layer(str(root / n)) for n in ("seg", "image", "points", "seg")])
    sources = {s.url: f"precomputed://{s.url}" for s in specs}
    state = viewer_state(specs, sources, segments=[label])
    assert state["position"] == [48.0, 48.0, 24.0]  # middle of 96x96x48
    assert state["dimensions"] == {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [40e-9, "m"]}
    assert [(ly["name"], ly["type"]) for ly in state["layers"]] == [
        ("seg", "segmentation"), ("image", "image"), ("points", "annotation"), ("seg-2", "segmentation")]
    assert state["layers"][0]["segments"] == [str(label)] and "segments" not in state["layers"][1]
    assert viewer_state(specs[2:3], sources, pos=(1, 2, 3))["position"] == [1.0, 2.0, 3.0]


def test_indirect_serves_a_private_bucket_through_the_local_server(viewed, moto, s3_bucket):
    root, _ = viewed
    url = f"{s3_bucket}/seg"
    upload_layer(root / "seg", url)  # the bucket stays private: anonymous reads are refused
    assert get(f"{moto['AWS_ENDPOINT_URL']}/{url[len('s3://'):]}/info")[0] == 403
    shard = next((root / "seg" / "mesh").glob("*.shard"))
    view = View(url, "--indirect", "--port", str(free_port()), env=moto)
    try:
        data_port = int(view.proc.stderr.readline().split("127.0.0.1:")[1].split("/")[0])
        base = f"http://127.0.0.1:{data_port}/0-seg"
        status, headers, body = get(f"{base}/info")
        assert status == 200 and json.loads(body)["mesh"] == "mesh" and headers["Access-Control-Allow-Origin"] == "*"
        status, headers, body = get(f"{base}/mesh/{shard.name}", {"Range": "bytes=5-24"})
        assert status == 206 and body == shard.read_bytes()[5:25]
        assert headers["Content-Range"] == f"bytes 5-24/{shard.stat().st_size}"
        assert get(f"{base}/mesh/nope.shard", {"Range": "bytes=0-3"})[0] == 404
    finally:
        code, err = view.interrupt()
    assert code == 0 and "Traceback" not in err
