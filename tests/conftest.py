"""Fixtures: small synthetic layers (copied fresh per test), the real CLI as a subprocess,
and an independent reader (tensorstore) for the outputs."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from igneous_like import sample

# Not a multiple of the 64^3 chunk nor of 2^3: exercises every edge path.
SHAPE = (230, 210, 100)


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    seg = sample.segmentation(SHAPE, seed=3, cells=40)
    img = sample.image_from(seg, seed=4)
    sample.write_layer(f"file://{root}/image", img, "image")
    sample.write_layer(f"file://{root}/segmentation", seg, "segmentation")
    np.save(root / "image.npy", img)
    np.save(root / "segmentation.npy", seg)
    return root


@pytest.fixture
def layers(pristine, tmp_path) -> Path:
    """A private copy of the sample layers for one test."""
    for name in ("image", "segmentation"):
        shutil.copytree(pristine / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def arrays(pristine):
    return {n: np.load(pristine / f"{n}.npy") for n in ("image", "segmentation")}


def is_json(path) -> bool:
    """Whether a file holds whole JSON (a task file written completely)."""
    import json

    try:
        json.loads(Path(path).read_text())
        return True
    except ValueError:
        return False


def run_cli(*args: str, check: bool = True, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess."""
    cmd = [sys.executable, "-m", "igneous_like", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def ts_read(layer_dir: Path, mip: int, region: tuple | None = None) -> np.ndarray:
    """Read a whole scale with tensorstore; a missing chunk is an error, never zeros."""
    import tensorstore as ts

    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(layer_dir) + "/"},
        "scale_index": mip,
        "fill_missing_data_reads": False,
    }
    store = ts.open(spec, read=True).result()
    if region is not None:
        store = store[region]
    return np.asarray(store.read().result())


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def mesh_volume(tmp_path_factory):
    """Tubes and a branching object crossing task borders, a 1-voxel label, big labels."""
    from igneous_like import sample

    root = tmp_path_factory.mktemp("meshvol")
    shape = (150, 130, 70)  # not a multiple of the 64x64x32 task shape
    seg = sample.segmentation(shape, seed=11, cells=25)
    seg[10:140, 60:70, 30:40] = 2**33 + 1  # a long bar across tasks in x
    seg[100:110, 5:125, 5:65] = 2**35 + 3  # a slab across tasks in y and z
    seg[50, 20, 50] = 2**40 + 7  # a single voxel
    sample.write_layer(f"file://{root}/seg", seg, "segmentation", resolution=(8, 8, 40))
    return root, seg


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto():
    """A real S3- and SQS-speaking server (moto) on 127.0.0.1; the env that points clients at it.

    Pass it as `env=moto` to run_cli: cloud-files, cloud-volume and boto3 all honour
    AWS_ENDPOINT_URL, so s3://BUCKET/... and sqs://NAME go to this server."""
    import socket
    import time

    port = free_port()
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_SESSION_TOKEN": "testing"}  # cloud-files reads key and secret from env only with a token
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # in-process readers (cloud-files, boto3) in tests see the server too
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(moto) -> str:
    """A fresh, empty bucket on the moto server: returns 's3://NAME'."""
    import uuid

    import boto3

    name = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=name)
    return f"s3://{name}"


def upload_layer(local: Path, url: str, compress: str | None = None) -> None:
    """Copy a local layer directory to a storage URL (e.g. s3://bucket/layer) with cloud-files,
    optionally gzip'ing every object (stored with Content-Encoding: gzip)."""
    from cloudfiles import CloudFiles

    from igneous_like.storage import configure_environment

    configure_environment()  # cloud-files needs AWS_SESSION_TOKEN beside keys from the environment
    src = CloudFiles(f"file://{local}")
    dest = CloudFiles(url)
    for name in src.list():
        dest.put(name, src.get(name), compress=compress, raw=False)
