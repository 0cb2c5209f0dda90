"""`view`: local layers over HTTP plus the Neuroglancer client bundled in the `neuroglancer`
package (driven through its Python viewer), both on 127.0.0.1, until Ctrl-C."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from igneous_like import layers
from igneous_like.errors import UserError
from igneous_like.view.fileserver import bind_free_port, serve_layers
from igneous_like.view.state import LayerSpec, viewer_state

HOST = "127.0.0.1"


@dataclass
class Session:
    """A running view: the file server, the Neuroglancer viewer and its URL."""

    url: str
    data_port: int
    viewer_port: int
    state: dict
    _file_server: object
    _viewer: object  # neuroglancer's server holds viewers by weak reference: keep it alive here

    def stop(self) -> None:
        """Close both servers and free their ports."""
        import neuroglancer

        self._file_server.shutdown()
        self._file_server.server_close()
        neuroglancer.server.stop()


def mount_name(index: int, spec: LayerSpec) -> str:
    return f"{index}-{spec.name}"


def remote_source(url: str) -> str:
    """Where Neuroglancer reads a non-local layer itself. An S3 endpoint override
    (AWS_ENDPOINT_URL, e.g. an S3-compatible store) is addressed by path over HTTP."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if url.startswith("s3://") and endpoint:
        return f"precomputed://{endpoint.rstrip('/')}/{url[len('s3://'):]}"
    if url.startswith("mem://"):
        raise UserError(f"{url} lives in one process's memory: a viewer cannot read it")
    return f"precomputed://{url}"


def sources(specs: list[LayerSpec], data_port: int, indirect: bool = False) -> tuple[dict[str, str], dict]:
    """Each layer's Neuroglancer source, and what the file server mounts: local directories,
    and with `indirect` remote layers too (read here, with this machine's credentials)."""
    out, mounts = {}, {}
    for i, spec in enumerate(specs):
        local = layers.local_path(spec.url)
        if local is None and not indirect:
            out[spec.url] = remote_source(spec.url)
            continue
        if spec.url.startswith("mem://"):
            raise UserError(f"{spec.url} lives in one process's memory: a viewer cannot read it")
        name = mount_name(i, spec)
        mounts[name] = Path(local) if local is not None else spec.url
        out[spec.url] = f"precomputed://http://{HOST}:{data_port}/{name}"
    return out, mounts


def start(specs: list[LayerSpec], port: int, segments: list[int] | None = None,
          pos: tuple[float, float, float] | None = None, say: Callable[[str], None] = print,
          indirect: bool = False) -> Session:
    """Serve the local layers on `port` (or the next free one) and the viewer on the next free
    port after that; the viewer's state shows every layer."""
    import neuroglancer

    if not 0 < port < 65536:
        raise UserError(f"--port {port} is not a TCP port (1-65535)")
    sock, data_port = bind_free_port(HOST, port)
    if data_port != port:
        say(f"port {port} is in use; serving the layers on port {data_port}")
    srcs, mounts = sources(specs, data_port, indirect)
    for spec in specs:
        if layers.local_path(spec.url) is None and not indirect:
            say(f"{spec.url} is read by Neuroglancer itself: it must allow anonymous reads and CORS (or use --indirect)")
    files = serve_layers(mounts, sock)
    sock, viewer_port = bind_free_port(HOST, data_port + 1)
    sock.close()  # neuroglancer binds it itself, right below
    neuroglancer.set_server_bind_address(HOST, bind_port=viewer_port)
    viewer = neuroglancer.Viewer()
    state = viewer_state(specs, srcs, segments, pos)
    viewer.set_state(neuroglancer.ViewerState(state))
    url = viewer.get_viewer_url()
    return Session(url, data_port, viewer_port, state, files, viewer)


def wait_for_interrupt(session: Session) -> None:
    """Block until Ctrl-C (SIGINT) or SIGTERM, then stop both servers. The handlers are set
    explicitly: a shell starting `view &` hands it SIGINT ignored."""
    import signal

    done = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        session.stop()
