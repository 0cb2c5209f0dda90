"""igneous-like: build Neuroglancer Precomputed datasets from huge volumes with a task queue."""

__version__ = "0.1.0"
