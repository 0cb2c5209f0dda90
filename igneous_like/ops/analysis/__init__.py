"""Analysis operations: per-label statistics and voxel counts (map, then reduce by partition)."""
