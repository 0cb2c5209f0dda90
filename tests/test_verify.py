"""verify names every file a finished job should have and lacks, and every corrupt chunk."""
from __future__ import annotations

import json
import os

from conftest import run_cli


def test_verify_names_each_missing_or_broken_file(layers):
    seg = f"file://{layers}/segmentation"
    run_cli("-p", "2", "image", "downsample", seg, "--num-mips", "2")
    run_cli("-p", "2", "mesh", "forge", seg, "--shape", "128,128,64")
    run_cli("-p", "2", "mesh", "merge", seg, "--magnitude", "1")
    run_cli("-p", "2", "skeleton", "forge", seg, "--shape", "128,128,64")
    run_cli("-p", "2", "skeleton", "merge", seg, "--min-cable-length", "0")
    ok = run_cli("verify", seg)
    assert "0 problem(s)" in ok.stderr

    root = layers / "segmentation"
    info = json.loads((root / "info").read_text())
    lost_chunk = root / info["scales"][1]["key"] / "0-64_0-64_0-64"
    os.remove(lost_chunk)
    mesh_label = sorted(p.name[:-2] for p in (root / "mesh").glob("*:0"))[0]
    os.remove(root / "mesh" / f"{mesh_label}:0")
    skel_label = sorted(p.name for p in (root / "skeletons").iterdir() if p.name.isdigit())[0]
    os.remove(root / "skeletons" / skel_label)
    proc = run_cli("verify", seg, check=False)
    assert proc.returncode == 1
    assert f"{lost_chunk.parent.name}/0-64_0-64_0-64" in proc.stdout
    assert f"{mesh_label}:0" in proc.stdout
    assert f"missing skeleton: label {skel_label}" in proc.stdout
    assert "3 problem(s)" in proc.stderr

    (root / info["scales"][0]["key"] / "64-128_0-64_0-64").write_bytes(b"junk")
    proc = run_cli("verify", seg, check=False)
    assert "corrupt:" in proc.stdout and "64-128_0-64_0-64" in proc.stdout
