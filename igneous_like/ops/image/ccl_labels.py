"""image ccl calc-labels: the partitioned union-find over the links' edges, and the numbering
1..N, as steps of P tasks each (P = the job's partitions; igneous_like/mapreduce.py moves rows
between them). No task holds more than its partition's vertices and edges.

  round r  task p owns the vertices of the blocks of neighbouring tasks hashed to p (CclJob.block_of),
           their adjacency and current labels; it lowers
           them with the messages of round r-1, takes the minimum over each connected piece of
           its own adjacency, and sends that minimum to the foreign vertices of the piece.
           A round in which no label fell is a fixed point: every edge's ends agree, so every
           vertex holds the smallest provisional id of its component (its root).
  requests task p sends each non-root vertex, with its root, to its own task's partition, and
           its sizes summed per root to the root's task's partition (for --dust).
  ranks    task p, for the tasks hashed to p: which local ids are kept roots (not merged away,
           not dust) and their rank among them.
  offsets  one small step (the driver): prefix sums of kept roots per task.
Final id of a kept root = offsets[task] + rank: 1..N, contiguous, the same on every re-run. A
relabel task reads its non-roots' roots, and the ranks of the few tasks those roots lie in.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from typing import Iterator

import numpy as np
from taskqueue import queueable

from igneous_like import mapreduce
from igneous_like.errors import TaskError, UserError
from igneous_like.ops.image.ccl import LOCAL_BITS, CclJob, list_names, read_faces
from igneous_like.plan import Plan

LOCAL_MASK = np.uint64(0xFFFFFFFF)
MAX_ROUNDS = 100000


def _cf(job: CclJob):
    from cloudfiles import CloudFiles

    return CloudFiles(job.root)


def _put(job: CclJob, name: str, table: mapreduce.Table) -> None:
    _cf(job).put(name, mapreduce.encode_table(table), compress=None)


def get_table(job: CclJob, name: str) -> mapreduce.Table:
    data = _cf(job).get(name)
    if data is None:
        raise TaskError(f"calc-labels: missing {job.root}/{name}; run the earlier step first")
    return mapreduce.decode_table(data)


def _mark(job: CclJob, step: str, p: int, **values) -> None:
    _cf(job).put_json(f"steps/{step}/{p}.json", values)


def _sources(job: CclJob) -> list[str]:
    return [f"p{q:05d}" for q in range(job.partitions)]


def gather(job: CclJob, name: str, sources: list[str], p: int) -> mapreduce.Table:
    tables = [t for batch in mapreduce.read_partials(job.layout(name), sources, p) for t in batch]
    return mapreduce.concat(tables)


def adjacency(job: CclJob, p: int) -> mapreduce.Table:
    """Partition p's edges from every links task (deduplicated, sorted), kept for later rounds."""
    name = f"adj/{p:05d}.arrow"
    if _cf(job).exists(name):
        return get_table(job, name)
    rows = gather(job, "edges", [str(t) for t in range(job.tasks)], p)
    if not rows:
        rows = {k: np.zeros(0, np.uint64) for k in ("label", "other", "size", "block")}
    order = np.lexsort((rows["other"], rows["label"]))
    rows = {k: v[order] for k, v in rows.items()}
    u, v = rows["label"], rows["other"]
    keep = np.ones(len(u), bool)
    keep[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    rows = {k: v[keep] for k, v in rows.items()}
    _put(job, name, rows)
    return rows


@queueable
def ccl_round_task(job: dict, r: int, p: int) -> None:
    """One round of min-label propagation for the vertices of partition p."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    spec = CclJob(**job)
    adj = adjacency(spec, p)
    own = np.unique(adj["label"])
    labels = own.copy() if r == 1 else get_table(spec, f"rounds/{r - 1}/labels/{p:05d}.arrow")["value"]
    before = labels.copy()
    if r > 1:
        msgs = gather(spec, f"rounds/{r - 1}/msgs", _sources(spec), p)
        if msgs:
            np.minimum.at(labels, np.searchsorted(own, msgs["label"]), msgs["value"])
    nodes = np.unique(np.concatenate([own, adj["other"]]))
    if not len(nodes):
        _put(spec, f"rounds/{r}/labels/{p:05d}.arrow", {"value": labels})
        mapreduce.write_partials(spec.layout(f"rounds/{r}/msgs"), f"p{p:05d}",
                                 {"label": nodes, "value": nodes.copy(), "block": nodes.copy()}, key="block")
        return _mark(spec, f"round-{r}", p, changes=0)
    a, b = np.searchsorted(nodes, adj["label"]), np.searchsorted(nodes, adj["other"])
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(len(nodes), len(nodes)))
    _, comp = connected_components(graph, directed=False)
    value = nodes.copy()  # a foreign vertex's id bounds its label from above: as good as a label
    at_own = np.searchsorted(nodes, own)
    value[at_own] = labels
    low = mapreduce.group_min(comp, value, int(comp.max()) + 1 if len(comp) else 0)
    seen, labels = labels, low[comp[at_own]]
    foreign = np.ones(len(nodes), bool)
    foreign[at_own] = False
    send = foreign & (low[comp] < nodes)
    # hooking: a vertex's old label is a vertex of the same component: tell it the new minimum,
    # so the minimum jumps to wherever the old one had spread (far fewer rounds on long chains)
    fell = labels < seen
    hooks, inverse = mapreduce.group(seen[fell])
    hook_values = mapreduce.group_min(inverse, labels[fell], len(hooks))
    to = np.concatenate([nodes[send], hooks])
    _put(spec, f"rounds/{r}/labels/{p:05d}.arrow", {"value": labels})
    mapreduce.write_partials(spec.layout(f"rounds/{r}/msgs"), f"p{p:05d}",
                             {"label": to, "value": np.concatenate([low[comp][send], hook_values]),
                              "block": spec.block_of(to)}, key="block")
    _mark(spec, f"round-{r}", p, changes=int((labels < before).sum()))


@queueable
def ccl_requests_task(job: dict, r: int, p: int) -> None:
    """Partition p's non-root vertices, to their own task (with their root), and their sizes
    summed per root, to the root's task (one row per root per partition: a component spanning
    the volume costs its root's task P rows, not one per member)."""
    spec = CclJob(**job)
    adj = adjacency(spec, p)
    own, first = np.unique(adj["label"], return_index=True)
    labels = get_table(spec, f"rounds/{r}/labels/{p:05d}.arrow")["value"]
    non = labels != own
    name = f"p{p:05d}"
    mapreduce.write_partials(spec.layout("nonroots"), name,
                             {"task": own[non] >> LOCAL_BITS, "member": own[non], "root": labels[non]}, key="task")
    roots, inverse = mapreduce.group(labels[non])
    sizes = mapreduce.group_sum(inverse, adj["size"][first][non], len(roots))
    mapreduce.write_partials(spec.layout("sizes"), name, {"task": roots >> LOCAL_BITS, "root": roots, "size": sizes},
                             key="task")
    _mark(spec, "requests", p)


def tasks_of(job: CclJob, p: int) -> np.ndarray:
    """The task indices hashed to partition p (the ranks step's share of the tasks)."""
    tasks = np.arange(job.tasks, dtype=np.uint64)
    return tasks[mapreduce.partition_of(tasks, job.partitions) == p]


def by_task(job: CclJob, name: str, p: int, columns: tuple[str, ...]) -> mapreduce.Table:
    """Partition p's rows of a task-keyed layout, sorted by task (for searchsorted slices)."""
    rows = gather(job, name, _sources(job), p) or {k: np.zeros(0, np.uint64) for k in columns}
    order = np.argsort(rows["task"], kind="stable")
    return {k: v[order] for k, v in rows.items()}


def rows_of(rows: mapreduce.Table, t: int) -> slice:
    return slice(*np.searchsorted(rows["task"], [t, t + 1]))


def local(ids: np.ndarray) -> np.ndarray:
    return (ids & LOCAL_MASK).astype(np.int64)


@queueable
def ccl_ranks_task(job: dict, p: int) -> None:
    """For each task of partition p: the rank among its kept roots (not merged into another
    task's component, not dust) of each local id, -1 for the others; its kept-root count."""
    spec = CclJob(**job)
    non = by_task(spec, "nonroots", p, ("task", "member", "root"))
    size = by_task(spec, "sizes", p, ("task", "root", "size"))
    mine = tasks_of(spec, p)
    counts = np.zeros(len(mine), np.int64)
    for i, t in enumerate(mine):
        _, sizes, _ = read_faces(spec, int(t))
        total = sizes.astype(np.uint64)
        ss = rows_of(size, t)
        np.add.at(total, local(size["root"][ss]), size["size"][ss])
        keep = total >= max(spec.dust, 1)
        keep[0] = False
        keep[local(non["member"][rows_of(non, t)])] = False
        rank = np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int64)
        counts[i] = int(keep.sum())
        _put(spec, f"ranks/{int(t)}.arrow", {"rank": rank})
    _put(spec, f"counts/{p:05d}.arrow", {"task": mine, "count": counts})
    _mark(spec, "ranks", p)


def write_offsets(job: CclJob) -> int:
    """The last small step: first final id of each task (prefix sums of kept roots); returns N."""
    counts = np.zeros(job.tasks, np.int64)
    for p in range(job.partitions):
        part = get_table(job, f"counts/{p:05d}.arrow")
        counts[part["task"].astype(np.int64)] = part["count"]
    offsets = np.concatenate([[1], 1 + np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())
    _put(job, "offsets.arrow", {"offset": offsets})
    _cf(job).put_json("labels.json", {"labels": total})
    return total


def _done(job: CclJob, step: str) -> list[dict]:
    """The markers of a step's finished tasks."""
    cf = _cf(job)
    names = list_names(cf, f"steps/{step}/")
    return [json.loads(g["content"]) for g in cf.get(names) if g["content"]] if names else []


def next_step(job: CclJob) -> tuple[str, int, int]:
    """(step, round, tasks still to run) for calc-labels: where a previous run stopped."""
    r = 1
    while r < MAX_ROUNDS:
        marks = _done(job, f"round-{r}")
        if len(marks) < job.partitions:
            return "round", r, job.partitions - len(marks)
        if sum(m["changes"] for m in marks) == 0:
            break
        r += 1
    for step in ("requests", "ranks"):
        left = job.partitions - len(_done(job, step))
        if left:
            return step, r, left
    if not _cf(job).exists("labels.json"):
        return "offsets", r, 1
    return "done", r, 0


def plan_step(job: CclJob, step: str, r: int) -> Plan:
    """One step's P tasks."""
    spec = asdict(job)

    def tasks() -> Iterator:
        for p in range(job.partitions):
            if step == "round":
                yield partial(ccl_round_task, spec, r, p)
            elif step == "requests":
                yield partial(ccl_requests_task, spec, r, p)
            else:
                yield partial(ccl_ranks_task, spec, p)

    name = f"round {r}" if step == "round" else step
    return Plan(f"image ccl calc-labels ({name})", job.partitions, tasks, lambda: None,
                {"partitions": job.partitions, "intermediates": job.root})


def check_links_done(job: CclJob) -> None:
    missing = mapreduce.missing_maps(job.layout("edges"), [str(t) for t in range(job.tasks)])
    if missing:
        raise UserError(f"calc-labels: {len(missing)} of {job.tasks} links tasks have not run "
                        f"(e.g. task {missing[0]}): run `image ccl links` and its tasks first")


def label_count(job: CclJob) -> int | None:
    got = _cf(job).get_json("labels.json")
    return None if got is None else int(got["labels"])


def queued_marker(step: str, r: int) -> str:
    return f"queued/{step}-{r}.json" if step == "round" else f"queued/{step}.json"


def run_step(job: CclJob, run, queue: str | None) -> tuple[str, int | None]:
    """Advance calc-labels by one step: run it here (`run(plan)`), or enqueue it once. Returns
    (what happened, the label count once known)."""
    step, r, left = next_step(job)
    if step == "done":
        return "done", label_count(job)
    if step == "offsets":
        return "offsets", write_offsets(job)
    plan = plan_step(job, step, r)
    if queue:
        marker = queued_marker(step, r)
        if _cf(job).exists(marker):
            return f"waiting: {left} of {job.partitions} tasks of {plan.operation} have not run", None
        run(plan)
        _cf(job).put_json(marker, {"tasks": job.partitions})
        return f"queued {plan.operation}", None
    run(plan)
    return plan.operation, None
