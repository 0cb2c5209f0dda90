"""igneous-like: build Neuroglancer Precomputed datasets from huge volumes with a task queue."""
import os

# One BLAS thread per process, set before anything imports numpy. Parallelism here is processes
# (`-p N`); numpy's BLAS only sees tiny matrices (3x3 moments, vertex transforms), and OpenBLAS
# otherwise starts a thread per core at import, which spins: ~0.13 s of CPU per process start,
# and more while a worker runs. A value set by the user wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
