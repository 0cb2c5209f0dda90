"""Layer URLs, parsed by cloud-files' and cloud-volume's own parsers (their protocols and their
alias registry, user aliases from `cloudfiles alias add` included), so a URL is accepted at
plan time exactly when the tasks will be able to open it."""
from __future__ import annotations

import hashlib
import os
import re

from igneous_like.errors import UserError

# s3://http(s)://HOST[:PORT]/BUCKET/PATH: cloud-files' form for an S3-compatible endpoint
_ENDPOINT = re.compile(r"^s3://(?P<host>https?://[^/]+)/(?P<rest>.*)$")
_OTHER_FORMATS = ("graphene", "boss", "n5", "zarr", "zarr2", "zarr3", "brainmaps", "deepzoom", "nggraph",
                  "render", "vtk", "nifti", "dvid")


def normalize_url(path: str) -> str:
    """A storage URL that cloud-files and cloud-volume both accept; a bare path means file://
    (made absolute so workers elsewhere agree). Anything else is a one-line UserError."""
    path = str(path)
    if path.startswith("precomputed://"):
        path = path[len("precomputed://") :]
    if "://" not in path:
        return "file://" + os.path.abspath(os.path.expanduser(path))
    scheme = path.split("://", 1)[0]
    if scheme in _OTHER_FORMATS:
        raise UserError(f"{path!r} is a {scheme} layer: igneous-like reads and writes Neuroglancer Precomputed only")
    path = path.rstrip("/")
    _parse_storage(path)
    if scheme != "file":  # cloud-volume takes every file:// path cloud-files does; skipping it here
        _parse_volume(path)  # spares planners that write no chunks its ~0.4 s CPU import
    return path


def volume_path(url: str) -> str:
    """The form of `url` that CloudVolume parses. cloud-volume refuses cloud-files' endpoint
    form s3://http(s)://HOST/...; it is opened through an alias for HOST, registered in this
    process under a name derived from HOST (the same name in every worker)."""
    from cloudfiles import paths

    match = _ENDPOINT.match(url)
    if not match:
        return url
    host = match.group("host")
    alias = "s3ep" + hashlib.sha1(host.encode()).hexdigest()[:12]
    if paths.ALIASES.get(alias) != f"s3://{host}/":
        paths.add_alias(alias, f"s3://{host}/")
    return f"{alias}://{match.group('rest')}"


def known_protocols() -> list[str]:
    """Base protocols and every alias cloud-files knows (official ones and ~/.cloudfiles aliases)."""
    from cloudfiles import paths

    paths.update_aliases_from_file()
    return list(paths.ALLOWED_PROTOCOLS)


def _parse_storage(url: str) -> None:
    from cloudfiles import paths
    from cloudfiles.exceptions import UnsupportedProtocolError

    paths.update_aliases_from_file()  # user aliases (`cloudfiles alias add NAME HOST`)
    try:
        parsed = paths.extract(url)
    except UnsupportedProtocolError:
        raise UserError(
            f"unsupported storage protocol in {url!r}: known protocols and aliases are {', '.join(known_protocols())} "
            "(add your own with `cloudfiles alias add NAME s3://https://HOST/`)"
        ) from None
    if parsed.protocol in ("gs", "s3", "mem") or parsed.alias:
        if not parsed.bucket or not parsed.path:
            raise UserError(f"{url!r} names no layer: give a bucket and a path, e.g. s3://BUCKET/LAYER")


def _parse_volume(url: str) -> None:
    """Run the parser CloudVolume(url) runs in every task."""
    from cloudvolume.exceptions import UnsupportedProtocolError
    from cloudvolume.paths import strict_extract

    try:
        strict_extract(volume_path(url))
    except UnsupportedProtocolError:
        raise UserError(f"cloud-volume cannot open {url!r}: a layer URL is PROTOCOL://BUCKET/PATH") from None
