"""`view`: open layers in Neuroglancer, served from this machine."""
from __future__ import annotations

import click

from igneous_like.cli.options import TUPLE3


def segment_list(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of segment ids") from None


@click.command()
@click.argument("layers", nargs=-1, required=True)
@click.option("--port", type=int, default=1337, show_default=True,
              help="Port of the file server for local layers (the next free one if taken); "
              "the viewer takes the next free port after it.")
@click.option("--browser/--no-browser", default=True, show_default=True, help="Open the viewer in the default browser.")
@click.option("--segments", default=None, help="Select these segments, e.g. 1,2,3.")
@click.option("--pos", type=TUPLE3, default=None, help="Centre on this position (mip 0 voxels of the first layer).")
@click.option("--indirect", is_flag=True,
              help="Serve remote layers through the local server too, read with this machine's credentials "
              "(for buckets that are not public).")
def view(layers, port, browser, segments, pos, indirect):
    """Open layers in Neuroglancer: local ones are served over HTTP on 127.0.0.1 (CORS, byte
    ranges, .gz chunk files decompressed), remote ones (s3://, gs://, https://) are read by
    the viewer directly. The Neuroglancer client is the one bundled with the `neuroglancer`
    package, so it works offline. Ctrl-C stops it.

    \b
    Example:
      igneous-like view file://data/image file://data/seg --segments 12,57
    """
    from igneous_like.view.session import start, wait_for_interrupt
    from igneous_like.view.state import read_layer, unique_names

    specs = unique_names([read_layer(path) for path in layers])
    session = start(specs, port, segment_list(segments), pos, say=lambda m: click.echo(m, err=True),
                    indirect=indirect)
    click.echo(f"layers served at http://127.0.0.1:{session.data_port}/ ; press Ctrl-C to stop", err=True)
    click.echo(session.url)
    if browser:
        import webbrowser

        webbrowser.open(session.url)
    wait_for_interrupt(session)
    click.echo("stopped; ports freed", err=True)
