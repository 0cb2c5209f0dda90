"""Skeleton operations."""
