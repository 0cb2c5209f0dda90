"""annotation: Neuroglancer precomputed annotation layers from tables and label statistics."""
