"""`mesh spatial-index` and `skeleton spatial-index`: create (rebuild .spatial files), db (load a database)."""
from __future__ import annotations

import click

from igneous_like.cli.options import dry_run_option, parallel_option, queue_option, submit


def spatial_index_group(kind: str) -> click.Group:
    """The spatial-index group of one CLI family: kind is 'mesh' or 'skeletons'."""
    family = "mesh" if kind == "mesh" else "skeleton"

    @click.group("spatial-index")
    def group() -> None:
        """The forge spatial index: rebuild its files, load it into a database."""

    @group.command()
    @click.argument("layer")
    @click.option("--dir", "obj_dir", default=None, help=f"{family.capitalize()} directory (default: the info's).")
    @queue_option
    @parallel_option
    @dry_run_option
    @click.pass_context
    def create(ctx, layer, obj_dir, queue, parallel, dry_run):
        from igneous_like.ops.spatial_index import plan_spatial_index_create

        submit(ctx, plan_spatial_index_create(layer, kind, obj_dir), queue, parallel, dry_run)

    create.help = (f"Rewrite the .spatial files of every {family} forge task from its fragments (no "
                   f"re-{'meshing' if kind == 'mesh' else 'skeletonizing'}).\n\n\b\nExample:\n"
                   f"  igneous-like {family} spatial-index create file://data/seg --queue fq://q")

    @group.command()
    @click.argument("layer")
    @click.argument("db", default=None, required=False)
    @click.option("--dir", "obj_dir", default=None, help=f"{family.capitalize()} directory (default: the info's).")
    def db(layer, db, obj_dir):
        from igneous_like.ops.spatial_index import load_spatial_index_db

        url = db or "spatial-index.db"
        directory, tasks, rows = load_spatial_index_db(layer, kind, url, obj_dir)
        click.echo(f"{directory}: {tasks} forge tasks, {rows} label-task rows loaded into {url}")

    db.help = (f"Load the {family} spatial index (and fragment byte ranges) into a database DB: "
               f"sqlite:///ABSOLUTE/PATH or a bare path (SQLite; default ./spatial-index.db), mysql://USER:PASS@HOST/NAME or "
               f"postgresql://... Merge planners read it with --spatial-index-db.\n\n\b\nExample:\n"
               f"  igneous-like {family} spatial-index db file://data/seg sqlite:///seg-{kind}.db\n"
               f"  igneous-like {family} merge-sharded file://data/seg --spatial-index-db sqlite:///seg-{kind}.db")
    return group
