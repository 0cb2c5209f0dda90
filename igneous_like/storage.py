"""Batched reads through cloud-files, tuned per protocol.

cloud-files runs a multi-path `get` on file:// through a one-thread pool whose polling costs
about 0.1 s per call, which dominates merges that fetch a few small files per label. On local
and in-memory storage single-path gets are immediate; on object stores the batched call keeps
its parallel requests."""
from __future__ import annotations

from typing import Any


def get_many(cf, requests: list[Any]) -> list[dict]:
    """Like CloudFiles.get(list) -> [{'path', 'content', 'byte_range', ...}], in request order."""
    if cf.protocol not in ("file", "mem"):
        got = cf.get(requests)
        order = {_key(r): i for i, r in enumerate(requests)}
        return sorted(got, key=lambda g: order[(g["path"], (g.get("byte_range") or (None, None))[0])])
    out = []
    for req in requests:
        if isinstance(req, dict):
            content = cf.get(req)
            out.append({"path": req["path"], "content": content, "byte_range": (req.get("start"), req.get("end"))})
        else:
            out.append({"path": req, "content": cf.get(req), "byte_range": (None, None)})
    return out


def _key(req) -> tuple:
    return (req["path"], req.get("start")) if isinstance(req, dict) else (req, None)


def put_many(cf, files, **kwargs) -> None:
    """Like CloudFiles.puts over (path, content) pairs, without the per-call thread-pool cost on
    local storage."""
    if cf.protocol not in ("file", "mem"):
        cf.puts(files, **kwargs)
        return
    for path, content in files:
        cf.put(path, content, **kwargs)


def configure_environment() -> None:
    """Fill what cloud-files needs from the environment before any storage call.

    cloud-files 6 reads AWS_SESSION_TOKEN unconditionally when it takes S3 keys from the
    environment (a KeyError without it); an empty token means none to boto3. botocore's
    "standard" retry mode knows more throttling codes than its legacy default (see retries.py)."""
    import os

    if "AWS_ACCESS_KEY_ID" in os.environ and "AWS_SECRET_ACCESS_KEY" in os.environ:
        os.environ.setdefault("AWS_SESSION_TOKEN", "")
    os.environ.setdefault("AWS_RETRY_MODE", "standard")
    os.environ.setdefault("AWS_MAX_ATTEMPTS", "5")


def tensorstore_kvstore(url: str) -> dict:
    """tensorstore's key-value store for a file://, s3:// or gs:// URL (S3 honours
    AWS_ENDPOINT_URL and AWS_DEFAULT_REGION, as cloud-files does)."""
    import os

    if url.startswith("file://"):
        return {"driver": "file", "path": url[len("file://"):].rstrip("/") + "/"}
    scheme, rest = url.split("://", 1)
    bucket, _, path = rest.partition("/")
    spec = {"driver": "s3" if scheme == "s3" else "gcs", "bucket": bucket, "path": path.strip("/") + "/"}
    if scheme == "s3":
        if os.environ.get("AWS_ENDPOINT_URL"):
            spec["endpoint"] = os.environ["AWS_ENDPOINT_URL"]
        spec["aws_region"] = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    return spec
