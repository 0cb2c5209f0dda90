"""The worker image and its Kubernetes Deployment, validated offline (no Docker engine here)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def test_dockerfile_passes_hadolint():
    proc = subprocess.run([tool("hadolint"), "--failure-threshold", "info", str(ROOT / "docker" / "Dockerfile")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_deployment_is_valid_kubernetes():
    proc = subprocess.run([tool("kubernetes-validate"), "--strict", str(ROOT / "docker" / "worker-deployment.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_deployment_runs_workers_that_survive_preemption():
    doc = yaml.safe_load((ROOT / "docker" / "worker-deployment.yaml").read_text())
    pod = doc["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["QUEUE_URL"]["valueFrom"] and "LEASE_SECONDS" in env
    assert any("preemptible" in t["key"] or "spot" in t["key"] for t in pod["tolerations"])
    assert pod["terminationGracePeriodSeconds"] >= 60  # a running task may finish after SIGTERM
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "igneous-like execute" in dockerfile and "QUEUE_URL" in dockerfile
