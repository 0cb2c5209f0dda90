"""Mesh operations."""
