"""`--mip auto` for mesh and skeleton forge: the finest near-isotropic mip, or a clear refusal
that names the downsample that would make one."""
from __future__ import annotations

import re
import shlex

import pytest

from conftest import run_cli, tree_digest, upload_layer
from igneous_like import sample


@pytest.fixture(scope="module")
def thin_sections(tmp_path_factory):
    """4x4x40 nm voxels, the classic case: mip 0 is ten times finer in x and y than in z."""
    root = tmp_path_factory.mktemp("aniso")
    seg = sample.segmentation((128, 128, 16), seed=7, cells=10)
    sample.write_layer(f"file://{root}/seg", seg, "segmentation", resolution=(4, 4, 40), chunk=(64, 64, 16))
    return root / "seg"


def test_refuses_anisotropic_data_and_its_advice_works(thin_sections, tmp_path):
    import shutil

    layer = tmp_path / "seg"
    shutil.copytree(thin_sections, layer)
    proc = run_cli("mesh", "forge", layer, "--mip", "auto", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "no mip" in proc.stderr and "max/min ratio 10.00 > 2" in proc.stderr
    assert not (layer / "mesh").exists()  # nothing written
    advice = re.search(r"make one with: (igneous-like image downsample .*?) \(adds mip (\d+) at (\S+) nm\)",
                       proc.stderr)
    assert advice and advice.group(2) == "3" and advice.group(3) == "32x32x40", proc.stderr
    run_cli(*shlex.split(advice.group(1))[1:])  # the suggested command, as printed
    out = run_cli("mesh", "forge", layer, "--mip", "auto", "--dry-run")
    assert "--mip auto: meshes at mip 3 (32x32x40 nm, max/min ratio 1.25)" in out.stderr
    assert "±16x16x20 nm, at most 20 nm" in out.stderr
    assert "mip: 3" in out.stdout


def test_auto_equals_the_explicit_mip_byte_for_byte(thin_sections, tmp_path):
    import shutil

    trees = {}
    for mip in ("auto", "3"):
        layer = tmp_path / mip / "seg"
        shutil.copytree(thin_sections, layer)
        run_cli("image", "downsample", layer, "--num-mips", "4")  # ratios 5, 2.5, 1.25 (mip 3), 1.6
        run_cli("mesh", "forge", layer, "--mip", mip)
        trees[mip] = tree_digest(layer / "mesh")
        assert any(name.endswith(".spatial") for name in trees[mip])
    assert trees["auto"] == trees["3"]


def test_ties_go_to_the_finer_mip(tmp_path):
    seg = sample.segmentation((64, 64, 64), seed=2, cells=6)
    layer = tmp_path / "iso"
    sample.write_layer(f"file://{layer}", seg, "segmentation", resolution=(8, 8, 8), chunk=(32, 32, 32))
    run_cli("image", "downsample", layer, "--volumetric", "--num-mips", "1")  # 16x16x16: ratio 1 too
    out = run_cli("skeleton", "forge", layer, "--mip", "auto", "--dry-run")
    assert "--mip auto: skeletons at mip 0 (8x8x8 nm, max/min ratio 1.00)" in out.stderr


def test_auto_on_an_image_layer_and_a_bad_value(layers):
    proc = run_cli("mesh", "forge", layers / "image", "--mip", "auto", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "--mip auto" in proc.stderr and "image layer" in proc.stderr
    proc = run_cli("skeleton", "forge", layers / "segmentation", "--mip", "fine", check=False)
    assert proc.returncode != 0 and "neither a mip number nor 'auto'" in proc.stderr


def test_auto_on_s3(thin_sections, moto, s3_bucket):
    layer = f"{s3_bucket}/seg"
    upload_layer(thin_sections, layer)
    run_cli("image", "downsample", layer, "--num-mips", "2", env=moto)  # 16x16x40: ratio 2.5, still too far
    proc = run_cli("skeleton", "forge", layer, "--mip", "auto", check=False, env=moto)
    assert proc.returncode == 1 and "best: mip 2, 16x16x40 nm" in proc.stderr
    assert f"image downsample {layer} --mip 2 --num-mips 1 --factor 2,2,1" in proc.stderr, proc.stderr
