"""image ccl as phased jobs: the ordered phases (faces, links, calc-labels' steps, relabel), one
queueable task for all of them, and the chaining that lets one queue run the whole job.

Every task ends by writing done/PHASE/I. With `follow` ({"queue": URL, "until": PHASE}), the
task that finds its phase complete plans the next phase into the same queue (preparing it
first: DEST's info before relabel), and after relabel, when `until` is "clean", deletes the
intermediates; so `execute -x` over the queue runs every phase in order. Several tasks may
find the phase complete at once: the one that creates queued/PHASE.claim (storage.create_once,
atomic on file://, s3:// and gs://) queues it, then writes queued/PHASE; the others stop there.
The claimant run again (its worker died) queues the phase if queued/PHASE is still missing.
"""
from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Iterator

from taskqueue import queueable

from igneous_like.errors import TaskError, UserError
from igneous_like.ops.image import ccl_labels, ccl_links, ccl_relabel
from igneous_like.ops.image.ccl import (
    CclJob, done_count, faces_work, list_names, load_job, mark_done, phase_complete, require, task_memory, write_job,
)
from igneous_like.plan import Plan, fmt_vec, human_bytes

CLEAN = "clean"  # the pseudo-phase after relabel: delete the job's intermediates


def phases(job: CclJob) -> list[tuple[str, int]]:
    """Every phase in order, with its task count."""
    calc = [(name, n) for name, _, n in ccl_labels.steps(job)]
    return [("faces", job.tasks), ("links", job.tasks), *calc, ("relabel", job.tasks)]


def calc_phases(job: CclJob) -> list[str]:
    return [name for name, _, _ in ccl_labels.steps(job)]


def run_one(job: CclJob, phase: str, i: int) -> None:
    """The work of task i of a phase (no marker, no chaining)."""
    if phase == "faces":
        faces_work(job, i)
    elif phase == "links":
        ccl_links.links_work(job, i)
    elif phase.startswith("up-"):
        ccl_labels.up(job, int(phase[3:]), i)
    elif phase.startswith("down-"):
        ccl_labels.down(job, int(phase[5:]), i)
    elif phase == "offsets":
        ccl_labels.write_offsets(job)
    elif phase == "relabel":
        ccl_relabel.relabel_work(job, i)
    else:
        raise TaskError(f"image ccl: unknown phase {phase!r}")


@queueable
def ccl_task(job: dict, phase: str, i: int, follow: dict | None = None) -> None:
    """Task i of a ccl phase; with `follow`, the last one of its phase starts the next."""
    spec = CclJob(**job)
    run_one(spec, phase, i)
    mark_done(spec, phase, i)
    if follow:
        advance(spec, phase, i, follow)


def successor(job: CclJob, phase: str) -> str | None:
    names = [name for name, _ in phases(job)] + [CLEAN]
    at = names.index(phase)
    return names[at + 1] if at + 1 < len(names) else None


def advance(job: CclJob, phase: str, i: int, follow: dict) -> None:
    """If `phase` is complete, queue the next one (up to follow["until"]), once."""
    from cloudfiles import CloudFiles

    from igneous_like import queues, storage

    total = dict(phases(job))[phase]
    if phase == follow["until"] or not phase_complete(job, phase, total, i):
        return
    nxt = successor(job, phase)
    if nxt == CLEAN:
        ccl_relabel.clean(job)
        return
    cf = CloudFiles(job.root)
    if cf.exists(f"queued/{nxt}"):  # queued already (this task is running again)
        return
    if not storage.create_once(cf, f"queued/{nxt}.claim", f"{phase}/{i}"):
        return  # another task of this phase claimed it
    try:
        plan = plan_phase(job, nxt, follow)
    except UserError as exc:
        raise TaskError(f"image ccl: {phase} is complete, but {nxt} cannot be planned: {exc}") from None
    plan.prepare()
    queues.insert_tasks(follow["queue"], plan.tasks(), plan.total)
    mark_queued(job, nxt)


def plan_phase(job: CclJob, phase: str, follow: dict | None = None) -> Plan:
    """The tasks of one phase (prepared: the faces pass records the job, relabel writes DEST's info)."""
    total = dict(phases(job))[phase]
    spec = asdict(job)
    prepare = lambda: None  # noqa: E731
    details: dict = {"source": job.src, "dest": job.dest, "mip": job.mip, "bounds": bounds_text(job),
                     "task shape": fmt_vec(job.shape), "connectivity": job.connectivity, "intermediates": job.root}
    if phase in ("faces", "links", "relabel"):
        details["peak memory per task"] = f"~{human_bytes(task_memory(job))}"
    if phase == "faces":
        prepare = partial(write_job, job)
        details["writes"] = f"{job.root}/faces/T.arrow (face planes, component sizes and values per task)"
    elif phase == "links":
        details["writes"] = f"{job.root}/edges/LEAF/T.arrow (equivalences across each task's high faces)"
    elif phase == "relabel":
        labels = ccl_labels.label_count(job)  # check_ready refuses a relabel before calc-labels
        if labels is not None:
            info = ccl_relabel.dest_info(job, labels)
            prepare = partial(ccl_relabel.write_dest_info, job, info)
        details.update({"labels": "known once calc-labels has run" if labels is None else labels,
                        "dest dtype": "the smallest that holds them" if labels is None else info["data_type"],
                        "encoding": job.encoding, "chunk size": fmt_vec(job.chunk_size),
                        "writes": f"{job.dest} (info and the labelled chunks of bounds {bounds_text(job)})"})
    else:
        details.update(calc_details(job))
    if follow:
        details["then"] = f"the last task queues the next phase, up to {follow['until']}, into {follow['queue']}"

    def tasks() -> Iterator:
        for i in range(total):
            yield partial(ccl_task, spec, phase, i, follow)

    return Plan(f"image ccl {phase}", total, tasks, prepare, details)


def bounds_text(job: CclJob) -> str:
    b = job.bounds
    return f"{b[0]}-{b[3]}, {b[1]}-{b[4]}, {b[2]}-{b[5]}"


def describe_calc(job: CclJob) -> str:
    """What calc-labels does, for --dry-run: its steps, their tasks and what they write."""
    lines = [f"image ccl calc-labels: {sum(n for _, _, n in ccl_labels.steps(job))} tasks in "
             f"{len(ccl_labels.steps(job))} steps"]
    lines += [f"  {k}: {v}" for k, v in calc_details(job).items()]
    return "\n".join(lines)


def describe_job(job: CclJob, clean: bool) -> str:
    """Every pass of `auto`, for --dry-run."""
    out = [plan_phase(job, "faces").describe(), plan_phase(job, "links").describe(), describe_calc(job),
           plan_phase(job, "relabel").describe()]
    return "\n".join(out + [f"image ccl clean: {'removes' if clean else 'keeps'} {job.root}"])


def calc_details(job: CclJob) -> dict:
    tree = job.tree
    steps = ", ".join(f"{name} ({n})" for name, _, n in ccl_labels.steps(job))
    return {"partitions (tree leaves)": job.partitions, "tree depth": tree.depth, "steps (tasks)": steps,
            "peak memory per task": "one leaf's edges (up-0), one group's boundary vertices (up/down), "
                                    "one task's component count (down-0)",
            "writes": f"{job.root}/uf, ranks/T.arrow, counts, offsets.bin, labels.json"}


def check_ready(job: CclJob, phase: str) -> None:
    """Refuse to plan a phase before the one it reads (options checked against the faces pass's)."""
    if phase == "faces":
        return
    load_job(job, phase)
    if phase == "links":
        require(job, "faces", job.tasks, "links")
    elif phase == "relabel":
        ccl_relabel.check_labels(job)
    else:
        require(job, "links", job.tasks, "calc-labels")


def pending_calc(job: CclJob) -> str | None:
    """The first calc-labels step not complete, None when all are."""
    for name, _, n in ccl_labels.steps(job):
        if done_count(job, name) < n:
            return name
    return None


def queued(job: CclJob, phase: str) -> bool:
    from cloudfiles import CloudFiles

    return phase in {n.rsplit("/", 1)[-1] for n in list_names(CloudFiles(job.root), "queued/")}


def mark_queued(job: CclJob, phase: str) -> None:
    from cloudfiles import CloudFiles

    CloudFiles(job.root).put(f"queued/{phase}", b"", compress=None)
