"""Object storage as the normal case: the pipeline on s3:// against a real S3 server (moto on
127.0.0.1), one input uploaded with gzip'd objects (Content-Encoding: gzip) and one without,
read back with tensorstore's s3 key-value store and compared with the same run on file://.
Also the URL forms labs use: cloud-files aliases (user-defined ones included) and the
s3://http://HOST:PORT/ endpoint form.

gs:// is not covered: of the GCS emulators installable from PyPI, gcp-storage-emulator drops
Content-Encoding (gzip'd objects come back compressed, so cloud-volume's default gzip writes are
unreadable) and answers cloud-files' exists() wrongly, and fake-gcs-server lacks the JSON batch
API that cloud-files' exists() uses."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli, tree_digest, upload_layer

SHAPE = (96, 80, 40)
TASK = "48,40,20"  # 2 x 2 x 2 forge tasks: fragments meet across task borders


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    from igneous_like import sample

    root = tmp_path_factory.mktemp("objstore")
    seg = sample.segmentation(SHAPE, seed=5, cells=6)
    img = sample.image_from(seg, seed=6)
    sample.write_layer(f"file://{root}/image", img, "image", chunk=(32, 32, 32))
    sample.write_layer(f"file://{root}/seg", seg, "segmentation", chunk=(32, 32, 32))
    return root


def s3_kvstore(url: str, moto: dict) -> dict:
    bucket, path = url[len("s3://"):].split("/", 1)
    return {"driver": "s3", "bucket": bucket, "path": path.rstrip("/") + "/",
            "endpoint": moto["AWS_ENDPOINT_URL"], "aws_region": "us-east-1"}


def ts_volume(kvstore: dict, mip: int) -> np.ndarray:
    import tensorstore as ts

    spec = {"driver": "neuroglancer_precomputed", "kvstore": kvstore, "scale_index": mip,
            "fill_missing_data_reads": False}
    return np.asarray(ts.open(spec, read=True).result().read().result())


def ts_sharded_values(kvstore: dict, subdir: str, labels) -> dict[int, bytes]:
    """Each label's value in a sharded mesh or skeleton directory, via tensorstore."""
    import tensorstore as ts

    base = {**kvstore, "path": kvstore["path"] + subdir + "/"}
    spec = json.loads(ts.KvStore.open(base).result().read("info").result().value)["sharding"]
    kv = ts.KvStore.open({"driver": "neuroglancer_uint64_sharded", "base": base, "metadata": spec}).result()
    return {int(label): kv.read(int(label).to_bytes(8, "big")).result().value for label in labels}


def pipeline(image: str, seg: str, queue: str | None, env: dict | None, xfer: bool = True) -> None:
    """The issue's stages. With a queue, forges are planned into a FileQueue and run by a
    worker (`execute`); the other stages run in-process (one process: spawning pools of
    workers that import cloud-volume dominates on volumes this small)."""
    stages = [
        ("image", "downsample", image, "--num-mips", "2"),
        ("image", "xfer", image, f"{image}-sharded", "--sharded", "--skip-downsample") if xfer else None,
        ("mesh", "forge", seg, "--sharded", "--shape", TASK),
        ("mesh", "merge-sharded", seg, "--nlod", "1"),
        ("skeleton", "forge", seg, "--shape", TASK, "--dust-threshold", "100", "--dust-global"),  # .voxels, filtered/
        ("skeleton", "merge-sharded", seg, "--min-cable-length", "0"),
    ]
    for stage in filter(None, stages):
        if queue and stage[1] == "forge":
            run_cli(*stage, "--queue", queue, env=env)
            run_cli("execute", queue, "-x", "-q", env=env)
        else:
            run_cli(*stage, env=env)


@pytest.fixture(scope="module")
def both(local, moto, tmp_path_factory):
    """The pipeline on file:// and on s3:// (image plain, segmentation gzip'd)."""
    import uuid

    import boto3

    work = tmp_path_factory.mktemp("objstore-run")
    for name in ("image", "seg"):
        shutil.copytree(local / name, work / name)
    pipeline(f"file://{work}/image", f"file://{work}/seg", None, None, xfer=False)

    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(Bucket=bucket)
    upload_layer(local / "image", f"s3://{bucket}/image")
    upload_layer(local / "seg", f"s3://{bucket}/seg", compress="gzip")
    pipeline(f"s3://{bucket}/image", f"s3://{bucket}/seg", f"fq://{work}/q-s3", moto)
    return work, f"s3://{bucket}"


def test_inputs_are_stored_as_asked(both, moto):
    import boto3

    _, bucket = both
    s3 = boto3.client("s3", endpoint_url=moto["AWS_ENDPOINT_URL"], region_name="us-east-1")
    name = bucket[len("s3://"):]
    assert s3.head_object(Bucket=name, Key="seg/8_8_40/0-32_0-32_0-32").get("ContentEncoding") == "gzip"
    assert s3.head_object(Bucket=name, Key="image/8_8_40/0-32_0-32_0-32").get("ContentEncoding") is None


def test_downsample_and_sharded_xfer_on_s3_match_file(both, moto, local):
    work, bucket = both
    img = ts_volume({"driver": "file", "path": f"{local}/image/"}, 0)
    for mip in (1, 2):
        on_s3 = ts_volume(s3_kvstore(f"{bucket}/image", moto), mip)
        assert on_s3.shape[:3] == tuple(-(-s // 2**mip) if a < 2 else s for a, s in enumerate(SHAPE))
        assert np.array_equal(on_s3, ts_volume({"driver": "file", "path": f"{work}/image/"}, mip))
    sharded = s3_kvstore(f"{bucket}/image-sharded", moto)
    assert np.array_equal(ts_volume(sharded, 0), img)


def test_meshes_and_skeletons_on_s3_match_file(both, moto, local):
    import trimesh
    from cloudvolume import CloudVolume

    work, bucket = both
    seg = ts_volume({"driver": "file", "path": f"{local}/seg/"}, 0)
    labels = [int(v) for v in np.unique(seg) if v]
    s3 = s3_kvstore(f"{bucket}/seg", moto)
    here = {"driver": "file", "path": f"{work}/seg/"}
    meshes = ts_sharded_values(s3, "mesh", labels)
    assert all(meshes.values()) and meshes == ts_sharded_values(here, "mesh", labels)
    skels = ts_sharded_values(s3, "skeletons", labels)
    assert sum(1 for v in skels.values() if v) >= len(labels) // 2
    assert skels == ts_sharded_values(here, "skeletons", labels)
    vol = CloudVolume(f"{bucket}/seg", progress=False)  # cloud-volume reads the s3 meshes too
    mesh = vol.mesh.get(labels[0], lod=0)
    mesh = mesh[labels[0]] if isinstance(mesh, dict) else mesh
    assert trimesh.Trimesh(mesh.vertices, mesh.faces).is_watertight


def test_verify_on_s3(both, moto):
    _, bucket = both
    for layer in ("image-sharded", "seg"):
        proc = run_cli("verify", f"{bucket}/{layer}", env=moto)
        assert "0 problem(s)" in proc.stderr, proc.stderr
    shutil_bucket = bucket[len("s3://"):]
    import boto3

    boto3.client("s3", endpoint_url=moto["AWS_ENDPOINT_URL"], region_name="us-east-1").delete_object(
        Bucket=shutil_bucket, Key="image/16_16_40/0-32_0-32_0-32")
    proc = run_cli("verify", f"{bucket}/image", env=moto, check=False)
    assert proc.returncode == 1 and "16_16_40/0-32_0-32_0-32" in proc.stdout


def test_user_alias_and_endpoint_form(local, moto, s3_bucket, tmp_path):
    """`cloudfiles alias add lab s3://http://HOST:PORT/` then lab://BUCKET/LAYER, and the same
    endpoint written out, work with AWS_ENDPOINT_URL pointing nowhere (the URL carries it)."""
    name = s3_bucket[len("s3://"):]
    upload_layer(local / "image", f"{s3_bucket}/image")
    aliases = tmp_path / "cf"
    aliases.mkdir()
    env = {**moto, "CLOUD_FILES_DIR": str(aliases), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    cli = os.path.join(os.path.dirname(sys.executable), "cloudfiles")
    subprocess.run([cli, "alias", "add", "lab", f"s3://{moto['AWS_ENDPOINT_URL']}/"], check=True,
                   env={**os.environ, **env}, capture_output=True)
    run_cli("image", "downsample", f"lab://{name}/image", "--num-mips", "1", "--queue", f"fq://{tmp_path}/q", env=env)
    run_cli("execute", f"fq://{tmp_path}/q", "-x", "-q", env=env)
    endpoint = f"s3://{moto['AWS_ENDPOINT_URL']}/{name}/image"
    run_cli("image", "downsample", endpoint, "--mip", "1", "--num-mips", "1", "-p", "2", env=env)
    assert "0 problem(s)" in run_cli("verify", endpoint, env=env).stderr
    expect = ts_volume({"driver": "file", "path": f"{local}/image/"}, 0)
    top = ts_volume(s3_kvstore(f"{s3_bucket}/image", moto), 2)
    assert top.shape[:3] == (24, 20, 40) and abs(float(top.mean()) - float(expect.mean())) < 2


@pytest.mark.parametrize("url,expect", [
    ("nolab://BUCKET/image", "unsupported storage protocol"),
    ("BUCKETURL", "names no layer"),
])
def test_urls_tasks_cannot_open_are_refused_before_queueing(moto, s3_bucket, tmp_path, url, expect):
    url = url.replace("BUCKETURL", s3_bucket).replace("BUCKET", s3_bucket[len("s3://"):])
    queue = tmp_path / "q"
    proc = run_cli("image", "downsample", url, "--queue", f"fq://{queue}", env=moto, check=False)
    assert proc.returncode == 1 and expect in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not queue.exists() and tree_digest(tmp_path) == {}


def test_s3_keys_without_a_session_token(local, moto, s3_bucket, tmp_path):
    """cloud-files 6 raises KeyError('AWS_SESSION_TOKEN') for keys from the environment alone."""
    upload_layer(local / "image", f"{s3_bucket}/image")
    env = {k: v for k, v in os.environ.items() if k != "AWS_SESSION_TOKEN"}
    env.update(moto)
    env.pop("AWS_SESSION_TOKEN", None)
    cmd = [sys.executable, "-m", "igneous_like", "image", "downsample", f"{s3_bucket}/image", "--num-mips", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "tasks done" in proc.stderr
