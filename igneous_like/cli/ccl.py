"""`image ccl`: connected components labelling over the whole volume (attached to the image group)."""
from __future__ import annotations

import click

from igneous_like.cli.options import POSITIVE3, memory_option, parallel_option, queue_option, submit
from igneous_like.validate import NONNEG_INT, POSITIVE_INT


def job_options(fn):
    """Options every pass shares: they fix the job (and its intermediates' directory)."""
    for deco in reversed([
        click.argument("src"),
        click.argument("dest"),
        click.option("--shape", type=POSITIVE3, default=None,
                     help="Task shape in voxels (default 512,512,512, clipped to the volume). Same in every pass."),
        click.option("--mip", type=NONNEG_INT, default=0, show_default=True, help="Label this mip of SRC."),
        click.option("--connectivity", type=click.Choice(["6", "18", "26"]), default="6", show_default=True,
                     help="Voxel neighbourhood: faces (6), +edges (18), +corners (26)."),
        click.option("--threshold-gte", type=float, default=None, help="Images: foreground is image >= value."),
        click.option("--threshold-lte", type=float, default=None, help="Images: foreground is image <= value."),
        click.option("--dust", type=NONNEG_INT, default=0, show_default=True,
                     help="Drop components under this many voxels, counted over the whole volume."),
        click.option("--fill-missing", is_flag=True, help="Read missing chunks as background instead of failing."),
        click.option("--partitions", type=POSITIVE_INT, default=None,
                     help="Partitions of the union-find (tasks per calc-labels step). Default from the volume and --memory."),
        memory_option,
    ]):
        fn = deco(fn)
    return fn


def dest_options(fn):
    fn = click.option("--chunk-size", type=POSITIVE3, default=None,
                      help="DEST chunk size; must divide --shape (default: the largest divisor up to 128,128,64).")(fn)
    return click.option("--encoding", default="compresso", show_default=True,
                        help="DEST encoding: compresso, compressed_segmentation (cseg), crackle, raw.")(fn)


def open_job(kw: dict, encoding: str | None = None, chunk_size=None):
    from igneous_like.ops.image import ccl

    return ccl.open_job(kw["src"], kw["dest"], mip=kw["mip"], shape=kw["shape"], connectivity=int(kw["connectivity"]),
                        threshold_gte=kw["threshold_gte"], threshold_lte=kw["threshold_lte"], dust=kw["dust"],
                        fill_missing=kw["fill_missing"], encoding=encoding, chunk_size=chunk_size,
                        partitions=kw["partitions"], memory=kw["memory"])


@click.group()
def ccl() -> None:
    """Connected components labelling: each connected piece of each label (or of a thresholded
    image's foreground) becomes one label 1..N in DEST.

    \b
    Example:
      igneous-like image ccl auto file://data/seg file://data/seg-cc
    """


@ccl.command()
@job_options
@dest_options
@click.option("--clean/--no-clean", "do_clean", default=True, show_default=True, help="Delete intermediate files at the end.")
@parallel_option
@click.pass_context
def auto(ctx, encoding, chunk_size, do_clean, parallel, **kw):
    """Run every pass here: faces, links, calc-labels, relabel (and clean).

    \b
    Example:
      igneous-like -p 4 image ccl auto file://data/seg file://data/seg-cc --connectivity 26 --dust 100
      igneous-like image ccl auto file://data/prob file://data/cc --threshold-gte 128
    """
    from igneous_like.ops.image import ccl as op
    from igneous_like.ops.image import ccl_labels, ccl_links, ccl_relabel

    job = open_job(kw, encoding, chunk_size)
    ccl_relabel.clean(job)  # auto starts afresh
    submit(ctx, op.plan_faces(job), None, parallel, False)
    submit(ctx, ccl_links.plan_links(job), None, parallel, False)
    _calc_labels(ctx, job, None, parallel)
    submit(ctx, ccl_relabel.plan_relabel(job), None, parallel, False)
    labels = ccl_labels.label_count(job)
    if do_clean:
        ccl_relabel.clean(job)
    click.echo(f"image ccl auto: {labels} labels in {job.dest}", err=True)


@ccl.command()
@job_options
@queue_option
@parallel_option
@click.pass_context
def faces(ctx, queue, parallel, **kw):
    """(1) Label each task's box and save its faces, component sizes and values.

    \b
    Example:
      igneous-like image ccl faces file://data/seg file://data/seg-cc --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    from igneous_like.ops.image import ccl as op

    submit(ctx, op.plan_faces(open_job(kw)), queue, parallel, False)


@ccl.command()
@job_options
@queue_option
@parallel_option
@click.pass_context
def links(ctx, queue, parallel, **kw):
    """(2) Find the equivalences across each task's high faces.

    \b
    Example:
      igneous-like image ccl links file://data/seg file://data/seg-cc --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    from igneous_like.ops.image import ccl_links

    submit(ctx, ccl_links.plan_links(open_job(kw)), queue, parallel, False)


@ccl.command("calc-labels")
@job_options
@queue_option
@parallel_option
@click.pass_context
def calc_labels(ctx, queue, parallel, **kw):
    """(3) Partitioned union-find over the equivalences, then the numbering 1..N.

    Without --queue every step runs here. With --queue each call enqueues the next step
    (rounds until no label changes, then requests and ranks): run the queue and call again
    until it prints the label count.

    \b
    Example:
      igneous-like image ccl calc-labels file://data/seg file://data/seg-cc --queue fq://q
      igneous-like execute fq://q -p 4 -x     # repeat both until "N labels"
    """
    _calc_labels(ctx, open_job(kw), queue, parallel)


def _calc_labels(ctx, job, queue, parallel) -> None:
    from igneous_like.ops.image import ccl as op
    from igneous_like.ops.image import ccl_labels

    op.load_job(job, "calc-labels")
    ccl_labels.check_links_done(job)
    while True:
        what, labels = ccl_labels.run_step(job, lambda plan: submit(ctx, plan, queue, parallel, False), queue)
        if labels is not None:
            click.echo(f"image ccl calc-labels: {labels} labels; next: image ccl relabel", err=True)
            return
        if queue:
            click.echo(f"image ccl calc-labels: {what}; run the queue, then calc-labels again", err=True)
            return


@ccl.command()
@job_options
@dest_options
@queue_option
@parallel_option
@click.pass_context
def relabel(ctx, encoding, chunk_size, queue, parallel, **kw):
    """(4) Write DEST with the final labels.

    \b
    Example:
      igneous-like image ccl relabel file://data/seg file://data/seg-cc --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    from igneous_like.ops.image import ccl_relabel

    submit(ctx, ccl_relabel.plan_relabel(open_job(kw, encoding, chunk_size)), queue, parallel, False)


@ccl.command()
@job_options
def clean(**kw):
    """(last) Delete the intermediate files of this job (DEST/_ccl/KEY).

    \b
    Example:
      igneous-like image ccl clean file://data/seg file://data/seg-cc
    """
    from igneous_like.ops.image import ccl as op
    from igneous_like.ops.image import ccl_relabel

    job = open_job(kw)
    op.load_job(job, "clean")
    click.echo(f"image ccl clean: {ccl_relabel.clean(job)} files removed", err=True)
