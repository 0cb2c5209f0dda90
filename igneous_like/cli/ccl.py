"""`image ccl`: connected components labelling over the whole volume (attached to the image group)."""
from __future__ import annotations

import click

from igneous_like.cli.options import (
    POSITIVE3, dry_run_option, fill_missing_option, memory_option, producer_options, ranges, submit,
)
from igneous_like.validate import NONNEG_INT, POSITIVE_INT


def job_options(fn):
    """Options every pass shares: they fix the job (and its intermediates' directory)."""
    for deco in reversed([
        click.argument("src"),
        click.argument("dest"),
        click.option("--shape", type=POSITIVE3, default=None,
                     help="Task shape in voxels (default 512,512,512, clipped to the volume). Same in every pass."),
        click.option("--mip", type=NONNEG_INT, default=0, show_default=True, help="Label this mip of SRC."),
        ranges("labels only inside this box (DEST covers just the box)"),
        click.option("--connectivity", type=click.Choice(["6", "18", "26"]), default="6", show_default=True,
                     help="Voxel neighbourhood: faces (6), +edges (18), +corners (26)."),
        click.option("--threshold-gte", type=float, default=None, help="Images: foreground is image >= value."),
        click.option("--threshold-lte", type=float, default=None, help="Images: foreground is image <= value."),
        click.option("--dust", type=NONNEG_INT, default=0, show_default=True,
                     help="Drop components under this many voxels, counted over the whole volume."),
        fill_missing_option,
        click.option("--partitions", type=POSITIVE_INT, default=None,
                     help="Leaves of the union-find tree (tasks of its first step). Default from the volume and --memory."),
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
                        partitions=kw["partitions"], memory=kw["memory"], xrange=kw["xrange"], yrange=kw["yrange"],
                        zrange=kw["zrange"])


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
@producer_options
@click.pass_context
def auto(ctx, encoding, chunk_size, do_clean, queue, parallel, dry_run, **kw):
    """Every pass: faces, links, calc-labels, relabel (and clean).

    Without --queue they run here. With --queue the faces tasks are queued, and the last task
    of each pass queues the next one: one `execute` over the queue runs the whole job.

    \b
    Example:
      igneous-like -p 4 image ccl auto file://data/seg file://data/seg-cc --connectivity 26 --dust 100
      igneous-like image ccl auto file://data/prob file://data/cc --threshold-gte 128 --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    from igneous_like.ops.image import ccl_labels, ccl_phases, ccl_relabel

    job = open_job(kw, encoding, chunk_size)
    if dry_run:
        click.echo(ccl_phases.describe_job(job, do_clean))
        return
    ccl_relabel.clean(job)  # auto starts afresh
    if queue:
        follow = {"queue": queue, "until": ccl_phases.CLEAN if do_clean else "relabel"}
        submit(ctx, ccl_phases.plan_phase(job, "faces", follow), queue, parallel, False)
        click.echo("image ccl auto: the passes after faces are queued by the last task of the one before", err=True)
        return
    for phase, _ in ccl_phases.phases(job):
        submit(ctx, ccl_phases.plan_phase(job, phase), None, parallel, False)
    labels = ccl_labels.label_count(job)
    if do_clean:
        ccl_relabel.clean(job)
    click.echo(f"image ccl auto: {labels} labels in {job.dest}", err=True)


def _pass(ctx, phase: str, job, queue, parallel, dry_run) -> None:
    """Plan one pass: its prerequisites checked (unless a dry run), then queued or run here."""
    from igneous_like.ops.image import ccl_phases

    if not dry_run:
        ccl_phases.check_ready(job, phase)
    submit(ctx, ccl_phases.plan_phase(job, phase), queue, parallel, dry_run)


@ccl.command()
@job_options
@producer_options
@click.pass_context
def faces(ctx, queue, parallel, dry_run, **kw):
    """(1) Label each task's box and save its faces, component sizes and values.

    \b
    Example:
      igneous-like image ccl faces file://data/seg file://data/seg-cc --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    _pass(ctx, "faces", open_job(kw), queue, parallel, dry_run)


@ccl.command()
@job_options
@producer_options
@click.pass_context
def links(ctx, queue, parallel, dry_run, **kw):
    """(2) Find the equivalences across each task's high faces.

    \b
    Example:
      igneous-like image ccl links file://data/seg file://data/seg-cc --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    _pass(ctx, "links", open_job(kw), queue, parallel, dry_run)


@ccl.command("calc-labels")
@job_options
@producer_options
@click.pass_context
def calc_labels(ctx, queue, parallel, dry_run, **kw):
    """(3) Hierarchical union-find over the equivalences, then the numbering 1..N.

    2*ceil(log2 P) + 2 steps (P = --partitions). Without --queue every step runs here. With
    --queue the first step is queued and the last task of each step queues the next: run
    the queue, then call calc-labels again to see the label count.

    \b
    Example:
      igneous-like image ccl calc-labels file://data/seg file://data/seg-cc --queue fq://q
      igneous-like execute fq://q -p 4 -x
      igneous-like image ccl calc-labels file://data/seg file://data/seg-cc   # "N labels"
    """
    from igneous_like.ops.image import ccl_labels, ccl_phases

    job = open_job(kw)
    if dry_run:
        click.echo(ccl_phases.describe_calc(job))
        return
    ccl_phases.check_ready(job, "calc-labels")
    while (step := ccl_phases.pending_calc(job)) is not None:
        if not queue:
            submit(ctx, ccl_phases.plan_phase(job, step), None, parallel, False)
            continue
        if ccl_phases.queued(job, step):
            click.echo(f"image ccl calc-labels: waiting for step {step} (queued): run the queue", err=True)
            return
        submit(ctx, ccl_phases.plan_phase(job, step, {"queue": queue, "until": "offsets"}), queue, parallel, False)
        ccl_phases.mark_queued(job, step)
        click.echo("image ccl calc-labels: the steps after it follow as the queue runs; then calc-labels again", err=True)
        return
    click.echo(f"image ccl calc-labels: {ccl_labels.label_count(job)} labels; next: image ccl relabel", err=True)


@ccl.command()
@job_options
@dest_options
@producer_options
@click.pass_context
def relabel(ctx, encoding, chunk_size, queue, parallel, dry_run, **kw):
    """(4) Write DEST with the final labels.

    \b
    Example:
      igneous-like image ccl relabel file://data/seg file://data/seg-cc --queue fq://q
      igneous-like execute fq://q -p 4 -x
    """
    _pass(ctx, "relabel", open_job(kw, encoding, chunk_size), queue, parallel, dry_run)


@ccl.command()
@job_options
@dry_run_option
def clean(dry_run, **kw):
    """(last) Delete the intermediate files of this job (DEST/_ccl/KEY).

    \b
    Example:
      igneous-like image ccl clean file://data/seg file://data/seg-cc
    """
    from igneous_like.ops.image import ccl as op
    from igneous_like.ops.image import ccl_relabel

    job = open_job(kw)
    op.load_job(job, "clean")
    if dry_run:
        click.echo(f"image ccl clean: would remove {len(ccl_relabel.intermediates(job))} files under {job.root}")
        return
    click.echo(f"image ccl clean: {ccl_relabel.clean(job)} files removed", err=True)
