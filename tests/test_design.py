"""`design bounds|ds-memory|ds-shape`: bounds from chunk files (and repairing the info), and
task shapes that agree with what `image downsample` plans."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import SHAPE, run_cli, ts_read, upload_layer


def break_info(layer) -> dict:
    """Wrong size, offset and chunk size in mip 0; returns the true info."""
    info = json.loads((layer / "info").read_text())
    bad = json.loads(json.dumps(info))
    bad["scales"][0].update(size=[100, 100, 10], voxel_offset=[5, 5, 5], chunk_sizes=[[32, 32, 32]])
    (layer / "info").write_text(json.dumps(bad))
    return info


def test_bounds_repairs_a_broken_info_only_when_told(layers, arrays):
    layer = layers / "image"
    good = break_info(layer)
    proc = run_cli("design", "bounds", layer, check=False)  # nothing answers the confirmation: no
    assert proc.returncode in (0, 1) and "differs: size: info [100, 100, 10] -> files [230, 210, 100]" in proc.stdout
    assert json.loads((layer / "info").read_text())["scales"][0]["size"] == [100, 100, 10]
    import subprocess
    import sys

    answered = subprocess.run([sys.executable, "-m", "igneous_like", "design", "bounds", str(layer)],
                              input="y\n", capture_output=True, text=True, timeout=120)  # the confirmation, said yes
    out = answered.stdout
    assert "Bounds: 0,0,0 - 230,210,100" in out and "Chunks: 64,64,64" in out and "fixed mip 0" in out
    assert json.loads((layer / "info").read_text()) == good
    assert np.array_equal(ts_read(layer, 0)[..., 0], arrays["image"])  # tensorstore reads it whole again
    assert "agrees with the files" in run_cli("design", "bounds", layer).stdout


def test_bounds_reads_compressed_names_and_works_on_s3(layers, moto, s3_bucket):
    url = f"{s3_bucket}/seg"
    upload_layer(layers / "segmentation", url, compress="gzip")
    gz = layers / "gz"
    upload_layer(layers / "segmentation", f"file://{gz}", compress="gzip")  # NAME.gz files on disk
    assert "Volume: 230,210,100" in run_cli("design", "bounds", gz).stdout
    from cloudfiles import CloudFiles

    info = json.loads(CloudFiles(url).get("info"))
    info["scales"][0]["size"] = [1, 1, 1]
    CloudFiles(url).put_json("info", info)
    out = run_cli("design", "bounds", url, "-y", env=moto).stdout
    assert "Files:  32" in out and "fixed mip 0" in out
    assert json.loads(CloudFiles(url).get("info"))["scales"][0]["size"] == list(SHAPE)


@pytest.fixture
def virtual(tmp_path):
    """An info-only layer of 8192x8192x512 uint8 voxels: planning never reads data."""
    info = {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [{
        "key": "8_8_40", "size": [8192, 8192, 512], "resolution": [8, 8, 40], "voxel_offset": [0, 0, 0],
        "chunk_sizes": [[64, 64, 64]], "encoding": "raw"}]}
    (tmp_path / "info").write_text(json.dumps(info))
    return tmp_path


def test_ds_memory_and_ds_shape_agree_with_the_downsample_planner(virtual):
    memory = "1e9"
    verbose = run_cli("design", "ds-memory", virtual, memory, "--verbose").stdout
    shape = re.search(r"Optimized shape:\s+(\S+)", verbose).group(1)
    mips = int(re.search(r"Downsamples:\s+(\d+)", verbose).group(1))
    used = re.search(r"Memory used:\s+(\S+ \S+)", verbose).group(1)
    plan = run_cli("image", "downsample", virtual, "--memory", memory, "--dry-run").stdout
    assert f"task shape: {shape.replace(',', 'x')} at mip 0" in plan
    assert f"mips: 0 -> {', '.join(str(k) for k in range(1, mips + 1))}" in plan
    assert f"peak memory per task: ~{used}" in plan
    cost = run_cli("design", "ds-shape", virtual, shape)
    assert cost.stdout.strip() == used and f"{mips} mip(s)" in cost.stderr


def test_more_memory_more_mips_and_the_cap(virtual):
    small = run_cli("design", "ds-memory", virtual, "5e8").stdout.strip()
    large = run_cli("design", "ds-memory", virtual, "1e12").stdout.strip()
    assert small == "512,512,64" and large == "2048,2048,64"  # --max-mips 5 caps it
    assert run_cli("design", "ds-memory", virtual, "1e12", "--max-mips", "6").stdout.strip() == "4096,4096,64"
    assert "0 mip(s)" in run_cli("design", "ds-shape", virtual, "100,100,64").stderr


@pytest.mark.parametrize("args, message", [
    (["ds-memory", "{v}", "1e6"], "do not fit one mip"),
    (["ds-memory", "{v}", "1e9", "--mip", "3"], "mip 3 is out of range"),
    (["ds-shape", "{v}", "0,64,64"], "must be positive"),
    (["bounds", "{v}/nothing"], "no layer at"),
    (["bounds", "{v}"], "no chunk files under"),
])
def test_design_errors(virtual, args, message):
    proc = run_cli("design", *(a.format(v=virtual) for a in args), check=False)
    assert proc.returncode == 1 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_bounds_refuses_a_sharded_scale(virtual):
    info = json.loads((virtual / "info").read_text())
    info["scales"][0]["sharding"] = {"@type": "neuroglancer_uint64_sharded_v1"}
    (virtual / "info").write_text(json.dumps(info))
    proc = run_cli("design", "bounds", virtual, check=False)
    assert proc.returncode == 1 and "is sharded" in proc.stderr
