"""storage.create_once, the claim that lets exactly one of the tasks that finish a phase at the
same moment queue the next: raced by real processes on file:// and on a real S3 server (moto)."""
from __future__ import annotations

import multiprocessing as mp

import pytest

RACERS = 8


def race(url: str, barrier, results, i: int) -> None:
    from cloudfiles import CloudFiles

    from igneous_like.storage import configure_environment, create_once

    configure_environment()
    cf = CloudFiles(url)
    barrier.wait()
    results[i] = 1 if create_once(cf, "queued/next", f"task-{i}") else 0


def claim_race(url: str) -> list[int]:
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(RACERS), ctx.Array("i", [-1] * RACERS)
    procs = [ctx.Process(target=race, args=(url, barrier, results, i)) for i in range(RACERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return list(results)


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return f"file://{tmp_path}/job"
    return f"{request.getfixturevalue('s3_bucket')}/job"


def test_one_racer_wins_and_only_its_rerun_wins_again(store):
    from cloudfiles import CloudFiles

    from igneous_like.storage import configure_environment, create_once

    configure_environment()
    for _ in range(3):  # a race is luck: three of them, each from an empty store
        CloudFiles(store).delete("queued/next")
        won = claim_race(store)
        assert sorted(won) == [0] * (RACERS - 1) + [1], won
        winner = won.index(1)
        cf = CloudFiles(store)
        assert cf.get("queued/next") == f"task-{winner}".encode()
        # the winner run again (its worker died between claiming and queueing) still owns it
        assert create_once(cf, "queued/next", f"task-{winner}")
        assert not create_once(cf, "queued/next", f"task-{(winner + 1) % RACERS}")
