"""Chaos: workers are killed with SIGKILL in the middle of tasks until at least 30 % of the
tasks were interrupted; restarted workers finish the queue; the output is byte-identical to a
clean run and no task is lost."""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from conftest import run_cli, tree_digest

LEASE = "2"


class Worker:
    """One `execute` process whose log tells which task it is running right now."""

    def __init__(self, queue):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "igneous_like", "execute", f"fq://{queue}", "--lease-sec", LEASE,
             "--max-attempts", "0", "-x"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.running: str | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stderr:
            if m := re.match(r"INFO start \S+ (\S+)", line):
                self.running = m.group(1)
            elif re.match(r"INFO \S+ \S+ done", line):
                self.running = None


def drain_with_monkey(queue, rng, target: int) -> tuple[set, set]:
    """Run 2 workers, killing one in mid-task now and then (each task at most once, until
    `target` tasks were interrupted), and restart workers until the queue is empty."""
    started, interrupted = set(), set()
    workers = [Worker(queue), Worker(queue)]
    deadline = time.time() + 300
    while time.time() < deadline:
        for i, w in enumerate(workers):
            if w.running:
                started.add(w.running)
            if w.running and w.running not in interrupted and len(interrupted) < target and rng.random() < 0.6:
                interrupted.add(w.running)
                os.kill(w.proc.pid, signal.SIGKILL)
                w.proc.wait()
                workers[i] = Worker(queue)
            elif w.proc.poll() is not None:
                if not any((queue / "queue").iterdir()):
                    continue
                workers[i] = Worker(queue)  # exited on an empty moment while leases were out
        if not any((queue / "queue").iterdir()) and all(w.proc.poll() is not None for w in workers):
            break
        time.sleep(rng.uniform(0.05, 0.4))
    for w in workers:
        if w.proc.poll() is None:
            w.proc.kill()
    assert not any((queue / "queue").iterdir()), "queue not drained"
    return started, interrupted


def test_killed_workers_lose_nothing_and_change_no_byte(layers):
    shutil.copytree(layers / "segmentation", layers / "clean")
    shutil.copytree(layers / "segmentation", layers / "chaos")
    steps = [
        [("image", "downsample", "{layer}", "--num-mips", "2", "--chunk-size", "32,32,32"),
         ("mesh", "forge", "{layer}", "--shape", "64,64,50")],
        [("mesh", "merge", "{layer}", "--magnitude", "1")],
    ]
    for phase in steps:
        for step in phase:
            run_cli("-p", "2", *[s.format(layer=f"file://{layers}/clean") for s in step])
    rng = random.Random(7)
    total, hit = 0, set()
    for n, phase in enumerate(steps):
        q = layers / f"q{n}"
        for step in phase:
            run_cli(*[s.format(layer=f"file://{layers}/chaos") for s in step], "--queue", f"fq://{q}")
        inserted = int((q / "insertions").read_text())
        started, interrupted = drain_with_monkey(q, rng, target=int(0.45 * inserted) + 1)
        total += inserted
        hit |= interrupted
    print(f"chaos: {len(hit)} of {total} tasks interrupted at least once")
    assert len(hit) >= 0.3 * total, (len(hit), total)
    assert tree_digest(layers / "chaos") == tree_digest(layers / "clean")
