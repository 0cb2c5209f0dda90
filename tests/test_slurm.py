"""A real single-node SLURM cluster on localhost runs the array-job script against a FileQueue.

scripts/test.sh installs Debian's slurm-wlm and munge when sbatch is missing and it runs as root
(as CI does); elsewhere this test is skipped with the reason."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, ts_read
from reference import average_pyramid

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("sbatch", "squeue", "sinfo", "slurmctld", "slurmd", "munged", "munge")


def _missing() -> str | None:
    gone = [t for t in NEEDED if not (shutil.which(t) or os.path.exists(f"/usr/sbin/{t}"))]
    if gone:
        return f"SLURM/munge not installed ({', '.join(gone)} missing): scripts/test.sh installs them as root"
    if os.geteuid() != 0:
        return "starting slurmd/munged needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=igltest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started_munge = None
    if subprocess.run([_tool("munge"), "-n"], capture_output=True).returncode != 0:
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", _tool("munged"), "--force"], check=True)
        started_munge = True
    daemons = [
        subprocess.Popen([_tool("slurmctld"), "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
        subprocess.Popen([_tool("slurmd"), "-D", "-N", "localhost", "-f", str(conf)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    deadline = time.time() + 60
    while time.time() < deadline:
        out = subprocess.run([_tool("sinfo"), "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
        if "idle" in out:
            break
        time.sleep(0.5)
    else:
        for p in daemons:
            p.terminate()
        pytest.fail(f"slurm did not come up: {(d / 'slurmctld.log').read_text()[-2000:]}")
    yield env
    for p in daemons:
        p.terminate()
        p.wait(timeout=30)
    if started_munge:
        pid = Path("/run/munge/munged.pid")
        if pid.exists():
            os.kill(int(pid.read_text()), 15)


def test_array_job_drains_the_queue(layers, arrays, slurm):
    q = layers / "q"
    run_cli("image", "downsample", f"file://{layers}/image", "--num-mips", "2", "--chunk-size", "32,32,32",
            "--queue", f"fq://{q}")
    env = {**slurm, "QUEUE": f"fq://{q}", "IGNEOUS_LIKE": str(Path(sys.executable).parent / "igneous-like"),
           "LEASE_SECONDS": "60"}
    out = subprocess.run([_tool("sbatch"), "--array=0-1", "--mem=0", "--time=10", f"--chdir={layers}",
                          str(ROOT / "scripts" / "slurm" / "igneous-like-array.sh")],
                         env=env, capture_output=True, text=True, check=True).stdout
    job = out.strip().split()[-1]
    deadline = time.time() + 240
    while time.time() < deadline:
        running = subprocess.run([_tool("squeue"), "-h", "-j", job], env=env, capture_output=True, text=True).stdout
        if not running.strip():
            break
        time.sleep(1)
    else:
        pytest.fail(f"array job {job} still running")
    logs = list(layers.glob(f"igneous-like-{job}_*.log"))
    assert len(logs) == 2, logs  # two workers ran
    status = run_cli("queue", "status", f"fq://{q}").stdout
    assert "enqueued   0" in status, status + "".join(p.read_text() for p in logs)
    got = ts_read(layers / "image", 2)[..., 0]
    ref = average_pyramid(arrays["image"], (2, 2, 1), 2)[1]
    assert np.abs(got.astype(int) - np.rint(ref).astype(int)).max() <= 1
