"""Readers and writers of outside formats (images, tables), used by import, export and annotation operations."""
