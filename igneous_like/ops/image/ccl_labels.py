"""image ccl calc-labels: a hierarchical union-find over the links' edges on the spatial tree
of ccl_tree.py (P leaves, depth D = ceil(log2 P)), then the numbering 1..N. 2D + 2 steps,
however far a component snakes: no step's count grows with a component's diameter.

  up 0     leaf p: connected components of its edges (vertices of its tasks, and their foreign
           neighbours). Each piece's representative is its smallest id. A vertex's level is the
           tree level at which its edges' far ends join p's group (ccl_tree.merge_level); the
           vertices above level 0 go up as rows (vertex, representative, level), with the
           piece's partial size on one row. A piece with no such vertex is a whole component.
  up L     group g: the rows of its two children as edges vertex-representative; again pieces,
           smallest ids, and rows up for the vertices above level L. Its rows are those of its
           outer faces only, so no task holds the volume's boundary labels. At level D nothing
           is left open: every representative is a root (the smallest id of its component) and
           every piece size a component size; the top task starts down D at once.
  down L   group g: each node's root and component size: its representative's (closed pieces),
           or the root its parent sent for that representative (open ones); sent on to each
           child for the representatives that child passed up.
  down 0   leaf p, for each task of its box: which local ids are kept roots (their own root,
           not dust over the whole component) and their rank among them; the root of each
           merged id. (The ranks of the old design, with no step of their own.)
  offsets  one small task: prefix sums of kept roots per task.
Final id of a kept root = offsets[task] + rank: 1..N, contiguous, the same on every re-run. A
relabel task reads its own ranks file and those of the few tasks its merged ids' roots lie in.
"""
from __future__ import annotations

import numpy as np

from igneous_like import mapreduce
from igneous_like.errors import TaskError
from igneous_like.storage import get_many, put_many
from igneous_like.ops.image.ccl import LOCAL_BITS, CclJob, parse_faces
from igneous_like.ops.image.ccl_links import COLUMNS, edges_path
from igneous_like.ops.image.ccl_tree import cells_in, merge_level

LOCAL_MASK = np.uint64(0xFFFFFFFF)
U64 = np.uint64
BATCH = 256  # files read or written per call in a ranks task
OFFSETS = "offsets.bin"


def _cf(job: CclJob):
    from cloudfiles import CloudFiles

    return CloudFiles(job.root)


def put_table(job: CclJob, name: str, table: mapreduce.Table) -> None:
    _cf(job).put(name, mapreduce.encode_table(table, compression=None), compress=None)


def get_table(job: CclJob, name: str) -> mapreduce.Table:
    data = _cf(job).get(name)
    if data is None:
        raise TaskError(f"calc-labels: missing {job.root}/{name}; run the earlier step first")
    return mapreduce.decode_table(data)


def get_raw(job: CclJob, names: list[str]) -> list[bytes]:
    """Files of the job directory, in order; a missing one is an error naming it."""
    got = get_many(_cf(job), names) if names else []
    missing = [g["path"] for g in got if g["content"] is None]
    if missing:
        raise TaskError(f"calc-labels: missing {job.root}/{missing[0]} (and {len(missing) - 1} more); "
                        "run the earlier step first")
    return [g["content"] for g in got]


def get_tables(job: CclJob, names: list[str]) -> list[mapreduce.Table]:
    return [mapreduce.decode_table(data) for data in get_raw(job, names)]


def leaf_tasks(job: CclJob, p: int, grow: int = 0) -> np.ndarray:
    """The tasks of leaf p's box, grown by `grow` tasks on its low sides (clipped to the grid)."""
    start, stop = job.tree.leaf_cells(p)
    if start == stop or any(a >= b for a, b in zip(start, stop)):
        return np.zeros(0, np.int64)
    return cells_in((tuple(a - grow for a in start), stop), job.grid)


def pieces(nodes: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of the graph on `nodes` with edges (a[i], b[i]) (indices)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(nodes)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    count, comp = connected_components(graph, directed=False)
    return comp, int(count)


def summarize(job: CclJob, level: int, g: int, nodes: np.ndarray, comp: np.ndarray, count: int,
              node_level: np.ndarray, node_size: np.ndarray) -> None:
    """Write group g's state (each node's representative, open flag, piece size) and its rows
    up (vertices above `level`, the piece size on the first row of each piece)."""
    rep = mapreduce.group_min(comp, nodes, count)
    size = mapreduce.group_sum(comp, node_size, count)
    up = node_level > level
    opened = np.zeros(count, bool)
    opened[comp[up]] = True
    put_table(job, f"uf/state/{level}/{g:05d}.arrow",
              {"node": nodes, "rep": rep[comp], "open": opened[comp], "size": size[comp]})
    if level < job.tree.depth:
        rows = np.flatnonzero(up)
        first = np.zeros(len(rows), bool)
        if len(rows):
            _, at = np.unique(comp[rows], return_index=True)
            first[at] = True
        put_table(job, f"uf/up/{level}/{g:05d}.arrow",
                  {"node": nodes[rows], "rep": rep[comp[rows]], "level": node_level[rows],
                   "size": np.where(first, size[comp[rows]], U64(0))})


def up_leaf(job: CclJob, p: int) -> None:
    """Up 0: pieces of leaf p's edges (read from the links tasks of its box grown one task down)."""
    names = [edges_path(p, int(t)) for t in leaf_tasks(job, p, grow=1)]
    rows = mapreduce.concat(get_tables(job, names)) or {k: np.zeros(0, U64) for k in COLUMNS}
    u, v = rows["label"], rows["other"]
    nodes = np.unique(np.concatenate([u, v]))
    a, b = np.searchsorted(nodes, u), np.searchsorted(nodes, v)
    comp, count = pieces(nodes, a, b)
    # every edge's far end v lies in leaf(v); both ends are on the group boundary below that level
    edge_level = merge_level(np.full(len(v), p), job.leaf_of(v))
    node_level = np.zeros(len(nodes), np.int64)
    np.maximum.at(node_level, a, edge_level)
    np.maximum.at(node_level, b, edge_level)
    node_size = np.zeros(len(nodes), U64)
    node_size[a] = rows["size"]  # a vertex's task-local size, counted once, at its own leaf
    summarize(job, 0, p, nodes, comp, count, node_level, node_size)


def up_group(job: CclJob, level: int, g: int) -> None:
    """Up L >= 1: pieces of the children's rows (edges vertex-representative)."""
    kids = job.tree.children(level, g)
    rows = mapreduce.concat(get_tables(job, [f"uf/up/{level - 1}/{c:05d}.arrow" for c in kids]))
    if not rows:
        rows = {"node": np.zeros(0, U64), "rep": np.zeros(0, U64), "level": np.zeros(0, np.int64), "size": np.zeros(0, U64)}
    nodes = np.unique(np.concatenate([rows["node"], rows["rep"]]))
    a, b = np.searchsorted(nodes, rows["node"]), np.searchsorted(nodes, rows["rep"])
    comp, count = pieces(nodes, a, b)
    node_level = np.zeros(len(nodes), np.int64)
    np.maximum.at(node_level, a, rows["level"])
    node_size = np.zeros(len(nodes), U64)
    np.add.at(node_size, a, rows["size"])
    summarize(job, level, g, nodes, comp, count, node_level, node_size)


def resolve(job: CclJob, level: int, g: int) -> tuple[mapreduce.Table, np.ndarray, np.ndarray]:
    """Group g's state and each node's (root, component size): its own representative's for
    closed pieces, the parent's answer for that representative for open ones."""
    state = get_table(job, f"uf/state/{level}/{g:05d}.arrow")
    root, size = state["rep"].copy(), state["size"].copy()
    opened = state["open"].astype(bool)
    if opened.any():
        sent = get_table(job, f"uf/down/{level}/{g:05d}.arrow")
        at = np.searchsorted(sent["rep"], state["rep"][opened])
        if (at >= len(sent["rep"])).any() or (sent["rep"][np.minimum(at, len(sent["rep"]) - 1)] != state["rep"][opened]).any():
            raise TaskError(f"calc-labels: the tree's answer for group {g} of level {level} lacks some of its pieces")
        root[opened], size[opened] = sent["root"][at], sent["size"][at]
    return state, root, size


def down_group(job: CclJob, level: int, g: int) -> None:
    """Down L >= 1: send each child the root and size of every representative it passed up."""
    state, root, size = resolve(job, level, g)
    for c in job.tree.children(level, g):
        reps = np.unique(get_table(job, f"uf/up/{level - 1}/{c:05d}.arrow")["rep"])
        at = np.searchsorted(state["node"], reps)
        put_table(job, f"uf/down/{level - 1}/{c:05d}.arrow", {"rep": reps, "root": root[at], "size": size[at]})


def up(job: CclJob, level: int, g: int) -> None:
    """One up task; the top one goes straight on down (it has no parent to wait for)."""
    if level == 0:
        up_leaf(job, g)
    else:
        up_group(job, level, g)
    if level == job.tree.depth:
        down(job, level, g)


def down(job: CclJob, level: int, g: int) -> None:
    if level > 0:
        down_group(job, level, g)
    else:
        ranks_leaf(job, g)


def local(ids: np.ndarray) -> np.ndarray:
    return (ids & LOCAL_MASK).astype(np.int64)


def ranks_leaf(job: CclJob, p: int) -> None:
    """Down 0: for each task of leaf p, each local id's rank among the task's kept roots (-1 for
    the others) and its root (0 unless merged into another id's component); the kept counts."""
    state, root, size = resolve(job, 0, p)
    # a leaf's state holds its foreign neighbours too: keep its own vertices only
    mine = job.leaf_of(state["node"]) == p
    node, root, size = state["node"][mine], root[mine], size[mine]
    node_task = (node >> LOCAL_BITS).astype(np.int64)
    tasks = leaf_tasks(job, p)
    counts = np.zeros(len(tasks), np.int64)
    bounds = np.searchsorted(node_task, np.stack([tasks, tasks + 1]))
    for b in range(0, len(tasks), BATCH):  # a batch of faces files in, a batch of ranks files out
        some = tasks[b:b + BATCH]
        faces = get_raw(job, [f"faces/{int(t)}.arrow" for t in some])
        files = []
        for i, (t, data) in enumerate(zip(some, faces), start=b):
            _, sizes, _ = parse_faces(job, int(t), data)
            rows = slice(int(bounds[0, i]), int(bounds[1, i]))
            table, counts[i] = task_ranks(job, sizes, node[rows], root[rows], size[rows])
            files.append((f"ranks/{int(t)}.arrow", mapreduce.encode_table(table, compression=None)))
        put_many(_cf(job), files, compress=None)
    put_table(job, f"counts/{p:05d}.arrow", {"task": tasks, "count": counts})


def task_ranks(job: CclJob, sizes: np.ndarray, ids: np.ndarray, root: np.ndarray, size: np.ndarray) -> tuple[mapreduce.Table, int]:
    """One task's ranks file and kept-root count, from its local component sizes and the roots
    and component sizes of its ids on task borders."""
    loc = local(ids)
    total = sizes.astype(U64)
    total[loc] = size
    keep = total >= max(job.dust, 1)
    keep[0] = False
    merged = root != ids
    keep[loc[merged]] = False
    roots = np.zeros(len(sizes), U64)
    roots[loc[merged]] = root[merged]
    rank = np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int64)
    return {"rank": rank, "root": roots}, int(keep.sum())


def write_offsets(job: CclJob) -> int:
    """The last small step: first final id of each task (prefix sums of kept roots); returns N."""
    counts = np.zeros(job.tasks, np.int64)
    for part in get_tables(job, [f"counts/{p:05d}.arrow" for p in range(job.partitions)]):
        counts[part["task"].astype(np.int64)] = part["count"]
    offsets = np.concatenate([[1], 1 + np.cumsum(counts)[:-1]]).astype("<i8")
    total = int(counts.sum())
    # raw little-endian int64, one per task: a relabel task reads its few entries by byte range
    _cf(job).put(OFFSETS, offsets.tobytes(), compress=None)
    _cf(job).put_json("labels.json", {"labels": total})
    return total


def read_offsets(job: CclJob, tasks: list[int]) -> dict[int, int]:
    """The first final id of each of these tasks (8-byte ranged reads of offsets.bin)."""
    got = get_many(_cf(job), [{"path": OFFSETS, "start": 8 * t, "end": 8 * t + 8} for t in tasks])
    if any(g["content"] is None or len(g["content"]) != 8 for g in got):
        raise TaskError(f"relabel: {job.root}/{OFFSETS} is missing or short; run calc-labels first")
    return {t: int(np.frombuffer(g["content"], "<i8")[0]) for t, g in zip(tasks, got)}


def label_count(job: CclJob) -> int | None:
    got = _cf(job).get_json("labels.json")
    return None if got is None else int(got["labels"])


def steps(job: CclJob) -> list[tuple[str, int, int]]:
    """calc-labels' steps in order: (phase name, level, tasks)."""
    tree = job.tree
    out = [(f"up-{L}", L, tree.groups(L)) for L in range(tree.depth + 1)]
    out += [(f"down-{L}", L, tree.groups(L)) for L in range(tree.depth - 1, -1, -1)]
    return out + [("offsets", 0, 1)]
