"""image import from object storage: every non-Zarr format read from s3:// (the moto server)
through ranged GETs gives the same layer, byte for byte, as the import of the same file from a
local path; the layers are also read back with tensorstore against the source voxels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, tree_digest, ts_read
from test_import import CHUNK, XYZ, assert_same, s3_env, volume, zyx


def upload(local: Path, url: str) -> None:
    """Copy a file, or a directory's files (recursively), to object storage as they are."""
    from cloudfiles import CloudFiles

    from igneous_like.storage import configure_environment

    configure_environment()
    if local.is_dir():
        files, base = sorted(p for p in local.rglob("*") if p.is_file()), local
    else:
        files, base = [local], local.parent
        url = url.rsplit("/", 1)[0]
    cf = CloudFiles(url)
    for f in files:
        cf.put(str(f.relative_to(base)), f.read_bytes(), compress=None, raw=True)


def write_tiff_stack(vol, where: Path) -> Path:
    import tifffile

    where = where / "stack"
    where.mkdir()
    for z in range(XYZ[2]):
        tifffile.imwrite(where / f"z{z}.tif", zyx(vol)[z], rowsperstrip=3)
    return where


def write_multipage(vol, where: Path) -> Path:
    import tifffile

    tifffile.imwrite(where / "v.tif", zyx(vol), rowsperstrip=4)
    return where / "v.tif"


def write_h5(vol, where: Path) -> Path:
    import h5py

    with h5py.File(where / "v.h5", "w") as f:
        ds = f.create_dataset("img", data=zyx(vol), chunks=(4, 8, 8), compression="gzip")
        ds.attrs["element_size_um"] = (0.04, 0.005, 0.004)
        f.create_dataset("other", data=np.arange(4))
    return where / "v.h5"


def write_nifti(name: str):
    def write(vol, where: Path) -> Path:
        import nibabel

        img = nibabel.Nifti1Image(vol, np.diag([0.004, 0.005, 0.04, 1.0]))
        img.header.set_xyzt_units("mm")
        nibabel.save(img, where / name)
        return where / name
    return write


def write_nrrd(encoding: str):
    def write(vol, where: Path) -> Path:
        import nrrd

        nrrd.write(str(where / "v.nrrd"), vol, {"encoding": encoding, "spacings": [4, 5, 40],
                                                "units": ["nm", "nm", "nm"]}, index_order="F")
        return where / "v.nrrd"
    return write


def write_detached_nrrd(vol, where: Path) -> Path:
    """A .nhdr header beside its gzip data file (NRRD's detached form)."""
    import nrrd

    nrrd.write(str(where / "v.nhdr"), vol, {"encoding": "gzip", "spacings": [4, 5, 40],
                                            "units": ["nm", "nm", "nm"]}, index_order="F", detached_header=True)
    assert any(p.name != "v.nhdr" for p in where.iterdir())
    return where / "v.nhdr"


def write_npy(vol, where: Path) -> Path:
    np.save(where / "v.npy", vol)
    return where / "v.npy"


# name: (writer, dtype, channels, extra import options). Tiny --memory values split slabs into
# bands or tiles, so tasks read parts of the file by range, not whole slices.
CASES = {
    "tiff-stack": (write_tiff_stack, "uint16", 0, ["--resolution", "4,5,40", "--memory", "1KB"]),
    "multipage-tiff": (write_multipage, "uint8", 0, ["--resolution", "4,5,40", "--memory", "1KB"]),
    "hdf5": (write_h5, "uint32", 0, ["--memory", "2KB"]),
    "nii": (write_nifti("v.nii"), "int16", 0, ["--memory", "1KB"]),
    "nii.gz": (write_nifti("v.nii.gz"), "float32", 0, []),
    "nrrd-raw": (write_nrrd("raw"), "uint16", 0, ["--memory", "1KB"]),
    "nrrd-gzip": (write_nrrd("gzip"), "uint64", 0, []),
    "nrrd-bzip2": (write_nrrd("bzip2"), "uint8", 0, []),
    "nrrd-detached": (write_detached_nrrd, "int16", 0, []),
    "npy": (write_npy, "uint8", 3, ["--resolution", "1,1,1", "--memory", "2KB"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_s3_source_equals_local_source(tmp_path, moto, s3_bucket, case):
    writer, dtype, channels, extra = CASES[case]
    vol = volume(dtype, channels=channels)
    (tmp_path / "src").mkdir()
    local = writer(vol, tmp_path / "src")
    url = f"{s3_bucket}/data/{local.name}"
    upload(tmp_path / "src", f"{s3_bucket}/data")  # with a detached NRRD's data file
    env = s3_env(moto)
    for src, name in ((str(local), "from-local"), (url, "from-s3")):
        run_cli("image", "import", src, f"file://{tmp_path / name}", "--chunk-size", CHUNK, *extra, env=env)
    assert tree_digest(tmp_path / "from-s3") == tree_digest(tmp_path / "from-local")  # same layer, every byte
    assert_same(ts_read(tmp_path / "from-s3", 0), vol)
    assert ts_read(tmp_path / "from-s3", 1).shape[:3] == ((XYZ[0] + 1) // 2, (XYZ[1] + 1) // 2, XYZ[2])


def test_s3_tiff_glob_and_queue(tmp_path, moto, s3_bucket):
    """A glob in the last path part lists by prefix; queued tasks each fetch their own slices."""
    import pyspng

    vol = volume("uint8")
    stack = tmp_path / "png"
    stack.mkdir()
    for z in range(XYZ[2]):
        (stack / f"s{z}.png").write_bytes(pyspng.encode(zyx(vol)[z]))
    (stack / "notes.txt").write_text("not a slice")
    upload(stack, f"{s3_bucket}/png")
    env, dest, q = s3_env(moto), tmp_path / "layer", tmp_path / "q"
    out = run_cli("image", "import", f"{s3_bucket}/png/s*.png", f"file://{dest}", "--chunk-size", CHUNK,
                  "--resolution", "4,4,40", "--queue", f"fq://{q}", env=env)
    assert f"{XYZ[2]} 2D slices (PNG)" in out.stdout + out.stderr
    run_cli("execute", f"fq://{q}", "-p", "2", "-x", "-q", env=env)
    assert_same(ts_read(dest, 0), vol)


@pytest.mark.parametrize("src, message", [
    ("data/missing.h5", "does not exist"),
    ("data/none*.tif", "no .tif, .tiff or .png slices"),
    ("data/trunc.nii", "truncated"),
])
def test_s3_bad_sources_are_one_line_errors(tmp_path, moto, s3_bucket, src, message):
    import nibabel

    vol = volume("uint16")
    nibabel.save(nibabel.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii")
    data = (tmp_path / "v.nii").read_bytes()
    (tmp_path / "trunc.nii").write_bytes(data[: len(data) // 2])
    upload(tmp_path / "trunc.nii", f"{s3_bucket}/data/trunc.nii")
    dest = tmp_path / "layer"
    out = run_cli("image", "import", f"{s3_bucket}/{src}", f"file://{dest}", "--resolution", "1,1,1",
                  check=False, env=s3_env(moto))
    assert out.returncode != 0
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_npy_on_s3_fetches_only_the_slab(tmp_path, moto, s3_bucket):
    """A z,y,x .npy: a z-slab is one byte span, so a task's GETs add up to about the slab
    (plus the header block), not the file."""
    from igneous_like.formats import byte_access
    from igneous_like.formats.npy import open_npy
    from igneous_like.grid import Box

    vol = np.random.default_rng(2).integers(0, 255, (64, 256, 256), dtype=np.uint8)  # z,y,x: 4 MiB
    np.save(tmp_path / "v.npy", vol)
    upload(tmp_path / "v.npy", f"{s3_bucket}/v.npy")
    fetched = []
    real = byte_access.RangedFile.fetch

    def counting(self, parts, joined=True):
        fetched.extend(e - s for s, e in parts)
        return real(self, parts, joined)

    byte_access.RangedFile.fetch = counting
    try:
        src = open_npy(f"{s3_bucket}/v.npy", "zyx")
        fetched.clear()
        got = src.read(Box((0, 0, 40), (256, 256, 48)))
    finally:
        byte_access.RangedFile.fetch = real
    assert np.array_equal(got[..., 0], vol[40:48].transpose(2, 1, 0))
    assert sum(fetched) <= 8 * 256 * 256 + 2 * byte_access.MiB < vol.nbytes  # slab + at most two blocks


def test_compressed_nrrd_keeps_only_the_slab(tmp_path):
    """gzip NRRD: a task decodes the stream up to its slab and holds only the slab, never the
    decoded file (64 MiB here)."""
    import tracemalloc

    import nrrd

    from igneous_like.formats.nrrd import open_nrrd
    from igneous_like.grid import Box

    x, y, z = 256, 256, 1024
    vol = np.empty((x, y, z), np.uint8, order="F")
    vol[...] = (np.arange(z, dtype=np.uint8)[None, None, :] + np.arange(x, dtype=np.uint8)[:, None, None])
    nrrd.write(str(tmp_path / "v.nrrd"), vol, {"encoding": "gzip", "spacings": [1, 1, 1]}, index_order="F")
    src = open_nrrd(str(tmp_path / "v.nrrd"))
    assert src.access == "z" and "keeps only the slab" in src.notes[0]
    tracemalloc.start()
    got = src.read(Box((0, 0, 900), (x, y, 908)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(got[..., 0], vol[:, :, 900:908])
    assert peak < 24 * 2**20 < vol.nbytes / 2, peak  # slab (512 KiB) + bounded decode buffers


def test_ranged_file_reads_match_the_bytes(tmp_path, moto, s3_bucket):
    """Small reads through the block cache and large ones straight into the buffer (in
    parallel batches) return exactly the object's bytes, wherever they start and end."""
    from igneous_like.formats.byte_access import RangedFile

    data = np.random.default_rng(5).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    (tmp_path / "blob").write_bytes(data)
    upload(tmp_path / "blob", f"{s3_bucket}/blob")
    f = RangedFile(f"{s3_bucket}/blob", block=4096, cache_blocks=4)  # reads above 8 KiB bypass the cache
    rng = np.random.default_rng(6)
    for _ in range(40):
        start, size = int(rng.integers(0, len(data))), int(rng.choice([1, 100, 5000, 9000, 50_000]))
        f.seek(start)
        assert f.read(size) == data[start: start + size]
    assert len(f.cache) <= 4
    f.seek(-10, 2)
    assert f.read() == data[-10:]
